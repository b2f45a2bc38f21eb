"""Every dataset id offline-bench knows, the recipe that makes it, and each task's reference returns.

Ids are ``<task>-<quality>-v<K>`` (DESIGN.md, "Dataset contract"): 8 tasks x 4 qualities = 32 ids at ``v0``, and
the MPE tasks (spread, tag, world) also at ``v1``, their 2-D "force" action layout (``ACTION_LAYOUT_VERSIONS``).
``<task>-<quality>`` without a version means the newest version; ``medium-replay`` is an alias of ``mixed``.

A recipe says how a dataset is made: which behaviour policy (a name in ``offline_bench.data.policy``'s factory
registry plus its parameters), how many parallel envs step in lock-step (part of the recipe because it fixes the
order of episodes in the file) and the default size. ``random`` recipes are always collectable; the other qualities
need a trained behaviour policy and are listed as "needs behaviour policy" until their recipes are registered with
``register_recipe`` (``offline_bench.behaviour.recipes.register_behaviour_recipes`` registers the medium / expert
rollouts of every committed policy and the ``replay-buffer`` recipe of its mixed data, whose size is fixed).

Reference returns live with the task, not with a dataset: every manifest copies them, and normalized scores
use ``TaskReferences.normalize``.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from offline_bench.paths import policies_root

TASKS: tuple[str, ...] = ("hopper", "halfcheetah", "walker2d", "ant", "spread", "tag", "world", "halfcheetah-2x3")
SINGLE_AGENT_TASKS: tuple[str, ...] = ("hopper", "halfcheetah", "walker2d", "ant")
QUALITIES: tuple[str, ...] = ("random", "medium", "mixed", "expert")
QUALITY_ALIASES: dict[str, str] = {"medium-replay": "mixed", "medium_replay": "mixed"}
DEFAULT_STEPS = 1_000_000  # the papers' dataset size (D4RL, d4rl-pybullet, OMAR)

# The command that measured the `measured_random` numbers below (uniform actions in [-1, 1], fixed seed).
MEASURE_COMMAND = "offline-bench datasets measure-random {task} --episodes 100 --seed 0"


class UnknownDatasetError(KeyError):
    """An id that is not in the catalog."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0])


class MissingReferenceError(ValueError):
    """A normalized score was asked for but a reference return is missing."""


@dataclass(frozen=True)
class TaskReferences:
    """Reference returns of one task, used for normalized scores ``100 * (R - random) / (expert - random)``.

    ``random`` and ``expert`` are what normalization uses. For the PyBullet tasks they are D4RL's published
    ``bullet-*`` REF_MIN / REF_MAX (``d4rl/infos.py``), so scores compare with the literature; our own measured
    uniform-random return is recorded beside them in ``measured_random``. Multi-agent tasks have no published
    references: ``random`` is measured here, ``expert`` stays None until a trained expert exists. Multi-agent
    returns are the team mean of per-agent returns summed over the episode.
    """

    task: str
    random: float | None
    expert: float | None
    source: str
    measured_random: float | None = None  # mean return of uniform actions in [-1, 1]
    measured_random_std: float | None = None
    measured_random_episodes: int = 0
    measured_random_seed: int = 0
    measured_command: str = ""
    measured_random_opponent: str | None = None  # tag / world: sha256 of the frozen opponent it was measured against

    def normalize(self, episode_return: float) -> float:
        """``100 * (R - random) / (expert - random)``; raises ``MissingReferenceError`` when a reference is missing."""
        from offline_bench.evaluate import normalized_score  # the one normalized-score function

        if self.random is None or self.expert is None:
            missing = "expert" if self.expert is None else "random"
            raise MissingReferenceError(
                f"{self.task} has no {missing} reference return yet (no expert behaviour policy in "
                f"datasets/policies/index.json), so normalized scores are undefined; report raw returns"
            )
        return normalized_score(episode_return, self.random, self.expert)

    def to_dict(self) -> dict[str, Any]:
        return {
            "random": self.random,
            "expert": self.expert,
            "source": self.source,
            "measured_random": self.measured_random,
            "measured_random_std": self.measured_random_std,
            "measured_random_episodes": self.measured_random_episodes,
            "measured_random_seed": self.measured_random_seed,
            "measured_command": self.measured_command,
            "measured_random_opponent": self.measured_random_opponent,
            "return_statistic": RETURN_STATISTIC,
        }


