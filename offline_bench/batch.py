"""The typed batch that flows from the sampler into every algorithm's ``update``.

Every algorithm, single- or multi-agent, sees the same shapes: an agent axis ``N`` after the batch axis
(``N = 1`` for single-agent data).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Batch:
    obs: Tensor  # [B, N, O] float32, zero-padded per agent
    action: Tensor  # [B, N, A] float32 in [-1, 1]
    reward: Tensor  # [B, N, 1] float32
    next_obs: Tensor  # [B, N, O]
    done: Tensor  # [B, 1] float32: 1.0 where the episode truly terminated (never for time-limit ends)
    next_action: Tensor  # [B, N, A]: the dataset's action at next_obs in the same episode, zeros where none
    next_action_valid: Tensor  # [B, 1] float32: 1.0 where next_action exists (not the episode's last row)

    def __post_init__(self) -> None:
        b, n, _ = self.obs.shape
        assert self.action.shape[:2] == (b, n), f"action {tuple(self.action.shape)} vs obs {tuple(self.obs.shape)}"
        assert self.reward.shape == (b, n, 1), f"reward must be [B, N, 1], got {tuple(self.reward.shape)}"
        assert self.next_obs.shape == self.obs.shape
        assert self.done.shape == (b, 1), f"done must be [B, 1], got {tuple(self.done.shape)}"
        assert self.next_action.shape == self.action.shape
        assert self.next_action_valid.shape == (b, 1)

    @property
    def batch_size(self) -> int:
        return self.obs.shape[0]

    @property
    def n_agents(self) -> int:
        return self.obs.shape[1]

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(**{k: v.to(device) for k, v in self.__dict__.items()})
