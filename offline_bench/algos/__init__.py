"""Algorithm registry: command-line ids, aliases, and where each algorithm lives."""
from __future__ import annotations

import importlib
import re

from offline_bench.algos.base import Algorithm, Problem

# id -> "module:Class". Modules are imported on first use.
ALGORITHMS: dict[str, str] = {
    "td3bc": "offline_bench.algos.td3_bc:TD3BC",
    "cql": "offline_bench.algos.cql:CQL",
    "bear": "offline_bench.algos.bear:BEAR",
    "dbr": "offline_bench.algos.dbr:DBR",
    "ma-td3bc": "offline_bench.algos.ma_td3_bc:MATD3BC",
    "ma-cql": "offline_bench.algos.ma_cql:MACQL",
    "ma-icq": "offline_bench.algos.ma_icq:MAICQ",
    "omar": "offline_bench.algos.omar:OMAR",
}


def canonical_algo_id(name: str) -> str:
    """Map spellings like ``TD3_BC``, ``td3+bc``, ``MA_CQL`` to the registry id; raise listing the valid ids."""
    key = re.sub(r"[\s_+]", "", name.strip().lower().replace("_", "-"))
    key = key.replace("--", "-")
    candidates = {k.replace("-", ""): k for k in ALGORITHMS}
    if key in ALGORITHMS:
        return key
    if key.replace("-", "") in candidates:
        return candidates[key.replace("-", "")]
    raise KeyError(f"unknown algorithm {name!r}; choose one of: {', '.join(ALGORITHMS)}")


def get_algorithm(name: str) -> type:
    module_name, class_name = ALGORITHMS[canonical_algo_id(name)].split(":")
    return getattr(importlib.import_module(module_name), class_name)


__all__ = ["ALGORITHMS", "Algorithm", "Problem", "canonical_algo_id", "get_algorithm"]
