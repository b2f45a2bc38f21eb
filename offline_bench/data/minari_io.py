"""Minari interop: export a collected dataset as the local Minari dataset ``offline-bench/<id>``, and import
single-agent Minari datasets into our format.

Export writes one Minari episode per episode of the file: observations ``[L + 1, ...]`` (the episode's observations
followed by its last ``next_observations`` row), actions, rewards, terminations (= ``terminals``) and truncations
(= ``timeouts``), and each episode's env seed. Single-agent data keeps Minari's usual shapes (``[O]``, ``[A]``,
scalar rewards); multi-agent data uses Box spaces ``[N, O]`` / ``[N, A]``, the team-mean reward as Minari's scalar
reward and the per-agent rewards ``[L, N]`` in the episode infos (``agent_rewards``). Our manifest travels in the
Minari dataset's ``description`` (JSON). Minari writes under ``$MINARI_DATASETS_PATH`` (default
``~/.minari/datasets``).
"""
from __future__ import annotations

import json
import logging
import os
import warnings
from typing import Any

import numpy as np

from offline_bench.data.catalog import catalog_entry, resolve_dataset_id, task_references
from offline_bench.data.collection import return_stats
from offline_bench.data.dataset import Dataset, dataset_status, load_dataset
from offline_bench.data.format import write_dataset
from offline_bench.envs.tasks import task_spec
from offline_bench.paths import data_root

log = logging.getLogger(__name__)

NAMESPACE = "offline-bench"


class MinariError(ValueError):
    """A Minari dataset cannot be exported or imported; the message says why and what to do."""


def minari_id(dataset_id: str) -> str:
    """``hopper-random`` -> ``offline-bench/hopper-random-v0``."""
    return f"{NAMESPACE}/{resolve_dataset_id(dataset_id)}"


def _episode_buffers(dataset: Dataset) -> list[Any]:
    from minari.data_collector import EpisodeBuffer

    buffers = []
    for k, (start, end) in enumerate(zip(dataset.episode_starts, dataset.episode_ends())):
        rows = slice(int(start), int(end) + 1)
        obs = np.concatenate([dataset.observations[rows], dataset.next_observations[end : end + 1]])  # [L+1, ...]
        rewards = dataset.rewards[rows]  # [L] or [L, N]
        infos: dict[str, Any] = {}
        if dataset.multi_agent:
            infos["agent_rewards"] = rewards  # [L, N]
            rewards = rewards.mean(axis=1)  # [L] team mean
        seed = int(dataset.episode_seeds[k])
        buffers.append(
            EpisodeBuffer(
                id=k,
                seed=seed if seed >= 0 else None,
                observations=obs,
                actions=dataset.actions[rows],
                rewards=rewards,
                terminations=dataset.terminals[rows],
                truncations=dataset.timeouts[rows],
                infos=infos,
            )
        )
    return buffers


def export_minari(dataset_id: str, root: str | os.PathLike[str] | None = None, force: bool = False) -> str:
    """Export a collected dataset as the local Minari dataset ``offline-bench/<id>``; returns that Minari id."""
    import gymnasium as gym
    import minari

    dataset = load_dataset(dataset_id, root)
    target = minari_id(dataset.dataset_id)
    if target in minari.list_local_datasets():
        if not force:
            raise MinariError(f"Minari dataset {target} already exists; pass --force to replace it")
        minari.delete_dataset(target)
    inner = np.setdiff1d(np.arange(dataset.transitions - 1), dataset.episode_ends())  # rows followed by their episode
    if not np.array_equal(dataset.next_observations[inner], dataset.observations[inner + 1]):
        raise MinariError(
            f"{dataset.dataset_id}: next_observations do not continue into the next row inside episodes, so Minari's "
            "one-observation-sequence-per-episode layout cannot hold them; nothing was exported"
        )
    obs_shape = dataset.observations.shape[1:]
    action_shape = dataset.actions.shape[1:]
    with warnings.catch_warnings():  # Minari warns about unset optional metadata (eval env, permalink)
        warnings.simplefilter("ignore", UserWarning)
        minari.create_dataset_from_buffers(
            target,
            _episode_buffers(dataset),
            observation_space=gym.spaces.Box(-np.inf, np.inf, obs_shape, np.float32),
            action_space=gym.spaces.Box(-1.0, 1.0, action_shape, np.float32),
            algorithm_name=f"offline-bench {dataset.manifest['recipe'].get('policy') or dataset.manifest['recipe'].get('kind')}",
            author="offline-bench",
            author_email="offline-bench@localhost",
            code_permalink="offline-bench",
            description=json.dumps(dataset.manifest, sort_keys=True),
        )
    log.info("exported %s as Minari dataset %s", dataset.dataset_id, target)
    return target


