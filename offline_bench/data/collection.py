"""Collection: a recipe's behaviour policy steps its task's envs, and the transitions become a dataset file.

Seeds all derive from one collection seed ``S`` (``np.random.SeedSequence(S)``): the policy's init seed, its noise
seed, and the first env seed; episode ``k`` (in the order episodes start) resets with ``first_env_seed + k``.
``num_envs`` envs step in lock-step with one batched policy call per step; episodes are stored in the order they
finish (env order within a step), which depends only on the seeds, so the file is reproducible.

The last episode is cut when the size budget is reached; its final row is marked ``timeouts`` (it did not
terminate) and the manifest records ``last_episode_cut``. Episodes still running at that point are dropped.

Two things come from the behaviour layer through hooks it registers (``register_mixed_collector``,
``register_opponent_loader``; ``offline_bench.behaviour.recipes.register_behaviour_recipes`` does both), so this
module never imports it at import time; when a dataset needs them and nothing registered any, the repository's
own behaviour layer is registered then:

- ``mixed`` (replay-buffer) datasets are the behaviour run's buffer, not rollouts: ``collect`` hands them to the
  mixed collector. Their size is fixed by the run (the buffer up to the medium step), so ``steps`` must be left
  out or equal that size; a prefix would be the start of training alone, not the mixed data.
- ``tag`` / ``world``: every dataset of the task (random, medium, mixed, expert), and the measured random
  reference, runs against the same frozen opponent ``datasets/policies/<task>/opponent.pt`` when the index has
  one; the manifest's ``env.opponents`` names it with its sha256. Without one the adapter's uniform-random
  opponent is used, and the manifest says so.
"""
from __future__ import annotations

import importlib.metadata
import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from offline_bench import __version__
from offline_bench.data.catalog import (
    SINGLE_AGENT_TASKS,
    CatalogEntry,
    catalog_entry,
    task_references,
)
from offline_bench.data.dataset import dataset_status, load_dataset
from offline_bench.data.format import DatasetError, write_dataset
from offline_bench.data.policy import BehaviourPolicy, UniformPolicy, make_policy
from offline_bench.envs import OPPONENTS, Env, TaskSpec, make_env, task_spec
from offline_bench.envs.tasks import LEGACY_ACTION_LAYOUT
from offline_bench.paths import data_root

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (transitions done, transitions total)

_SIMULATOR_PACKAGES = {
    "pybullet": ("pybullet",),
    "mpe": ("mpe2", "pettingzoo"),
    "mamujoco": ("gymnasium-robotics", "mujoco", "gymnasium"),
}
_COMMON_PACKAGES = ("numpy", "torch", "h5py")


class NotCollectableError(ValueError):
    """The dataset's recipe needs something that does not exist yet (a trained behaviour policy)."""


class DatasetExistsError(ValueError):
    """A dataset of the same id, made differently, is already collected in the root."""


# ------------------------------------------------------------------------ hooks the behaviour layer registers
@dataclass(frozen=True)
class FixedOpponent:
    """A task's frozen opponent policy (tag's prey, world's fast agents) and what the manifest records about it."""

    act: Callable[[np.ndarray], np.ndarray]  # the env adapters' opponent: obs [M, O_opp] -> actions [M, A_opp]
    sha256: str
    file: str  # relative to the policies folder, e.g. "tag/opponent.pt"
    step: int | None = None  # co-training steps before it was frozen


OpponentLoader = Callable[[str], "FixedOpponent | None"]


class MixedCollector(Protocol):
    def __call__(self, task: str, *, version: int, root: str | os.PathLike[str] | None,
                 run_dir: str | os.PathLike[str] | None, retrain: bool, progress: Progress | None) -> dict[str, Any]:
        """Write ``<task>-mixed-v<version>`` into ``root`` (atomically) and return its manifest."""
        ...


_HOOKS: dict[str, Any] = {}


def register_mixed_collector(collector: MixedCollector) -> None:
    """The function that writes a task's mixed (replay-buffer) dataset; ``collect`` of a mixed id calls it."""
    _HOOKS["mixed"] = collector


