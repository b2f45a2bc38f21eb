"""Evaluate a trained run's policy again, with as many episodes as wanted: ``offline-bench evaluate RUN_DIR``.

A run's evaluations during training use ``eval_episodes`` episodes (10 for the PyBullet tasks); papers that report
the final policy over 100 episodes, or a closer look at one policy, need more. ``evaluate_run`` rebuilds the
algorithm from the run's ``config.json``, loads the policy from its ``checkpoint.pt`` (the final one for a finished
run, else the last checkpoint, and says which) and runs the episodes side by side with the loop's own
``Evaluator``, against the same opponent and in the same action layout as the run's evaluations. Scores use the
reference returns the run was trained with (its ``config.json``), so they are on the run's scale.

The dataset file is needed because the networks are built from its facts (observation statistics and sizes); it
must be the file the run trained on (the same sha256). Nothing is written into the run directory.

Reproducible: the episodes start from ``episode_seeds(seed, episodes)`` and torch's generator is seeded with
``seed`` before the rollouts (DBR and BEAR pick among sampled actions). With ``episodes = eval_episodes`` and
``seed = eval_seed(run seed, step)`` a deterministic policy (TD3+BC, CQL, ...) returns exactly the run's own
evaluation at that step.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from offline_bench import config as config_lib
from offline_bench.evaluate import Evaluator, has_references, normalized_score
from offline_bench.train.loop import (
    TrainError,
    _load_checkpoint,
    _opponent,
    check_compatible,
    cpu_denormals_flushed,
    load_algorithm,
    resolve_device,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunEvaluation:
    """``episodes`` evaluation episodes of one run's policy at checkpoint step ``step``."""

    run_dir: str
    dataset_id: str
    algo: str
    run_seed: int
    step: int  # the checkpoint's update step: the policy evaluated
    steps: int  # the run's configured number of updates
    finished: bool  # result.json exists (then step == steps)
    seed: int  # evaluation seed: episode seeds and torch's generator derive from it
    episodes: int
    device: str
    references: dict[str, Any]  # the run's {random, expert, source}
    returns: list[float]  # [E] team-mean return per episode
    lengths: list[int]  # [E] steps per episode
    episode_seeds: list[int]  # [E]
    scores: list[float] | None  # [E] normalized score per episode; None without both references

    @property
    def mean_return(self) -> float:
        return float(np.mean(self.returns))

    @property
    def std_return(self) -> float:
        return float(np.std(self.returns))

    @property
    def mean_score(self) -> float | None:
        return None if self.scores is None else float(np.mean(self.scores))

    @property
    def std_score(self) -> float | None:
        return None if self.scores is None else float(np.std(self.scores))

    @property
    def mean_length(self) -> float:
        return float(np.mean(self.lengths))

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "mean_return": self.mean_return, "std_return": self.std_return,
                "mean_score": self.mean_score, "std_score": self.std_score, "mean_length": self.mean_length,
                "statistic": "per-episode mean and population std (ddof=0) over the episodes"}


def _read_run(run_dir: Path) -> tuple[dict[str, Any], Path]:
    """The run's config.json and its checkpoint path; TrainError naming what is missing."""
    config_path, ckpt_path = run_dir / "config.json", run_dir / "checkpoint.pt"
    if not run_dir.is_dir():
        raise TrainError(f"run directory {run_dir} does not exist; a run directory is "
                         "<runs>/<dataset-id>/<algo>/seed<k>/, e.g. runs/hopper-medium-v0/td3bc/seed0")
    if not config_path.exists():
        raise TrainError(f"{run_dir} is not a run directory (it has no config.json); a run directory is "
                         "<runs>/<dataset-id>/<algo>/seed<k>/, e.g. runs/hopper-medium-v0/td3bc/seed0")
    try:
        stored = json.loads(config_path.read_text())
    except ValueError as err:
        raise TrainError(f"{config_path} is not valid JSON ({err}); the run directory is damaged") from None
    if not isinstance(stored, dict) or not {"algo", "algo_config", "train_config", "dataset"} <= stored.keys():
        raise TrainError(f"{config_path} lacks the algo, algo_config, train_config or dataset record of a run")
    if not ckpt_path.exists():
        raise TrainError(f"{run_dir} has no checkpoint.pt yet (the run stopped before its first checkpoint); "
                         "resume it with its train command first")
    return stored, ckpt_path


