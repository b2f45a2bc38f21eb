"""Run a grid of (dataset, algorithm, seed) trainings once each: as local processes, or as Ray tasks.

Every run is ``offline-bench train --algo A --dataset D --seed K [--steps N] [--set k=v ...] --root R --runs S`` in
its own process, so the sweep writes exactly the run directories a hand-typed ``train`` would
(``<runs>/<dataset-id>/<algo>/seed<k>/``). Re-running a sweep skips runs whose ``result.json`` exists and starts the
others again; ``train`` resumes an unfinished run from its ``checkpoint.pt`` by itself.

- ``local``: at most ``jobs`` processes at once on this machine.
- ``ray``: one Ray task (1 CPU) per run, on the cluster at ``address`` or on a local Ray started for the sweep with
  ``jobs`` CPUs. Ray is an optional extra (``pip install 'offline-bench[ray]'``). On a multi-machine cluster the
  dataset root and runs folder must be the same shared path on every node, and the package installed there.

Each run's output (train's log and errors) goes to ``<runs>/.logs/<dataset-id>/<algo>/seed<k>.log``, appended to on
every attempt. Datasets that are not collected are skipped with a message naming the ``collect`` command, unless
the sweep is asked to collect them first (``collect=True``: ``offline-bench collect <id> --root R``, one at a time);
a collection that fails is reported with the cause ``collect`` gave.

``resolve_grid`` checks the whole grid before anything starts (``check_grid``): every ``--set`` key must be a config
key of every algorithm of the grid, and single-agent algorithms cannot be paired with multi-agent datasets.
If the sweep is interrupted (Ctrl-C, or SIGTERM through the CLI), the local train processes it started are stopped
too (SIGTERM, then SIGKILL after a grace period): they resume from their last checkpoint on the next sweep.

Presets are the papers' grids (``PRESETS``); ``budget="quick"`` runs a preset's ``quick_steps`` updates per run
(``quick_budget_text()`` lists them; ``QUICK_STEPS`` without a preset), a smoke test of the whole grid;
``budget="paper"`` leaves the number of updates to the per-task defaults (the papers' budgets).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from offline_bench.paths import data_root, runs_root

log = logging.getLogger(__name__)

EXECUTORS: tuple[str, ...] = ("local", "ray")
BUDGETS: tuple[str, ...] = ("quick", "paper")
# `python -c` instead of the console script: works from a checkout without `pip install`, and on Ray workers
# whose PATH lacks the virtual environment.
CLI_PREFIX: tuple[str, ...] = ("-c", "from offline_bench.cli import main; main()")
LOG_DIR = ".logs"


class SweepError(Exception):
    """A sweep that cannot start (bad grid, missing Ray); the message says what to do."""


@dataclass(frozen=True)
class Preset:
    """A paper's table as a grid: tasks x qualities x algorithms x seeds."""

    name: str
    source: str
    tasks: tuple[str, ...]
    qualities: tuple[str, ...]
    algos: tuple[str, ...]
    seeds: int
    quick_steps: int  # updates per run under --budget quick
    quick_eval_every: int  # evaluation period under --budget quick (a few points per learning curve)

    @property
    def datasets(self) -> tuple[str, ...]:
        """Dataset names (newest version) in the table's row order: quality, then task."""
        return tuple(f"{task}-{quality}" for quality in self.qualities for task in self.tasks)


_OMAR_QUALITIES = ("random", "mixed", "medium", "expert")  # the paper's column order: random, medium-replay, ...
_OMAR_ALGOS = ("ma-td3bc", "ma-cql", "ma-icq", "omar")
PRESETS: dict[str, Preset] = {
    "omar-mpe": Preset(
        "omar-mpe", "OMAR paper (Pan et al., ICML 2022), Table 3: multi-agent particle environments",
        ("spread", "tag", "world"), _OMAR_QUALITIES, _OMAR_ALGOS, seeds=5, quick_steps=100, quick_eval_every=20,
    ),
    "omar-mamujoco": Preset(
        "omar-mamujoco", "OMAR paper (Pan et al., ICML 2022), Table 6: multi-agent HalfCheetah (2x3)",
        ("halfcheetah-2x3",), _OMAR_QUALITIES, _OMAR_ALGOS, seeds=5, quick_steps=1_000, quick_eval_every=250,
    ),
    "dbr-pybullet": Preset(
        "dbr-pybullet", "DBR paper (Siu, Traish & Xu 2021), Table 1: PyBullet offline (seed count not stated; 5 here)",
        ("hopper", "halfcheetah", "walker2d", "ant"), ("random", "medium", "mixed"), ("dbr", "bear", "cql", "td3bc"),
        seeds=5, quick_steps=2_000, quick_eval_every=500,
    ),
}
QUICK_STEPS = 200  # --budget quick without a preset
QUICK_EVAL_EVERY = 50
STOP_GRACE_S = 10.0  # how long stopped train processes get to exit after SIGTERM before SIGKILL