RETURN_STATISTIC = "sum of rewards over the episode; multi-agent: mean over learning agents of per-agent sums"

_D4RL = "D4RL d4rl/infos.py bullet-* REF_MIN_SCORE / REF_MAX_SCORE"
_MEASURED = "measured here (uniform-random actions); expert: none until the task has an expert behaviour policy"
_BEHAVIOUR = (
    "datasets/policies/index.json: random = uniform-random actions, expert = the committed expert policy, both the "
    "mean return over the same deterministic evaluation episodes (against the task's frozen opponent, if any)"
)

# Measured with MEASURE_COMMAND (100 episodes, seed 0, 8 envs in lock-step) on 2026-11-23 with pybullet 3.2.7,
# mpe2 1.1.1 / pettingzoo 1.27.0, gymnasium-robotics 1.4.2 / mujoco 4.0.0, numpy 2.4.6: (mean, std over episodes).
# The PyBullet numbers land near D4RL's REF_MIN (hopper 20.06, halfcheetah -1275.8, walker2d 16.5, ant 373.7).
# tag was re-measured the same day against its frozen opponent (before: 3.2 +- 9.37 with a uniform-random prey).
_MEASURED_RANDOM: dict[str, tuple[float, float] | None] = {
    "hopper": (20.876099, 3.971252),  # mean episode length 13.5
    "halfcheetah": (-1250.218086, 111.394415),  # 1000 steps
    "walker2d": (17.219756, 3.568154),  # mean episode length 15.1
    "ant": (397.853675, 171.334447),  # mean episode length 813.0
    "spread": (-24.707825, 7.407394),  # 25 steps
    "tag": (2.0, 7.483315),  # 25 steps; the prey is the task's frozen opponent (_MEASURED_OPPONENT)
    "world": (5.882841, 9.770274),  # 25 steps; the 2 fast agents are the task's frozen opponent (_MEASURED_OPPONENT)
    "halfcheetah-2x3": (-281.874857, 80.963125),  # 1000 steps; shared team reward
}

# tag / world: the sha256 of the frozen opponent (datasets/policies/<task>/opponent.pt) the number above was measured
# against, the same opponent every dataset of the task is collected against; a task missing here was measured
# with uniform-random opponents. When a task's opponent changes, re-measure with MEASURE_COMMAND (a test checks).
_MEASURED_OPPONENT: dict[str, str] = {
    "tag": "a2e157c347195a4d207e6164fc4e30cbb35044a6bc833b6df3fd25c26db8c499",
    "world": "855195cb37199a57c9e566271072209d3bbeafb134897267b3d0cee411292759",
}

_PUBLISHED: dict[str, tuple[float, float]] = {
    "hopper": (20.058972, 1441.8059623430963),
    "halfcheetah": (-1275.766996, 2381.6725),
    "walker2d": (16.523877, 1623.6476303317536),
    "ant": (373.705955, 2650.495),
}


