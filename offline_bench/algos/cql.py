"""Conservative Q-Learning (Kumar et al. 2020), SAC-based continuous version. (Algorithm class follows.)"""
from __future__ import annotations

import torch
from torch import Tensor


def conservative_penalty(q_sampled: Tensor, log_density: Tensor, q_data: Tensor, temperature: float = 1.0) -> Tensor:
    """CQL(H) importance-sampled penalty: temperature * logsumexp((q_sampled - log_density) / temperature, -1) - q_data.

    q_sampled, log_density: [..., K] (K sampled actions on the last axis; log_density of the proposal that drew
    each action, 0 where not importance-weighted); q_data: [...]. Returns [...] (caller takes mean, scales by alpha).
    """
    assert q_sampled.shape == torch.broadcast_shapes(q_sampled.shape, log_density.shape), "log_density must broadcast to q_sampled"
    assert q_sampled.shape[:-1] == q_data.shape, f"q_data {tuple(q_data.shape)} vs q_sampled {tuple(q_sampled.shape)}"
    soft_max = temperature * torch.logsumexp((q_sampled - log_density) / temperature, dim=-1)  # [...]
    return soft_max - q_data  # [...]
