"""Aggregate runs into a paper-style leaderboard, and render it as Markdown, CSV and LaTeX.

Layout as in the OMAR and D4RL papers: rows grouped by dataset quality (random, mixed = medium-replay, medium,
expert) then task, one column per algorithm, each cell ``mean ± std`` of the chosen statistic over seeds, the best
complete cell of each row in bold, and the statistic and seed count stated under the table.

Nothing is averaged silently: a cell whose seeds have not all finished says so (``12.3 ± 4.5 (2/5 seeds)``; its
mean is over the finished seeds only and it is never bold), a cell with run folders but no finished seed says
``0/5 seeds``, and a cell of the grid with no run folder at all says ``not run``, or ``no dataset`` where the
catalog cannot make its dataset yet (no behaviour policy for that task and quality). A cell whose finished seeds
were trained with different settings (algorithm config or budget, from their ``config.json``) is still averaged,
with a warning and a note under the table naming the differing keys and their values.
"""
from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from offline_bench.evaluate import normalized_score
from offline_bench.report.runs import QUALITY_ORDER, STATISTIC_TEXT, STATISTICS
from offline_bench.train.config import split_dataset_id

log = logging.getLogger(__name__)

SINGLE_AGENT_TASKS: tuple[str, ...] = ("hopper", "halfcheetah", "walker2d", "ant")
TASK_ORDER: tuple[str, ...] = ("spread", "tag", "world", "halfcheetah-2x3", "hopper", "halfcheetah", "walker2d", "ant")
CELL_COLUMNS: tuple[str, ...] = (
    "quality", "task", "row", "dataset_id", "algo", "score", "statistic", "mean", "std", "seeds_finished",
    "seeds_done", "seeds_started", "seeds_expected", "status", "best",
)
DECIMALS = 1


@dataclass(frozen=True)
class Leaderboard:
    """A table of normalized scores, one cell per (dataset, algorithm), plus the lines stated under it."""

    cells: pd.DataFrame  # one row per (dataset row, algorithm); columns CELL_COLUMNS
    rows: tuple[tuple[str, str], ...]  # (quality, row label) in display order
    algos: tuple[str, ...]  # column order
    statistic: str  # "final" | "last-k" | "best"
    notes: tuple[str, ...]  # what the table shows, seeds, budget, versions: printed under the table
    title: str

    def cell_text(self, style: str = "plain") -> pd.DataFrame:
        """Wide table of cell strings, index (quality, row), one column per algorithm.

        ``style``: ``"plain"`` (no bold markup), ``"markdown"`` (best cells in ``**``), ``"latex"`` (``$\\pm$``).
        """
        pm = r" $\pm$ " if style == "latex" else " ± "
        texts = {}
        for cell in self.cells.itertuples(index=False):
            texts[(cell.quality, cell.row, cell.algo)] = _format_cell(cell, pm, bold=style == "markdown" and cell.best)
        return self._wide(texts)

    def best_mask(self) -> pd.DataFrame:
        """Wide boolean table (same shape as ``cell_text``): True where a cell is the best of its row."""
        return self._wide({(c.quality, c.row, c.algo): bool(c.best) for c in self.cells.itertuples(index=False)})

    def _wide(self, values: dict[tuple[str, str, str], object]) -> pd.DataFrame:
        index = pd.MultiIndex.from_tuples(self.rows, names=["quality", "task"])
        data = [[values[(q, r, a)] for a in self.algos] for q, r in self.rows]
        return pd.DataFrame(data, index=index, columns=pd.Index(self.algos, name="algorithm"))


def _collectable(dataset_id: str) -> bool:
    """Can ``offline-bench collect`` make this dataset here (a known id whose recipe has its behaviour policy)?"""
    from offline_bench.data.catalog import catalog_entry
    from offline_bench.data.collection import ensure_behaviour_recipes

    ensure_behaviour_recipes()
    try:
        return catalog_entry(dataset_id).recipe.collectable
    except KeyError:
        return True  # not a catalog id (e.g. an imported dataset): say nothing about it