def register_opponent_loader(loader: OpponentLoader) -> None:
    """The function that returns a task's stored frozen opponent (or None); every tag / world dataset uses it."""
    _HOOKS["opponent"] = loader


def _hook(name: str) -> Any:
    """A registered hook; the first time one is needed and none is registered, the repository's behaviour layer
    registers its own (imported only now, so loading and sampling data never import it)."""
    if not _HOOKS:
        import importlib

        importlib.import_module("offline_bench.behaviour.recipes").register_behaviour_recipes()
    return _HOOKS.get(name)


def ensure_behaviour_recipes() -> None:
    """Make the catalog know the repository's behaviour recipes (medium / mixed / expert of the committed policies)
    when no caller has registered them yet; callers that ask "is this id collectable?" use it."""
    _hook("mixed")


def task_opponent(task: str) -> FixedOpponent | None:
    """The frozen opponent every dataset of ``task`` is collected against; None: uniform-random opponents
    (``task`` has none stored yet, or has no opponents at all)."""
    if task not in OPPONENTS:
        return None
    loader = _hook("opponent")
    return None if loader is None else loader(task)


def opponent_facts(task: str, opponent: FixedOpponent | None) -> dict[str, Any] | None:
    """What a manifest records (``env.opponents``) about the non-learning agents of ``task``; None if it has none.

    ``kind`` says which opponent it was (the train loop evaluates against the same one, checking ``sha256``).
    """
    if task not in OPPONENTS:
        return None
    count = OPPONENTS[task].n_agents
    if opponent is None:
        return {
            "kind": "uniform random",
            "count": count,
            "sha256": None,
            "description": f"{count} non-learning agent(s) act uniformly at random, seeded by each episode's env "
            f"seed: {task} has no stored frozen opponent (datasets/policies/{task}/opponent.pt) yet",
        }
    return {
        "kind": "fixed opponent policy",
        "count": count,
        "sha256": opponent.sha256,
        "file": opponent.file,
        "step": opponent.step,
        "description": f"{count} non-learning agent(s) follow the frozen opponent policy datasets/policies/"
        f"{opponent.file} (deterministic), the same for every dataset of {task}",
    }


@dataclass
class Episode:
    seed: int
    obs: np.ndarray  # [L, N, O] float32
    action: np.ndarray  # [L, N, A] float32
    reward: np.ndarray  # [L, N] float32
    next_obs: np.ndarray  # [L, N, O] float32
    terminated: bool  # the last row is a true terminal state
    truncated: bool  # the last row hit the time limit

    def __len__(self) -> int:
        return int(self.reward.shape[0])

    @property
    def team_return(self) -> float:
        """Mean over agents of per-agent returns."""
        return float(self.reward.astype(np.float64).sum(axis=0).mean())


def simulator_versions(task: str) -> dict[str, str]:
    """Installed versions of the packages that simulate ``task`` (and of numpy/torch/h5py)."""
    family = "pybullet" if task in SINGLE_AGENT_TASKS else "mamujoco" if task == "halfcheetah-2x3" else "mpe"
    out: dict[str, str] = {}
    for package in (*_SIMULATOR_PACKAGES[family], *_COMMON_PACKAGES):
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            out[package] = "not installed"
    return out


def derive_seeds(seed: int) -> dict[str, int]:
    """Policy init seed, policy noise seed and first env seed from one collection seed."""
    init_seed, noise_seed, env_seed = (int(s) for s in np.random.SeedSequence(int(seed)).generate_state(3))
    return {
        "seed": int(seed),
        "policy_init_seed": init_seed & 0x7FFFFFFF,
        "policy_noise_seed": noise_seed & 0x7FFFFFFF,
        "first_env_seed": env_seed & 0x3FFFFFFF,  # room for 2**30 episodes below 2**31
    }


