"""offline-bench: offline RL datasets, algorithms and paper-style tables, single- and multi-agent."""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "load_dataset"]


def load_dataset(dataset_id: str, root: str | None = None, device: str | None = None):  # noqa: ANN201
    """Load a collected dataset by id (`hopper-medium`, `spread-mixed-v0`, ...); see `offline_bench.data`."""
    from offline_bench.data import load_dataset as _load

    return _load(dataset_id, root=root)