def _make_references(task: str) -> TaskReferences:
    measured = _MEASURED_RANDOM.get(task)
    extra: dict[str, Any] = {}
    if measured is not None:
        extra = dict(
            measured_random=measured[0],
            measured_random_std=measured[1],
            measured_random_episodes=100,
            measured_random_seed=0,
            measured_command=MEASURE_COMMAND.format(task=task),
            measured_random_opponent=_MEASURED_OPPONENT.get(task),
        )
    if task in _PUBLISHED:
        low, high = _PUBLISHED[task]
        return TaskReferences(task=task, random=low, expert=high, source=_D4RL, **extra)
    behaviour = _behaviour_references(task)
    if behaviour is not None:
        return TaskReferences(task=task, random=behaviour[0], expert=behaviour[1], source=_BEHAVIOUR, **extra)
    return TaskReferences(task=task, random=None if measured is None else measured[0], expert=None, source=_MEASURED, **extra)


def _behaviour_references(task: str) -> tuple[float, float] | None:
    """(random, expert) returns that the committed behaviour-policy index measured for ``task``, if it has an expert.

    Multi-agent tasks have no published references, so the expert is our own expert policy; its random reference
    is measured in the same evaluation (same episodes, same opponent) so the two are comparable.
    """
    entry = policy_index().get("tasks", {}).get(task, {})
    expert, random = entry.get("expert", {}).get("return_mean"), entry.get("random", {}).get("return_mean")
    if expert is None or random is None:
        return None
    return float(random), float(expert)


def policy_index(root: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The behaviour-policy index (``datasets/policies/index.json``, or ``<root>/index.json``); empty if none."""
    index_path = Path(root or policies_root()) / "index.json"
    return json.loads(index_path.read_text()) if index_path.exists() else {"tasks": {}}


def retrain_estimates(root: str | os.PathLike[str] | None = None) -> dict[str, tuple[int, float | None]]:
    """Per task with mixed data: (training steps up to the medium policy, minutes that took where it was trained).

    What ``collect <task>-mixed --retrain`` re-runs; minutes scale the recorded run's wall time (None: unknown).
    """
    out: dict[str, tuple[int, float | None]] = {}
    for task, entry in policy_index(root).get("tasks", {}).items():
        steps, run = entry.get("mixed", {}).get("transitions"), entry.get("run", {})
        if steps:
            known = run.get("wall_time_s") and run.get("steps_trained")
            out[task] = (int(steps), run["wall_time_s"] * steps / run["steps_trained"] / 60 if known else None)
    return out


def retrain_cost(task: str, root: str | os.PathLike[str] | None = None) -> str:
    """How long re-running ``task``'s behaviour training up to its medium policy takes, in words."""
    if task not in retrain_estimates(root):
        return f"{task} has no medium policy"
    steps, minutes = retrain_estimates(root)[task]
    run = policy_index(root)["tasks"][task].get("run", {})
    every = int(run.get("trainer_config", {}).get("update_every", 1))
    updates = "per env step" if every == 1 else f"every {every} env steps"
    text = f"{steps} training steps (one {str(run.get('algo', '')).upper()} update {updates})"
    if minutes is not None:
        text += f", about {minutes:.0f} min on {run.get('machine', 'the machine that trained it')}"
    return text


REFERENCES: dict[str, TaskReferences] = {task: _make_references(task) for task in TASKS}


def task_references(task: str) -> TaskReferences:
    """The reference returns of ``task``; raises listing the valid tasks."""
    if task not in REFERENCES:
        raise UnknownDatasetError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}")
    return REFERENCES[task]


