"""The dataset layer: catalog and recipes, collection, the HDF5 file + manifest, loading, sampling, Minari interop.

    from offline_bench.data import collect, load_dataset, DeviceSampler
    collect("hopper-random", steps=10_000, root="datasets")   # -> datasets/hopper-random-v0.hdf5 + .json
    dataset = load_dataset("hopper-random", root="datasets")  # verified arrays + manifest
    sampler = DeviceSampler(dataset, "cuda", seed=0)          # whole dataset on the device
    batch = sampler.sample(256)                               # offline_bench.batch.Batch

Collection imports the simulators only when it runs; loading and sampling need none.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from offline_bench.data.catalog import (
    CATALOG,
    QUALITIES,
    REFERENCES,
    TASKS,
    CatalogEntry,
    MissingReferenceError,
    Recipe,
    TaskReferences,
    UnknownDatasetError,
    all_dataset_ids,
    catalog_entry,
    register_recipe,
    resolve_dataset_id,
    task_references,
)
from offline_bench.data.dataset import Dataset, dataset_status, load_dataset, verify_dataset
from offline_bench.data.format import FORMAT_VERSION, DatasetError, write_dataset
from offline_bench.data.sampler import DeviceSampler

if TYPE_CHECKING:
    from offline_bench.data.collection import DatasetExistsError, NotCollectableError, collect, measure_random_return


def __getattr__(name: str) -> Any:
    # Collection pulls in the env package (and torch-built policies); import it only when asked for.
    if name in ("collect", "measure_random_return", "NotCollectableError", "DatasetExistsError"):
        from offline_bench.data import collection

        return getattr(collection, name)
    raise AttributeError(f"module 'offline_bench.data' has no attribute {name!r}")


__all__ = [
    "CATALOG",
    "FORMAT_VERSION",
    "QUALITIES",
    "REFERENCES",
    "TASKS",
    "CatalogEntry",
    "Dataset",
    "DatasetError",
    "DatasetExistsError",
    "DeviceSampler",
    "MissingReferenceError",
    "NotCollectableError",
    "Recipe",
    "TaskReferences",
    "UnknownDatasetError",
    "all_dataset_ids",
    "catalog_entry",
    "collect",
    "dataset_status",
    "load_dataset",
    "measure_random_return",
    "register_recipe",
    "resolve_dataset_id",
    "task_references",
    "verify_dataset",
    "write_dataset",
]
