"""The one environment interface: every task is a multi-agent env; a single-agent task is the N = 1 case.

Contract (every adapter in this package follows it):

- ``reset(seed) -> obs``: ``obs`` is float32 ``[N, O]`` where ``O = spec.obs_dim`` is the largest per-agent
  observation size; agents with smaller observations are zero-padded at the end. The same seed gives the same
  first observation and, under the same actions, the same trajectory.
- ``step(action) -> StepResult``: ``action`` is float32 ``[N, A]`` in [-1, 1] (``A = spec.action_dim``; dims past an
  agent's own ``spec.action_sizes[i]`` are ignored). The adapter maps actions to the env's own bounds. ``reward`` is
  float32 ``[N]`` (one per learning agent). ``terminated`` means a true terminal state (bootstrapping stops);
  ``truncated`` means the time limit (``spec.episode_length``) was reached.
- Opponents that do not learn (the prey in ``tag``, the two fast agents in ``world``) act inside the adapter.
- Adapters never print: C-level output of the simulators is silenced.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class TaskSpec:
    """Static facts about a task, the same for every instance of its env."""

    name: str  # "hopper", "spread", "halfcheetah-2x3", ...
    n_agents: int  # agents that learn (and appear in datasets)
    obs_sizes: tuple[int, ...]  # true observation size per learning agent
    action_sizes: tuple[int, ...]  # true action size per learning agent
    episode_length: int  # time limit in steps
    source: str  # what simulates it, e.g. "pybullet:HopperBulletEnv"
    description: str = ""
    # How interface actions reach the simulator. None: the only way, a linear map of [-1, 1] onto its action box.
    # The MPE tasks have two (``offline_bench.envs.tasks.MPE_ACTION_LAYOUTS``): "force" (default) and "mpe2".
    action_layout: str | None = None

    @property
    def obs_dim(self) -> int:
        """Padded observation size: the largest agent's."""
        return max(self.obs_sizes)

    @property
    def action_dim(self) -> int:
        """Padded action size: the largest agent's."""
        return max(self.action_sizes)

    @property
    def multi_agent(self) -> bool:
        return self.n_agents > 1

    def action_mask(self) -> np.ndarray:
        """``[N, A]`` float32: 1 on each agent's true action dimensions, 0 on the padding."""
        mask = np.zeros((self.n_agents, self.action_dim), dtype=np.float32)
        for i, size in enumerate(self.action_sizes):
            mask[i, :size] = 1.0
        return mask


@dataclass(frozen=True)
class StepResult:
    obs: np.ndarray  # [N, O] float32, zero-padded
    reward: np.ndarray  # [N] float32
    terminated: bool
    truncated: bool
    info: dict[str, Any]


class Env:
    """Base class of the adapters; see the module docstring for the contract."""

    spec: TaskSpec

    def reset(self, seed: int) -> np.ndarray:
        raise NotImplementedError

    def step(self, action: np.ndarray) -> StepResult:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> "Env":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
