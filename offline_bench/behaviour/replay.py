"""The online replay buffer of the behaviour trainers: a ring over preallocated arrays, in arrival order.

Its filled prefix, in order, is exactly the "mixed" (medium-replay) dataset when the trainer freezes the medium
policy: the buffer's capacity is at least the training budget, so nothing is overwritten before that point.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from offline_bench.batch import Batch


class ReplayBuffer:
    """Transitions ``(obs [N, O], action [N, A], reward [N], next_obs [N, O], terminal, timeout)``."""

    def __init__(self, capacity: int, n_agents: int, obs_dim: int, action_dim: int) -> None:
        if capacity <= 0:
            raise ValueError(f"replay capacity must be positive, got {capacity}")
        self.capacity = capacity
        self.obs = np.zeros((capacity, n_agents, obs_dim), np.float32)
        self.action = np.zeros((capacity, n_agents, action_dim), np.float32)
        self.reward = np.zeros((capacity, n_agents), np.float32)
        self.next_obs = np.zeros((capacity, n_agents, obs_dim), np.float32)
        self.terminal = np.zeros(capacity, bool)
        self.timeout = np.zeros(capacity, bool)
        self.added = 0  # transitions ever added

    def __len__(self) -> int:
        return min(self.added, self.capacity)

    def add(
        self,
        obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        next_obs: np.ndarray,
        terminal: bool,
        timeout: bool,
    ) -> None:
        i = self.added % self.capacity
        self.obs[i], self.action[i], self.reward[i], self.next_obs[i] = obs, action, reward, next_obs
        self.terminal[i], self.timeout[i] = terminal, timeout
        self.added += 1

    def sample(self, batch_size: int, generator: torch.Generator, device: torch.device | str = "cpu") -> Batch:
        """A uniform batch (with replacement) drawn with ``generator``."""
        idx = torch.randint(len(self), (batch_size,), generator=generator)  # [B]
        obs = torch.from_numpy(self.obs)[idx]  # [B, N, O]
        action = torch.from_numpy(self.action)[idx]  # [B, N, A]
        b = batch_size
        batch = Batch(
            obs=obs,
            action=action,
            reward=torch.from_numpy(self.reward)[idx].unsqueeze(-1),  # [B, N, 1]
            next_obs=torch.from_numpy(self.next_obs)[idx],
            done=torch.from_numpy(self.terminal)[idx].float().unsqueeze(-1),  # [B, 1]
            next_action=torch.zeros_like(action),
            next_action_valid=torch.zeros(b, 1),
        )
        return batch.to(device) if str(device) != "cpu" else batch

    def prefix(self, count: int | None = None) -> dict[str, np.ndarray]:
        """The first ``count`` transitions ever added (all of them if None), in order, under the dataset keys."""
        count = self.added if count is None else count
        if count > 0 and self.added > self.capacity:  # the ring wrapped: its first transitions are overwritten
            raise ValueError(
                f"the buffer kept only the last {self.capacity} of {self.added} transitions, so its first {count} are "
                f"gone; train with buffer_capacity >= the run's steps ({self.added})"
            )
        return {
            "observations": self.obs[:count],
            "actions": self.action[:count],
            "rewards": self.reward[:count],
            "next_observations": self.next_obs[:count],
            "terminals": self.terminal[:count],
            "timeouts": self.timeout[:count],
        }

    def state_dict(self) -> dict[str, Any]:
        n = len(self)
        return {
            "added": self.added,
            "capacity": self.capacity,
            "arrays": {k: getattr(self, k)[:n].copy() for k in ("obs", "action", "reward", "next_obs", "terminal", "timeout")},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["capacity"] != self.capacity:
            raise ValueError(f"checkpoint buffer capacity {state['capacity']} differs from the config's {self.capacity}")
        for key, value in state["arrays"].items():
            getattr(self, key)[: len(value)] = value
        self.added = int(state["added"])