def run_episodes(
    envs: list[Env], policy: BehaviourPolicy, first_seed: int, limit: int | None = None
) -> Iterator[Episode]:
    """Step ``envs`` in lock-step under ``policy``, yielding episodes as they finish.

    Episode ``k`` (in order of starting) resets with seed ``first_seed + k``. With ``limit``, exactly episodes
    ``0 .. limit-1`` are run (no others start, none is dropped); without it, stop by leaving the loop.
    """
    spec = envs[0].spec
    e_count = len(envs)
    action_mask = np.zeros((spec.n_agents, spec.action_dim), dtype=np.float32)  # [N, A]: 1 on each agent's own dims
    for i, size in enumerate(spec.action_sizes):
        action_mask[i, :size] = 1.0
    started = 0
    seeds = [0] * e_count
    active = [False] * e_count
    obs = np.zeros((e_count, spec.n_agents, spec.obs_dim), dtype=np.float32)  # [E, N, O]
    rows: list[list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]] = [[] for _ in range(e_count)]

    def start(e: int) -> None:
        nonlocal started
        if limit is not None and started >= limit:
            active[e] = False
            return
        seeds[e], started, active[e] = first_seed + started, started + 1, True
        obs[e] = envs[e].reset(seeds[e])

    for e in range(e_count):
        start(e)
    while any(active):
        actions = np.clip(policy.act(obs), -1.0, 1.0) * action_mask  # [E, N, A]; padding dims stored as zeros
        for e, env in enumerate(envs):
            if not active[e]:
                continue
            result = env.step(actions[e])
            rows[e].append((obs[e].copy(), actions[e], np.array(result.reward), np.array(result.obs)))
            if result.terminated or result.truncated:
                o, a, r, o2 = (np.stack(column) for column in zip(*rows[e]))  # [L, N, ...]
                yield Episode(seeds[e], o, a, r, o2, result.terminated, result.truncated)
                rows[e] = []
                start(e)
            else:
                obs[e] = result.obs


def _make_envs(spec: TaskSpec, num_envs: int, opponent: FixedOpponent | None = None) -> list[Env]:
    """``num_envs`` fresh envs of ``spec``'s task in its action layout; tag / world's non-learning agents follow
    ``opponent`` when given, else the adapter's uniform-random opponent."""
    act = None if opponent is None else opponent.act
    return [make_env(spec.name, opponent=act, action_layout=spec.action_layout) for _ in range(num_envs)]


