"""THE training loop, for every algorithm, single- and multi-agent.

Per update: ``DeviceSampler.sample(batch_size) -> algo.update(batch) -> metrics`` (0-dim tensors, kept on the device).
The metrics of all updates since the last row are averaged and copied to the host in one go when a row is written,
so an update never waits on the device. Every ``eval_every`` updates the policy plays ``eval_episodes`` episodes side
by side (``offline_bench.evaluate.Evaluator``). With ``cuda_graphs=true`` (CUDA only) sampling and update go through
``train.graphs.GraphedUpdates``: each kind of update is captured once as a CUDA graph and replayed.

Run directory ``<runs>/<dataset-id>/<algo-id>/seed<k>/``:

- ``config.json``: resolved algorithm + loop config (and where each value came from), dataset id + sha256 + references
  + the data's own mean episode return, package versions, device. Written before the first update.
- ``metrics.csv``: one row per log step (every ``log_every`` updates, plus evaluation and checkpoint steps and the
  last one): ``step, time_s, eval_return, eval_return_std, normalized_score, eval_length`` (the mean episode length;
  empty on rows without an evaluation), then the algorithm's metrics averaged over the updates since the previous
  row.
- ``checkpoint.pt``: algorithm state, sampler generator state, torch CPU/CUDA and numpy RNG states, step, the
  evaluations so far. Written atomically (temp file + rename) every ``checkpoint_every`` updates and at the end.
- ``result.json`` (written last; its presence means the run is finished): ``final_score``, ``last_k_score`` (mean
  of the last ``last_k`` evaluations), ``best_score`` (normalized), the same for the raw return (``final_return``,
  ...) and the mean episode length (``final_length``, ``last_k_length``). Tables use ``score`` = ``last_k_score``
  (``"statistic": "last_k_mean"``, k = 10 by default), the statistic of the DBR report's learning-curve figures
  ("the mean over the last 10 evaluation steps", Fig. 6 and the multi-agent Fig. 9; its Table 1 says only "the
  average return and the standard deviation"). Without reference returns in the manifest the scores are absent
  (``"normalized": false``) and
  only raw returns are recorded.

Resume: the same command on an unfinished run loads ``checkpoint.pt``, truncates ``metrics.csv`` back to the
checkpoint step and continues; on CPU the result equals an uninterrupted run's. A finished run is not re-run.
A run (finished or not) with a different config is refused (the differing keys are listed), and ``.lock`` (the
training process's pid) keeps two processes from training the same run directory at once. A config that cannot
train (a value the algorithm refuses) is refused before the run directory is created.

Evaluation seeds depend only on the run seed and the step (``evaluate.eval_seed``), so every algorithm with the same
seed is evaluated on the same episodes.
"""
from __future__ import annotations

import contextlib
import csv
import ctypes
import ctypes.util
import datetime as dt
import io
import json
import logging
import os
import pickle
import platform
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from offline_bench import __version__
from offline_bench.evaluate import (
    EvalResult,
    Evaluator,
    eval_seed,
    has_references,
    normalized_score,
    reference_returns,
)
from offline_bench.envs._common import NonFiniteActionError
from offline_bench.paths import runs_root
from offline_bench import config as config_lib
from offline_bench.train.config import ResolvedConfig, TrainConfig, resolve_config, split_dataset_id
from offline_bench.train.graphs import GraphedUpdates

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
TABLE_STATISTIC = "last_k_mean"
_EXECUTION_KEYS = ("device", "cuda_graphs")  # how a run executes, not what it computes: may change on resume
_FIXED_COLUMNS = ("step", "time_s", "eval_return", "eval_return_std", "normalized_score", "eval_length")
_VERSIONED_PACKAGES = (
    "torch", "numpy", "h5py", "gymnasium", "pybullet", "mpe2", "pettingzoo", "gymnasium-robotics", "mujoco",
)


class TrainError(Exception):
    """A problem the user can fix (a conflicting run directory, a dataset the algorithm cannot train on, ...)."""


@dataclass(frozen=True)
class Progress:
    """Passed to ``on_progress`` after every update (cheap: no device sync)."""

    step: int
    steps: int
    eval_return: float | None  # latest evaluation's mean return, None before the first
    eval_score: float | None  # latest evaluation's normalized score, None before the first or without references


@dataclass(frozen=True)
class TrainOutcome:
    run_dir: Path
    status: str  # "finished" | "already finished" | "stopped" (stop_after reached)
    start_step: int  # 0 for a fresh run, else the checkpoint step it resumed from
    step: int  # the step it ended at
    result: dict[str, Any] | None  # result.json's content when finished


def run_dir_for(dataset_id: str, algo_id: str, seed: int, runs: str | os.PathLike[str] | None = None) -> Path:
    """``<runs>/<dataset-id>/<algo-id>/seed<k>``."""
    return runs_root(runs) / dataset_id / algo_id / f"seed{seed}"


