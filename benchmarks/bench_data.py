"""Dataset-layer speed: HDF5 write/load of a 1M x 15 single-agent dataset, load onto the device, sampler batches/s,
and collection throughput (env + behaviour policy) per task.

Run with ``make bench`` or ``python -m pytest -m benchmark --benchmark-enable benchmarks/bench_data.py``.
Target: the 1M-transition dataset goes from disk onto the device in under 1 s.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from offline_bench.data import DeviceSampler, load_dataset, task_references, write_dataset

pytestmark = pytest.mark.benchmark
torch.set_num_threads(1)

T, O, A, EPISODE = 1_000_000, 15, 3, 1000
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def hopper_sized_arrays() -> tuple[dict[str, np.ndarray], dict]:
    """1M transitions shaped like hopper (O = 15, A = 3), 1000-step episodes ending in a timeout."""
    rng = np.random.default_rng(0)
    starts = np.arange(0, T, EPISODE, dtype=np.int64)
    timeouts = np.zeros(T, bool)
    timeouts[starts + EPISODE - 1] = True
    arrays = {
        "observations": rng.standard_normal((T, O), dtype=np.float32),
        "actions": rng.uniform(-1, 1, (T, A)).astype(np.float32),
        "rewards": rng.standard_normal(T, dtype=np.float32),
        "next_observations": rng.standard_normal((T, O), dtype=np.float32),
        "terminals": np.zeros(T, bool),
        "timeouts": timeouts,
        "episode_starts": starts,
        "episode_seeds": np.arange(len(starts), dtype=np.int64),
    }
    manifest = {"task": "hopper", "quality": "random", "version": 0, "n_agents": 1, "obs_sizes": [O],
                "action_sizes": [A], "recipe": {"kind": "synthetic benchmark"},
                "references": task_references("hopper").to_dict(), "episode_returns": {"mean": None}}
    return arrays, manifest


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bench-data")
    arrays, manifest = hopper_sized_arrays()
    write_dataset(root, "hopper-random-v0", arrays, manifest)
    return root


def test_write_1m_x_15(benchmark, tmp_path: Path) -> None:  # noqa: ANN001 - pytest-benchmark fixture
    arrays, manifest = hopper_sized_arrays()
    result = benchmark.pedantic(write_dataset, args=(tmp_path, "hopper-random-v0", arrays, manifest),
                                rounds=3, iterations=1)
    assert result["transitions"] == T
    benchmark.extra_info["file_mib"] = result["file_bytes"] / 2**20


def test_load_1m_x_15_verified(benchmark, big: Path) -> None:  # noqa: ANN001
    dataset = benchmark.pedantic(load_dataset, args=("hopper-random", big), rounds=5, iterations=1, warmup_rounds=1)
    assert dataset.observations.shape == (T, O)


def test_load_1m_x_15_onto_device(benchmark, big: Path) -> None:  # noqa: ANN001
    def load_to_device() -> DeviceSampler:
        sampler = DeviceSampler(load_dataset("hopper-random", big), DEVICE, seed=0)
        if DEVICE == "cuda":
            torch.cuda.synchronize()
        return sampler

    sampler = benchmark.pedantic(load_to_device, rounds=5, iterations=1, warmup_rounds=1)
    assert sampler.obs.shape == (T, 1, O) and sampler.obs.device.type == DEVICE
    benchmark.extra_info["device"] = DEVICE
    assert benchmark.stats.stats.median < 1.0, "target: a 1M-transition dataset onto the device in under 1 s"


@pytest.mark.parametrize("batch_size", [256, 1024])
def test_sampler_batches_per_second(benchmark, big: Path, batch_size: int) -> None:  # noqa: ANN001
    sampler = DeviceSampler(load_dataset("hopper-random", big), DEVICE, seed=0)

    def hundred_batches() -> torch.Tensor:
        for _ in range(100):
            batch = sampler.sample(batch_size)
        if DEVICE == "cuda":
            torch.cuda.synchronize()
        return batch.obs

    obs = benchmark.pedantic(hundred_batches, rounds=5, iterations=1, warmup_rounds=1)
    assert obs.shape == (batch_size, 1, O)
    benchmark.extra_info["batches_per_s"] = 100 / benchmark.stats.stats.median
    benchmark.extra_info["device"] = DEVICE


@pytest.mark.parametrize("task", ["hopper", "halfcheetah", "walker2d", "ant", "spread", "tag", "world",
                                  "halfcheetah-2x3"])
def test_collection_steps_per_second(benchmark, task: str, tmp_path: Path) -> None:  # noqa: ANN001
    from offline_bench.data import collect
    from offline_bench.envs import task_spec

    # 8 envs step in lock-step, so 1000-step tasks store nothing before 8000 env steps: collect that many.
    steps = max(2000, 8 * task_spec(task).episode_length)
    manifest = benchmark.pedantic(collect, args=(f"{task}-random",), kwargs={"steps": steps, "root": tmp_path},
                                  rounds=1, iterations=1)
    assert manifest["transitions"] == steps
    benchmark.extra_info["steps_per_s"] = steps / benchmark.stats.stats.median
