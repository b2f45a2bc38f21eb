"""Where datasets and runs live: an explicit directory, else an environment variable, else ./datasets or ./runs."""
from __future__ import annotations

import os
from pathlib import Path


def data_root(root: str | os.PathLike[str] | None = None) -> Path:
    """``root`` if given, else ``$OFFLINE_BENCH_DATA``, else ``./datasets``."""
    return Path(root or os.environ.get("OFFLINE_BENCH_DATA") or "datasets")


def runs_root(runs: str | os.PathLike[str] | None = None) -> Path:
    """``runs`` if given, else ``$OFFLINE_BENCH_RUNS``, else ``./runs``."""
    return Path(runs or os.environ.get("OFFLINE_BENCH_RUNS") or "runs")


def policies_root() -> Path:
    """Committed behaviour-policy checkpoints (``datasets/policies/`` in the repository)."""
    return Path(__file__).resolve().parent.parent / "datasets" / "policies"
