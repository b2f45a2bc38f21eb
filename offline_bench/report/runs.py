"""Read run directories (DESIGN.md, "Run contract") into pandas tables. Nothing else is read.

A run directory is ``<runs>/<dataset-id>/<algo>/seed<k>/`` with ``config.json``, ``metrics.csv``, ``checkpoint.pt``
and, once the run has finished, ``result.json``. Two tables come out of a runs folder:

- ``load_runs``: one row per run directory: dataset id, task, quality, version, algorithm, seed, whether it finished,
  the three table statistics from ``result.json`` (``final``, ``last-k``, ``best``), the budget, device, package
  version and wall time where the run recorded them, and ``settings``: the config fields that decide what a run
  computes (``config.json``'s algorithm config and budget), so a table can say when its seeds differ in them;
- ``load_curves``: the evaluation rows of every ``metrics.csv`` in long form (dataset, algorithm, seed, step, score).

Folders whose name starts with ``.`` or ``_`` (the sweep's logs live in ``<runs>/.logs``) are not runs.
A run whose ``result.json`` is readable is finished even if its ``config.json`` is not (the row then lacks what only
``config.json`` records); an unreadable ``result.json`` makes the run unfinished.
"""
from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from offline_bench.train.config import split_dataset_id

log = logging.getLogger(__name__)

QUALITY_ORDER: tuple[str, ...] = ("random", "mixed", "medium", "expert")  # the OMAR paper's row order

# The table statistics a user can choose, and their result.json keys per score kind (offline_bench.train.loop).
STATISTICS: dict[str, dict[str, str]] = {
    "final": {"normalized": "final_score", "return": "final_return"},
    "last-k": {"normalized": "last_k_score", "return": "last_k_return"},
    "best": {"normalized": "best_score", "return": "best_return"},
}
DECLARED_STATISTICS: dict[str, str] = {"final": "final", "last_k_mean": "last-k", "best": "best"}  # result.json's
SCORES: tuple[str, ...] = ("normalized", "return")
STATISTIC_TEXT: dict[str, str] = {
    "final": "{score} of the final evaluation",
    "last-k": "mean {score} of the last {k} evaluations",
    "best": "best {score} over all evaluations",
}
# metrics.csv's evaluation column per score kind; its update counter is "step".
CURVE_SCORE_COLUMNS: dict[str, str] = {"normalized": "normalized_score", "return": "eval_return"}

RUN_COLUMNS: tuple[str, ...] = (
    "dataset_id", "task", "quality", "version", "algo", "seed", "finished", "final", "last-k", "best",
    "declared_statistic", "last_k", "evaluations", "steps", "steps_done", "eval_every", "eval_episodes",
    "transitions", "dataset_sha256", "data_return", "ref_random", "ref_expert", "device", "hardware",
    "package_version", "wall_time_s", "settings",
    "path",
)
# The budget fields of train_config that change what a run computes and scores (not its seed, device, logging or
# checkpoint period); with the whole algorithm config they are a run's ``settings``.
BUDGET_KEYS: tuple[str, ...] = ("steps", "eval_every", "eval_episodes", "last_k")
CURVE_COLUMNS: tuple[str, ...] = ("dataset_id", "algo", "seed", "step", "score")

_SEED_RE = re.compile(r"^seed(?P<seed>\d+)$")


def dataset_matches(dataset_id: str, wanted: str) -> bool:
    """Does ``dataset_id`` (``spread-mixed-v0``) match a filter: the full id, the id without version, or a task?"""
    task, quality, version = split_dataset_id(dataset_id)
    wanted = wanted.strip().lower()
    if wanted in (dataset_id, task):
        return True
    try:
        w_task, w_quality, w_version = split_dataset_id(wanted)
    except ValueError:
        return False
    return (w_task, w_quality) == (task, quality) and w_version in (None, version)


def find_run_dirs(runs_dir: Path) -> list[Path]:
    """Every ``<dataset-id>/<algo>/seed<k>`` folder under ``runs_dir`` (sorted), skipping ``.``/``_`` folders."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise FileNotFoundError(f"runs folder {runs_dir} does not exist; pass --runs DIR or train/sweep first")
    found = []
    for path in sorted(runs_dir.glob("*/*/seed*")):
        if not path.is_dir() or any(p.startswith((".", "_")) for p in path.relative_to(runs_dir).parts):
            continue
        if _SEED_RE.match(path.name) is None:
            continue
        try:
            split_dataset_id(path.parent.parent.name)
        except ValueError:
            log.warning("skipping %s: its folder name is not a dataset id", path)
            continue
        found.append(path)
    return found


def _read_json(path: Path, consequence: str) -> dict[str, Any] | None:
    """The JSON object in ``path``; None when it is absent, and None with a warning ending in ``consequence`` when
    it cannot be read or is not a JSON object."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        log.warning("cannot read %s (%s); %s", path, err, consequence)
        return None
    if not isinstance(data, dict):
        log.warning("cannot read %s (not a JSON object); %s", path, consequence)
        return None
    return data


def run_settings(config: dict[str, Any]) -> dict[str, Any] | None:
    """What decides a run's numbers, from its ``config.json``: the algorithm config and the budget (``BUDGET_KEYS``);
    None when the config has neither (unreadable, or not written by ``train``)."""
    algo_config = config.get("algo_config")
    loop = config.get("train_config")
    if not isinstance(algo_config, dict) and not isinstance(loop, dict):
        return None
    settings = dict(algo_config) if isinstance(algo_config, dict) else {}
    if isinstance(loop, dict):
        settings |= {key: loop[key] for key in BUDGET_KEYS if key in loop}
    return settings


