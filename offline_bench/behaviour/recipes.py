"""How the committed behaviour policies become dataset recipes, and how the mixed (medium-replay) data is made.

- ``medium`` / ``expert``: rollouts of the committed checkpoint (``datasets/policies/<task>/<quality>.pt``) with
  Gaussian noise of std ``NOISE`` on the actions, through the data layer's ``collect``: this module registers a
  ``checkpoint`` policy factory and the recipes of every task whose index entry has that quality.
- ``mixed``: every transition of the behaviour run's replay buffer from step 0 to the medium step, in order.
  It cannot be regenerated from the checkpoint, so ``collect_mixed`` takes it from the run's ``mixed.npz`` when
  this machine has the run, and otherwise (``retrain=True``) re-runs the deterministic training up to the medium
  step with the index's recorded config and seed; the content hash in the index says whether the result is
  bit-identical (it is on the same CPU and torch build; other CPUs may differ in the last bits). This module
  registers a ``replay-buffer`` recipe for every task with a medium policy and hands the data layer
  ``mixed_collector``, so ``offline-bench collect <task>-mixed`` makes it like any other id.
- ``tag`` / ``world``: the frozen opponent ``<policies>/<task>/opponent.pt`` drives the non-learning agents of
  every dataset of the task; this module hands the data layer ``stored_opponent`` as its opponent loader.
"""
from __future__ import annotations

import logging
import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from offline_bench.behaviour.policy import CheckpointPolicy, load_policy, policy_entry, read_index
from offline_bench.behaviour.trainer import (
    BehaviourTrainer,
    TrainerConfig,
    arrays_sha256,
    default_workdir,
    episode_seed,
    task_env,
)
from offline_bench.data.catalog import retrain_cost
from offline_bench.data.collection import FixedOpponent, Progress
from offline_bench.envs.base import TaskSpec

log = logging.getLogger(__name__)

NOISE = 0.1  # std of the Gaussian action noise of medium / expert rollouts (actions in [-1, 1])
_policies_root: str | os.PathLike[str] | None = None  # where the registered recipes' checkpoints live


def checkpoint_policy_factory(spec: TaskSpec, params: dict[str, Any], init_seed: int, noise_seed: int) -> CheckpointPolicy:
    """``offline_bench.data.policy`` factory of the ``checkpoint`` policy named by medium / expert recipes."""
    task, quality = params["task"], params["quality"]
    policy = load_policy(task, quality, noise=float(params["noise"]), root=_policies_root)
    if policy is None:
        raise FileNotFoundError(f"no committed {quality} policy for {task}; train one: offline-bench behaviour train {task}")
    if params.get("sha256") and policy.sha256 != params["sha256"]:
        raise ValueError(f"{task} {quality} policy changed (sha256 {policy.sha256[:12]}...) since the recipe was made")
    policy.in_layout(spec)  # the committed MPE policies act in "mpe2"; v1 datasets are in the "force" layout
    if policy.n_agents != spec.n_agents or policy.obs_dim != spec.obs_dim:
        raise ValueError(f"the {task} {quality} policy expects obs [{policy.n_agents}, {policy.obs_dim}], "
                         f"the task has [{spec.n_agents}, {spec.obs_dim}]")
    policy.seed(noise_seed)
    return policy  # tag / world: the data layer runs every dataset against the task's stored opponent


def stored_opponent(task: str, root: str | os.PathLike[str] | None = None) -> FixedOpponent | None:
    """The frozen opponent of ``task`` in the policies folder ``root`` (sha256-checked), or None if it has none."""
    if task not in ("tag", "world"):
        return None
    policy = load_policy(task, "opponent", root=root)
    if policy is None:
        return None
    entry = policy_entry(task, "opponent", root) or {}
    return FixedOpponent(act=policy.as_opponent(), sha256=policy.sha256, file=entry.get("file", f"{task}/opponent.pt"),
                         step=entry.get("step"))


def _registered_opponent(task: str) -> FixedOpponent | None:
    return stored_opponent(task, _policies_root)


