"""Run directories -> paper-style leaderboards (Markdown, CSV, LaTeX, HTML) and learning-curve plots.

``make_report`` is what ``offline-bench report`` calls::

    report = make_report("runs", "leaderboards", formats=("md", "html"))
    print(report.markdown)          # the table, as written to leaderboards/leaderboard.md

The report reads only run directories (``runs.py``); ``table.py`` aggregates them with pandas and renders Markdown,
CSV and LaTeX, ``html.py`` the self-contained page, ``plots.py`` the learning curves.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from offline_bench.report.html import to_html
from offline_bench.report.plots import plot_curves
from offline_bench.report.runs import dataset_matches, find_run_dirs, load_curves, load_runs
from offline_bench.report.table import Leaderboard, build_leaderboard, to_csv, to_latex, to_markdown
from offline_bench.train.config import split_dataset_id

log = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("md", "csv", "latex", "html")
EXTENSIONS: dict[str, str] = {"md": ".md", "csv": ".csv", "latex": ".tex", "html": ".html"}


@dataclass(frozen=True)
class Report:
    leaderboard: Leaderboard
    markdown: str  # the Markdown page (what the CLI prints)
    files: dict[str, Path] = field(default_factory=dict)  # format -> file written
    curves: dict[str, Path] = field(default_factory=dict)  # dataset id -> learning-curve PNG written
    replaced: frozenset[Path] = frozenset()  # files (tables and PNGs) that existed before and were overwritten


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write to a temporary name beside ``path``, then rename: a crash never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    if isinstance(data, str):
        tmp.write_text(data, encoding="utf-8")
    else:
        tmp.write_bytes(data)
    os.replace(tmp, path)


def _algo_id(name: str, folders: set[str]) -> str:
    """The registry id of ``name`` (``MA_CQL`` -> ``ma-cql``); a name that is no registry id must be an algorithm
    folder of the runs (an outside algorithm), else ValueError, as ``sweep`` and ``train`` refuse it."""
    from offline_bench.algos import canonical_algo_id

    try:
        return canonical_algo_id(name)
    except KeyError as err:
        if name.strip() in folders:
            return name.strip()
        raise ValueError(f"{err.args[0]} (and no {name.strip()!r} runs in the runs folder)") from None


def _check_dataset(wanted: str, folders: set[str]) -> None:
    """Refuse a ``--datasets`` entry that is no task name, no catalog id (``sweep``'s check: unknown dataset, unknown
    version) and matches no dataset folder of the runs (ValueError naming the valid ids)."""
    from offline_bench.data.catalog import TASKS, UnknownDatasetError, resolve_dataset_id

    if wanted.strip().lower() in TASKS or any(dataset_matches(d, wanted) for d in folders):
        return
    try:
        resolve_dataset_id(wanted)
    except UnknownDatasetError as err:
        raise ValueError(str(err)) from None


def _write(path: Path, data: str | bytes, replaced: set[Path]) -> None:
    if path.exists():
        replaced.add(path)
    write_atomic(path, data)


def make_report(
    runs_dir: Path | str,
    out_dir: Path | str | None,
    formats: Sequence[str] = ("md",),
    statistic: str | None = None,
    datasets: Sequence[str] | None = None,
    algos: Sequence[str] | None = None,
    seeds: int | None = None,
    name: str = "leaderboard",
    title: str | None = None,
    grid_datasets: Sequence[str] = (),
    grid_algos: Sequence[str] = (),
    plots: bool = True,
    score: str = "normalized",
) -> Report:
    """Read ``runs_dir``, build the leaderboard, write ``<out_dir>/<name>.<ext>`` per format and the curves.

    ``datasets`` / ``algos`` filter the runs and also become rows/columns of the table (``not run`` where no run
    folder exists); ``grid_datasets`` / ``grid_algos`` are a preset's grid: its rows and columns are shown even where
    nothing ran, and runs outside it are left out; ``datasets`` / ``algos`` given with a grid narrow it to the
    rows and columns they match (``--preset omar-mpe --datasets tag`` is the preset's tag rows).
    ``statistic``: ``final``, ``last-k`` or ``best`` (default: what the runs' result.json files state).
    ``score``: ``normalized`` (default) or raw ``return``. ``out_dir`` None writes nothing (the Markdown is still
    returned).
    """
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown report format {', '.join(unknown)}; choose from {', '.join(FORMATS)} (or all)")
    run_dirs = find_run_dirs(Path(runs_dir))  # FileNotFoundError for a missing folder, before anything is written
    for wanted in datasets or ():
        _check_dataset(wanted, {p.parent.parent.name for p in run_dirs})
    algos = [_algo_id(a, {p.parent.name for p in run_dirs}) for a in algos] if algos else None
    runs = load_runs(runs_dir, datasets=datasets, algos=algos, score=score)
    if datasets:  # --datasets / --algos narrow a preset's grid, as they do for `sweep`
        grid_datasets = [g for g in grid_datasets if any(dataset_matches(g, w) for w in datasets)]
    if algos:
        grid_algos = [a for a in grid_algos if a in algos]
    rows = list(grid_datasets)
    for wanted in datasets or ():
        try:
            split_dataset_id(wanted)
        except ValueError:
            continue  # a task name filters runs but is not one row
        if not any(dataset_matches(g, wanted) for g in rows):
            rows.append(wanted)
    if grid_datasets and len(runs):  # a preset's grid: keep only the runs of its rows
        runs = runs[[any(dataset_matches(d, g) for g in rows) for d in runs["dataset_id"]]]
    columns = list(dict.fromkeys(list(grid_algos) + list(algos or ())))
    if grid_algos and len(runs):
        runs = runs[runs["algo"].isin(columns)]
    board = build_leaderboard(runs, statistic=statistic, seeds=seeds, grid_datasets=rows, grid_algos=columns,
                              title=title or ("Normalized scores" if score == "normalized" else "Returns"),
                              score=score)
    curve_pngs = plot_curves(load_curves(runs, score), board.algos, score) if plots and len(runs) else {}
    curve_pngs = {d: curve_pngs[d] for d in board.cells["dataset_id"].unique() if d in curve_pngs}  # table order
    curve_files: dict[str, Path] = {}
    links: dict[str, str] = {}
    replaced: set[Path] = set()
    if out_dir is not None:
        out = Path(out_dir)
        for dataset_id, png in curve_pngs.items():
            path = out / f"{name}-curves" / f"{dataset_id}.png"
            _write(path, png, replaced)
            curve_files[dataset_id] = path
            links[dataset_id] = f"{name}-curves/{dataset_id}.png"
    markdown = to_markdown(board, links)
    files: dict[str, Path] = {}
    if out_dir is not None:
        render = {"md": lambda: markdown, "csv": lambda: to_csv(board), "latex": lambda: to_latex(board, name),
                  "html": lambda: to_html(board, curve_pngs)}
        for fmt in formats:
            path = Path(out_dir) / f"{name}{EXTENSIONS[fmt]}"
            _write(path, render[fmt](), replaced)
            files[fmt] = path
            log.info("%s %s", "replaced" if path in replaced else "wrote", path)
    return Report(leaderboard=board, markdown=markdown, files=files, curves=curve_files, replaced=frozenset(replaced))


__all__ = ["EXTENSIONS", "FORMATS", "Leaderboard", "Report", "build_leaderboard", "load_curves", "load_runs",
           "make_report", "write_atomic"]