def _format_cell(cell: object, pm: str, bold: bool) -> str:
    status, finished, expected = cell.status, cell.seeds_finished, cell.seeds_expected  # type: ignore[attr-defined]
    if status in ("not run", "no dataset"):
        return status
    if status == "no score":
        return f"no score ({cell.seeds_done}/{expected} seeds)"  # type: ignore[attr-defined]
    if finished == 0:
        return f"0/{expected} seeds"
    mean, std = cell.mean, cell.std  # type: ignore[attr-defined]
    text = f"{mean:.{DECIMALS}f}{pm}{std:.{DECIMALS}f}" if finished > 1 else f"{mean:.{DECIMALS}f}"
    if bold:
        text = f"**{text}**"
    if status == "partial":
        text += f" ({finished}/{expected} seeds)"
    return text


def choose_statistic(runs: pd.DataFrame, statistic: str | None) -> str:
    """``statistic`` if given, else the one the finished runs' result.json files state (the most common)."""
    if statistic is not None:
        key = statistic.strip().lower().replace("_", "-")
        key = {"last-k-mean": "last-k", "lastk": "last-k", "max": "best"}.get(key, key)
        if key not in STATISTICS:
            raise ValueError(f"unknown statistic {statistic!r}; choose one of: {', '.join(STATISTICS)}")
        return key
    declared = runs.loc[runs["finished"], "declared_statistic"].dropna() if len(runs) else pd.Series(dtype=object)
    if declared.empty:
        return "last-k"
    counts = declared.value_counts()
    if len(counts) > 1:
        log.warning("runs state different table statistics (%s); using %s", dict(counts), counts.index[0])
    return str(counts.index[0])


def _algo_order(algo: str) -> tuple[int, str]:
    """Registry order (single-agent first, OMAR last, as in the papers' tables), unknown ids after, by name."""
    from offline_bench.algos import ALGORITHMS

    order = list(ALGORITHMS)
    return (order.index(algo) if algo in order else len(order), algo)


def _order_key(quality: str, task: str, version: int | None) -> tuple[int, int, str, int]:
    q = QUALITY_ORDER.index(quality) if quality in QUALITY_ORDER else len(QUALITY_ORDER)
    t = TASK_ORDER.index(task) if task in TASK_ORDER else len(TASK_ORDER)
    return q, t, task, -1 if version is None else version


