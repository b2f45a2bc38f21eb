"""Export a behaviour run's policies into ``datasets/policies/<task>/`` and record them in the index.

The index (``datasets/policies/index.json``) holds, per task: the run (algo, seed, budget, steps trained, wall
time, whether it finished), the measured random return, and per quality (``medium``, ``expert``, ``opponent``)
the committed file, its sha256, the training step it was taken at and its measured return (mean and std over
``episodes`` deterministic episodes). Where a policy falls short of the literature's level the entry says so.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from offline_bench.behaviour.policy import file_sha256, load_policy_file, read_index, write_index
from offline_bench.behaviour.tasks import recipe
from offline_bench.behaviour.trainer import MEASURE_SEED_BASE, arrays_sha256, rollout_returns, task_env
from offline_bench.envs.tasks import recorded_action_layout
from offline_bench.paths import policies_root

log = logging.getLogger(__name__)


def measure_policy_file(
    task: str, path: str | os.PathLike[str], episodes: int = 50, root: str | os.PathLike[str] | None = None
) -> dict[str, Any]:
    """Deterministic return of a policy file on ``task`` (against the task's committed opponent, if any)."""
    from offline_bench.behaviour.policy import load_policy

    opponent = load_policy(task, "opponent", root=root) if task in ("tag", "world") else None
    policy = load_policy_file(path)
    layout = recorded_action_layout(task, policy.meta)  # the layout it was trained in (committed MPE ones: "mpe2")
    env = task_env(task, opponent.as_opponent() if opponent is not None else None, layout)
    try:
        returns = rollout_returns(env, policy.act, [MEASURE_SEED_BASE + i for i in range(episodes)])
    finally:
        env.close()
    return {"return_mean": float(returns.mean()), "return_std": float(returns.std()), "episodes": episodes}


def _same_run(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Are two index run records the same training run (at any point: budget and progress may differ)?"""
    def identity(run: dict[str, Any]) -> tuple[Any, ...]:
        config = dict(run.get("trainer_config", {}))
        config["action_layout"] = recorded_action_layout(str(config.get("task")), config)  # older records lack it
        config = {k: v for k, v in config.items() if k not in ("steps", "checkpoint_minutes")}
        overrides = json.dumps(run.get("algo_overrides"))
        return run.get("algo"), run.get("seed"), json.dumps(config, sort_keys=True), overrides

    return identity(a) == identity(b)


def _copy_in(src: Path, dst: Path) -> str:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
    return file_sha256(dst)


def export_policies(
    task: str,
    run_dir: str | os.PathLike[str],
    episodes: int = 50,
    root: str | os.PathLike[str] | None = None,
    include_expert: bool | None = None,
    include_medium: bool = True,
) -> dict[str, Any]:
    """Copy the run's medium and best snapshots into ``<root>/<task>/`` and update the index; returns its entry.

    The best snapshot becomes the ``expert`` policy only when the run has spent its budget, unless
    ``include_expert`` says otherwise (a half-trained "expert" would make mislabelled datasets). Reads only
    immutable snapshot files, so it is safe while the run is still training.

    ``include_medium=False`` keeps the medium policy, its mixed data and the run they came from (``run``, which
    ``--retrain`` re-runs, and that run's ``random`` return) from the index: the expert of a second run is then
    recorded with that run as ``expert_run``. A run that has not reached its medium policy keeps the indexed one the
    same way, and an export without an expert keeps the indexed expert: nothing this export does not replace leaves
    the index (those policies' files stay, and their datasets stay collectable).
    """
    run_dir = Path(run_dir)
    root = Path(root or policies_root())
    summary_path = run_dir / "summary.json"
    if not run_dir.is_dir():
        raise FileNotFoundError(f"no behaviour run in {run_dir}; start one with `offline-bench behaviour train {task}`")
    if not summary_path.exists():
        raise FileNotFoundError(f"no summary.json in {run_dir}: has the run reached its first checkpoint yet?")
    summary = json.loads(summary_path.read_text())
    if summary["best"] is None:
        raise RuntimeError(f"{run_dir} has no evaluation yet; nothing to export")
    r = recipe(task)
    index = read_index(root)
    old = index.setdefault("tasks", {}).get(task, {})
    run = {
            "algo": summary["algo"],
            "seed": summary["seed"],
            "budget_steps": summary["config"]["steps"],
            "steps_trained": summary["step"],
            "finished": summary["step"] >= summary["config"]["steps"],
            "wall_time_s": summary["wall_time_s"],
            "trainer_config": summary["config"],
            "algo_overrides": summary["algo_overrides"],
            "machine": "2 shared CPU cores, torch 1 thread",
    }
    entry: dict[str, Any] = {
        "run": run,
        "random": summary["random"],
        "medium_target": summary["medium"]["target"] if summary["medium"] else r.medium_target,
        "expert_reference": r.expert_reference,
    }
    if (run_dir / "opponent.pt").exists():  # tag / world: the opponent frozen before these policies trained
        sha = _copy_in(run_dir / "opponent.pt", root / task / "opponent.pt")
        co = json.loads((run_dir / "opponent" / "summary.json").read_text())
        entry["opponent"] = {"file": f"{task}/opponent.pt", "sha256": sha, "step": co["step"],
                             "co_training_steps": co["config"]["steps"], "wall_time_s": co["wall_time_s"]}
        index["tasks"][task] = dict(old, opponent=entry["opponent"])
        write_index(index, root)  # the expert is measured against this opponent below

    medium = summary["medium"] if include_medium else None
    other_run = None  # this run, where the index's run record stays another's (the one that made the medium)
    if medium is None:  # keep the medium policy (and its mixed data) exported earlier, e.g. from a finer pass
        for key in ("medium", "mixed", "medium_target"):
            if key in old:
                entry[key] = old[key]
        if "medium" in old and "run" in old and not _same_run(old["run"], run):
            # another run made the medium policy: its record is what --retrain of the mixed data re-runs
            entry["run"], entry["random"], other_run = old["run"], old.get("random", entry["random"]), run
    if medium is not None:
        dst = root / task / "medium.pt"
        sha = _copy_in(run_dir / "snapshots" / f"actor_{medium['step']:08d}.pt", dst)
        mixed = dict(medium)
        if "mixed_sha256" not in mixed and (run_dir / "mixed.npz").exists():
            with np.load(run_dir / "mixed.npz") as f:
                mixed["mixed_sha256"] = arrays_sha256({k: f[k] for k in f.files})
        entry["medium"] = {"file": f"{task}/medium.pt", "sha256": sha, **mixed}
        entry["mixed"] = {"transitions": medium["step"], "sha256": mixed.get("mixed_sha256"),
                          "how": "replay buffer of this run from step 0 to the medium step, in order; "
                                 "`offline-bench behaviour collect-mixed` re-runs the training deterministically"}

    best = summary["best"]
    entry["best_so_far"] = {"step": best["step"], "eval_return": best["eval_return"],
                            "eval_episodes": summary["config"]["eval_episodes"]}
    if include_expert is None:
        include_expert = run["finished"]
    if not include_expert:
        for key in ("expert", "expert_run"):  # the expert exported earlier stays (its file is untouched)
            if key in old:
                entry[key] = old[key]
        if "medium" not in entry and r.medium_target is not None:
            entry["medium_note"] = f"the run has not reached the medium target {r.medium_target:.0f} yet"
        index["tasks"][task] = entry
        write_index(index, root)
        return entry
    if other_run is not None:
        entry["expert_run"] = other_run
    dst = root / task / "expert.pt"
    sha = _copy_in(run_dir / "snapshots" / f"actor_{best['step']:08d}.pt", dst)
    expert = {"step": best["step"], "eval_return": best["eval_return"]}
    measured = summary.get("expert")
    if measured is not None and measured["step"] == best["step"] and measured["episodes"] >= episodes:
        expert.update({k: measured[k] for k in ("return_mean", "return_std", "episodes")})
    else:
        expert.update(measure_policy_file(task, dst, episodes, root))
    entry["expert"] = {"file": f"{task}/expert.pt", "sha256": sha, **expert}
    if r.expert_reference is not None and expert["return_mean"] < r.expert_reference:
        entry["expert"]["note"] = (
            f"below the literature's expert level ({r.expert_reference:.0f}, D4RL bullet REF_MAX) after "
            f"{summary['step']} of {summary['config']['steps']} steps; the published level needs more training"
        )
    if "medium" not in entry and r.medium_target is not None:
        entry["medium_note"] = f"the run has not reached the medium target {r.medium_target:.0f} yet"
    index["tasks"][task] = entry
    index["format"] = 1
    write_index(index, root)
    log.info("exported %s policies from %s", task, run_dir)
    return entry
