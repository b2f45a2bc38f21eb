"""Loading, verifying and describing collected datasets."""
from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from offline_bench.algos.base import Problem
from offline_bench.data.catalog import CATALOG, TaskReferences, resolve_dataset_id, retrain_cost, task_references
from offline_bench.data.format import DatasetError, hdf5_path, manifest_path, read_arrays, read_manifest
from offline_bench.envs.tasks import recorded_action_layout
from offline_bench.paths import data_root


@dataclass
class Dataset:
    """A verified dataset: the file's arrays (as stored) plus its manifest.

    Single-agent arrays keep D4RL's layout (``observations [T, O]``, ``rewards [T]``); ``agent_axis`` gives any of
    them with the agent axis ``N`` inserted, which is how the sampler and algorithms see every dataset.
    """

    dataset_id: str
    path: Path
    manifest: dict[str, Any]
    observations: np.ndarray  # [T, O] or [T, N, O] float32
    actions: np.ndarray  # [T, A] or [T, N, A] float32 in [-1, 1]
    rewards: np.ndarray  # [T] or [T, N] float32
    next_observations: np.ndarray  # like observations
    terminals: np.ndarray  # [T] bool
    timeouts: np.ndarray  # [T] bool
    episode_starts: np.ndarray  # [K] int64
    episode_seeds: np.ndarray  # [K] int64
    _problem: Problem | None = field(default=None, repr=False)

    @property
    def n_agents(self) -> int:
        return int(self.manifest["n_agents"])

    @property
    def multi_agent(self) -> bool:
        return self.n_agents > 1

    @property
    def obs_sizes(self) -> tuple[int, ...]:
        return tuple(self.manifest["obs_sizes"])

    @property
    def action_sizes(self) -> tuple[int, ...]:
        return tuple(self.manifest["action_sizes"])

    @property
    def transitions(self) -> int:
        return int(self.terminals.shape[0])

    def __len__(self) -> int:
        return self.transitions

    @property
    def episodes(self) -> int:
        return int(self.episode_starts.shape[0])

    @property
    def task(self) -> str:
        return str(self.manifest["task"])

    @property
    def action_layout(self) -> str | None:
        """How the file's actions reach the simulator (``offline_bench.envs.task_spec``): the manifest's
        ``env.action_layout``; MPE files without one (v0) are in the "mpe2" layout; None: the task has one layout."""
        return recorded_action_layout(self.task, self.manifest.get("env") or {})

    @property
    def references(self) -> TaskReferences:
        return task_references(self.task)

    def agent_axis(self, key: str) -> np.ndarray:
        """``key``'s array with the agent axis: obs/actions ``[T, N, D]``, rewards ``[T, N]`` (a view, no copy)."""
        array = getattr(self, key)
        if self.multi_agent or key in ("terminals", "timeouts"):
            return array
        return array[:, None]  # [T, 1, ...]

    def episode_ends(self) -> np.ndarray:
        """``[K]`` last row of each episode."""
        return np.append(self.episode_starts[1:], self.transitions) - 1

    def episode_returns(self, complete: bool = False) -> np.ndarray:
        """``[K]`` float64 return per episode; multi-agent: the mean over agents of per-agent sums.

        ``complete=True`` leaves out the last episode where the collection's size budget cut it short (the
        manifest's ``last_episode_cut``), as the manifest's ``episode_returns`` statistics and ``datasets show`` do.
        """
        team = self.agent_axis("rewards").astype(np.float64).mean(axis=1)  # [T]
        returns = np.add.reduceat(team, self.episode_starts) if self.transitions else np.zeros(0)
        return returns[:-1] if complete and self.manifest.get("last_episode_cut") and len(returns) else returns

    def problem(self) -> Problem:
        """Facts an algorithm is built from, with per-agent observation mean/std over the dataset."""
        if self._problem is None:
            obs = self.agent_axis("observations")  # [T, N, O]
            mean = obs.mean(axis=0, dtype=np.float64)  # [N, O]
            std = obs.std(axis=0, dtype=np.float64)  # [N, O]
            for i, size in enumerate(self.obs_sizes):  # padding: mean 0, std 1
                mean[i, size:] = 0.0
                std[i, size:] = 1.0
            std = np.where(std < 1e-6, 1.0, std)  # constant features: leave them unscaled, never divide by 0
            self._problem = Problem(
                n_agents=self.n_agents,
                obs_dim=int(obs.shape[-1]),
                action_dim=int(self.actions.shape[-1]),
                obs_sizes=self.obs_sizes,
                action_sizes=self.action_sizes,
                obs_mean=mean.astype(np.float32),
                obs_std=std.astype(np.float32),
                dataset_size=self.transitions,
            )
        return self._problem


def load_dataset(dataset_id: str, root: str | os.PathLike[str] | None = None, check_hash: bool = True) -> Dataset:
    """Load and verify a collected dataset (``hopper-random``, ``spread-mixed-v0``, ...).

    ``root``: the data directory, else ``$OFFLINE_BENCH_DATA``, else ``./datasets``. Raises
    ``UnknownDatasetError`` for ids outside the catalog and ``DatasetError`` for a missing file, an unknown
    format version, a sha256 mismatch, wrong shapes or NaN/inf values, each naming the problem and the fix.
    """
    canonical = resolve_dataset_id(dataset_id)
    directory = data_root(root)
    if dataset_status(canonical, directory) == "missing":
        from offline_bench.data.collection import ensure_behaviour_recipes

        ensure_behaviour_recipes()  # whether the id is collectable, and how, is the behaviour layer's to say
        entry = CATALOG[canonical]
        if not entry.recipe.collectable:
            raise DatasetError(
                f"dataset {canonical} is not collected in {directory}, and it needs a behaviour policy first "
                f"({entry.recipe.description}); see `offline-bench behaviour --help`"
            )
        if entry.quality == "mixed":
            raise DatasetError(
                f"dataset {canonical} is not collected in {directory}: run `offline-bench collect {canonical} --root "
                f"{shlex.quote(str(directory))}`, adding --retrain where no behaviour run of {entry.task} is saved on "
                f"this machine (it re-runs {retrain_cost(entry.task)})"
            )
    manifest = read_manifest(directory, canonical)
    arrays = read_arrays(directory, canonical, manifest, check_hash=check_hash)
    return Dataset(dataset_id=canonical, path=hdf5_path(directory, canonical), manifest=manifest, **arrays)


def dataset_status(dataset_id: str, root: str | os.PathLike[str] | None = None) -> str:
    """``"missing"``, ``"incomplete"`` (a data file without its manifest, or the reverse) or ``"collected"``."""
    canonical = resolve_dataset_id(dataset_id)
    directory = data_root(root)
    has_h5 = hdf5_path(directory, canonical).exists()
    has_json = manifest_path(directory, canonical).exists()
    if has_h5 and has_json:
        return "collected"
    return "incomplete" if has_h5 or has_json else "missing"


def verify_dataset(dataset_id: str, root: str | os.PathLike[str] | None = None) -> tuple[bool, str]:
    """``(ok, message)``: full verification (format version, size, sha256, shapes, values) in one line."""
    try:
        dataset = load_dataset(dataset_id, root)
    except DatasetError as exc:
        return False, str(exc)
    return True, (f"{dataset.dataset_id}: ok ({dataset.transitions} transitions, {dataset.episodes} episodes, "
                  f"sha256 {dataset.manifest['sha256'][:12]}...)")