def build_leaderboard(
    runs: pd.DataFrame,
    statistic: str | None = None,
    seeds: int | None = None,
    grid_datasets: Sequence[str] = (),
    grid_algos: Sequence[str] = (),
    title: str = "Normalized scores",
    score: str = "normalized",
) -> Leaderboard:
    """Aggregate a ``load_runs`` table into a leaderboard.

    ``seeds``: how many seeds each cell should have (default: the most run folders any cell has); given, the cells
    use seeds 0..seeds-1 only, and a note counts the run folders of other seeds left out.
    ``grid_datasets`` / ``grid_algos``: rows and columns the table must show even without any run folder (their
    cells then say ``not run``); dataset names may omit the version. ``score`` names what ``runs`` holds
    (``normalized`` or ``return``, as passed to ``load_runs``) for the notes.
    """
    stat = choose_statistic(runs, statistic)
    dataset_ids = sorted(set(runs["dataset_id"])) if len(runs) else []
    found = sorted(set(runs["algo"]), key=_algo_order) if len(runs) else []
    if seeds is not None and seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    beyond = runs["seed"] >= seeds if seeds is not None and len(runs) else pd.Series(False, index=runs.index)
    left_out = runs.loc[beyond]
    runs = runs.loc[~beyond]  # a cell of N seeds is seeds 0..N-1, as `sweep --seeds N` trains them
    for name in grid_datasets:
        task, quality, version = split_dataset_id(name)
        present = [d for d in dataset_ids if split_dataset_id(d)[:2] == (task, quality)
                   and version in (None, split_dataset_id(d)[2])]
        if not present:
            dataset_ids.append(name if version is not None else f"{task}-{quality}")
    if not dataset_ids:
        raise ValueError("no runs to report: the runs folder has no <dataset>/<algo>/seed<k> folders matching the "
                         "filters; run `offline-bench sweep` (or train) first, or pass --datasets/--preset for an "
                         "empty grid")
    algos = list(dict.fromkeys(list(grid_algos) + found))
    if not algos:
        raise ValueError("no algorithm to show: no run matches the filters; name the columns with --algos")

    parsed = {d: split_dataset_id(d) for d in dataset_ids}
    versions_per_name: dict[tuple[str, str], int] = {}
    for task, quality, _ in parsed.values():
        versions_per_name[(task, quality)] = versions_per_name.get((task, quality), 0) + 1
    dataset_ids.sort(key=lambda d: _order_key(parsed[d][1], parsed[d][0], parsed[d][2]))

    # One row per (dataset, algorithm) of the grid: run folders started, finished, and the statistic over the
    # finished seeds that have it.
    keys = ["dataset_id", "algo"]
    finished = runs.loc[runs["finished"].astype(bool)]
    scored = finished.loc[finished[stat].notna()]
    cells = pd.concat([
        runs.groupby(keys).size().rename("seeds_started"),
        finished.groupby(keys).size().rename("seeds_done"),
        scored.groupby(keys)[stat].agg(mean="mean", seeds_finished="count", std=lambda s: s.std(ddof=0)),
    ], axis=1).reindex(pd.MultiIndex.from_product([dataset_ids, algos], names=keys)).reset_index()
    counts = ["seeds_started", "seeds_done", "seeds_finished"]
    cells[counts] = cells[counts].fillna(0).astype("int64")
    expected = seeds if seeds is not None else max(int(cells["seeds_started"].max()), 1)
    cells["status"] = np.select(
        [cells["seeds_started"] == 0, (cells["seeds_finished"] == 0) & (cells["seeds_done"] > 0),
         cells["seeds_finished"] == 0, cells["seeds_finished"] >= expected],
        ["not run", "no score", "unfinished", "complete"], default="partial",
    )
    no_data = (cells["status"] == "not run") & ~cells["dataset_id"].map(_collectable).astype(bool)
    cells.loc[no_data, "status"] = "no dataset"
    labels = {d: parsed[d][0] if versions_per_name[parsed[d][:2]] == 1 or parsed[d][2] is None
              else f"{parsed[d][0]} (v{parsed[d][2]})" for d in dataset_ids}
    cells = cells.assign(
        quality=cells["dataset_id"].map(lambda d: parsed[d][1]), task=cells["dataset_id"].map(lambda d: parsed[d][0]),
        row=cells["dataset_id"].map(labels), score=score, statistic=stat, seeds_expected=expected, best=False,
    )[list(CELL_COLUMNS)]
    rows = [(parsed[d][1], labels[d]) for d in dataset_ids]
    complete = cells[cells["status"] == "complete"]
    if len(algos) > 1 and len(complete):
        shown = complete["mean"].round(DECIMALS)
        row_best = shown.groupby(complete["dataset_id"]).transform("max")
        cells.loc[complete.index[shown == row_best], "best"] = True
    notes = _notes(runs, cells, stat, expected, score) + _mixed_settings_notes(finished, cells)
    if len(left_out):
        listed = ", ".join(f"{d} {_runs_named(g)}" for d, g in left_out.groupby("dataset_id"))
        notes += (f"Left out: {len(left_out)} run folder(s) of seeds beyond the {expected} asked for (cells use seeds "
                  f"0-{expected - 1}): {listed}.",)
    return Leaderboard(cells=cells, rows=tuple(rows), algos=tuple(algos), statistic=stat, notes=notes, title=title)