def quick_budget_text() -> str:
    """``--budget quick``'s updates per run, from ``PRESETS`` and ``QUICK_STEPS`` (help texts use this, so they
    cannot drift): ``"100 updates per run for omar-mpe, 1,000 for omar-mamujoco, ..., 200 without a preset"``."""
    parts = [f"{p.quick_steps:,} {'updates per run ' if i == 0 else ''}for {name}"
             for i, (name, p) in enumerate(PRESETS.items())]
    return ", ".join(parts) + f", {QUICK_STEPS:,} without a preset"


@dataclass(frozen=True)
class RunSpec:
    """One training run of the grid."""

    dataset_id: str  # resolved id with version, e.g. spread-random-v0
    algo: str  # registry id
    seed: int
    steps: int | None = None  # None: the per-task default (the paper's budget)
    sets: tuple[str, ...] = ()  # "key=value" overrides passed as --set

    @property
    def name(self) -> str:
        return f"{self.dataset_id}/{self.algo}/seed{self.seed}"

    def run_dir(self, runs: Path | str | None) -> Path:
        return runs_root(runs) / self.dataset_id / self.algo / f"seed{self.seed}"

    def log_path(self, runs: Path | str | None) -> Path:
        return runs_root(runs) / LOG_DIR / self.dataset_id / self.algo / f"seed{self.seed}.log"

    def train_args(self, root: Path | str, runs: Path | str) -> list[str]:
        """The ``offline-bench`` arguments of this run (without the program)."""
        args = ["train", "--algo", self.algo, "--dataset", self.dataset_id, "--seed", str(self.seed),
                "--root", str(root), "--runs", str(runs)]
        if self.steps is not None:
            args += ["--steps", str(self.steps)]
        for pair in self.sets:
            args += ["--set", pair]
        return args


@dataclass(frozen=True)
class RunOutcome:
    spec: RunSpec
    status: str  # "finished" | "already finished" | "failed" | "missing dataset"
    seconds: float = 0.0
    log: Path | None = None
    message: str = ""


@dataclass
class SweepSummary:
    outcomes: list[RunOutcome] = field(default_factory=list)
    missing_datasets: list[str] = field(default_factory=list)
    # dataset id -> why `collect` failed for it (the error line collect printed), for datasets --collect tried
    collect_errors: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def ok(self) -> bool:
        return self.count("failed") == 0 and not self.missing_datasets


def resolve_dataset(name: str) -> str:
    """The versioned catalog id of ``name`` (``spread-mixed`` -> ``spread-mixed-v0``); SweepError if unknown."""
    from offline_bench.data.catalog import UnknownDatasetError, resolve_dataset_id

    try:
        return resolve_dataset_id(name)
    except UnknownDatasetError as err:
        raise SweepError(str(err)) from None


def is_collected(dataset_id: str, root: Path | str | None) -> bool:
    """Does ``<root>`` hold the dataset's file and manifest (``offline_bench.data``'s notion of collected)?"""
    from offline_bench.data.dataset import dataset_status

    return dataset_status(dataset_id, root) == "collected"