def resolve_device(device: str, source: str = "--device") -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without CUDA is an error.

    ``source`` is the config layer the value came from (``ResolvedConfig.sources``), so the message names what the
    user actually typed: ``--device cuda``, ``--set device=cuda`` or a ``--config`` file.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        if source == "--device":
            asked, fix = f"--device {device}", "use --device cpu or auto"
        elif source == "--set":
            asked, fix = f"device {device!r} (from --set device={device})", "use --set device=cpu or device=auto"
        else:
            asked, fix = f"device {device!r} (from {source})", "use --device cpu or auto"
        raise TrainError(f"{asked} was asked for but CUDA is not available here; {fix}")
    return torch.device(device)


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"offline-bench": __version__, "python": platform.python_version()}
    for name in _VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters (malloc.h)
_allocator_tuned: bool | None = None


@contextlib.contextmanager
def cpu_denormals_flushed() -> Iterator[bool]:
    """Flush subnormal floats to zero on the CPU while a run trains (x86 FTZ/DAZ, ``torch.set_flush_denormal``);
    torch's default (off) is restored afterwards. Yields whether the CPU supports it.

    Weight decay and vanishing gradients leave many weights subnormal (below 1.2e-38) after long training, and x86
    arithmetic on subnormals takes microcode assists, tens of times slower. After 100k updates on
    halfcheetah-2x3-random, 25% of MA-ICQ's second actor layer was subnormal: its actor's forward and backward took
    25.8 ms instead of 2.0 ms, an update 38.6 ms instead of 8.8 ms (a fresh network: 8.4 ms), and 500 update rounds
    with one evaluation 21.1 s instead of 5.6 s. Adam's first moments of idle units decay into the subnormal range
    too (40-70% of them after 2,000 rounds on spread): MA-ICQ there 9.2 -> 7.1 ms per update, MA-TD3+BC 2-15%.
    Values this small contribute nothing a float32 network can resolve; the cost is that results are no longer
    bit-identical to a run without the flush (every run since 2026-12-06 trains with it, resumes included).

    The flag is per thread, and torch sets it for the calling one: with the default of one torch thread per run
    that is all of the arithmetic. With ``OFFLINE_BENCH_THREADS`` > 1, intra-op threads that existed before the
    flag keep subnormals (about half of a 2-thread elementwise op was flushed in a test), so such runs get part
    of the speed-up.
    """
    supported = torch.set_flush_denormal(True)
    try:
        yield supported
    finally:
        if supported:
            torch.set_flush_denormal(False)


def tune_cpu_allocator() -> bool:
    """Let glibc keep freed memory for reuse instead of returning it to the OS after every update.

    A CPU update allocates and frees the same large activation tensors each step (several MiB at batch 1024);
    glibc serves blocks above its mmap threshold with fresh ``mmap`` calls, so every step pays page faults and
    the kernel's zeroing of those pages. Raising the mmap threshold to its maximum (32 MiB) and the trim
    threshold to 1 GiB keeps them in the heap (the process keeps its peak memory). Numbers are unchanged; only
    where memory comes from. Idempotent; returns False (and does nothing) where libc is not glibc.
    """
    global _allocator_tuned
    if _allocator_tuned is None:
        _allocator_tuned = False
        name = ctypes.util.find_library("c")
        if name and platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
            try:
                libc = ctypes.CDLL(name)
                _allocator_tuned = bool(libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)) and bool(
                    libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)
                )
            except (OSError, AttributeError):
                _allocator_tuned = False
        log.debug("glibc allocator tuned for reuse: %s", _allocator_tuned)
    return _allocator_tuned