def _ranges(values: pd.Series) -> str:
    unique = sorted({int(v) for v in values.dropna()})
    return ", ".join(f"{v:,}" for v in unique) if unique else "unknown"


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def _notes(runs: pd.DataFrame, cells: pd.DataFrame, stat: str, expected: int, score: str) -> tuple[str, ...]:
    ks = sorted({int(k) for k in runs["last_k"].dropna()}) if len(runs) else []
    what = STATISTIC_TEXT[stat].format(k="/".join(map(str, ks)) or "k",
                                       score="normalized score" if score == "normalized" else "return")
    scale = ("on the normalized scale 100·(R − R_random)/(R_expert − R_random) (0 = random, 100 = expert reference)"
             if score == "normalized" else "raw episode return (multi-agent: team mean of per-agent returns)")
    notes = [
        f"Statistic: {what}, {scale}; cells are mean ± std over seeds (population std, ddof=0).",
        f"Seeds: {expected} expected per cell; bold = the best complete cell of its row (by the shown value).",
    ]
    counts = cells["status"].value_counts()
    incomplete = [f"{int(counts[s])} {s}" for s in ("partial", "unfinished", "no score", "not run", "no dataset")
                  if s in counts]
    if incomplete:
        notes.append(f"Incomplete cells ({', '.join(incomplete)}): 'k/n seeds' means only k of n seeds have "
                     "finished (result.json) and the mean ± std is over those k; 'not run' means no run folder; 'no dataset' "
                     "means the dataset cannot be collected yet (its task has no behaviour policy of that quality; "
                     "see datasets/policies/README.md).")
    if "no score" in counts:
        notes.append("'no score': the runs finished but their result.json has no such score (a dataset without "
                     "random/expert reference returns has no normalized score); `--score return` shows raw returns.")
    finished = runs.loc[runs["finished"].astype(bool)]
    if len(finished):
        if (stat == "last-k" and ks and finished["evaluations"].notna().any()
                and finished["evaluations"].min() < max(ks)):
            notes[0] = notes[0].replace(" evaluations,", " evaluations (all evaluations where a run has fewer),", 1)
        by_task = sorted(finished.groupby("task"), key=lambda kv: _order_key("", kv[0], None))
        budget = "; ".join(f"{task}: {_ranges(group['steps'])} updates, {_ranges(group['eval_episodes'])} "
                           f"episodes every {_ranges(group['eval_every'])} updates" for task, group in by_task)
        notes.append(f"Budget per run (as configured) and evaluation: {budget}.")
        notes += _dataset_notes(finished, score)
        if score == "normalized":
            notes += _reference_notes(by_task)
        multi_agent = [task for task, _ in by_task if task not in SINGLE_AGENT_TASKS]
        if multi_agent:
            notes.append(f"Multi-agent returns ({', '.join(multi_agent)}): the team mean of the learning agents' "
                         "returns with the simulators' standard rewards (the OMAR authors' code reports the first "
                         "predator's return in tag/world and modifies simple_spread's reward).")
        provenance = []
        for column, label in (("package_version", "offline-bench"), ("device", "device"), ("hardware", "hardware")):
            values = sorted({str(v) for v in finished[column].dropna()})
            if values:
                provenance.append(f"{label} {', '.join(values)}")
        wall = finished["wall_time_s"].dropna()
        if len(wall):
            provenance.append(f"wall time {_duration(wall.sum())} in total over {len(wall)} runs "
                              f"(median {_duration(wall.median())} per run)")
        if provenance:
            notes.append("Runs: " + "; ".join(provenance) + ".")
    return tuple(notes)


def _data_score(runs: pd.DataFrame, score: str) -> float:
    """The data's own mean episode score of ``runs`` (one dataset file) on the table's scale; NaN where unrecorded."""
    recorded = runs.dropna(subset=["data_return"])
    if not len(recorded):
        return math.nan
    row = recorded.iloc[0]
    if score != "normalized":
        return float(row["data_return"])
    try:
        return normalized_score(row["data_return"], row["ref_random"], row["ref_expert"])
    except ValueError:  # a reference missing, or both equal: no normalized score
        return math.nan


def _runs_named(runs: pd.DataFrame) -> str:
    """``"ma-icq seeds 0, 1, ma-td3bc seed 0"``: the runs of one dataset file, by algorithm."""
    named = []
    for algo, seeds in runs.groupby("algo")["seed"]:
        numbers = ", ".join(str(int(k)) for k in sorted(seeds))
        named.append(f"{algo} seed{'s' if len(seeds) > 1 else ''} {numbers}")
    return ", ".join(named)


