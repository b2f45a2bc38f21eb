"""Updates per second of every registered algorithm (pytest-benchmark; run with ``make bench`` or
``pytest -m benchmark --benchmark-enable benchmarks/bench_algos.py``).

- single-agent shape: Hopper-sized synthetic data (obs 15, act 3), batch 256, 256x256 networks, every algorithm;
- multi-agent shapes (multi-agent algorithms): 1, 3 and 6 agents with MPE-sized agents (obs 18, act 2: the v1
  force layout) and 64x64 networks, and halfcheetah-2x3-sized agents (2 agents, obs 17, act 3) with 256x256 networks;
- the same networks as N separate single-agent learners updated in a Python loop over agents (what the OMAR
  authors' code does), to compare with our one batched update.

Each benchmark round runs ``UPDATES_PER_ROUND`` updates including sampling (one gather from tensors held in
memory, like ``DeviceSampler``); ``extra_info`` holds ``updates_per_s`` (wall clock) and ``cpu_updates_per_s``
(process CPU time) from the median round; an update of a per-agent loop is one round over all agents. Torch runs on one thread unless ``OFFLINE_BENCH_THREADS`` says otherwise, and glibc keeps freed memory for reuse as
in a CPU training run (``train.loop.tune_cpu_allocator``) unless ``OFFLINE_BENCH_TUNE_ALLOCATOR=0``.
``OFFLINE_BENCH_DEVICE=cuda`` puts the data and the networks on the GPU (default ``cpu``); a round then ends with
``torch.cuda.synchronize()``, so the wall-clock rate counts the queued GPU work (the CPU-time rate does not).
- the OMAR authors' MPE budget shape (3 agents, batch 1024, 64x64): OMAR and MA-CQL, whose ratio the issue bounds;
- on CUDA, the Hopper and MPE shapes again with every update replayed as a CUDA graph (``train.graphs``).
"""
from __future__ import annotations

import dataclasses
import importlib
import os
import statistics
import time
from collections.abc import Callable

import numpy as np
import pytest
import torch

from offline_bench.algos import ALGORITHMS, Problem
from offline_bench.batch import Batch

pytestmark = pytest.mark.benchmark
torch.set_num_threads(int(os.environ.get("OFFLINE_BENCH_THREADS", "1")))


@pytest.fixture(scope="module", autouse=True)
def _training_allocator() -> None:
    """glibc keeps freed memory for reuse, as in a CPU training run (``train.loop.tune_cpu_allocator``)."""
    if os.environ.get("OFFLINE_BENCH_TUNE_ALLOCATOR", "1") == "1":
        from offline_bench.train.loop import tune_cpu_allocator

        tune_cpu_allocator()

DEVICE = torch.device(os.environ.get("OFFLINE_BENCH_DEVICE", "cpu"))
UPDATES_PER_ROUND = int(os.environ.get("OFFLINE_BENCH_BENCH_UPDATES", "10"))
ROUNDS = int(os.environ.get("OFFLINE_BENCH_BENCH_ROUNDS", "5"))
EPISODE_LENGTH = 1000