def mixed_collector(task: str, *, version: int, root: str | os.PathLike[str] | None,
                    run_dir: str | os.PathLike[str] | None, retrain: bool, progress: Progress | None) -> dict[str, Any]:
    """The data layer's mixed collector (``offline_bench.data.collection.MixedCollector``): ``collect_mixed`` with
    the registered policies folder; ``progress(done, total)`` counts training steps when it re-trains."""
    total = (policy_entry(task, "medium", _policies_root) or {}).get("step", 0)
    report = None if progress is None else (lambda info: progress(int(info["step"]), total))
    return collect_mixed(task, root=root, run_dir=run_dir, retrain=retrain, progress=report, policies=_policies_root,
                         version=version)


def register_behaviour_recipes(root: str | os.PathLike[str] | None = None) -> list[str]:
    """Register the ``checkpoint`` policy, the data layer's mixed collector and opponent loader, and the medium /
    mixed / expert recipes of every committed policy in ``root`` (default: the repository's datasets/policies).

    Returns the dataset ids made collectable. Safe to call more than once.
    """
    from offline_bench.data.catalog import Recipe, dataset_versions, register_recipe
    from offline_bench.data.collection import register_mixed_collector, register_opponent_loader
    from offline_bench.data.policy import register_policy

    global _policies_root
    _policies_root = root
    register_policy("checkpoint", checkpoint_policy_factory)
    register_mixed_collector(mixed_collector)
    register_opponent_loader(_registered_opponent)
    done = []
    for task, entry in read_index(root).get("tasks", {}).items():
        for version in dataset_versions(task):
            converted = _conversion_note(task, entry, version)
            if converted is None:  # a run in the force layout cannot make the older mpe2-layout version
                continue
            if entry.get("mixed", {}).get("transitions") and "medium" in entry:
                recipe = _mixed_recipe(task, entry, converted)
                done.append(register_recipe(task, "mixed", version, recipe).dataset_id)
            for quality in ("medium", "expert"):
                if quality not in entry:
                    continue
                info = entry[quality]
                recipe = Recipe(
                    quality=quality,
                    kind="rollouts",
                    policy="checkpoint",
                    policy_params=(("noise", NOISE), ("quality", quality), ("sha256", info["sha256"]), ("task", task)),
                    description=(
                        f"rollouts of the {quality} {entry['run']['algo'].upper()} policy of datasets/policies/"
                        f"{info['file']} (trained {info['step']} steps, return {info['return_mean']:.1f} +- "
                        f"{info['return_std']:.1f} over {info['episodes']} episodes)" + converted
                        + f" with Gaussian action noise std {NOISE}"
                    ),
                )
                done.append(register_recipe(task, quality, version, recipe).dataset_id)
    return done


def run_action_layout(task: str, entry: dict[str, Any]) -> str | None:
    """The action layout a behaviour run of the index trained in (runs that predate the field: "mpe2" for MPE)."""
    from offline_bench.envs.tasks import recorded_action_layout

    return recorded_action_layout(task, entry.get("run", {}).get("trainer_config", {}))


def _conversion_note(task: str, entry: dict[str, Any], version: int) -> str | None:
    """Recipe description text where dataset ``version`` is in another action layout than the run trained in ("" if
    the same); None if the run cannot make that version (only "mpe2" actions convert, to "force")."""
    from offline_bench.data.catalog import ACTION_LAYOUT_VERSIONS

    from offline_bench.envs.mpe import layout_converter

    target = ACTION_LAYOUT_VERSIONS.get(task, {}).get(version)
    trained = run_action_layout(task, entry)
    try:
        if layout_converter(trained, target, 1) is None:
            return ""
    except ValueError:
        return None
    return f", its {trained}-layout actions written as the {target}-layout actions that move the agents the same way"


