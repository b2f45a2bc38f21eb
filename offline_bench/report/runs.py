"""Read run directories (DESIGN.md, "Run contract") into pandas tables. Nothing else is read.

A run directory is ``<runs>/<dataset-id>/<algo>/seed<k>/`` with ``config.json``, ``metrics.csv``, ``checkpoint.pt``
and, once the run has finished, ``result.json``. Two tables come out of a runs folder:

- ``load_runs``: one row per run directory: dataset id, task, quality, version, algorithm, seed, whether it finished,
  the three table statistics from ``result.json`` (``final``, ``last-k``, ``best``), and the budget, device, package
  version and wall time where the run recorded them;
- ``load_curves``: the evaluation rows of every ``metrics.csv`` in long form (dataset, algorithm, seed, step, score).

Folders whose name starts with ``.`` or ``_`` (the sweep's logs live in ``<runs>/.logs``) are not runs.
"""
from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from offline_bench.train.config import split_dataset_id

log = logging.getLogger(__name__)

QUALITY_ORDER: tuple[str, ...] = ("random", "mixed", "medium", "expert")  # the OMAR paper's row order

# The table statistics a user can choose, and the result.json keys per score kind (first present wins).
STATISTICS: dict[str, dict[str, tuple[str, ...]]] = {
    "final": {"normalized": ("final_score", "final_normalized_score"), "return": ("final_return",)},
    "last-k": {"normalized": ("last_k_score", "last_k_mean", "last_k_normalized_score"), "return": ("last_k_return",)},
    "best": {"normalized": ("best_score", "best_normalized_score"), "return": ("best_return",)},
}
SCORES: tuple[str, ...] = ("normalized", "return")
STATISTIC_TEXT: dict[str, str] = {
    "final": "{score} of the final evaluation",
    "last-k": "mean {score} of the last {k} evaluations",
    "best": "best {score} over all evaluations",
}
# metrics.csv columns: the update counter and the evaluation score per score kind (first present wins).
STEP_COLUMNS: tuple[str, ...] = ("step", "update", "updates")
CURVE_SCORE_COLUMNS: dict[str, tuple[str, ...]] = {
    "normalized": ("normalized_score", "eval_normalized_score"),
    "return": ("eval_return", "return"),
}

RUN_COLUMNS: tuple[str, ...] = (
    "dataset_id", "task", "quality", "version", "algo", "seed", "finished", "final", "last-k", "best",
    "declared_statistic", "last_k", "evaluations", "steps", "steps_done", "eval_every", "eval_episodes",
    "transitions", "ref_random", "ref_expert", "device", "hardware", "package_version", "wall_time_s", "path",
)
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


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        log.warning("cannot read %s (%s); treating the run as unfinished", path, err)
        return None
    return data if isinstance(data, dict) else None


def _number(value: Any) -> float:
    """A finite float, or NaN for None, text and non-finite values."""
    if isinstance(value, Mapping):
        value = value.get("value", value.get("score"))
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value) if math.isfinite(value) else math.nan


def _first(mapping: Mapping[str, Any], keys: Iterable[str], default: Any = None) -> Any:
    for key in keys:
        if key in mapping and mapping[key] is not None:
            return mapping[key]
    return default


def _nested(mapping: Mapping[str, Any], *paths: tuple[str, ...]) -> Any:
    """The first value found along any of ``paths`` (tuples of keys into nested dicts)."""
    for path in paths:
        node: Any = mapping
        for key in path:
            node = node.get(key) if isinstance(node, Mapping) else None
        if node is not None:
            return node
    return None


def _canonical_statistic(name: Any) -> str | None:
    if not isinstance(name, str):
        return None
    key = name.strip().lower().replace("_", "-")
    for stat, kinds in STATISTICS.items():
        keys = [k.replace("_", "-") for names in kinds.values() for k in names]
        if key == stat or key in keys or key.startswith(stat):
            return stat
    return {"last-k-mean": "last-k", "mean-last-k": "last-k", "max": "best"}.get(key)


def _describe(value: Any) -> str:
    """A short text for a hardware record that may be a string or a mapping like ``{"cpu": ..., "gpu": ...}``."""
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {v}" for k, v in value.items() if v not in (None, ""))
    return str(value)


def read_run(path: Path, score: str = "normalized") -> dict[str, Any]:
    """One row of ``load_runs`` for the run directory ``path``; ``score``: ``normalized`` or raw ``return``."""
    path = Path(path)
    dataset_id, algo = path.parent.parent.name, path.parent.name
    task, quality, version = split_dataset_id(dataset_id)
    seed = int(_SEED_RE.match(path.name)["seed"])  # type: ignore[index]
    config = _read_json(path / "config.json") or {}
    result = _read_json(path / "result.json")
    row: dict[str, Any] = dict(
        dataset_id=dataset_id, task=task, quality=quality, version=version, algo=algo, seed=seed,
        finished=result is not None, path=str(path),
    )
    source = result or {}
    for stat, keys in STATISTICS.items():
        row[stat] = _number(_first(source, keys[score]))
    row["declared_statistic"] = _canonical_statistic(_first(source, ("statistic", "table_statistic")))
    row["last_k"] = _first(source, ("last_k", "k"), _nested(config, ("train_config", "last_k"), ("last_k",)))
    row["steps"] = _first(source, ("steps", "total_steps"), _nested(config, ("train_config", "steps"), ("steps",)))
    row["steps_done"] = _first(source, ("steps_done", "updates", "step"))
    row["evaluations"] = _first(source, ("evaluations",))
    row["eval_every"] = _nested(config, ("train_config", "eval_every"), ("eval_every",))
    row["eval_episodes"] = _first(source, ("eval_episodes",),
                                  _nested(config, ("train_config", "eval_episodes"), ("eval_episodes",)))
    row["transitions"] = _nested(config, ("dataset", "transitions"))
    references = _first(source, ("references",), _nested(config, ("dataset", "references"))) or {}
    row["ref_random"] = _number(references.get("random")) if isinstance(references, Mapping) else math.nan
    row["ref_expert"] = _number(references.get("expert")) if isinstance(references, Mapping) else math.nan
    row["device"] = _first(source, ("device",), _nested(config, ("device",), ("train_config", "device")))
    hardware = _first(source, ("hardware", "device_name"), _nested(config, ("hardware",), ("device_name",)))
    row["hardware"] = None if hardware is None else _describe(hardware)
    row["package_version"] = _first(
        source, ("package_version", "offline_bench_version"),
        _nested(config, ("package_version",), ("versions", "offline-bench"), ("versions", "offline_bench"),
                ("package_versions", "offline-bench"), ("package_versions", "offline_bench")),
    )
    row["wall_time_s"] = _number(_first(source, ("wall_time_s", "wall_time", "elapsed_s", "train_time_s")))
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
    step = next((c for c in STEP_COLUMNS if c in metrics.columns), None)
    column = next((c for c in CURVE_SCORE_COLUMNS[score] if c in metrics.columns), None)
    if step is None or column is None:
        log.warning("%s has no step / %s score columns (has: %s)", file, score, ", ".join(metrics.columns))
        return None
    out = metrics[[step, column]].rename(columns={step: "step", column: "score"})
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
    "QUALITY_ORDER",
    "SCORES",
    "STATISTICS",
    "STATISTIC_TEXT",
    "dataset_matches",
    "find_run_dirs",
    "load_curves",
    "load_runs",
    "read_run",
]