@dataclass(frozen=True)
class Recipe:
    """How a dataset is made. Everything here goes into the manifest; changing it means a new id version."""

    quality: str
    kind: str  # "rollouts" (a behaviour policy steps the env) or "replay-buffer" (an online trainer's buffer)
    # rollouts: factory name in offline_bench.data.policy.POLICY_FACTORIES; replay-buffer: the online learner whose
    # buffer it is (collected by the mixed collector the behaviour layer registers); None: not available yet
    policy: str | None
    policy_params: tuple[tuple[str, Any], ...] = ()  # sorted (name, value) pairs, frozen for hashing
    num_envs: int = 8  # envs stepped in lock-step; fixes the order of episodes in the file
    default_steps: int = DEFAULT_STEPS
    description: str = ""
    fixed_steps: int | None = None  # replay-buffer recipes: the dataset is exactly this many transitions

    @property
    def collectable(self) -> bool:
        return self.kind in ("rollouts", "replay-buffer") and self.policy is not None

    @property
    def steps(self) -> int:
        """The dataset's size when ``--steps`` is not given: the fixed size of a replay buffer, else the default."""
        return self.fixed_steps if self.fixed_steps is not None else self.default_steps

    @property
    def status(self) -> str:
        return "collectable" if self.collectable else "needs behaviour policy"

    def params(self) -> dict[str, Any]:
        return dict(self.policy_params)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "quality": self.quality,
            "kind": self.kind,
            "policy": self.policy,
            "policy_params": {k: list(v) if isinstance(v, tuple) else v for k, v in self.policy_params},
            "num_envs": self.num_envs,
            "default_steps": self.default_steps,
            "description": self.description,
        }
        if self.fixed_steps is not None:  # only then, so manifests of rollout datasets keep their exact form
            out.update(default_steps=None, fixed_steps=self.fixed_steps)
        return out


RANDOM_RECIPE = Recipe(
    quality="random",
    kind="rollouts",
    policy="random-init-mlp",
    policy_params=(("activation", "relu"), ("hidden_sizes", (256, 256)), ("log_std_range", (-20.0, 2.0))),
    description=(
        "rollouts of a randomly initialised, untrained SAC-style tanh-Gaussian policy network per agent "
        "(obs -> 256 -> 256 -> mean, log_std; PyTorch default init from the init seed), actions sampled "
        "stochastically: tanh(mean + std * N(0, 1)) with a seeded generator (as d4rl-pybullet and OMAR)"
    ),
)


def _pending_recipe(quality: str) -> Recipe:
    what = {
        "medium": "rollouts of a policy frozen at about a third of expert return",
        "mixed": "every transition of the replay buffer seen while training up to the medium level",
        "expert": "rollouts of a fully trained policy",
    }[quality]
    return Recipe(
        quality=quality,
        kind="replay-buffer" if quality == "mixed" else "rollouts",
        policy=None,
        description=f"{what}; needs behaviour policy (SAC for single-agent, MATD3 for multi-agent tasks)",
    )


@dataclass(frozen=True)
class CatalogEntry:
    dataset_id: str  # "hopper-random-v0"
    task: str
    quality: str
    version: int
    recipe: Recipe = field(repr=False)

    @property
    def name(self) -> str:
        """The id without its version: ``hopper-random``."""
        return f"{self.task}-{self.quality}"

    @property
    def references(self) -> TaskReferences:
        return REFERENCES[self.task]

    @property
    def action_layout(self) -> str | None:
        """How this version's actions reach the simulator (``offline_bench.envs.task_spec``); None: the task's only
        layout."""
        return ACTION_LAYOUT_VERSIONS.get(self.task, {}).get(self.version)


# Dataset versions of the tasks whose action interface changed (``offline_bench.envs.tasks.MPE_ACTION_LAYOUTS``):
# MPE v0 files are in mpe2's own layout (5 dims per agent, 3 of them free), v1 in the 2-D "force" layout.
ACTION_LAYOUT_VERSIONS: dict[str, dict[int, str]] = {task: {0: "mpe2", 1: "force"} for task in ("spread", "tag", "world")}


def dataset_versions(task: str) -> tuple[int, ...]:
    """The id versions every quality of ``task`` has (v0, and v1 where the action layout changed)."""
    return tuple(sorted(ACTION_LAYOUT_VERSIONS.get(task, {0: None})))


def newest_version(task: str) -> int:
    return dataset_versions(task)[-1]


