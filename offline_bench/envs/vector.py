"""E copies of one task side by side, stepped one after another, for evaluation and data collection.

Rule for finished episodes: once a copy's episode ends (terminated or truncated on some step), that copy is
frozen until the next ``reset``: later ``step`` calls do not step it, its observation and reward rows are zeros,
and its ``terminated`` / ``truncated`` flags repeat the values it ended with. The step on which it ends returns
its real final observation and reward. ``done`` tells which copies are frozen.

Opponents (tag, world): one policy object is shared by all copies and called once per copy per step. If it has a
``reset(seed)`` method, every copy's reset calls it, in copy order. Without one, each copy has its own random
opponent seeded by that copy's reset seed.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from offline_bench.envs.base import Env, TaskSpec


class VectorEnv:
    """``num_envs`` envs of task ``name``: obs ``[E, N, O]``, actions ``[E, N, A]``, rewards ``[E, N]``."""

    def __init__(
        self,
        name: str,
        num_envs: int,
        opponent: Callable[[np.ndarray], np.ndarray] | None = None,
        action_layout: str | None = None,
    ) -> None:
        from offline_bench.envs import make_env

        if num_envs < 1:
            raise ValueError(f"num_envs must be at least 1, got {num_envs}")
        self.envs: list[Env] = [make_env(name, opponent=opponent, action_layout=action_layout) for _ in range(num_envs)]
        self.spec: TaskSpec = self.envs[0].spec
        self.num_envs = num_envs
        self.terminated = np.ones(num_envs, dtype=bool)  # [E]; nothing runs before the first reset
        self.truncated = np.zeros(num_envs, dtype=bool)  # [E]

    @property
    def done(self) -> np.ndarray:
        """``[E]`` bool: copies whose episode has ended (and which ``step`` leaves alone until ``reset``)."""
        return self.terminated | self.truncated

    def set_opponent(self, policy: Callable[[np.ndarray], np.ndarray] | None) -> None:
        """Replace the opponent policy of every copy (None: each copy's seeded random opponent)."""
        for env in self.envs:
            if not hasattr(env, "opponent"):
                raise ValueError(f"task {self.spec.name!r} has no opponents")
            env.opponent = policy  # type: ignore[attr-defined]

    def reset(self, seeds: Sequence[int]) -> np.ndarray:
        """Reset every copy, copy ``e`` with ``seeds[e]``; returns obs ``[E, N, O]``."""
        if len(seeds) != self.num_envs:
            raise ValueError(f"reset needs one seed per env: got {len(seeds)} seeds for {self.num_envs} envs")
        obs = np.stack([env.reset(int(seed)) for env, seed in zip(self.envs, seeds)])  # [E, N, O]
        self.terminated[:] = False
        self.truncated[:] = False
        return obs

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Step the copies still running; returns ``(obs [E,N,O], reward [E,N], terminated [E], truncated [E])``."""
        actions = np.asarray(actions, dtype=np.float32)
        expected = (self.num_envs, self.spec.n_agents, self.spec.action_dim)
        if actions.shape != expected:
            raise ValueError(f"{self.spec.name}: actions must have shape [E, N, A] = {list(expected)}, "
                             f"got {list(actions.shape)}")
        obs = np.zeros((self.num_envs, self.spec.n_agents, self.spec.obs_dim), dtype=np.float32)  # [E, N, O]
        reward = np.zeros((self.num_envs, self.spec.n_agents), dtype=np.float32)  # [E, N]
        for e, env in enumerate(self.envs):
            if self.terminated[e] or self.truncated[e]:
                continue
            result = env.step(actions[e])
            obs[e] = result.obs
            reward[e] = result.reward
            self.terminated[e] = result.terminated
            self.truncated[e] = result.truncated
        return obs, reward, self.terminated.copy(), self.truncated.copy()

    def close(self) -> None:
        for env in self.envs:
            env.close()

    def __enter__(self) -> "VectorEnv":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