# ----------------------------------------------------------------------------------------------------------- files
def write_atomic(path: Path, data: bytes | str) -> None:
    """Write to ``<path>.tmp`` then rename, so a crash never leaves a half-written file under the real name."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    try:  # the rename itself is durable only once its folder is synced (POSIX)
        folder = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(folder)
    except OSError:
        pass  # some file systems do not sync folders; the rename is still atomic
    finally:
        os.close(folder)


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if isinstance(obj, (np.ndarray, tuple, set)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_atomic(path, buffer.getvalue())


def _load_checkpoint(path: Path) -> dict[str, Any]:
    """``checkpoint.pt`` as saved; a file torch cannot read (damaged on disk, copied in part) or of another
    checkpoint format is a TrainError.

    Checkpoints are written atomically, so this is damage after the fact; the run can only restart without it.
    """
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError, ValueError, zipfile.BadZipFile, OSError) as err:
        # (a file cut short near its end fails as OSError "Invalid argument", seeking past what is there)
        log.debug("cannot read %s", path, exc_info=True)
        text = str(err).strip()  # torch's message runs on for several sentences; the first says what failed
        why = text.splitlines()[0].split(". ")[0] if text else type(err).__name__
    else:
        if isinstance(ckpt, dict):
            if ckpt.get("format") != CHECKPOINT_FORMAT:
                raise TrainError(
                    f"{path} has checkpoint format {ckpt.get('format')}, expected {CHECKPOINT_FORMAT}; "
                    "delete the run directory to start over"
                )
            return ckpt
        why = f"it holds a {type(ckpt).__name__}, not a checkpoint"
    raise TrainError(
        f"{path} is damaged and cannot be read ({why}); delete it to restart this run from scratch "
        f"(or delete the run directory {path.parent})"
    )


class MetricsCSV:
    """``metrics.csv``: rows appended as they come; the header grows (file rewritten) if a new metric appears."""

    def __init__(self, path: Path, keep_until_step: int | None) -> None:
        """Open ``path``; keep existing rows with ``step <= keep_until_step`` (None: start a new file)."""
        self.path = path
        self.columns: list[str] = list(_FIXED_COLUMNS)
        self.rows: list[dict[str, str]] = []
        if keep_until_step is not None and path.exists():
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                for name in reader.fieldnames or []:
                    if name not in self.columns:
                        self.columns.append(name)
                for row in reader:
                    try:
                        step = int(row["step"])
                    except (TypeError, ValueError):  # a row cut short by a kill
                        break
                    if step > keep_until_step or None in row or any(v is None for v in row.values()):
                        break
                    self.rows.append(row)
        self._rewrite()

    def _rewrite(self) -> None:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=self.columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        write_atomic(self.path, out.getvalue())

    def append(self, row: dict[str, Any]) -> None:
        text = {k: _fmt(v) for k, v in row.items()}
        self.rows.append(text)
        new = [k for k in text if k not in self.columns]
        if new:
            self.columns.extend(new)
            self._rewrite()
            return
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.columns, lineterminator="\n").writerow(text)

    def sync(self) -> None:
        """Flush the appended rows to the disk (``fsync``): a checkpoint written after it never gets ahead of them."""
        with open(self.path, "rb") as f:
            os.fsync(f.fileno())


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


# ------------------------------------------------------------------------------------------------------- dataset
def dataset_facts(dataset: Any) -> dict[str, Any]:
    """What config.json records about the dataset: id, sha256, task, quality, references, path, and the data's own
    mean episode return (``episode_return_mean``, the manifest's; None where it has none), the yardstick a score on
    this file is read against.

    References are the manifest's (``references: {random, expert}``); where the manifest lacks either, the task's
    current catalog pair (``dataset.references``) is used whole, and ``references.source`` says which was used.
    """
    manifest = dict(getattr(dataset, "manifest", {}) or {})
    dataset_id = getattr(dataset, "dataset_id", None) or manifest.get("dataset_id") or manifest.get("id")
    if dataset_id is None:
        raise TrainError(
            "the dataset has no id (manifest 'dataset_id' missing); re-collect it with offline-bench collect"
        )
    task, quality, _ = split_dataset_id(str(dataset_id))
    ref_random, ref_expert = reference_returns(manifest)
    source = "manifest"
    catalog = getattr(dataset, "references", None)
    if (ref_random is None or ref_expert is None) and catalog is not None:
        # The pair comes from one place: a manifest random reference with a catalog expert reference may have been
        # measured differently (other episodes, another opponent), which would shift every score.
        ref_random, ref_expert = getattr(catalog, "random", None), getattr(catalog, "expert", None)
        source = "catalog"
    return {
        "id": str(dataset_id),
        "sha256": manifest.get("sha256"),
        "task": manifest.get("task", task),
        "quality": quality,
        "path": str(getattr(dataset, "path", "") or ""),
        "transitions": manifest.get("transitions"),
        "episode_return_mean": (manifest.get("episode_returns") or {}).get("mean"),
        "references": {"random": ref_random, "expert": ref_expert, "source": source},
        # how actions reach the simulator (the MPE tasks' v0 and v1 differ); evaluation uses the same layout
        "action_layout": getattr(dataset, "action_layout", None),
    }


def _kept_references(facts: dict[str, Any], stored: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """A resumed run keeps the reference returns it started with (its config.json's), so every evaluation of the
    run is normalized alike, even where the manifest or the catalog changed in between (say, an expert policy
    added to the index); the newer pair is named in a warning."""
    kept = (stored.get("dataset") or {}).get("references")
    if not isinstance(kept, dict) or "random" not in kept or "expert" not in kept:
        return facts  # a config.json from before references were recorded: today's pair
    now = facts["references"]
    if (kept["random"], kept["expert"]) != (now["random"], now["expert"]):
        log.warning(
            "%s keeps the reference returns it started with (random %s, expert %s); the %s now gives random %s, "
            "expert %s: start a new run (another --runs) to be scored with them",
            run_dir, kept["random"], kept["expert"], now.get("source", "dataset"), now["random"], now["expert"],
        )
    return {**facts, "references": kept}


def check_compatible(algo_cls: type, algo_id: str, problem: Any, dataset_id: str) -> None:
    if problem.n_agents > 1 and not getattr(algo_cls, "multi_agent", False):
        from offline_bench.algos import ALGORITHMS

        ma = [k for k in ALGORITHMS if k.startswith("ma-") or k == "omar"]
        raise TrainError(
            f"{algo_id} is a single-agent algorithm but {dataset_id} has {problem.n_agents} agents; "
            f"use a multi-agent one: {', '.join(ma)}"
        )


def _diverged(step: int, tc: TrainConfig, start: int, metrics: MetricsCSV) -> str:
    """The message of a run whose policy acts NaN or inf at an evaluation: training diverged."""
    last = metrics.rows[-1] if metrics.rows else {}
    broken = [k for k, v in last.items() if v and v.lower() in ("nan", "inf", "-inf")]
    ckpt = max((step - 1) // tc.checkpoint_every * tc.checkpoint_every, start)  # before this step, or resumed from
    kept = f"its last checkpoint (step {ckpt:,})" if ckpt > 0 else "no checkpoint"
    return (f"training diverged: the policy's actions are NaN or inf at the evaluation of step {step:,}"
            + (f" ({', '.join(broken)} not finite in metrics.csv's last row)" if broken else "")
            + f"; the run keeps {kept}, and resuming would repeat the same updates: change the config (e.g. a "
            "smaller learning rate) and train into another --runs folder")


def catalog_agents(dataset_id: str) -> int:
    """Learning agents of a catalog dataset, from its task's static facts: no dataset file or simulator needed, so
    ``check_compatible`` can refuse a pairing before a missing dataset's collect command is suggested."""
    from offline_bench.data.catalog import catalog_entry
    from offline_bench.envs.tasks import task_spec

    return task_spec(catalog_entry(dataset_id).task).n_agents


# ---------------------------------------------------------------------------------------------------------- loop
def _average_metrics(buffer: dict[str, list[Tensor]]) -> dict[str, float]:
    """Mean of each metric over the buffered updates, copied to the host in ONE transfer."""
    if not buffer:
        return {}
    keys = list(buffer)
    device = next((v.device for values in buffer.values() for v in values if isinstance(v, Tensor)), None)

    def column(values: list[Any]) -> Tensor:  # [steps]; plain numbers are tolerated, tensors stay on the device
        return torch.stack([torch.as_tensor(v, device=device).detach().float().reshape(-1).mean() for v in values])

    means = torch.stack([column(buffer[k]).mean() for k in keys])  # [K]
    return dict(zip(keys, means.cpu().tolist()))


def _summarize(evals: list[dict[str, Any]], last_k: int, has_refs: bool) -> dict[str, Any]:
    last = evals[-last_k:]
    summary: dict[str, Any] = {
        "final_return": evals[-1]["return"],
        "last_k_return": float(np.mean([e["return"] for e in last])),
        "best_return": max(e["return"] for e in evals),
    }
    if all("length" in e for e in last):  # evaluations resumed from checkpoints older than the length have none
        summary |= {"final_length": evals[-1]["length"], "last_k_length": float(np.mean([e["length"] for e in last]))}
    if has_refs:
        scores = [e["score"] for e in evals]
        summary |= {
            "final_score": scores[-1],
            "last_k_score": float(np.mean(scores[-last_k:])),
            "last_k_score_std": float(np.std(scores[-last_k:])),
            "best_score": max(scores),
        }
    return summary


def _cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``'s ``model name`` on Linux, e.g. ``AMD EPYC``), else what ``platform``
    knows (often only ``x86_64``). Tables name it under their runs: the same project's wall times differ by CPU."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and ":" in line:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _config_record(resolved: ResolvedConfig, facts: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {
        **resolved.to_json(),
        "dataset": facts,
        "sources": resolved.sources,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
        "torch_threads": torch.get_num_threads(),
        "versions": package_versions(),
        "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": sys.argv,
    }


def _same_run(stored: dict[str, Any], record: dict[str, Any], resolved: ResolvedConfig | None = None) -> list[str]:
    """Fields that differ between a stored config.json and this invocation's (device may differ on resume).

    A field the stored config lacks, while this invocation leaves it at its default, is no difference: the run was
    made before that option existed, and a new option's default keeps the old behaviour (e.g. ``bf16``). The
    defaults come from ``resolved``'s config classes (without it, every missing field counts).
    """
    defaults: dict[str, dict[str, Any]] = {"algo_config": {}, "train_config": {}}
    if resolved is not None:
        defaults = {"algo_config": config_lib.to_dict(type(resolved.algo_config)()),
                    "train_config": config_lib.to_dict(TrainConfig())}
    diffs = []
    if stored.get("algo") != record["algo"]:
        diffs.append(f"algo {stored.get('algo')} vs {record['algo']}")
    if (stored.get("dataset") or {}).get("sha256") != record["dataset"]["sha256"]:
        diffs.append("dataset sha256 (the dataset file changed)")
    for section in ("algo_config", "train_config"):
        old, new = stored.get(section, {}), record[section]
        for key in sorted(set(old) | set(new)):
            if key in _EXECUTION_KEYS or old.get(key) == new.get(key):
                continue
            if key not in old and key in new and new[key] == defaults[section].get(key, object()):
                continue  # an option newer than the run, at its default
            diffs.append(f"{key} {old.get(key)!r} vs {new.get(key)!r}")
    return diffs


def config_differences(run_dir: Path, resolved: ResolvedConfig, sha256: str | None = None) -> list[str]:
    """What differs between the config a run directory was trained with (its ``config.json``) and ``resolved``:
    ``["gamma 0.99 vs 0.5", ...]``, empty when they agree or the run has no readable config.json. ``sha256`` of the
    dataset file, when known, is compared too (``sweep`` checks a grid without reading every dataset file)."""
    try:
        stored = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(stored, dict) or not stored:
        return []
    current = {**resolved.to_json(), "dataset": {"sha256": sha256 or (stored.get("dataset") or {}).get("sha256")}}
    return _same_run(stored, current, resolved)


def _finished(run_dir: Path, resolved: ResolvedConfig, sha256: str | None) -> TrainOutcome:
    """The outcome of a run whose result.json exists: it is not re-run.

    A different config is refused (TrainError listing the differing keys): reporting the old result for the new
    arguments would pass one config's score off as another's. ``sweep`` skips finished runs before calling train.
    """
    diffs = config_differences(run_dir, resolved, sha256)
    if diffs:
        raise TrainError(
            f"{run_dir} holds a finished run with a different config ({'; '.join(diffs)}); pass another --runs "
            "folder or delete the run directory to train with these arguments"
        )
    log.warning("run %s is already finished; not re-running (delete it to train again)", run_dir)
    result = json.loads((run_dir / "result.json").read_text())
    steps = int(result.get("steps_done", result.get("steps", 0)))
    return TrainOutcome(run_dir, "already finished", steps, steps, result)


def train_run(
    dataset: Any,
    algo_cls: type,
    resolved: ResolvedConfig,
    runs: str | os.PathLike[str] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    stop_after: int | None = None,
) -> TrainOutcome:
    """Train ``algo_cls`` on a loaded ``dataset`` with ``resolved`` config, writing (or resuming) its run directory.

    ``stop_after`` ends the run after that many updates in total, as if it were killed there (no result.json):
    the next call resumes from the last checkpoint.
    """
    tc: TrainConfig = resolved.train_config
    facts = dataset_facts(dataset)
    run_dir = run_dir_for(facts["id"], resolved.algo_id, tc.seed, runs)
    result_path = run_dir / "result.json"
    device = resolve_device(tc.device, resolved.sources.get("device", "--device"))
    problem = dataset.problem()
    check_compatible(algo_cls, resolved.algo_id, problem, facts["id"])
    batch_size = getattr(resolved.algo_config, "batch_size", None)
    if batch_size is None:
        raise TrainError(f"{resolved.algo_id}'s config has no batch_size field; the loop needs one")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise TrainError(f"batch_size must be a positive integer, got {batch_size!r}")
    if tc.cuda_graphs and device.type != "cuda":
        raise TrainError(f"cuda_graphs=true needs a CUDA device, but this run is on {device}; leave it off on CPU")
    if tc.cuda_graphs and not callable(getattr(algo_cls, "graph_key", None)):
        raise TrainError(f"{resolved.algo_id} defines no graph_key(), so it cannot run with cuda_graphs=true")

    if result_path.exists():
        return _finished(run_dir, resolved, facts["sha256"])

    # Everything that can refuse the config runs before the run directory exists, so a refused command leaves
    # nothing behind that would block the corrected one. The seeds are set here because building the algorithm
    # initialises its networks (a resume then restores every RNG state from the checkpoint).
    opponent, facts["opponent"] = _opponent(dataset, facts["task"])
    if device.type == "cpu":
        tune_cpu_allocator()
    torch.manual_seed(tc.seed)
    np.random.seed(tc.seed % 2**32)
    algo = build_algorithm(algo_cls, resolved, problem, device)

    run_dir.mkdir(parents=True, exist_ok=True)
    with _RunLock(run_dir), cpu_denormals_flushed():
        return _train_locked(dataset, algo, resolved, run_dir, facts, device, opponent, batch_size,
                             on_progress, stop_after)


def build_algorithm(algo_cls: type, resolved: ResolvedConfig, problem: Any, device: torch.device) -> Any:
    """``algo_cls(config, problem, device)``; a config it cannot be built with is a TrainError (one line).

    Algorithms raise ValueError with their own message for values they check (``mmd_kernel``, ``critic``, ...);
    anything else that fails during construction is still caused by a config value the layers could not judge
    (e.g. a size that only fails against the dataset's dimensions), so it is reported, not shown as a traceback
    (``-vv`` logs the traceback).
    """
    try:
        return algo_cls(resolved.algo_config, problem, device)
    except ValueError as err:
        raise TrainError(str(err)) from None
    except (TypeError, IndexError, ZeroDivisionError, RuntimeError) as err:
        log.debug("building %s failed", resolved.algo_id, exc_info=True)
        raise TrainError(
            f"cannot build {resolved.algo_id} with this config ({type(err).__name__}: {str(err).splitlines()[0]}); "
            "check the values given with --set / --config (offline-bench train --show-config lists them)"
        ) from None


class _RunLock:
    """``<run_dir>/.lock`` holding the training process's pid: a second ``train`` of the same run is refused while
    the first is alive; a lock left by a killed process is taken over.

    The lock appears with the pid already in it (written to a private file, then hard-linked into place, which
    fails if a lock exists), so no process can read an empty lock and take it for a stale one; a stale lock is
    moved aside and removed only if it is still the one found stale; and on exit a process removes only its own.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / ".lock"

    def __enter__(self) -> "_RunLock":
        mine = self.path.with_name(f".lock.{os.getpid()}")
        mine.write_text(str(os.getpid()))
        try:
            for _ in range(3):
                if self._create(mine):
                    return self
                holder = _lock_pid(self.path)
                if holder is None:
                    continue  # removed meanwhile: try again
                if holder and holder != os.getpid() and _alive(holder):
                    raise TrainError(f"{self.path.parent} is being trained by process {holder}; wait for it or stop it")
                self._remove_stale(holder)
            raise TrainError(f"cannot take the lock {self.path}; delete it if no train process uses this run")
        finally:
            mine.unlink(missing_ok=True)

    def _create(self, mine: Path) -> bool:
        """Put the lock in place with our pid in it; False if a lock exists."""
        try:
            os.link(mine, self.path)
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links: create, then write at once
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return False
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
        return True

    def _remove_stale(self, stale: int) -> None:
        """Remove the lock of dead process ``stale`` (0: unreadable), unless another process took the lock since."""
        aside = self.path.with_name(f".lock.stale.{os.getpid()}")
        try:
            os.replace(self.path, aside)
        except FileNotFoundError:
            return
        holder = _lock_pid(aside)
        if holder is not None and holder != stale and _alive(holder):  # a fresh lock, not the stale one: restore it
            try:
                os.link(aside, self.path)
            except OSError:
                pass
            aside.unlink(missing_ok=True)
            raise TrainError(f"{self.path.parent} is being trained by process {holder}; wait for it or stop it")
        aside.unlink(missing_ok=True)

    def __exit__(self, *exc: object) -> None:
        if _lock_pid(self.path) == os.getpid():
            self.path.unlink(missing_ok=True)


def _lock_pid(path: Path) -> int | None:
    """The pid in a lock file (0 if it is empty or unreadable), or None if there is no such file."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    except OSError:
        return 0
    return int(text) if text.isdigit() else 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _train_locked(
    dataset: Any,
    algo: Any,
    resolved: ResolvedConfig,
    run_dir: Path,
    facts: dict[str, Any],
    device: torch.device,
    opponent: Any,
    batch_size: int,
    on_progress: Callable[[Progress], None] | None,
    stop_after: int | None,
) -> TrainOutcome:
    DeviceSampler = _data_api("DeviceSampler")
    tc: TrainConfig = resolved.train_config
    result_path, config_path, ckpt_path = run_dir / "result.json", run_dir / "config.json", run_dir / "checkpoint.pt"
    record = _config_record(resolved, facts, device)
    resuming = ckpt_path.exists()
    try:
        stored = json.loads(config_path.read_text()) if config_path.exists() else None
    except ValueError as err:
        raise TrainError(f"{config_path} is damaged and cannot be read (not valid JSON: {err}); delete the run "
                         f"directory {run_dir} to start this run over") from None
    if stored is not None:
        diffs = _same_run(stored, record, resolved)
        if diffs:
            raise TrainError(
                f"{run_dir} holds an unfinished run with a different config ({'; '.join(diffs)}); "
                "use the same arguments to resume it, or delete the directory / pass another --runs to start over"
            )
    if not resuming or stored is None:
        write_json(config_path, record)  # before the first update
    else:
        facts = _kept_references(facts, stored, run_dir)

    ref_random, ref_expert = facts["references"]["random"], facts["references"]["expert"]
    has_refs = has_references(ref_random, ref_expert)
    if not has_refs:
        log.warning("%s carries no random/expert reference returns: evaluations record raw returns only", facts["id"])

    sampler = DeviceSampler(dataset, device, tc.seed)
    start, elapsed, evals = 0, 0.0, []
    if resuming:
        ckpt = _load_checkpoint(ckpt_path)
        algo.load_state_dict(ckpt["algo"])
        sampler.load_state_dict(ckpt["sampler"])
        torch.set_rng_state(ckpt["torch_rng"])
        if device.type == "cuda" and ckpt.get("cuda_rng") is not None:
            torch.cuda.set_rng_state_all(ckpt["cuda_rng"])
        np.random.set_state(ckpt["numpy_rng"])
        start, elapsed, evals = int(ckpt["step"]), float(ckpt["time_s"]), list(ckpt["evals"])
        log.info("resuming %s from step %d", run_dir, start)
    metrics = MetricsCSV(run_dir / "metrics.csv", keep_until_step=start if resuming else None)
    graphed = GraphedUpdates(algo, sampler, batch_size, device) if tc.cuda_graphs else None

    evaluator: Evaluator | None = None
    buffer: dict[str, list[Tensor]] = {}
    latest = evals[-1] if evals else None
    step = start
    t0 = time.perf_counter() - elapsed
    try:
        for step in range(start + 1, tc.steps + 1):
            update_metrics = graphed.step() if graphed is not None else algo.update(sampler.sample(batch_size))
            for key, value in update_metrics.items():
                buffer.setdefault(key, []).append(value)

            last = step == tc.steps
            do_eval = step % tc.eval_every == 0 or last
            do_ckpt = step % tc.checkpoint_every == 0 or last
            if step % tc.log_every == 0 or do_eval or do_ckpt:
                row: dict[str, Any] = {"step": step}
                if do_eval:
                    if evaluator is None:
                        evaluator = Evaluator(facts["task"], tc.eval_episodes, device, opponent=opponent,
                                              action_layout=facts["action_layout"])
                    try:
                        res: EvalResult = evaluator(algo.act, eval_seed(tc.seed, step))
                    except NonFiniteActionError:
                        metrics.append(row | {"time_s": round(time.perf_counter() - t0, 3)}
                                       | _average_metrics(buffer))  # the diverged metrics, for the diagnosis
                        raise TrainError(_diverged(step, tc, start, metrics)) from None
                    score = normalized_score(res.mean_return, ref_random, ref_expert) if has_refs else None
                    latest = {"step": step, "return": res.mean_return, "return_std": res.std_return, "score": score,
                              "length": res.mean_length}
                    evals.append(latest)
                    row |= {"eval_return": res.mean_return, "eval_return_std": res.std_return,
                            "normalized_score": score, "eval_length": res.mean_length}
                    log.info("%s step %d: return %.2f +- %.2f, normalized score %s, %.0f steps per episode",
                             facts["id"], step, res.mean_return, res.std_return,
                             "n/a" if score is None else f"{score:.1f}", res.mean_length)
                row["time_s"] = round(time.perf_counter() - t0, 3)
                row |= _average_metrics(buffer)
                buffer = {}
                metrics.append(row)
                if do_ckpt:
                    metrics.sync()  # on disk before the checkpoint that vouches for its rows (power loss)
                    save_checkpoint(ckpt_path, {
                        "format": CHECKPOINT_FORMAT,
                        "step": step,
                        "time_s": time.perf_counter() - t0,
                        "evals": evals,
                        "algo": algo.state_dict(),
                        "sampler": sampler.state_dict(),
                        "torch_rng": torch.get_rng_state(),
                        "cuda_rng": torch.cuda.get_rng_state_all() if device.type == "cuda" else None,
                        "numpy_rng": np.random.get_state(),
                    })
            if on_progress is not None:
                on_progress(Progress(step, tc.steps, latest and latest["return"], latest and latest["score"]))
            if stop_after is not None and step >= stop_after and not last:
                log.info("stopping %s at step %d (stop_after)", run_dir, step)
                return TrainOutcome(run_dir, "stopped", start, step, None)
    finally:
        if evaluator is not None:
            evaluator.close()

    if not evals:  # resumed from the final checkpoint after its evaluation: nothing left to run
        raise TrainError(f"{run_dir} has no evaluations to summarize; delete the directory and run again")
    result = {
        "dataset_id": facts["id"],
        "algo": resolved.algo_id,
        "seed": tc.seed,
        "steps": tc.steps,
        "statistic": TABLE_STATISTIC if has_refs else None,
        "last_k": tc.last_k,
        "score": None,
        "normalized": has_refs,
        "references": facts["references"],
        "evaluations": len(evals),
        "eval_episodes": tc.eval_episodes,
        **_summarize(evals, tc.last_k, has_refs),
        "steps_done": step,
        "device": str(device),
        "package_version": __version__,
        "wall_time_s": round(time.perf_counter() - t0, 3),
    }
    if has_refs:
        result["score"] = result["last_k_score"]
    write_json(result_path, result)
    return TrainOutcome(run_dir, "finished", start, step, result)


def _canonical_id(dataset_id: str) -> str:
    from offline_bench.data.catalog import resolve_dataset_id

    return resolve_dataset_id(dataset_id)


def _data_api(name: str) -> Any:
    """``offline_bench.data.<name>`` (falling back to the submodule that defines it)."""
    import importlib

    data = importlib.import_module("offline_bench.data")
    if hasattr(data, name):
        return getattr(data, name)
    module = {"DeviceSampler": "offline_bench.data.sampler", "load_dataset": "offline_bench.data.dataset"}[name]
    return getattr(importlib.import_module(module), name)


def load_algorithm(algo: str) -> tuple[str, type]:
    """Registry id and class for ``algo`` (aliases like ``td3_bc`` accepted); TrainError when unknown or missing."""
    from offline_bench.algos import canonical_algo_id, get_algorithm

    try:
        algo_id = canonical_algo_id(algo)
    except KeyError as err:
        raise TrainError(err.args[0]) from None
    try:
        return algo_id, get_algorithm(algo_id)
    except (ImportError, AttributeError) as err:
        raise TrainError(f"algorithm {algo_id} is registered but cannot be loaded ({err})") from None


def prepare(
    algo: str,
    dataset_id: str | None = None,
    *,
    seed: int | None = None,
    steps: int | None = None,
    device: str | None = None,
    config_file: str | os.PathLike[str] | None = None,
    sets: dict[str, Any] | None = None,
) -> tuple[type, ResolvedConfig]:
    """The algorithm class and the fully resolved config (every layer, see ``train.config``), without training."""
    algo_id, algo_cls = load_algorithm(algo)
    if dataset_id is not None:
        from offline_bench.data.catalog import resolve_dataset_id

        dataset_id = resolve_dataset_id(dataset_id)  # UnknownDatasetError listing the valid tasks and qualities
    resolved = resolve_config(
        algo_id,
        algo_cls.config_cls,
        dataset_id,
        config_file=config_file,
        sets=sets,
        flags={"steps": steps, "seed": seed, "device": device},
    )
    return algo_cls, resolved


def train(
    algo: str,
    dataset: str,
    *,
    seed: int | None = None,
    steps: int | None = None,
    device: str | None = None,
    config_file: str | os.PathLike[str] | None = None,
    sets: dict[str, Any] | None = None,
    root: str | os.PathLike[str] | None = None,
    runs: str | os.PathLike[str] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    stop_after: int | None = None,
) -> TrainOutcome:
    """Load (and verify) ``dataset`` from ``root``, resolve the config, and train or resume its run directory.

    ``offline-bench train --algo X --dataset Y ...`` is this function.
    """
    load_dataset = _data_api("load_dataset")

    algo_cls, resolved = prepare(
        algo, dataset, seed=seed, steps=steps, device=device, config_file=config_file, sets=sets
    )  # config errors before the (possibly slow) dataset load
    canonical = _canonical_id(dataset)
    # and a pairing that cannot train, before a missing dataset's collect command is suggested
    check_compatible(algo_cls, resolved.algo_id, SimpleNamespace(n_agents=catalog_agents(canonical)), canonical)
    finished = run_dir_for(canonical, resolved.algo_id, resolved.train_config.seed, runs)
    if (finished / "result.json").exists():  # no need to load (and hash) the dataset
        return _finished(finished, resolved, None)
    loaded = load_dataset(dataset, root=root)
    return train_run(loaded, algo_cls, resolved, runs=runs, on_progress=on_progress, stop_after=stop_after)


def _opponent(dataset: Any, task: str) -> tuple[Any, str]:
    """The fixed opponent (tag's prey, world's fast agents) to evaluate against, and a description of it.

    The same opponent the dataset was collected against, as its manifest records it (``env.opponents``, or
    ``opponent``): nothing recorded, or a text saying the opponents act at random, means the adapter's
    uniform-random opponent; a text naming a (fixed opponent) policy, or a mapping with its ``sha256``, means the
    task's committed ``opponent`` behaviour policy (which must then exist, and match the sha256 when one is given).
    """
    from offline_bench.envs import OPPONENTS

    if task not in OPPONENTS:
        return None, "none"
    manifest = getattr(dataset, "manifest", {}) or {}
    recorded = (manifest.get("env") or {}).get("opponents", manifest.get("opponent"))
    wanted = recorded.get("sha256") if isinstance(recorded, dict) else None
    text = str(recorded.get("kind", "policy") if isinstance(recorded, dict) else recorded or "").lower()
    if not text or "random" in text or "policy" not in text:
        return None, "uniform random (the env adapter's default opponent)"
    from offline_bench.behaviour.policy import load_policy

    policy = load_policy(task, "opponent")
    if policy is None or (wanted and getattr(policy, "sha256", None) != wanted):
        raise TrainError(
            f"{dataset.dataset_id} was collected against a fixed {task} opponent policy, but the committed one is "
            f"{'missing' if policy is None else 'a different file'}; restore datasets/policies/ (git checkout) "
            "or re-collect the dataset"
        )
    return policy.as_opponent(), f"committed {task} opponent policy (sha256 {policy.sha256})"


__all__ = [
    "Progress",
    "build_algorithm",
    "cpu_denormals_flushed",
    "config_differences",
    "TABLE_STATISTIC",
    "TrainError",
    "TrainOutcome",
    "check_compatible",
    "load_algorithm",
    "prepare",
    "train",
    "dataset_facts",
    "resolve_device",
    "run_dir_for",
    "train_run",
    "tune_cpu_allocator",
    "write_atomic",
    "write_json",
]
