"""Env steps per second for every task under uniformly random actions (what collection of random data costs).

Run with ``make bench`` or ``python -m pytest -q -m benchmark --benchmark-enable benchmarks/bench_envs.py``.
Each round steps one env ``STEPS`` times, resetting whenever an episode ends; ``extra_info["steps_per_s"]`` holds
the rate of the fastest round.
"""
from __future__ import annotations

import numpy as np
import pytest

from offline_bench.envs import TASKS, Env, make_env

STEPS = {name: 250 if name == "world" else 1000 for name in TASKS}


def step_randomly(env: Env, actions: np.ndarray) -> int:
    """Step through ``actions`` [T, N, A], resetting at episode ends; returns how many episodes ended."""
    episodes, seed = 0, 1
    for action in actions:
        result = env.step(action)
        if result.terminated or result.truncated:
            episodes += 1
            env.reset(seed)
            seed += 1
    return episodes


@pytest.mark.benchmark(group="env steps/s")
@pytest.mark.parametrize("name", list(TASKS))
def test_env_steps_per_second(benchmark: pytest.FixtureDef, name: str) -> None:
    import torch

    torch.set_num_threads(1)
    spec = TASKS[name]
    steps = STEPS[name]
    actions = np.random.default_rng(0).uniform(-1, 1, (steps, spec.n_agents, spec.action_dim)).astype(np.float32)
    with make_env(name) as env:
        env.reset(0)
        episodes = benchmark.pedantic(step_randomly, args=(env, actions), rounds=3, iterations=1, warmup_rounds=1)
    assert episodes >= 0
    if benchmark.stats is not None:  # None when benchmarks are disabled (the default test run)
        rate = steps / benchmark.stats.stats.min
        benchmark.extra_info["steps_per_s"] = round(rate)
        benchmark.extra_info["agent_steps_per_s"] = round(rate * spec.n_agents)
