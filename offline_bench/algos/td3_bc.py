"""TD3+BC (Fujimoto & Gu 2021). (Algorithm class follows.)"""
from __future__ import annotations

from torch import Tensor


def bc_actor_loss(q_pi: Tensor, pi_action: Tensor, data_action: Tensor, alpha: float) -> Tensor:
    """TD3+BC actor loss, per agent, summed over agents (agents' actors are independent, so each gets exactly its
    own TD3+BC gradient): ``sum_n [ -lambda_n * mean_B Q_n(o, pi(o)) + mean_{B,A} (pi(o) - a)^2 ]`` with
    ``lambda_n = alpha / mean_B |Q_n|`` (detached).

    q_pi ``[B, N]``, pi_action and data_action ``[B, N, A]`` -> scalar.
    """
    assert q_pi.dim() == 2 and pi_action.shape[:2] == q_pi.shape, f"q_pi {tuple(q_pi.shape)}, pi {tuple(pi_action.shape)}"
    lmbda = alpha / q_pi.abs().mean(0).detach()  # [N]
    q_term = -(lmbda * q_pi.mean(0))  # [N]
    bc_term = (pi_action - data_action).square().mean(dim=(0, 2))  # [N]
    return (q_term + bc_term).sum()