# ---------------------------------------------------------------------------------------------- mixed data
def _mixed_recipe(task: str, entry: dict[str, Any], converted: str = "") -> Any:
    from offline_bench.data.catalog import Recipe

    run, medium, mixed = entry["run"], entry["medium"], entry["mixed"]
    return Recipe(
        quality="mixed",
        kind="replay-buffer",
        policy=f"{run['algo']}-replay-buffer",
        policy_params=(("buffer_sha256", mixed.get("sha256")), ("medium_policy_sha256", medium["sha256"]),
                       ("medium_step", medium["step"]), ("run_seed", run["seed"]), ("task", task)),
        num_envs=1,
        fixed_steps=int(mixed["transitions"]),
        description=(
            f"every transition of the {run['algo'].upper()} behaviour run's replay buffer (seed {run['seed']}) from "
            f"step 0 to the medium policy at step {medium['step']}, in order: {mixed['transitions']} transitions"
            f"{converted}; from the saved run, or re-run deterministically with --retrain"
        ),
    )


def mixed_file_arrays(buffer_arrays: dict[str, np.ndarray], run_seed: int, n_agents: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The buffer prefix in the dataset file layout (agent axis dropped for N = 1, episode index arrays added)."""
    terminals = buffer_arrays["terminals"].copy()
    timeouts = buffer_arrays["timeouts"].copy()
    ends = terminals | timeouts
    cut = bool(len(ends) and not ends[-1])
    if cut:
        timeouts[-1] = True  # the medium step fell inside an episode: its last row is not a terminal state
    starts = np.concatenate([[0], np.flatnonzero(ends[:-1]) + 1]).astype(np.int64) if len(ends) else np.zeros(0, np.int64)
    seeds = np.asarray([episode_seed(run_seed, k) for k in range(len(starts))], np.int64)
    squeeze = (lambda x: x[:, 0]) if n_agents == 1 else (lambda x: x)  # noqa: E731
    arrays = {
        "observations": squeeze(buffer_arrays["observations"]),
        "actions": squeeze(buffer_arrays["actions"]),
        "rewards": squeeze(buffer_arrays["rewards"]),
        "next_observations": squeeze(buffer_arrays["next_observations"]),
        "terminals": terminals,
        "timeouts": timeouts,
        "episode_starts": starts,
        "episode_seeds": seeds,
    }
    rewards = buffer_arrays["rewards"].astype(np.float64)  # [T, N]
    bounds = list(starts) + [len(ends)]
    complete = range(len(starts) - 1 if cut else len(starts))
    returns = [float(rewards[bounds[k] : bounds[k + 1]].sum(0).mean()) for k in complete]
    lengths = [bounds[k + 1] - bounds[k] for k in complete]
    return arrays, {"last_episode_cut": cut, "returns": returns, "lengths": lengths}


class _ReplaySource:
    """What the manifest records as the mixed data's behaviour: the online learner, not one policy."""

    def __init__(self, task: str, entry: dict[str, Any], how: str, buffer_sha256: str) -> None:
        self.task, self.entry, self.how, self.buffer_sha256 = task, entry, how, buffer_sha256
        indexed = entry["mixed"].get("sha256")
        self.reproduced = None if not indexed else buffer_sha256 == indexed

    def describe(self) -> dict[str, Any]:
        run, medium = self.entry["run"], self.entry["medium"]
        return {
            "name": f"{run['algo']}-replay-buffer",
            "trained": True,
            "algo": run["algo"],
            "run_seed": run["seed"],
            "trainer_config": run["trainer_config"],
            "algo_overrides": run["algo_overrides"],
            "medium_step": medium["step"],
            "medium_policy_sha256": medium["sha256"],
            # The buffer this file was made from (before any action-layout conversion) and the committed run's;
            # a re-run on another CPU, or on code changed since the run, can differ from it in the last bits.
            "buffer_sha256": self.buffer_sha256,
            "indexed_buffer_sha256": self.entry["mixed"].get("sha256"),
            # Where the buffer came from (a saved run or a re-run) is logged, not recorded: both give the same file.
            "bit_identical_to_index": self.reproduced,
        }


def saved_mixed_buffer(task: str, policies: str | os.PathLike[str] | None = None) -> Path | None:
    """Where ``collect <task>-mixed`` finds the behaviour run's saved replay buffer without ``--workdir`` (the
    default ``runs/behaviour/<task>/seed<k>/mixed.npz``), or None: that collect then needs ``--retrain``."""
    entry = read_index(policies).get("tasks", {}).get(task)
    if entry is None or "mixed" not in entry:
        return None
    saved = default_workdir(task, entry["run"]["seed"]) / "mixed.npz"
    return saved if saved.exists() else None


def mixed_buffer(
    task: str,
    run_dir: str | os.PathLike[str] | None = None,
    retrain: bool = False,
    progress: Callable[[dict[str, Any]], None] | None = None,
    policies: str | os.PathLike[str] | None = None,
) -> tuple[dict[str, np.ndarray], str]:
    """The buffer prefix of ``task``'s committed behaviour run (D4RL keys, agent axis kept) and where it came from.

    From the saved run's ``mixed.npz`` in ``run_dir`` (default ``runs/behaviour/<task>/seed<k>``) when it is there;
    otherwise, with ``retrain``, from a deterministic re-run of the training up to the medium step (``progress``
    gets the trainer's step reports); otherwise FileNotFoundError saying to add ``--retrain`` and what it costs.
    """
    entry = read_index(policies).get("tasks", {}).get(task)
    if entry is None or "mixed" not in entry:
        raise FileNotFoundError(f"{task} has no medium behaviour policy yet, so no mixed data; "
                                f"train it: offline-bench behaviour train {task}")
    steps, seed = entry["mixed"]["transitions"], entry["run"]["seed"]
    run_dir = Path(run_dir) if run_dir else default_workdir(task, seed)
    saved = run_dir / "mixed.npz"
    if saved.exists():
        try:
            with np.load(saved) as f:  # no pickles: a file that needs them is not one a run saved
                arrays = {k: f[k] for k in f.files}
            arrays["terminals"]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
            why = str(err).strip().splitlines()[0].split(". ")[0] if str(err).strip() else type(err).__name__
            raise ValueError(f"{saved} is damaged and cannot be read ({why}); move it away and add --retrain to "
                             "rebuild the data, or pass the --workdir of an intact run") from None
        if len(arrays["terminals"]) != steps:
            raise ValueError(f"{saved} holds {len(arrays['terminals'])} transitions, the committed {task} medium "
                             f"policy was frozen at {steps}: it is another run; pass the right --workdir, or "
                             "move it away and add --retrain")
        return arrays, f"replay buffer saved by the run in {run_dir}"
    if not retrain:
        raise FileNotFoundError(
            f"{task}-mixed is the replay buffer of the behaviour run up to its medium policy, and no saved run is on "
            f"this machine ({saved} is missing); add --retrain to re-run that training deterministically: "
            f"{retrain_cost(task, policies)}"
        )
    fields = dict(entry["run"]["trainer_config"])
    # evaluation and checkpoints never change training; the rebuild needs neither
    fields.update(steps=steps, eval_every=10**12, checkpoint_every=10**12, checkpoint_minutes=float("inf"))
    fields["action_layout"] = run_action_layout(task, entry)  # the run's own layout, also for runs that predate it
    config = TrainerConfig(**fields)
    opponent = stored_opponent(task, policies)
    if task in ("tag", "world") and opponent is None:
        raise FileNotFoundError(f"the {task} behaviour run trained against a frozen opponent, and "
                                f"{task}/opponent.pt is not in the policies folder; restore it (git checkout)")
    factory = (lambda: task_env(task, opponent.act, config.action_layout)) if opponent is not None else None
    algo = entry["run"]["algo"]
    overrides = recorded_learner_overrides(task, algo, entry["run"]["algo_overrides"])
    log.info("re-running the %s behaviour training up to step %d: %s", task, steps, retrain_cost(task, policies))
    with tempfile.TemporaryDirectory(prefix=f"retrain-{task}-") as tmp:
        trainer = BehaviourTrainer(config, tmp, algo=algo, algo_overrides=overrides, env_factory=factory)
        trainer.run(progress)
        return {k: v.copy() for k, v in trainer.buffer.prefix(steps).items()}, "re-run of the deterministic training"


def recorded_learner_overrides(task: str, algo: str, recorded: dict[str, Any]) -> dict[str, Any]:
    """Learner overrides that make a re-run train exactly as the recorded run did.

    The index records the run's effective overrides (its recipe's ``algo_defaults`` included), but
    ``BehaviourTrainer`` merges in the recipe's *current* defaults; a default added to the recipe after the run
    (spread's learning rates, for one) is set back here to the learner's own default value.
    """
    from dataclasses import fields

    from offline_bench.behaviour.tasks import RECIPES

    if algo == "sac":
        from offline_bench.behaviour.sac import SACConfig as LearnerConfig
    else:
        from offline_bench.behaviour.matd3 import MATD3Config as LearnerConfig  # type: ignore[assignment]
    own = {f.name: getattr(LearnerConfig(), f.name) for f in fields(LearnerConfig)}
    out = dict(recorded)
    for key, _ in RECIPES[task].algo_defaults if task in RECIPES else ():
        if key not in out:
            out[key] = own[key]
    return out


def collect_mixed(
    task: str,
    root: str | os.PathLike[str] | None = None,
    run_dir: str | os.PathLike[str] | None = None,
    retrain: bool = False,
    progress: Callable[[dict[str, Any]], None] | None = None,
    policies: str | os.PathLike[str] | None = None,
    version: int | None = None,
) -> dict[str, Any]:
    """Write ``<task>-mixed-v<version>`` (default: the newest; HDF5 + manifest, atomically) through the data layer's
    writer; returns the manifest. Where that version's action layout is not the run's, the buffer's actions are
    written in the version's layout (``offline_bench.envs.mpe.mpe2_to_force``: the same moves).

    ``offline-bench collect <task>-mixed`` reaches this through the data layer's mixed-collector hook.
    """
    from dataclasses import replace

    from offline_bench.data.catalog import catalog_entry, newest_version
    from offline_bench.data.collection import build_manifest, return_stats
    from offline_bench.data.format import write_dataset
    from offline_bench.envs import task_spec
    from offline_bench.paths import data_root

    buffer_arrays, how = mixed_buffer(task, run_dir, retrain, progress, policies)
    entry = read_index(policies)["tasks"][task]
    log.info("%s mixed data: %s", task, how)
    source = _ReplaySource(task, entry, how, arrays_sha256(buffer_arrays))
    if source.reproduced is False:
        log.warning("%s mixed data differs from the indexed run (sha256 %s vs %s): the last bits of floats, from "
                    "a CPU or code that is not the run's; the manifest records it", task, source.buffer_sha256[:12],
                    entry["mixed"]["sha256"][:12])
    version = newest_version(task) if version is None else version
    target = catalog_entry(f"{task}-mixed-v{version}")
    spec = task_spec(task, target.action_layout)
    note = _conversion_note(task, entry, version)
    if note is None:
        raise ValueError(f"{target.dataset_id} is in the {spec.action_layout} action layout; {task}'s behaviour run "
                         f"trained in {run_action_layout(task, entry)} and cannot make it (collect a newer version)")
    if note:
        from offline_bench.envs.mpe import layout_converter

        convert = layout_converter(run_action_layout(task, entry), spec.action_layout, spec.action_dim)
        buffer_arrays = dict(buffer_arrays, actions=convert(buffer_arrays["actions"]) * spec.action_mask())
    arrays, facts = mixed_file_arrays(buffer_arrays, entry["run"]["seed"], spec.n_agents)
    catalog = replace(target, recipe=_mixed_recipe(task, entry, note))
    manifest_facts = {"last_episode_cut": facts["last_episode_cut"],
                      "episode_returns": return_stats(facts["returns"], facts["lengths"])}
    seeds = {"run_seed": entry["run"]["seed"], "first_env_seed": episode_seed(entry["run"]["seed"], 0)}
    manifest = build_manifest(catalog, spec, source, seeds, len(arrays["terminals"]), manifest_facts,  # type: ignore[arg-type]
                              stored_opponent(task, policies))
    return write_dataset(data_root(root), catalog.dataset_id, arrays, manifest)


__all__ = [
    "NOISE",
    "checkpoint_policy_factory",
    "collect_mixed",
    "mixed_buffer",
    "mixed_collector",
    "mixed_file_arrays",
    "register_behaviour_recipes",
    "retrain_cost",
    "saved_mixed_buffer",
    "stored_opponent",
]