def resolve_grid(
    algos: Sequence[str] = (),
    datasets: Sequence[str] = (),
    seeds: int | None = None,
    preset: str | None = None,
    budget: str = "paper",
    steps: int | None = None,
    sets: Sequence[str] = (),
) -> list[RunSpec]:
    """Every (dataset, algorithm, seed) run of the grid, in table order; explicit arguments override the preset's.

    ``budget``: ``quick`` (``steps`` or the preset's quick number of updates, with a few evaluations) or ``paper``
    (``steps`` if given, else the per-task defaults). ``sets`` are ``key=value`` config overrides for every run, or
    ``algo:key=value`` for one algorithm's runs (a key only some of the grid's algorithms have, e.g. ``omar:omar_coe``).
    A grid that ``train`` would refuse run by run (``check_grid``) raises SweepError here, before anything starts.
    """
    from offline_bench.algos import canonical_algo_id

    if budget not in BUDGETS:
        raise SweepError(f"unknown budget {budget!r}; choose one of: {', '.join(BUDGETS)}")
    chosen = None
    if preset is not None:
        if preset not in PRESETS:
            raise SweepError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
        chosen = PRESETS[preset]
    algos = list(algos) or list(chosen.algos if chosen else ())
    datasets = list(datasets) or list(chosen.datasets if chosen else ())
    if not algos or not datasets:
        raise SweepError("a sweep needs --algos and --datasets (comma-separated), or a --preset: "
                         f"{', '.join(PRESETS)}")
    seeds = seeds if seeds is not None else (chosen.seeds if chosen else 1)
    if seeds < 1:
        raise SweepError(f"--seeds must be >= 1 (the number of seeds, 0..N-1), got {seeds}")
    try:
        algo_ids = list(dict.fromkeys(canonical_algo_id(a) for a in algos))
    except KeyError as err:
        raise SweepError(err.args[0]) from None
    dataset_ids = list(dict.fromkeys(resolve_dataset(d) for d in datasets))
    overrides, scoped = [], {a: [] for a in algo_ids}  # for every run; for one algorithm's runs
    for pair in sets:
        if "=" not in pair:
            raise SweepError(f"--set expects key=value (or algo:key=value), got {pair!r}")
        key = pair.split("=", 1)[0]
        if ":" not in key:
            overrides.append(pair)
            continue
        scope, rest = pair.split(":", 1)
        try:
            algo_id = canonical_algo_id(scope)
        except KeyError as err:
            raise SweepError(f"--set {pair}: {err.args[0]}") from None
        if algo_id not in scoped:
            raise SweepError(f"--set {pair}: {algo_id} is not one of this sweep's algorithms ({', '.join(algo_ids)})")
        scoped[algo_id].append(rest)
    if budget == "quick":
        quick_steps, quick_every = (chosen.quick_steps, chosen.quick_eval_every) if chosen else (QUICK_STEPS,
                                                                                               QUICK_EVAL_EVERY)
        # --steps keeps the quick budget's few evaluations: its period scales with the updates (10,000 updates
        # at the preset's period of 50 would be 200 evaluations)
        steps = steps or quick_steps
        eval_every = max(1, min(steps, steps * quick_every // quick_steps))
        overrides = [f"eval_every={eval_every}"] + overrides  # a later --set of the same key wins
    specs = [RunSpec(d, a, s, steps, tuple(overrides + scoped[a]))
             for d in dataset_ids for a in algo_ids for s in range(seeds)]
    check_grid(specs)
    return specs


def check_grid(specs: Sequence[RunSpec]) -> None:
    """Refuse a grid whose runs ``train`` would refuse, before any of them starts (SweepError, one line).

    The checks are ``train``'s own: ``train.prepare`` resolves every run's config (unknown ``--set`` keys, bad
    values) and ``train.loop.check_compatible`` refuses single-agent algorithms on multi-agent datasets, whose
    agent counts come from the catalog's task facts, so no dataset file is needed.
    """
    from types import SimpleNamespace

    from offline_bench.config import parse_sets
    from offline_bench.train import TrainError, prepare
    from offline_bench.train.config import TrainConfig
    from offline_bench.train.loop import catalog_agents, check_compatible, load_algorithm, resolve_device

    if not specs:
        return
    algo_ids = list(dict.fromkeys(s.algo for s in specs))
    dataset_ids = list(dict.fromkeys(s.dataset_id for s in specs))
    steps = specs[0].steps
    try:  # every run of an algorithm has the same overrides (those for all runs, then its own algo:key=value)
        overrides_of = {a: parse_sets(list(next(s.sets for s in specs if s.algo == a))) for a in algo_ids}
    except ValueError as err:
        raise SweepError(str(err)) from None
    # Unknown keys first, from the config classes themselves, so the message can name every key and the algorithms
    # that lack it (train would stop at the first one).
    loop_keys = {f.name for f in dataclasses.fields(TrainConfig)}
    valid = {a: loop_keys | {f.name for f in dataclasses.fields(load_algorithm(a)[1].config_cls)} for a in algo_ids}
    lacking: dict[str, list[str]] = {}
    for algo_id in algo_ids:
        for key in overrides_of[algo_id]:
            if key not in valid[algo_id]:
                lacking.setdefault(key, []).append(algo_id)
    if lacking:
        which = "; ".join(f"{key!r} (not a key of {', '.join(algos)})" for key, algos in lacking.items())
        example = next(iter(lacking.values()))[0]
        known = {key: [a for a in algo_ids if key in valid[a]] for key in lacking}  # keys of some algorithms only
        scoped = [f"--set {owners[0]}:{key}=..." for key, owners in known.items() if owners]
        raise SweepError(f"unknown config key{'s' if len(lacking) > 1 else ''} in --set: {which}; nothing was "
                         f"started (`offline-bench train --algo {example} --show-config` lists the valid keys)"
                         + (f"; set a key for one algorithm's runs as {', '.join(scoped)}" if scoped else ""))
    unfit = []
    for algo_id in algo_ids:
        algo_cls = load_algorithm(algo_id)[1]
        for dataset_id in dataset_ids:
            agents = catalog_agents(dataset_id)
            try:
                check_compatible(algo_cls, algo_id, SimpleNamespace(n_agents=agents), dataset_id)
            except TrainError:
                unfit.append(f"{algo_id} on {dataset_id} ({agents} agents)")
    if unfit:
        from offline_bench.algos import ALGORITHMS

        multi_agent = [a for a in ALGORITHMS if getattr(load_algorithm(a)[1], "multi_agent", False)]
        raise SweepError(f"single-agent algorithms cannot train on multi-agent datasets: {', '.join(unfit)}; use a "
                         f"multi-agent algorithm there ({', '.join(multi_agent)}) or leave those datasets out; "
                         "nothing was started")
    for overrides in overrides_of.values():
        if "seed" in overrides:  # every run would refuse it: its --seed (0..N-1) and the --set disagree
            raise SweepError(f"--set seed={overrides['seed']}: a sweep's seeds are 0..N-1 from --seeds N (one run "
                             "each); leave seed out of --set; nothing was started")
    # Every run's whole config (shipped per-task files, then --set and --steps): bad values fail here, not per run.
    for dataset_id in dataset_ids:
        for algo_id in algo_ids:
            try:
                _, resolved = prepare(algo_id, dataset_id, steps=steps, sets=overrides_of[algo_id])
                resolve_device(resolved.train_config.device, resolved.sources.get("device", "default"))
            except (TrainError, ValueError, KeyError, FileNotFoundError) as err:
                text = err.args[0] if type(err) is KeyError and err.args else str(err)
                raise SweepError(f"{algo_id} on {dataset_id}: {text}; nothing was started") from None


def run_status(spec: RunSpec, runs: Path | str | None) -> str:
    """``finished`` (result.json), ``unfinished`` (a run folder exists: train resumes it), ``new``, or ``conflict``:
    the run folder holds a run (finished or not) trained with another config (``run_conflict``)."""
    run_dir = spec.run_dir(runs)
    if not run_dir.exists():
        return "new"
    if run_conflict(spec, runs):
        return "conflict"
    return "finished" if (run_dir / "result.json").is_file() else "unfinished"


def run_conflict(spec: RunSpec, runs: Path | str | None) -> list[str]:
    """How the config ``spec`` asks for differs from the one its run folder was trained with (``config.json``);
    empty for a new run or the same config. ``train`` refuses such a run; the sweep refuses the grid up front."""
    from offline_bench.config import parse_sets
    from offline_bench.train import prepare
    from offline_bench.train.loop import config_differences

    run_dir = spec.run_dir(runs)
    if not (run_dir / "config.json").is_file():
        return []
    _, resolved = prepare(spec.algo, spec.dataset_id, seed=spec.seed, steps=spec.steps,
                          sets=parse_sets(list(spec.sets)))
    return config_differences(run_dir, resolved)


def check_runs_folder(specs: Sequence[RunSpec], runs: Path | str | None) -> None:
    """Refuse a grid whose runs folder holds runs of it trained with another config (SweepError, one line): the
    sweep would skip the finished ones, so the table would show scores of settings that were not asked for."""
    conflicts = [(spec, diffs) for spec in specs if (diffs := run_conflict(spec, runs))]
    if conflicts:
        spec, diffs = conflicts[0]
        raise SweepError(
            f"{len(conflicts)} run folder(s) of this grid in {runs_root(runs)} hold runs trained with another config "
            f"(first: {spec.name}: {'; '.join(diffs)}); pass another --runs folder, or delete those runs, to train "
            "with these settings (--dry-run marks them 'conflict'); nothing was started"
        )


def check_writable(folder: Path, option: str) -> None:
    """Make ``folder`` (and its parents) or raise SweepError naming ``option``: before any run starts, not once per
    run in its log."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-")
        probe.close()
    except OSError as err:
        raise SweepError(f"cannot write to the {option} folder {folder} ({err.strerror or err}); pass a folder you "
                         "can write to; nothing was started") from None


def stop_processes(procs: Sequence[subprocess.Popen], grace: float = STOP_GRACE_S) -> list[int]:
    """SIGTERM every process of ``procs`` still running, give them ``grace`` seconds, SIGKILL the rest; their pids.

    ``train`` keeps its checkpoints either way (they are written atomically), so a stopped run resumes from its last
    one; SIGTERM first lets a process that handles it (``collect``, ``train`` where it does) clean up.
    """
    running = [p for p in procs if p.poll() is None]
    for proc in running:
        try:
            proc.terminate()
        except ProcessLookupError:  # exited since poll()
            pass
    deadline = time.monotonic() + grace
    for proc in running:
        try:
            proc.wait(timeout=max(deadline - time.monotonic(), 0.0))
        except subprocess.TimeoutExpired:
            log.warning("process %d did not exit %.0f s after SIGTERM; killing it", proc.pid, grace)
            proc.kill()
            proc.wait()
    return [p.pid for p in running]


class ChildProcesses:
    """The processes a local sweep has running (trains, collects), so an interrupted sweep can stop them.

    A train started by the sweep does not die with it: SIGTERM reaches only the sweep, and a train left running
    keeps its run's ``.lock``, so the resumed sweep would find the run "being trained by process N".
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen] = set()
        self.stopping = False

    def start(self, command: Sequence[str], **kwargs: Any) -> subprocess.Popen | None:
        """``subprocess.Popen(command, **kwargs)``, or None once ``stop`` was called (nothing new starts)."""
        with self._lock:
            if self.stopping:
                return None
            proc = subprocess.Popen(list(command), **kwargs)
            self._running.add(proc)
            return proc

    def finished(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._running.discard(proc)

    def stop(self, grace: float = STOP_GRACE_S) -> list[int]:
        """Start nothing more and stop what runs (``stop_processes``); the pids stopped."""
        with self._lock:
            self.stopping = True
            running = list(self._running)
        stopped = stop_processes(running, grace)
        if stopped:
            log.warning("stopped %d running process(es) of the sweep (pid %s); their runs resume on the next sweep",
                        len(stopped), ", ".join(map(str, stopped)))
        return stopped


def run_cli_process(args: Sequence[str], log_path: str, children: ChildProcesses | None = None) -> tuple[int, float]:
    """Run ``offline-bench <args>`` with this interpreter, output appended to ``log_path``; (exit code, seconds).

    ``children``: where a local sweep keeps its running processes (exit code -SIGTERM, nothing started, once it is
    stopping). Also the body of a Ray task (without ``children``), so it uses only the standard library and the
    worker's own interpreter.
    """
    path = Path(log_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.setdefault("OFFLINE_BENCH_THREADS", "1")  # one torch thread per run unless the user says otherwise
    start = time.perf_counter()
    with open(path, "a") as out:
        out.write(f"$ offline-bench {' '.join(args)}\n")
        out.flush()
        command = [sys.executable, *CLI_PREFIX, *args]
        options: dict[str, Any] = dict(stdout=out, stderr=subprocess.STDOUT, env=env)
        if children is None:
            code = subprocess.run(command, check=False, **options).returncode
        else:
            proc = children.start(command, **options)
            if proc is None:
                return -15, 0.0  # the sweep is stopping: as if stopped by SIGTERM
            try:
                code = proc.wait()
            finally:
                children.finished(proc)
    return code, time.perf_counter() - start


def _last_attempt(path: Path) -> str:
    """The output of the last attempt in a run's log: the log keeps every attempt, each after its
    ``$ offline-bench ...`` line (``run_cli_process``)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    start = text.rfind("$ offline-bench ")
    return text if start < 0 else text[start:].split("\n", 1)[-1]


def _outcome(spec: RunSpec, runs: Path, code: int, seconds: float) -> RunOutcome:
    log_path = spec.log_path(runs)
    if code == 0 and run_status(spec, runs) == "finished":
        return RunOutcome(spec, "finished", seconds, log_path)
    why = f"exit code {code}" if code != 0 else "exited 0 but wrote no result.json"
    cause = _error_line(_last_attempt(log_path))
    return RunOutcome(spec, "failed", seconds, log_path, f"{why}; log {log_path}: {cause}")


def _error_line(text: str) -> str:
    """The cause in one attempt's output: its last ``Error: ...`` / ``error: ...`` line, else its last lines."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    for line in reversed(lines):
        if line.lower().startswith("error: "):
            return line[len("error: "):]
    return " | ".join(lines[-3:]) or "no output"


def collect_missing(dataset_ids: Sequence[str], root: Path, runs: Path, steps: int | None = None,
                    children: ChildProcesses | None = None) -> dict[str, str]:
    """``offline-bench collect`` each dataset in turn (output to the sweep logs); ``{id: why}`` of those that still
    lack a file, ``why`` being the error ``collect`` printed on this attempt (the log keeps every attempt)."""
    from offline_bench.train.config import split_dataset_id

    still_missing = {}
    for dataset_id in dataset_ids:
        fixed_size = split_dataset_id(dataset_id)[1] == "mixed"  # a replay buffer is collected whole
        args = ["collect", dataset_id, "--root", str(root)] + (["--steps", str(steps)] if steps and not fixed_size
                                                               else [])
        log_path = runs / LOG_DIR / f"collect-{dataset_id}.log"
        log.info("collecting %s (log: %s)", dataset_id, log_path)
        code, _ = run_cli_process(args, str(log_path), children)
        if code != 0 or not is_collected(dataset_id, root):
            why = _error_line(_last_attempt(log_path)) if code != 0 else "collect exited 0 but wrote no dataset file"
            still_missing[dataset_id] = f"`offline-bench {' '.join(args)}` failed: {why} (log: {log_path})"
    return still_missing


def run_sweep(
    specs: Sequence[RunSpec],
    root: Path | str | None = None,
    runs: Path | str | None = None,
    jobs: int = 1,
    executor: str = "local",
    address: str | None = None,
    collect: bool = False,
    collect_steps: int | None = None,
    on_event: Callable[[RunOutcome], None] | None = None,
) -> SweepSummary:
    """Run every spec that has not finished; ``on_event`` is called once per spec as its outcome is known.

    Finished runs are reported as ``already finished`` without starting anything; runs on datasets that are not
    collected as ``missing dataset`` (or the datasets are collected first when ``collect`` is set). A runs folder
    holding runs of the grid trained with another config is refused first (``check_runs_folder``). Interrupted
    (KeyboardInterrupt; the CLI turns SIGTERM into one), it stops the processes it started before re-raising.
    """
    if executor not in EXECUTORS:
        raise SweepError(f"unknown executor {executor!r}; choose one of: {', '.join(EXECUTORS)}")
    if jobs < 1:
        raise SweepError(f"--jobs must be >= 1, got {jobs}")
    if address is not None and executor != "ray":
        raise SweepError("--address is for --executor ray; the local executor runs on this machine")
    root_dir, runs_dir = data_root(root).resolve(), runs_root(runs).resolve()
    started = time.perf_counter()
    summary = SweepSummary()
    emit = on_event or (lambda outcome: None)

    def record(outcome: RunOutcome) -> None:
        summary.outcomes.append(outcome)
        emit(outcome)

    check_runs_folder(specs, runs_dir)
    check_writable(runs_dir, "--runs")
    children = ChildProcesses()
    try:
        missing = [d for d in dict.fromkeys(s.dataset_id for s in specs) if not is_collected(d, root_dir)]
        if missing and collect:
            summary.collect_errors = collect_missing(missing, root_dir, runs_dir, collect_steps, children)
            missing = list(summary.collect_errors)
        summary.missing_datasets = list(missing)
        for dataset_id in missing:
            if dataset_id not in summary.collect_errors:  # a failed collect's cause is in the summary, once
                log.warning("%s is not collected in %s: skipping its runs (run `offline-bench collect %s --root %s` "
                            "or pass --collect)", dataset_id, root_dir, dataset_id, root_dir)
        todo = []
        for spec in specs:
            if spec.dataset_id in missing:
                record(RunOutcome(spec, "missing dataset",
                                  message=f"{spec.dataset_id} is not collected in {root_dir}"))
            elif (spec.run_dir(runs_dir) / "result.json").is_file():  # conflicts were refused above
                record(RunOutcome(spec, "already finished", log=spec.log_path(runs_dir)))
            else:
                todo.append(spec)
        if todo and executor == "ray":
            _run_on_ray(todo, root_dir, runs_dir, jobs, address, record)
        elif todo:
            _run_locally(todo, root_dir, runs_dir, jobs, record, children)
    except BaseException:  # Ctrl-C, or SIGTERM turned into KeyboardInterrupt by the CLI: stop what we started
        children.stop()
        raise
    summary.seconds = time.perf_counter() - started
    return summary


def _run_locally(specs: Sequence[RunSpec], root: Path, runs: Path, jobs: int, record: Callable[[RunOutcome], None],
                 children: ChildProcesses) -> None:
    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="sweep")
    try:
        futures = {pool.submit(run_cli_process, s.train_args(root, runs), str(s.log_path(runs)), children): s
                   for s in specs}
        for future in as_completed(futures):
            spec = futures[future]
            code, seconds = future.result()
            record(_outcome(spec, runs, code, seconds))
    except BaseException:
        # Interrupted: start nothing new and stop the running trains before waiting for their threads (a train
        # outlives the sweep otherwise: SIGTERM reaches only the sweep). They resume on the next sweep.
        children.stop()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise SweepError("--executor ray needs Ray, an optional extra: pip install 'offline-bench[ray]' "
                         "(or pip install 'ray[default]'); or use --executor local") from None
    return ray


def _check_reachable(address: str) -> None:
    """Fail fast on a ``host:port`` (or ``ray://host:port``) that does not answer: Ray itself retries for minutes."""
    if address in ("auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except (OSError, ValueError) as err:
        raise SweepError(f"no Ray cluster answers at {address} ({err}); check --address (`ray status` on the head "
                         "node), leave it out to start a local Ray, or use --executor local") from None


def _run_on_ray(specs: Sequence[RunSpec], root: Path, runs: Path, jobs: int, address: str | None,
                record: Callable[[RunOutcome], None]) -> None:
    ray = _import_ray()
    own_cluster = not ray.is_initialized()
    if own_cluster:
        try:
            if address is None:  # a local Ray for this sweep only, with `jobs` CPUs: at most `jobs` runs at once
                ray.init(num_cpus=jobs, include_dashboard=False, log_to_driver=False)
            else:
                _check_reachable(address)
                ray.init(address=address, log_to_driver=False)
        except SweepError:
            raise
        except Exception as err:  # noqa: BLE001 - Ray raises many kinds; the user needs one line
            where = f"the Ray cluster at {address}" if address else "a local Ray"
            raise SweepError(f"cannot start or reach {where}: {str(err).strip().splitlines()[0]}; check --address "
                             "(`ray status` on the head node) or use --executor local") from None
    try:
        task = ray.remote(num_cpus=1, max_retries=0)(run_cli_process)
        pending = {task.remote(s.train_args(root, runs), str(s.log_path(runs))): s for s in specs}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                spec = pending.pop(ref)
                try:
                    code, seconds = ray.get(ref)
                except Exception as err:  # noqa: BLE001 - a lost worker or node: report the run as failed, go on
                    record(RunOutcome(spec, "failed", log=spec.log_path(runs), message=f"Ray task failed: {err}"))
                    continue
                record(_outcome(spec, runs, code, seconds))
    finally:
        if own_cluster:
            ray.shutdown()


__all__ = [
    "BUDGETS",
    "EXECUTORS",
    "PRESETS",
    "ChildProcesses",
    "Preset",
    "RunOutcome",
    "RunSpec",
    "SweepError",
    "SweepSummary",
    "check_grid",
    "check_runs_folder",
    "is_collected",
    "quick_budget_text",
    "resolve_grid",
    "run_conflict",
    "run_status",
    "run_sweep",
    "stop_processes",
]