def import_minari(
    source_id: str, dataset_id: str | None = None, root: str | os.PathLike[str] | None = None, force: bool = False
) -> dict[str, Any]:
    """Import a single-agent Minari dataset (Box observations and actions) as ``dataset_id`` (a catalog id).

    ``dataset_id`` defaults to the Minari name without the ``offline-bench/`` namespace. Observation and action
    sizes must match the task's; actions are mapped from the Minari action bounds onto [-1, 1]. A dataset of that
    id already in ``root`` (collected or imported, even half-written) is replaced only with ``force``; without it
    nothing is written. Episode-return statistics follow ``collect``'s: complete episodes only, so an offline-bench
    export whose last episode was cut by the size budget imports with the statistics it was collected with.
    """
    import gymnasium as gym
    import minari

    if source_id not in minari.list_local_datasets():
        raise MinariError(
            f"no local Minari dataset {source_id!r} under {os.environ.get('MINARI_DATASETS_PATH', '~/.minari/datasets')}; "
            f"download it with `minari download {source_id}` or export one with `offline-bench datasets export`"
        )
    if dataset_id is None:
        if not source_id.startswith(NAMESPACE + "/"):
            raise MinariError(f"{source_id} is not an offline-bench export; name the target with --as <task>-<quality>")
        dataset_id = source_id[len(NAMESPACE) + 1 :]
    entry = catalog_entry(dataset_id)
    spec = task_spec(entry.task, entry.action_layout)
    if spec.n_agents != 1:
        raise MinariError(f"import supports single-agent datasets only; {entry.dataset_id} is {spec.n_agents}-agent")
    if not force and dataset_status(entry.dataset_id, root) != "missing":
        raise MinariError(
            f"{entry.dataset_id} already exists in {data_root(root)}; pass --force to replace it, import it "
            f"--as another id, or use another --root"
        )
    source = minari.load_dataset(source_id)
    obs_space, action_space = source.observation_space, source.action_space
    if not isinstance(obs_space, gym.spaces.Box) or not isinstance(action_space, gym.spaces.Box):
        raise MinariError(f"{source_id}: only Box observation and action spaces can be imported")
    if obs_space.shape != (spec.obs_dim,) or action_space.shape != (spec.action_dim,):
        raise MinariError(
            f"{source_id} has observations {list(obs_space.shape)} and actions {list(action_space.shape)}, but task "
            f"{spec.name} has [{spec.obs_dim}] and [{spec.action_dim}]; import it as a dataset of a matching task"
        )
    low = np.asarray(action_space.low, dtype=np.float64)
    high = np.asarray(action_space.high, dtype=np.float64)
    if not (np.isfinite(low).all() and np.isfinite(high).all()):
        raise MinariError(f"{source_id}: the action space is unbounded, so actions cannot be mapped onto [-1, 1]")
    columns: dict[str, list[np.ndarray]] = {k: [] for k in ("o", "a", "r", "o2", "term", "trunc")}
    starts, seeds = [], []
    returns: list[float] = []  # of complete episodes, as collect computes them (Episode.team_return)
    lengths: list[int] = []
    original = _original_manifest(source.storage.metadata.get("description"))
    episodes = len(source.episode_indices)
    # An export's budget-cut last episode ends on a timeout row like any time-limited one: only our manifest tells.
    cut_last = bool(original.get("last_episode_cut", False))
    row = 0
    metadata = source.storage.get_episode_metadata(list(source.episode_indices))
    for k, (episode, meta) in enumerate(zip(source.iterate_episodes(), metadata)):
        last = k == episodes - 1
        length = len(episode.rewards)
        obs = np.asarray(episode.observations, dtype=np.float32)  # [L+1, O]
        action = (2.0 * (np.asarray(episode.actions, dtype=np.float64) - low) / (high - low) - 1.0).astype(np.float32)
        reward = np.asarray(episode.rewards, dtype=np.float32)  # [L]
        term = np.asarray(episode.terminations, dtype=bool)
        trunc = np.asarray(episode.truncations, dtype=bool)
        complete = not (cut_last and last)
        if not (term[-1] or trunc[-1]):
            trunc = trunc.copy()
            trunc[-1] = True  # an episode cut without a flag: mark it truncated so it ends on a timeout row
            complete = False
            cut_last = cut_last or last
        if complete:
            returns.append(float(reward[:, None].astype(np.float64).sum(axis=0).mean()))  # [L, N=1] as collect's
            lengths.append(length)
        columns["o"].append(obs[:-1])
        columns["o2"].append(obs[1:])
        columns["a"].append(np.clip(action, -1.0, 1.0))
        columns["r"].append(reward)
        columns["term"].append(term)
        columns["trunc"].append(trunc & ~term)
        starts.append(row)
        seed = meta.get("seed")
        seeds.append(-1 if seed is None else int(seed))
        row += length
    arrays = {
        "observations": np.concatenate(columns["o"]),  # [T, O]
        "actions": np.concatenate(columns["a"]),  # [T, A]
        "rewards": np.concatenate(columns["r"]),  # [T]
        "next_observations": np.concatenate(columns["o2"]),  # [T, O]
        "terminals": np.concatenate(columns["term"]),
        "timeouts": np.concatenate(columns["trunc"]),
        "episode_starts": np.asarray(starts, dtype=np.int64),
        "episode_seeds": np.asarray(seeds, dtype=np.int64),
    }
    manifest = {
        "dataset_id": entry.dataset_id,
        "task": entry.task,
        "quality": entry.quality,
        "version": entry.version,
        "package": "offline-bench",
        "package_version": __import__("offline_bench").__version__,
        "env": {"task": spec.name, "source": spec.source, "episode_length": spec.episode_length,
                "packages": original.get("env", {}).get("packages", {})},
        "n_agents": 1,
        "obs_sizes": list(spec.obs_sizes),
        "action_sizes": list(spec.action_sizes),
        "recipe": {"kind": "imported", "source": f"minari:{source_id}",
                   "minari_version": source.storage.metadata.get("minari_version"),
                   "original_recipe": original.get("recipe")},
        "behaviour_policy": original.get("behaviour_policy", {"name": "unknown (imported from Minari)"}),
        "seeds": original.get("seeds", {"episode_seeds": "from Minari episode metadata; -1 where absent"}),
        "last_episode_cut": cut_last,
        "episode_returns": return_stats(returns, lengths),
        "references": task_references(entry.task).to_dict(),
    }
    return write_dataset(data_root(root), entry.dataset_id, arrays, manifest)


def _original_manifest(description: Any) -> dict[str, Any]:
    """Our manifest, if the Minari dataset is an offline-bench export; else empty."""
    try:
        parsed = json.loads(description) if isinstance(description, str) else None
    except json.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) and parsed.get("format") == "offline-bench-dataset" else {}