def _reference_notes(by_task: list[tuple[str, pd.DataFrame]]) -> list[str]:
    """The reference returns each task's finished runs were scored against, and a warning note for a task whose
    runs used more than one pair: a resumed run keeps the pair it started with (``train.loop._kept_references``),
    so a reference changed between runs puts their normalized scores on different scales."""
    pairs, warnings = [], []
    for task, group in by_task:
        scored = group.loc[group["ref_random"].notna() & group["ref_expert"].notna()]
        used = list(scored.groupby(["ref_random", "ref_expert"], sort=False))
        if not used:
            continue
        pairs.append(f"{task} " + ", ".join(f"{r:.2f} / {e:.2f}" for (r, e), _ in used))
        if len(used) > 1:
            which = "; ".join(f"{r:.2f} / {e:.2f}: " + ", ".join(
                f"{d} {_runs_named(g)}" for d, g in runs.groupby("dataset_id")) for (r, e), runs in used)
            log.warning("%s: the runs were scored against %d different reference pairs (%s)", task, len(used), which)
            warnings.append(f"{task}: the runs were scored against {len(used)} different reference pairs ({which}); "
                            "their normalized scores are on different scales, and a cell may average them "
                            "(train the out-of-date runs again in a new --runs folder; `--score return` shows raw "
                            "returns).")
    return ([f"Reference returns (random / expert): {'; '.join(pairs)}."] if pairs else []) + warnings


def _dataset_notes(finished: pd.DataFrame, score: str) -> list[str]:
    """What the finished runs trained on: each dataset's size, file (sha256) and the data's own mean episode score,
    and a warning note for a dataset id whose runs trained on more than one file (a mixed dataset rebuilt with
    ``collect --retrain`` on another machine is another replay buffer, so its scores need not be comparable)."""
    described, warnings = [], []
    for dataset_id, group in finished.groupby("dataset_id"):
        files = list(group.groupby("dataset_sha256", sort=False))  # runs whose config.json names no file: left out
        parts = []
        for sha, runs in files:  # several files: each with its own size, not one sorted list beside the hashes
            data = _data_score(runs, score)
            parts.append((f"{_ranges(runs['transitions'])} transitions, " if len(files) > 1 else "")
                         + f"sha256 {sha[:12]}" + (f", the data {data:.1f}" if math.isfinite(data) else ""))
        size = "" if len(files) > 1 else f" {_ranges(group['transitions'])}"
        described.append(f"{dataset_id}{size}" + (f" ({'; '.join(parts)})" if parts else ""))
        if len(files) > 1:
            used = "; ".join(f"{sha[:12]}: {_runs_named(runs)}" for sha, runs in files)
            log.warning("%s: the runs trained on %d different files (%s)", dataset_id, len(files), used)
            warnings.append(f"{dataset_id}: the runs trained on {len(files)} different files ({used}); scores on "
                            "different files need not be comparable (a mixed dataset rebuilt with `collect "
                            "--retrain` on another machine is another replay buffer).")
    what = "normalized score" if score == "normalized" else "return"
    return [f"Datasets (transitions; the file's sha256; the data's own mean episode {what}, where recorded): "
            + "; ".join(described) + ".", *warnings]


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def differing_settings(settings: Sequence[dict[str, Any] | None]) -> dict[str, list[str]]:
    """Keys whose values differ between runs' ``settings`` (``load_runs``), each with its distinct values in order
    of first appearance. Runs without settings (no readable config.json) are left out of the comparison, and so are
    keys some run does not record (a config.json from a version before that field existed)."""
    known = [s for s in settings if isinstance(s, dict)]
    differing: dict[str, list[str]] = {}
    for key in sorted(set.intersection(*(set(s) for s in known))) if known else []:
        values = list(dict.fromkeys(_shown(s[key]) for s in known))
        if len(values) > 1:
            differing[key] = values
    return differing