def rollout_arrays(
    spec: TaskSpec,
    envs: list[Env],
    policy: BehaviourPolicy,
    steps: int,
    first_env_seed: int,
    progress: Progress | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Exactly ``steps`` transitions in the file layout (no agent axis when N = 1) plus facts for the manifest."""
    n, o, a = spec.n_agents, spec.obs_dim, spec.action_dim
    obs = np.zeros((steps, n, o), dtype=np.float32)  # [T, N, O]
    next_obs = np.zeros((steps, n, o), dtype=np.float32)  # [T, N, O]
    action = np.zeros((steps, n, a), dtype=np.float32)  # [T, N, A]
    reward = np.zeros((steps, n), dtype=np.float32)  # [T, N]
    terminals = np.zeros(steps, dtype=bool)
    timeouts = np.zeros(steps, dtype=bool)
    starts: list[int] = []
    seeds: list[int] = []
    returns: list[float] = []
    lengths: list[int] = []
    cut = False
    row = 0
    if steps > 0:
        for episode in run_episodes(envs, policy, first_env_seed):
            take = min(len(episode), steps - row)
            span = slice(row, row + take)
            obs[span], action[span] = episode.obs[:take], episode.action[:take]
            reward[span], next_obs[span] = episode.reward[:take], episode.next_obs[:take]
            starts.append(row)
            seeds.append(episode.seed)
            row += take
            if take < len(episode):
                timeouts[row - 1] = True  # cut by the size budget: not a terminal state
                cut = True
            else:
                terminals[row - 1] = episode.terminated
                timeouts[row - 1] = not episode.terminated
                returns.append(episode.team_return)
                lengths.append(len(episode))
            if progress is not None:
                progress(row, steps)
            if row >= steps:
                break
    arrays = {
        "observations": obs[:, 0] if n == 1 else obs,  # [T, O] for single-agent data (D4RL layout)
        "actions": action[:, 0] if n == 1 else action,
        "rewards": reward[:, 0] if n == 1 else reward,  # [T] or [T, N]
        "next_observations": next_obs[:, 0] if n == 1 else next_obs,
        "terminals": terminals,
        "timeouts": timeouts,
        "episode_starts": np.asarray(starts, dtype=np.int64),
        "episode_seeds": np.asarray(seeds, dtype=np.int64),
    }
    facts = {"last_episode_cut": cut, "episode_returns": return_stats(returns, lengths)}
    return arrays, facts


def return_stats(returns: list[float], lengths: list[int]) -> dict[str, Any]:
    """Summary of complete episodes' returns (team mean for multi-agent data)."""
    r = np.asarray(returns, dtype=np.float64)
    length = np.asarray(lengths, dtype=np.float64)
    if len(r) == 0:
        return {"episodes": 0, "mean": None, "std": None, "min": None, "max": None, "mean_length": None,
                "statistic": "complete episodes only"}
    return {
        "episodes": int(len(r)),
        "mean": float(r.mean()),
        "std": float(r.std()),
        "min": float(r.min()),
        "max": float(r.max()),
        "mean_length": float(length.mean()),
        "statistic": "complete episodes only (a budget-cut last episode is excluded); "
        "multi-agent: mean over agents of per-agent returns",
    }


def env_facts(spec: TaskSpec, opponent: FixedOpponent | None = None) -> dict[str, Any]:
    """The manifest's ``env``: task, source, episode length, simulator versions and (tag / world) the opponents."""
    env: dict[str, Any] = {
        "task": spec.name,
        "source": spec.source,
        "description": spec.description,
        "episode_length": spec.episode_length,
        "packages": simulator_versions(spec.name),
    }
    if spec.action_layout not in (None, LEGACY_ACTION_LAYOUT):  # v0 MPE manifests predate the field
        env["action_layout"] = spec.action_layout
    opponents = opponent_facts(spec.name, opponent)
    if opponents is not None:
        env["opponents"] = opponents
    return env


def build_manifest(entry: CatalogEntry, spec: TaskSpec, policy: BehaviourPolicy, seeds: dict[str, Any],
                   steps: int, facts: dict[str, Any], opponent: FixedOpponent | None = None) -> dict[str, Any]:
    """The manifest of a dataset (``write_dataset`` adds sizes, arrays and the sha256); ``opponent``: the frozen
    opponent tag / world ran against (None: uniform random)."""
    env = env_facts(spec, opponent)
    return {
        "dataset_id": entry.dataset_id,
        "task": entry.task,
        "quality": entry.quality,
        "version": entry.version,
        "package": "offline-bench",
        "package_version": __version__,
        "env": env,
        "n_agents": spec.n_agents,
        "obs_sizes": list(spec.obs_sizes),
        "action_sizes": list(spec.action_sizes),
        "recipe": entry.recipe.to_dict(),
        "behaviour_policy": policy.describe(),
        "seeds": dict(seeds, episode_seeds="dataset `episode_seeds` (env seed of each episode, in file order)"),
        "requested_steps": steps,
        "last_episode_cut": facts["last_episode_cut"],
        "episode_returns": facts["episode_returns"],
        "references": task_references(entry.task).to_dict(),
    }


def collect(
    dataset_id: str,
    steps: int | None = None,
    seed: int = 0,
    root: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
    force: bool = False,
    retrain: bool = False,
    run_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Collect ``dataset_id`` by its recipe and write ``<root>/<id>.hdf5`` + ``<id>.json``; return the manifest.

    ``steps`` defaults to the recipe's size (1,000,000). If the dataset is already collected with the same recipe,
    steps, seed and package versions and it verifies, it is kept and its manifest returned (the file would come
    out byte-identical). A collected dataset made differently is replaced only with ``force`` (else
    DatasetExistsError). Raises NotCollectableError for recipes whose behaviour policy does not exist yet.

    Mixed (replay-buffer) datasets: the behaviour run's buffer up to the medium step, taken from the saved run in
    ``run_dir`` (default ``runs/behaviour/<task>/seed<k>``); with ``retrain``, when no run is saved there, the
    deterministic training is re-run up to the medium step (``progress`` then counts training steps). Their size
    is fixed: ``steps`` must be None or equal it, and ``seed`` must be 0 (the run's own seeds apply).
    """
    entry = catalog_entry(dataset_id)
    if not entry.recipe.collectable and not _HOOKS:  # the behaviour layer registers medium / mixed / expert recipes
        _hook("mixed")
        entry = catalog_entry(dataset_id)
    recipe = entry.recipe
    if not recipe.collectable:
        raise NotCollectableError(_not_collectable_message(entry))
    if recipe.kind == "replay-buffer":
        return _collect_replay_buffer(entry, steps, seed, root, progress, force, retrain, run_dir)
    if retrain or run_dir is not None:
        raise ValueError(
            f"{'--retrain' if retrain else '--workdir'} applies to mixed datasets only; {entry.dataset_id} is made of "
            "rollouts of "
            f"{'a randomly initialised policy' if entry.quality == 'random' else 'the committed ' + entry.quality + ' policy'}"
            f" (to train behaviour policies again: offline-bench behaviour train {entry.task})"
        )
    steps = recipe.steps if steps is None else int(steps)
    if steps < 1:
        raise ValueError(f"--steps must be at least 1, got {steps}")
    spec = task_spec(entry.task, entry.action_layout)
    seeds = derive_seeds(seed)
    policy = make_policy(recipe.policy, spec, recipe.params(), seeds["policy_init_seed"], seeds["policy_noise_seed"])
    opponent = task_opponent(entry.task)
    wanted = build_manifest(entry, spec, policy, seeds, steps, {"last_episode_cut": None, "episode_returns": None},
                            opponent)
    if not force:
        existing = _existing_collection(entry.dataset_id, root, wanted, f"{steps} steps, seed {seed}")
        if existing is not None:
            return existing
    log.info("collecting %s: %d transitions, seed %d, %d envs", entry.dataset_id, steps, seed, recipe.num_envs)
    envs = _make_envs(spec, recipe.num_envs, opponent)
    try:
        arrays, facts = rollout_arrays(spec, envs, policy, steps, seeds["first_env_seed"], progress)
    finally:
        for env in envs:
            env.close()
    manifest = build_manifest(entry, spec, policy, seeds, steps, facts, opponent)
    full = write_dataset(data_root(root), entry.dataset_id, arrays, manifest)
    log.info("wrote %s (%d episodes, sha256 %s)", entry.dataset_id, full["episodes"], full["sha256"][:12])
    return full


def _not_collectable_message(entry: CatalogEntry) -> str:
    policy = "medium" if entry.quality == "mixed" else entry.quality
    what = "the replay buffer of the run that trained it" if entry.quality == "mixed" else "its rollouts"
    return (
        f"{entry.dataset_id} cannot be collected yet: {entry.task} has no {policy} behaviour policy in "
        f"datasets/policies/index.json ({entry.quality} data is {what}); train one with `offline-bench behaviour "
        f"train {entry.task}` and export it with `offline-bench behaviour export {entry.task}` "
        f"(`offline-bench collect {entry.task}-random` works now)"
    )


def _collect_replay_buffer(entry: CatalogEntry, steps: int | None, seed: int, root: str | os.PathLike[str] | None,
                           progress: Progress | None, force: bool, retrain: bool,
                           run_dir: str | os.PathLike[str] | None) -> dict[str, Any]:
    """A mixed dataset: checks, the identical-collection shortcut, then the behaviour layer's mixed collector."""
    size = entry.recipe.steps
    if steps is not None and int(steps) != size:
        raise ValueError(
            f"{entry.dataset_id} has a fixed size: the {size} transitions of the behaviour run's replay buffer up to "
            f"its medium policy (a prefix would hold only the start of training); leave out --steps"
        )
    if seed != 0:
        raise ValueError(f"--seed does not apply to {entry.dataset_id}: it is the behaviour run's own replay buffer, "
                         f"made with that run's seeds; leave out --seed")
    collector = _hook("mixed")
    if collector is None:
        raise NotCollectableError(f"{entry.dataset_id} needs the behaviour layer's mixed collector, and none is "
                                  "registered (offline_bench.behaviour.recipes.register_behaviour_recipes)")
    if not force:
        wanted = {"recipe": entry.recipe.to_dict(), "package_version": __version__,
                  "env": env_facts(task_spec(entry.task, entry.action_layout), task_opponent(entry.task))}
        existing = _existing_collection(entry.dataset_id, root, wanted, f"{size} transitions")
        if existing is not None:
            return existing
    log.info("collecting %s: the behaviour run's replay buffer, %d transitions", entry.dataset_id, size)
    manifest: dict[str, Any] = collector(entry.task, version=entry.version, root=root, run_dir=run_dir,
                                         retrain=retrain, progress=progress)
    if progress is not None:
        progress(manifest["transitions"], manifest["transitions"])
    return manifest


def _existing_collection(dataset_id: str, root: str | os.PathLike[str] | None, wanted: dict[str, Any],
                         made: str) -> dict[str, Any] | None:
    """The manifest of an identical, verified collection already in ``root``; None if there is none (or it is
    damaged, so collecting again repairs it); DatasetExistsError if a different one is there.

    ``wanted``: the manifest fields that define the dataset (a rollout manifest without its results); ``made``
    describes the requested collection for the error message.
    """
    if dataset_status(dataset_id, root) != "collected":
        return None
    try:
        old = load_dataset(dataset_id, root).manifest
    except DatasetError as exc:
        log.warning("replacing %s, which does not verify: %s", dataset_id, exc)
        return None
    keys = [k for k in ("requested_steps", "seeds", "recipe", "behaviour_policy", "env", "package_version")
            if k in wanted]
    differs = [k for k in keys if old.get(k) != json.loads(json.dumps(wanted[k]))]
    if differs:
        raise DatasetExistsError(
            f"{dataset_id} already exists in {data_root(root)} made differently ({', '.join(differs)} differ: it has "
            f"{old.get('requested_steps')} steps, seed {old.get('seeds', {}).get('seed')}; asked for {made}); pass "
            "--force to replace it, or use another --root"
        )
    log.info("%s is already collected identically in %s and verifies; keeping it", dataset_id, data_root(root))
    return old


def measure_random_return(
    task: str, episodes: int = 100, seed: int = 0, num_envs: int = 8, progress: Progress | None = None
) -> dict[str, Any]:
    """Mean return of uniform actions in [-1, 1] over ``episodes`` episodes (the measured random reference): uniform
    over the simulator's own action box, also for the MPE tasks, whose default layout is not that box
    (``UniformPolicy``), so the reference is the same for every dataset version.

    Multi-agent returns are the team mean of per-agent returns. Episode ``k`` resets with env seed
    ``derive_seeds(seed)["first_env_seed"] + k``; actions come from ``np.random.default_rng(policy_noise_seed)``.
    tag / world run against the task's frozen opponent, as its datasets do (``opponent``: its sha256, or None
    for uniform-random opponents).
    """
    if episodes < 1:
        raise ValueError(f"episodes must be at least 1, got {episodes}")
    spec = task_spec(task)
    seeds = derive_seeds(seed)
    policy = UniformPolicy(spec, seeds["policy_noise_seed"])
    opponent = task_opponent(task)
    envs = _make_envs(spec, min(num_envs, episodes), opponent)
    returns: list[float] = []
    lengths: list[int] = []
    try:
        for episode in run_episodes(envs, policy, seeds["first_env_seed"], limit=episodes):
            returns.append(episode.team_return)
            lengths.append(len(episode))
            if progress is not None:
                progress(len(returns), episodes)
    finally:
        for env in envs:
            env.close()
    stats = return_stats(returns, lengths)
    stats.update(task=task, seed=seed, policy="uniform actions in [-1, 1]", num_envs=len(envs),
                 opponent=None if opponent is None else opponent.sha256)
    opponents = opponent_facts(task, opponent)
    if opponents is not None:
        stats["opponents"] = opponents["description"]
    return stats