def _initial_catalog() -> dict[str, CatalogEntry]:
    out: dict[str, CatalogEntry] = {}
    for task in TASKS:
        for quality in QUALITIES:
            for version in dataset_versions(task):
                recipe = RANDOM_RECIPE if quality == "random" else _pending_recipe(quality)
                entry = CatalogEntry(f"{task}-{quality}-v{version}", task, quality, version, recipe)
                out[entry.dataset_id] = entry
    return out


CATALOG: dict[str, CatalogEntry] = _initial_catalog()

_ID_RE = re.compile(r"^(?P<name>.+?)(?:-v(?P<version>\d+))?$")


def _split_name(name: str) -> tuple[str, str] | None:
    """``"halfcheetah-2x3-medium-replay"`` -> ``("halfcheetah-2x3", "mixed")``; None if no task/quality fits."""
    for task in sorted(TASKS, key=len, reverse=True):  # longest first: halfcheetah-2x3 before halfcheetah
        if name.startswith(task + "-"):
            quality = name[len(task) + 1 :]
            quality = QUALITY_ALIASES.get(quality, quality)
            if quality in QUALITIES:
                return task, quality
    return None


def resolve_dataset_id(name: str) -> str:
    """Canonical id ``<task>-<quality>-v<K>`` for ``name`` (aliases and a missing version resolved to the newest).

    Raises UnknownDatasetError naming the valid ids.
    """
    text = str(name).strip().lower()
    if text.endswith(".hdf5"):
        text = text[: -len(".hdf5")]
    match = _ID_RE.match(text)
    split = _split_name(match.group("name")) if match else None
    if split is None:
        raise UnknownDatasetError(
            f"unknown dataset {name!r}; valid ids are <task>-<quality>[-v<K>] with task in {{{', '.join(TASKS)}}} "
            f"and quality in {{{', '.join(QUALITIES)}, medium-replay}} (see `offline-bench datasets list`)"
        )
    task, quality = split
    versions = sorted(e.version for e in CATALOG.values() if e.task == task and e.quality == quality)
    if match.group("version") is None:
        return f"{task}-{quality}-v{versions[-1]}"
    version = int(match.group("version"))
    if version not in versions:
        raise UnknownDatasetError(
            f"unknown version v{version} of {task}-{quality}; known: {', '.join(f'v{v}' for v in versions)}"
        )
    return f"{task}-{quality}-v{version}"


def catalog_entry(name: str) -> CatalogEntry:
    """The catalog entry of ``name`` (any spelling ``resolve_dataset_id`` accepts)."""
    return CATALOG[resolve_dataset_id(name)]


def all_dataset_ids() -> list[str]:
    """Every catalog id, task-major in TASKS order, qualities in QUALITIES order, versions ascending."""
    order = {(t, q): i for i, (t, q) in enumerate((t, q) for t in TASKS for q in QUALITIES)}
    return sorted(CATALOG, key=lambda i: (order[(CATALOG[i].task, CATALOG[i].quality)], CATALOG[i].version))


def register_recipe(task: str, quality: str, version: int, recipe: Recipe) -> CatalogEntry:
    """Add or replace the recipe of ``<task>-<quality>-v<version>`` (how later issues plug in behaviour policies).

    Replacing a recipe is only for versions that no one could collect before (policy None); a changed recipe of a
    collectable dataset must take a new version.
    """
    quality = QUALITY_ALIASES.get(quality, quality)
    if task not in TASKS or quality not in QUALITIES:
        raise UnknownDatasetError(f"unknown task/quality {task!r}/{quality!r}; tasks: {TASKS}, qualities: {QUALITIES}")
    dataset_id = f"{task}-{quality}-v{version}"
    old = CATALOG.get(dataset_id)
    if old is not None and old.recipe.collectable and old.recipe != recipe:
        raise ValueError(f"{dataset_id} already has a collectable recipe; register the new one as v{version + 1}")
    entry = CatalogEntry(dataset_id, task, quality, version, replace(recipe, quality=quality))
    CATALOG[dataset_id] = entry
    return entry