def _mixed_settings_notes(finished: pd.DataFrame, cells: pd.DataFrame) -> tuple[str, ...]:
    """One note (and one warning) per cell, in table order, that averages seeds trained with different settings."""
    groups = dict(list(finished.groupby(["dataset_id", "algo"]))) if len(finished) else {}
    notes = []
    for dataset_id, algo in zip(cells["dataset_id"], cells["algo"]):
        group = groups.get((dataset_id, algo))
        if group is None or len(group) < 2:
            continue
        differing = differing_settings(list(group.sort_values("seed")["settings"]))
        if not differing:
            continue
        listed = [f"{key} ({', '.join(values)})" for key, values in differing.items()]
        keys = ", ".join(listed[:-1]) + " and " + listed[-1] if len(listed) > 1 else listed[0]
        log.warning("%s / %s averages seeds trained with different settings: %s (see the notes under the table)",
                    dataset_id, algo, keys)
        notes.append(f"{dataset_id} / {algo}: seeds differ in {keys}; the cell averages them anyway.")
    return tuple(notes)


def to_markdown(board: Leaderboard, curve_links: dict[str, str] | None = None) -> str:
    """The leaderboard as a Markdown page: title, table (tabulate via pandas), notes, links to learning curves."""
    table = board.cell_text("markdown").reset_index()
    table.loc[table["quality"].duplicated(), "quality"] = ""  # group rows: the quality once per group, as in papers
    lines = [f"# {board.title}", "", table.to_markdown(index=False, stralign="left", disable_numparse=True), ""]
    lines += [f"- {note}" for note in board.notes]
    if curve_links:
        lines += ["", "## Learning curves", ""]
        lines += [f"![{name}]({link})" for name, link in curve_links.items()]
    return "\n".join(lines) + "\n"


def to_csv(board: Leaderboard) -> str:
    """One row per cell (long form, numbers unformatted): what a script or spreadsheet wants."""
    columns = ["quality", "task", "dataset_id", "algo", "score", "statistic", "mean", "std", "seeds_finished",
               "seeds_done", "seeds_started", "seeds_expected", "status", "best"]
    order = {row: i for i, row in enumerate(board.rows)}
    algo_order = {a: i for i, a in enumerate(board.algos)}
    cells = board.cells.assign(_r=[order[(q, r)] for q, r in zip(board.cells["quality"], board.cells["row"])],
                               _a=board.cells["algo"].map(algo_order))
    return cells.sort_values(["_r", "_a"])[columns].to_csv(index=False, float_format="%.4f")


def latex_text(text: str) -> str:
    """Plain text (our notes) made safe for LaTeX."""
    replacements = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                    "<": r"\textless{}", ">": r"\textgreater{}", "±": r"$\pm$", "·": r"$\cdot$", "−": "-",
                    "–": "--", "’": "'"}
    return "".join(replacements.get(ch, ch) for ch in text)


def latex_label(name: str) -> str:
    """``\\label`` key of a table written as ``<name>.tex``: ``tab:`` and the name in the characters a key may hold,
    so two tables of one paper (``omar-mpe``, ``omar-mpe-v1``) never share a label, whatever their titles."""
    return "tab:" + (re.sub(r"[^a-z0-9:.-]+", "-", name.lower()).strip("-") or "leaderboard")


def to_latex(board: Leaderboard, name: str = "leaderboard") -> str:
    """A ``table`` environment (booktabs rules, grouped rows via multirow), notes in the caption, labelled
    ``latex_label(name)``."""
    text = board.cell_text("latex")
    bold = board.best_mask()
    styler = text.style.apply(lambda _: bold.replace({True: "font-weight: bold", False: ""}), axis=None)
    styler = styler.format_index(escape="latex", axis=0).format_index(escape="latex", axis=1)
    styler = styler.hide(names=True, axis="index").hide(names=True, axis="columns")  # one header row, as in papers
    caption = latex_text(board.title + ". " + " ".join(board.notes))
    return styler.to_latex(
        hrules=True, multirow_align="t", clines="skip-last;data", convert_css=True, caption=caption,
        position="ht", position_float="centering", label=latex_label(name),
    )


__all__ = [
    "CELL_COLUMNS",
    "Leaderboard",
    "build_leaderboard",
    "choose_statistic",
    "differing_settings",
    "latex_label",
    "latex_text",
    "to_csv",
    "to_latex",
    "to_markdown",
]