def _number(value: Any) -> float:
    """A finite float, or NaN for None, text and non-finite values."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value) if math.isfinite(value) else math.nan


def read_run(path: Path, score: str = "normalized") -> dict[str, Any]:
    """One row of ``load_runs`` for the run directory ``path``; ``score``: ``normalized`` or raw ``return``."""
    path = Path(path)
    dataset_id, algo = path.parent.parent.name, path.parent.name
    task, quality, version = split_dataset_id(dataset_id)
    seed = int(_SEED_RE.match(path.name)["seed"])  # type: ignore[index]
    result = _read_json(path / "result.json", "treating the run as unfinished")
    if result is not None:  # the run's numbers are intact: it counts, only its metadata is missing
        consequence = ("the run counts as finished (its result.json is intact), but what only config.json records "
                       "(evaluation period, dataset size, hardware, hyperparameters) is left out of the notes")
    else:
        consequence = "the run has no result.json either: unfinished"
    config = _read_json(path / "config.json", consequence) or {}
    row: dict[str, Any] = dict(
        dataset_id=dataset_id, task=task, quality=quality, version=version, algo=algo, seed=seed,
        finished=result is not None, path=str(path),
    )
    source = result or {}
    loop = config.get("train_config", {})
    dataset = config.get("dataset", {})
    references = source.get("references") or dataset.get("references") or {}
    for stat, keys in STATISTICS.items():
        row[stat] = _number(source.get(keys[score]))
    row |= dict(
        declared_statistic=DECLARED_STATISTICS.get(str(source.get("statistic"))),
        last_k=source.get("last_k", loop.get("last_k")),
        evaluations=source.get("evaluations"),
        steps=source.get("steps", loop.get("steps")),
        steps_done=source.get("steps_done"),
        eval_every=loop.get("eval_every"),
        eval_episodes=source.get("eval_episodes", loop.get("eval_episodes")),
        transitions=dataset.get("transitions"),
        dataset_sha256=dataset.get("sha256"),
        data_return=_number(dataset.get("episode_return_mean")),  # the data's own mean episode return
        ref_random=_number(references.get("random")),
        ref_expert=_number(references.get("expert")),
        device=source.get("device", config.get("device")),
        hardware=config.get("device_name"),
        package_version=source.get("package_version", config.get("versions", {}).get("offline-bench")),
        wall_time_s=_number(source.get("wall_time_s")),
        settings=run_settings(config),
    )
    if result is not None and all(math.isnan(row[s]) for s in STATISTICS):
        log.info("%s finished without a %s score (%s)", path, score,
                 "no reference returns" if source.get("normalized") is False else "result.json lacks it")
    return row


def load_runs(
    runs_dir: Path | str,
    datasets: Sequence[str] | None = None,
    algos: Sequence[str] | None = None,
    score: str = "normalized",
) -> pd.DataFrame:
    """One row per run directory under ``runs_dir`` (columns ``RUN_COLUMNS``), filtered by dataset and algorithm.

    ``datasets`` entries may be full ids (``spread-mixed-v0``), ids without version (all versions) or task names;
    ``algos`` entries are algorithm ids as they appear in the folder names. ``score``: which numbers fill the
    statistic columns, ``normalized`` scores or raw ``return``s.
    """
    if score not in SCORES:
        raise ValueError(f"unknown score {score!r}; choose one of: {', '.join(SCORES)}")
    rows = []
    for path in find_run_dirs(Path(runs_dir)):
        dataset_id, algo = path.parent.parent.name, path.parent.name
        if datasets and not any(dataset_matches(dataset_id, d) for d in datasets):
            continue
        if algos and algo not in algos:
            continue
        rows.append(read_run(path, score))
    table = pd.DataFrame(rows, columns=list(RUN_COLUMNS))
    return table.astype({"seed": "int64", "finished": "bool"})  # also when empty: masks stay boolean


def _read_metrics(path: Path, score: str) -> pd.DataFrame | None:
    file = path / "metrics.csv"
    if not file.is_file():
        return None
    try:
        metrics = pd.read_csv(file)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, OSError) as err:
        log.warning("cannot read %s (%s); no learning curve for this run", file, err)
        return None
    column = CURVE_SCORE_COLUMNS[score]
    if "step" not in metrics.columns or column not in metrics.columns:
        log.warning("%s has no step / %s columns (has: %s)", file, column, ", ".join(metrics.columns))
        return None
    out = metrics[["step", column]].rename(columns={column: "score"})
    out = out.apply(pd.to_numeric, errors="coerce").dropna()  # training-only rows have no score
    return out.astype({"step": "int64", "score": "float64"})


def load_curves(runs: pd.DataFrame, score: str = "normalized") -> pd.DataFrame:
    """Evaluation scores of every run in ``runs`` (a ``load_runs`` table), long form (``CURVE_COLUMNS``)."""
    parts = []
    for row in runs.itertuples(index=False):
        metrics = _read_metrics(Path(row.path), score)
        if metrics is None or metrics.empty:
            continue
        parts.append(metrics.assign(dataset_id=row.dataset_id, algo=row.algo, seed=row.seed))
    if not parts:
        return pd.DataFrame(columns=list(CURVE_COLUMNS))
    return pd.concat(parts, ignore_index=True)[list(CURVE_COLUMNS)]


__all__ = [
    "BUDGET_KEYS",
    "QUALITY_ORDER",
    "SCORES",
    "STATISTICS",
    "STATISTIC_TEXT",
    "dataset_matches",
    "find_run_dirs",
    "load_curves",
    "load_runs",
    "read_run",
    "run_settings",
]