class SyntheticData:
    """Random transitions held as tensors (obs ~ N(0, 1), actions ~ U(-1, 1), reward ~ N(0, 1), a terminal every
    1000 steps), sampled uniformly like ``DeviceSampler``: ``[T, N, D]`` tensors, one index draw per batch."""

    def __init__(self, size: int, n_agents: int, obs_dim: int, action_dim: int, seed: int = 0,
                 device: str | torch.device = DEVICE) -> None:
        g = torch.Generator().manual_seed(seed)
        self.size, self.device = size, torch.device(device)
        obs = torch.randn(size, n_agents, obs_dim, generator=g)  # [T, N, O]
        self.obs = obs.to(self.device)
        self.next_obs = torch.roll(obs, -1, 0).to(self.device)  # [T, N, O]
        self.action = (torch.rand(size, n_agents, action_dim, generator=g) * 2 - 1).to(self.device)  # [T, N, A]
        self.reward = torch.randn(size, n_agents, 1, generator=g).to(self.device)  # [T, N, 1]
        done = torch.zeros(size, 1)
        done[EPISODE_LENGTH - 1 :: EPISODE_LENGTH] = 1.0
        self.done = done.to(self.device)  # [T, 1]
        self.next_valid = (1.0 - done).to(self.device)  # [T, 1]
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.problem = Problem(
            n_agents, obs_dim, action_dim, (obs_dim,) * n_agents, (action_dim,) * n_agents,
            np.zeros((n_agents, obs_dim), np.float32), np.ones((n_agents, obs_dim), np.float32), size,
        )

    def sample(self, batch_size: int) -> Batch:
        return self.batch_at(self.sample_indices(batch_size))

    def sample_indices(self, batch_size: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """``[B]`` row indices (into ``out`` if given), as ``DeviceSampler.sample_indices``."""
        return torch.randint(self.size, (batch_size,), device=self.device, generator=self.generator, out=out)

    def batch_at(self, idx: torch.Tensor) -> Batch:
        """The same gathers as ``DeviceSampler.batch_at`` (``index_select``, several times faster than ``t[idx]``)."""
        valid = self.next_valid.index_select(0, idx)  # [B, 1]
        next_idx = (idx + 1).clamp_max(self.size - 1)  # [B]
        return Batch(
            obs=self.obs.index_select(0, idx), action=self.action.index_select(0, idx),
            reward=self.reward.index_select(0, idx), next_obs=self.next_obs.index_select(0, idx),
            done=self.done.index_select(0, idx), next_action=self.action.index_select(0, next_idx) * valid.unsqueeze(-1),
            next_action_valid=valid,
        )


def load(algo_id: str) -> type:
    module_name, class_name = ALGORITHMS[algo_id].split(":")
    try:
        return getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        pytest.fail(f"{algo_id}: {ALGORITHMS[algo_id]} is not importable ({exc})")


def config_fields(algo_id: str) -> set[str]:
    """The names of ``algo_id``'s config fields (which options it has, e.g. ``bf16``)."""
    return {f.name for f in dataclasses.fields(load(algo_id).config_cls)}


def skip_without_bf16(algo_id: str) -> None:
    if "bf16" not in config_fields(algo_id):
        pytest.skip(f"{algo_id} has no bf16 option")


def sized_config(algo_cls: type, hidden: tuple[int, ...], batch_size: int) -> object:
    """Default config with every ``*hidden_sizes`` field set to ``hidden`` and the given batch size."""
    config = algo_cls.config_cls()
    changes = {f.name: hidden for f in dataclasses.fields(config) if f.name.endswith("hidden_sizes")}
    changes["batch_size"] = batch_size
    return dataclasses.replace(config, **changes)


def make_algo(algo_id: str, data: SyntheticData, hidden: tuple[int, ...], batch_size: int = 256,
              device: str | torch.device = DEVICE, seed: int = 0, **overrides: object) -> object:
    """A fresh ``algo_id`` instance at the given size (``sized_config``, then ``overrides``), its networks drawn
    from ``seed``."""
    algo_cls = load(algo_id)
    torch.manual_seed(seed)
    config = dataclasses.replace(sized_config(algo_cls, hidden, batch_size), **overrides)
    return algo_cls(config, data.problem, torch.device(device))


def trainer(algo_id: str, data: SyntheticData, hidden: tuple[int, ...], batch_size: int = 256,
            device: str | torch.device = DEVICE, **overrides: object) -> Callable[[int], None]:
    """A function running k sampled updates of a fresh ``algo_id`` instance (config ``overrides`` as in
    ``make_algo``)."""
    algo = make_algo(algo_id, data, hidden, batch_size, device, **overrides)

    def run(k: int) -> None:
        for _ in range(k):
            algo.update(data.sample(batch_size))

    return run


def graphed_trainer(algo_id: str, data: SyntheticData, hidden: tuple[int, ...], batch_size: int = 256,
                    device: str | torch.device = DEVICE) -> Callable[[int], None]:
    """``trainer`` with every kind of update captured as a CUDA graph (``train.graphs``); CUDA only."""
    from offline_bench.train.graphs import GraphedUpdates

    if torch.device(device).type != "cuda":
        pytest.skip("CUDA graphs need a GPU (OFFLINE_BENCH_DEVICE=cuda)")
    algo = make_algo(algo_id, data, hidden, batch_size, device)
    runner = GraphedUpdates(algo, data, batch_size, device)
    for _ in range(10):  # the warm-up updates and captures of the first keys, outside the timed rounds
        runner.step()

    def run(k: int) -> None:
        for _ in range(k):
            runner.step()

    return run


def loop_trainer(algo_id: str, data: SyntheticData, hidden: tuple[int, ...], batch_size: int = 256,
                 device: str | torch.device = DEVICE) -> Callable[[int], None]:
    """N single-agent instances of the same algorithm and networks, updated one after another on each agent's
    slice of the same batch: the per-agent Python loop of the authors' code."""
    algo_cls = load(algo_id)
    n = data.problem.n_agents
    p = data.problem
    single = Problem(1, p.obs_dim, p.action_dim, p.obs_sizes[:1], p.action_sizes[:1], p.obs_mean[:1],
                     p.obs_std[:1], p.dataset_size)
    torch.manual_seed(0)
    agents = [algo_cls(sized_config(algo_cls, hidden, batch_size), single, torch.device(device)) for _ in range(n)]

    def run(k: int) -> None:
        for _ in range(k):
            batch = data.sample(batch_size)
            for i, agent in enumerate(agents):
                agent.update(Batch(
                    obs=batch.obs[:, i:i + 1], action=batch.action[:, i:i + 1], reward=batch.reward[:, i:i + 1],
                    next_obs=batch.next_obs[:, i:i + 1], done=batch.done,
                    next_action=batch.next_action[:, i:i + 1], next_action_valid=batch.next_action_valid,
                ))

    return run


def synchronize(device: torch.device = DEVICE) -> None:
    """Wait for the GPU's queued work (a no-op on CPU), so a timed round counts it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(benchmark, run: Callable[[int], None], label: str) -> float:
    """Time rounds of ``UPDATES_PER_ROUND`` updates; record wall and process-CPU rates (the CPU clock is what a
    shared machine distorts least: it stops while other processes hold the core)."""
    cpu_seconds: list[float] = []

    def timed(k: int) -> None:
        start = time.process_time()
        run(k)
        synchronize()
        cpu_seconds.append(time.process_time() - start)

    run(2)  # first calls allocate
    synchronize()
    benchmark.pedantic(timed, args=(UPDATES_PER_ROUND,), rounds=ROUNDS, warmup_rounds=1, iterations=1)
    rate = UPDATES_PER_ROUND / benchmark.stats.stats.median
    cpu_rate = UPDATES_PER_ROUND / statistics.median(cpu_seconds[1:] or cpu_seconds)
    benchmark.extra_info.update({"label": label, "updates_per_s": round(rate, 2),
                                 "cpu_updates_per_s": round(cpu_rate, 2), "threads": torch.get_num_threads(),
                                 "device": str(DEVICE)})
    return rate


MULTI_AGENT = [a for a in ALGORITHMS if a not in {"td3bc", "cql", "bear", "dbr"}]

_hopper: dict[str, SyntheticData] = {}


def hopper_data() -> SyntheticData:
    if "d" not in _hopper:
        _hopper["d"] = SyntheticData(200_000, 1, 15, 3)
    return _hopper["d"]


@pytest.mark.parametrize("algo_id", list(ALGORITHMS))
def test_hopper_sized_updates_per_s(benchmark, algo_id: str) -> None:
    """Every algorithm, batch 256, 256x256 networks, obs 15 / act 3."""
    measure(benchmark, trainer(algo_id, hopper_data(), (256, 256)), f"{algo_id} hopper 256x256")


@pytest.mark.parametrize("algo_id", list(ALGORITHMS))
def test_hopper_sized_bf16_updates_per_s(benchmark, algo_id: str) -> None:
    """The same with ``bf16=true`` (network matmuls in bfloat16 autocast; fast on CPUs with AMX)."""
    skip_without_bf16(algo_id)
    measure(benchmark, trainer(algo_id, hopper_data(), (256, 256), bf16=True), f"{algo_id} hopper 256x256 bf16")


@pytest.mark.parametrize("algo_id", list(ALGORITHMS))
def test_hopper_sized_graphed_updates_per_s(benchmark, algo_id: str) -> None:
    """The same, each update replayed as a CUDA graph (``cuda_graphs=true``; skipped without CUDA)."""
    measure(benchmark, graphed_trainer(algo_id, hopper_data(), (256, 256)), f"{algo_id} hopper 256x256 graphed")


@pytest.mark.parametrize("n_agents", [1, 3, 6])
@pytest.mark.parametrize("algo_id", MULTI_AGENT)
def test_mpe_sized_graphed_updates_per_s(benchmark, algo_id: str, n_agents: int) -> None:
    """MPE-sized agents as CUDA graphs (skipped without CUDA)."""
    data = SyntheticData(50_000, n_agents, 18, 2)
    measure(benchmark, graphed_trainer(algo_id, data, (64, 64)), f"{algo_id} mpe N={n_agents} 64x64 graphed")


@pytest.mark.parametrize("n_agents", [1, 3, 6])
@pytest.mark.parametrize("algo_id", MULTI_AGENT)
def test_mpe_sized_batched_updates_per_s(benchmark, algo_id: str, n_agents: int) -> None:
    """One batched update for all agents: MPE-sized agents (obs 18, act 2: the v1 force layout), 64x64 networks,
    batch 256."""
    data = SyntheticData(50_000, n_agents, 18, 2)
    measure(benchmark, trainer(algo_id, data, (64, 64)), f"{algo_id} mpe N={n_agents} 64x64 batched")


@pytest.mark.parametrize("n_agents", [3, 6])
@pytest.mark.parametrize("algo_id", MULTI_AGENT)
def test_mpe_sized_per_agent_loop_updates_per_s(benchmark, algo_id: str, n_agents: int) -> None:
    """The same networks as N single-agent learners in a Python loop (rounds per second)."""
    data = SyntheticData(50_000, n_agents, 18, 2)
    measure(benchmark, loop_trainer(algo_id, data, (64, 64)), f"{algo_id} mpe N={n_agents} 64x64 loop")


@pytest.mark.parametrize("layout", ["batched", "loop"])
@pytest.mark.parametrize("algo_id", MULTI_AGENT)
def test_halfcheetah_2x3_sized_updates_per_s(benchmark, algo_id: str, layout: str) -> None:
    """halfcheetah-2x3-sized agents (2 agents, obs 17, act 3), 256x256 networks, batch 256."""
    data = SyntheticData(50_000, 2, 17, 3)
    make = trainer if layout == "batched" else loop_trainer
    measure(benchmark, make(algo_id, data, (256, 256)), f"{algo_id} halfcheetah-2x3 256x256 {layout}")


@pytest.mark.parametrize("algo_id", MULTI_AGENT)
def test_halfcheetah_2x3_sized_bf16_updates_per_s(benchmark, algo_id: str) -> None:
    """The batched halfcheetah-2x3-sized update with ``bf16=true``."""
    skip_without_bf16(algo_id)
    data = SyntheticData(50_000, 2, 17, 3)
    measure(benchmark, trainer(algo_id, data, (256, 256), bf16=True), f"{algo_id} halfcheetah-2x3 256x256 bf16")


@pytest.mark.parametrize("bf16", [False, True], ids=["float32", "bf16"])
@pytest.mark.parametrize("algo_id", ["omar", "ma-cql"])
def test_spread_authors_shape_updates_per_s(benchmark, algo_id: str, bf16: bool) -> None:
    """The OMAR authors' MPE setting (3 agents, obs 18, act 2, batch 1024, 64x64): one update round."""
    data = SyntheticData(50_000, 3, 18, 2)
    label = f"{algo_id} spread B=1024 64x64" + (" bf16" if bf16 else "")
    measure(benchmark, trainer(algo_id, data, (64, 64), batch_size=1024, bf16=bf16), label)
