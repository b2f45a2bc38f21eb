"""Every registered algorithm trains through the one loop and resumes exactly (its state_dict is complete)."""
import csv
import math
from pathlib import Path

import pytest
import torch

from offline_bench.algos import ALGORITHMS, get_algorithm
from offline_bench.train import train

from test_train import tiny_datasets

torch.set_num_threads(1)

SETS = {"hidden_sizes": "[16,16]", "batch_size": 32, "eval_every": 4, "eval_episodes": 2, "log_every": 2,
        "checkpoint_every": 3}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return tiny_datasets(tmp_path_factory)


def metrics(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k != "time_s"} for row in csv.DictReader(f)]


@pytest.mark.parametrize("algo,extra", [(algo, {}) for algo in ALGORITHMS]
                         + [("ma-cql", {"cql_lagrange": "true"}), ("omar", {"cql_lagrange": "true"})])
def test_algorithm_trains_and_resumes_exactly(algo, extra, data_root, tmp_path):
    dataset = "spread-random" if get_algorithm(algo).multi_agent else "hopper-random"
    args = dict(steps=8, sets={**SETS, **extra}, root=data_root)
    whole = train(algo, dataset, runs=tmp_path / "whole", **args)
    assert train(algo, dataset, runs=tmp_path / "cut", stop_after=5, **args).status == "stopped"
    resumed = train(algo, dataset, runs=tmp_path / "cut", **args)
    assert resumed.start_step == 3 and resumed.status == "finished"
    rows = metrics(whole.run_dir)
    assert [int(r["step"]) for r in rows] == [2, 3, 4, 6, 8]
    assert all(math.isfinite(float(v)) for r in rows for k, v in r.items() if v and k != "normalized_score")
    assert metrics(resumed.run_dir) == rows
    assert whole.result["final_return"] == resumed.result["final_return"]
