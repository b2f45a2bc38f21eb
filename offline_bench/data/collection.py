"""Collection: a recipe's behaviour policy steps its task's envs, and the transitions become a dataset file.

Seeds all derive from one collection seed ``S`` (``np.random.SeedSequence(S)``): the policy's init seed, its noise
seed, and the first env seed; episode ``k`` (in the order episodes start) resets with ``first_env_seed + k``.
``num_envs`` envs step in lock-step with one batched policy call per step; episodes are stored in the order they
finish (env order within a step), which depends only on the seeds, so the file is reproducible.

The last episode is cut when the size budget is reached; its final row is marked ``timeouts`` (it did not
terminate) and the manifest records ``last_episode_cut``. Episodes still running at that point are dropped.
"""
from __future__ import annotations

import importlib.metadata
import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

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


def _make_envs(task: str, num_envs: int, policy: object | None = None) -> list[Env]:
    """``num_envs`` fresh envs of ``task``. For tag/world the non-learning agents follow ``policy.opponent`` when
    the behaviour policy carries one (a trained prey), else the adapter's uniform-random opponent."""
    opponent = getattr(policy, "opponent", None) if task in OPPONENTS else None
    return [make_env(task, opponent=opponent) for _ in range(num_envs)]


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


def build_manifest(entry: CatalogEntry, spec: TaskSpec, policy: BehaviourPolicy, seeds: dict[str, int],
                   steps: int, facts: dict[str, Any]) -> dict[str, Any]:
    env = {
        "task": spec.name,
        "source": spec.source,
        "description": spec.description,
        "episode_length": spec.episode_length,
        "packages": simulator_versions(spec.name),
    }
    if spec.name in OPPONENTS:
        count = OPPONENTS[spec.name].n_agents
        env["opponents"] = (
            f"{count} non-learning agents follow the behaviour policy's fixed opponent policy"
            if getattr(policy, "opponent", None) is not None
            else f"{count} non-learning agents act uniformly at random, seeded by each episode's env seed"
        )
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
) -> dict[str, Any]:
    """Collect ``dataset_id`` by its recipe and write ``<root>/<id>.hdf5`` + ``<id>.json``; return the manifest.

    ``steps`` defaults to the recipe's size (1,000,000). If the dataset is already collected with the same recipe,
    steps, seed and package versions and it verifies, it is kept and its manifest returned (the file would come
    out byte-identical). A collected dataset made differently is replaced only with ``force`` (else
    DatasetExistsError). Raises NotCollectableError for recipes whose behaviour policy does not exist yet.
    """
    entry = catalog_entry(dataset_id)
    recipe = entry.recipe
    if not recipe.collectable:
        raise NotCollectableError(
            f"{entry.dataset_id} cannot be collected yet: {recipe.description}; only the random datasets are "
            f"collectable until the behaviour-data issue adds these recipes (try `offline-bench collect {entry.task}-random`)"
        )
    steps = recipe.default_steps if steps is None else int(steps)
    if steps < 1:
        raise ValueError(f"--steps must be at least 1, got {steps}")
    spec = task_spec(entry.task)
    seeds = derive_seeds(seed)
    policy = make_policy(recipe.policy, spec, recipe.params(), seeds["policy_init_seed"], seeds["policy_noise_seed"])
    if not force:
        existing = _existing_collection(entry.dataset_id, root, steps, seed, entry, spec, policy)
        if existing is not None:
            return existing
    log.info("collecting %s: %d transitions, seed %d, %d envs", entry.dataset_id, steps, seed, recipe.num_envs)
    envs = _make_envs(entry.task, recipe.num_envs, policy)
    try:
        arrays, facts = rollout_arrays(spec, envs, policy, steps, seeds["first_env_seed"], progress)
    finally:
        for env in envs:
            env.close()
    manifest = build_manifest(entry, spec, policy, seeds, steps, facts)
    full = write_dataset(data_root(root), entry.dataset_id, arrays, manifest)
    log.info("wrote %s (%d episodes, sha256 %s)", entry.dataset_id, full["episodes"], full["sha256"][:12])
    return full


def _existing_collection(dataset_id: str, root: str | os.PathLike[str] | None, steps: int, seed: int,
                         entry: CatalogEntry, spec: TaskSpec, policy: BehaviourPolicy) -> dict[str, Any] | None:
    """The manifest of an identical, verified collection already in ``root``; None if there is none (or it is
    damaged, so collecting again repairs it); DatasetExistsError if a different one is there."""
    if dataset_status(dataset_id, root) != "collected":
        return None
    try:
        old = load_dataset(dataset_id, root).manifest
    except DatasetError as exc:
        log.warning("replacing %s, which does not verify: %s", dataset_id, exc)
        return None
    wanted = build_manifest(entry, spec, policy, derive_seeds(seed), steps, {"last_episode_cut": None,
                                                                           "episode_returns": None})
    keys = ("requested_steps", "seeds", "recipe", "behaviour_policy", "env", "package_version")
    differs = [k for k in keys if old.get(k) != json.loads(json.dumps(wanted[k]))]
    if differs:
        raise DatasetExistsError(
            f"{dataset_id} already exists in {data_root(root)} made differently ({', '.join(differs)} differ: it has "
            f"{old.get('requested_steps')} steps, seed {old.get('seeds', {}).get('seed')}); pass --force to replace "
            "it, or use another --root"
        )
    log.info("%s is already collected identically in %s and verifies; keeping it", dataset_id, data_root(root))
    return old


def measure_random_return(
    task: str, episodes: int = 100, seed: int = 0, num_envs: int = 8, progress: Progress | None = None
) -> dict[str, Any]:
    """Mean return of uniform actions in [-1, 1] over ``episodes`` episodes (the measured random reference).

    Multi-agent returns are the team mean of per-agent returns. Episode ``k`` resets with env seed
    ``derive_seeds(seed)["first_env_seed"] + k``; actions come from ``np.random.default_rng(policy_noise_seed)``.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be at least 1, got {episodes}")
    spec = task_spec(task)
    seeds = derive_seeds(seed)
    policy = UniformPolicy(spec, seeds["policy_noise_seed"])
    envs = _make_envs(task, min(num_envs, episodes))
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
    stats.update(task=task, seed=seed, policy="uniform actions in [-1, 1]", num_envs=len(envs))
    return stats