def _data_root(stored: dict[str, Any], root: str | os.PathLike[str] | None) -> str | os.PathLike[str] | None:
    """``root`` when given; else the folder of the file the run trained on, where it still exists; else the
    default data root (``$OFFLINE_BENCH_DATA``, else ./datasets)."""
    if root is not None:
        return root
    trained_on = Path(str((stored.get("dataset") or {}).get("path") or ""))
    return trained_on.parent if trained_on.name and trained_on.exists() else None


def evaluate_run(
    run_dir: str | os.PathLike[str],
    episodes: int = 100,
    seed: int = 0,
    device: str = "auto",
    root: str | os.PathLike[str] | None = None,
) -> RunEvaluation:
    """Roll out the policy of ``run_dir`` (its last checkpoint) for ``episodes`` episodes; see the module docstring.

    ``root``: the dataset directory; default: the folder of the file the run trained on (``config.json``'s
    ``dataset.path``) where it exists, else ``$OFFLINE_BENCH_DATA``, else ./datasets.
    """
    from offline_bench.data import load_dataset
    from offline_bench.data.format import DatasetError

    if episodes < 1:
        raise TrainError(f"--episodes must be >= 1, got {episodes}")
    run_dir = Path(run_dir)
    stored, ckpt_path = _read_run(run_dir)
    algo_id, algo_cls = load_algorithm(str(stored["algo"]))
    try:  # keys newer than the run keep their defaults, as when the run is resumed
        algo_config = config_lib.replace(algo_cls.config_cls(), dict(stored["algo_config"]))
    except (KeyError, ValueError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        raise TrainError(f"{run_dir}'s config.json does not fit this version's {algo_id} config ({message})") from None
    facts = stored["dataset"]
    try:
        dataset = load_dataset(str(facts["id"]), root=_data_root(stored, root))
    except DatasetError as err:
        raise TrainError(f"{run_dir} needs the dataset it trained on ({facts['id']}), and {err}; or pass --root "
                         "with the folder that holds that file") from None
    sha256 = dataset.manifest.get("sha256")
    if facts.get("sha256") and sha256 != facts["sha256"]:
        raise TrainError(
            f"{dataset.path} is not the file {run_dir} trained on (sha256 {str(sha256)[:12]} vs "
            f"{str(facts['sha256'])[:12]}); pass --root with the folder of the run's dataset file"
        )
    problem = dataset.problem()
    check_compatible(algo_cls, algo_id, problem, str(facts["id"]))
    torch_device = resolve_device(device)
    task = str(facts.get("task") or dataset.manifest.get("task"))
    opponent, _ = _opponent(dataset, task)

    ckpt = _load_checkpoint(ckpt_path)
    with cpu_denormals_flushed():
        algo = algo_cls(algo_config, problem, torch_device)
        algo.load_state_dict(ckpt["algo"])
        torch.manual_seed(seed)
        action_layout = facts.get("action_layout", getattr(dataset, "action_layout", None))
        with Evaluator(task, episodes, torch_device, opponent=opponent, action_layout=action_layout) as evaluator:
            res = evaluator(algo.act, seed)

    refs = dict(facts.get("references") or {})
    has_refs = has_references(refs.get("random"), refs.get("expert"))
    steps = int(stored["train_config"].get("steps", 0))
    finished = (run_dir / "result.json").exists()
    if not finished:
        log.warning("%s is unfinished: evaluating its last checkpoint, step %d of %d", run_dir, ckpt["step"], steps)
    return RunEvaluation(
        run_dir=str(run_dir),
        dataset_id=str(facts["id"]),
        algo=algo_id,
        run_seed=int(stored["train_config"].get("seed", 0)),
        step=int(ckpt["step"]),
        steps=steps,
        finished=finished,
        seed=int(seed),
        episodes=int(episodes),
        device=str(torch_device),
        references=refs,
        returns=[float(r) for r in res.returns],
        lengths=[int(n) for n in res.lengths],
        episode_seeds=list(res.seeds),
        scores=[normalized_score(r, refs["random"], refs["expert"]) for r in res.returns] if has_refs else None,
    )


__all__ = ["RunEvaluation", "evaluate_run"]
