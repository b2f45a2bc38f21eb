"""TD3+BC: "A Minimalist Approach to Offline Reinforcement Learning" (Fujimoto & Gu, NeurIPS 2021).

TD3 (clipped double-Q, target policy smoothing, delayed actor and target updates) whose actor maximises
``lambda * Q(s, pi(s)) - (pi(s) - a)^2`` with ``lambda = alpha / mean|Q|``, on dataset-normalised observations.

Reference implementation checked: github.com/sfujim/TD3_BC (``TD3_BC.py``, ``main.py``); hyperparameters agree with
CORL's ``td3_bc.py`` and d3rlpy's ``TD3PlusBC``.

Deviations:
- Observations are normalised with ``Problem.obs_mean/obs_std``, the raw std (the data layer replaces a std below
  1e-6 by 1); the authors add 1e-3 to the std, so a feature whose std lies between about 1e-6 and 1e-2 is scaled
  up more here than in theirs.
- Twin critics are one stacked network over an ensemble axis (same maths, one kernel per layer).
- The actor's gradient is taken through the first critic with the critic's weight gradients skipped
  (``backward(inputs=actor params)``), which is what the reference computes and then discards.
- Optional ``bf16=true``: network matmuls under bfloat16 autocast (float32 parameters, optimizer and losses);
  off by default, ~2x faster updates on CPUs with AVX512-BF16.
- Metrics of the delayed actor step are carried over between actor updates so every step returns the same keys.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from offline_bench.algos.base import Problem
from offline_bench.algos.common import (
    adopt_networks,
    action_mean,
    TD3_STATE_NAMES,
    bf16_autocast,
    deterministic_act,
    load_module_states,
    module_states,
    optimizer_step,
    td3_networks,
    td_target,
)
from offline_bench.batch import Batch
from offline_bench.config import cfg
from offline_bench.nn import soft_update


@dataclass(frozen=True)
class TD3BCConfig:
    gamma: float = cfg(0.99, "discount factor")
    polyak: float = cfg(0.005, "target-network update rate: target <- (1 - polyak) * target + polyak * online")
    batch_size: int = cfg(256, "transitions per update")
    actor_lr: float = cfg(3e-4, "actor Adam learning rate")
    critic_lr: float = cfg(3e-4, "critic Adam learning rate")
    hidden_sizes: tuple[int, ...] = cfg((256, 256), "hidden layer sizes of actor and critics")
    n_critics: int = cfg(2, "critics in the ensemble; the target takes their minimum (clipped double Q)")
    policy_noise: float = cfg(0.2, "std of the Gaussian noise added to target actions (target policy smoothing)")
    noise_clip: float = cfg(0.5, "target-action noise is clipped to [-noise_clip, noise_clip]")
    policy_freq: int = cfg(2, "critic updates per actor and target update (delayed policy updates)")
    alpha: float = cfg(2.5, "Q weight in the actor loss: lambda = alpha / mean|Q| (smaller = closer to the data)")
    bf16: bool = cfg(False, "network matmuls in bfloat16 autocast (faster on CPUs with AVX512-BF16, less precise)")
    normalize_obs: bool = cfg(True, "standardise observations with the dataset's mean and std")


def td3_critic_loss(q: Tensor, target: Tensor) -> Tensor:
    """Squared TD error, mean over the batch, summed over agents and critics: q ``[B, N, E]``, target ``[B, N, 1]``."""
    return (q - target).square().mean(0).sum()


def bc_actor_loss(q_pi: Tensor, pi_action: Tensor, data_action: Tensor, alpha: float,
                  action_sizes: Tensor | None = None) -> Tensor:
    """TD3+BC actor loss, per agent, summed over agents (agents' actors are independent, so each gets exactly its
    own TD3+BC gradient): ``sum_n [ -lambda_n * mean_B Q_n(o, pi(o)) + mean_{B,A_n} (pi(o) - a)^2 ]`` with
    ``lambda_n = alpha / mean_B |Q_n|`` (detached), the BC mean over each agent's own action dimensions
    (``action_sizes [N]``, ``common.action_mean``; None: all A).

    q_pi ``[B, N]``, pi_action and data_action ``[B, N, A]`` -> scalar.
    """
    assert q_pi.dim() == 2 and pi_action.shape[:2] == q_pi.shape, f"q_pi {tuple(q_pi.shape)}, pi {tuple(pi_action.shape)}"
    lmbda = alpha / q_pi.abs().mean(0).detach()  # [N]
    q_term = -(lmbda * q_pi.mean(0))  # [N]
    bc_term = action_mean((pi_action - data_action).square(), action_sizes)  # [N]
    return (q_term + bc_term).sum()


class TD3BC:
    config_cls: ClassVar[type] = TD3BCConfig
    multi_agent: ClassVar[bool] = False

    def __init__(self, config: TD3BCConfig, problem: Problem, device: torch.device) -> None:
        if problem.n_agents != 1:
            raise ValueError(
                f"td3bc is single-agent but the dataset has {problem.n_agents} agents; use --algo ma-td3bc"
            )
        self.config, self.problem, self.device = config, problem, torch.device(device)
        nets = td3_networks(problem, self.device, config.hidden_sizes, config.n_critics, config.actor_lr,
                            config.critic_lr, config.normalize_obs)
        adopt_networks(self, nets)
        self.updates = 0
        self.last_actor_loss = torch.zeros((), device=self.device)  # updated in place (CUDA graphs read it)

    def graph_key(self) -> tuple:
        """The branch the next ``update`` takes (actor step or not); a CUDA-graph runner captures one graph per key."""
        return ((self.updates + 1) % self.config.policy_freq == 0,)

    def update(self, batch: Batch) -> dict[str, Tensor]:
        c = self.config
        self.updates += 1
        obs, next_obs = self.normalizer(batch.obs), self.normalizer(batch.next_obs)  # [B, N, O]

        # Critic: clipped double-Q target with target policy smoothing.
        with torch.no_grad():
            noise = (torch.randn_like(batch.action) * c.policy_noise).clamp(-c.noise_clip, c.noise_clip)
            with bf16_autocast(self.device, c.bf16):
                next_pi = self.actor_target(next_obs).float()  # [B, N, A]
            next_action = (next_pi + noise).clamp(-1.0, 1.0)  # [B, N, A]
            with bf16_autocast(self.device, c.bf16):
                next_q = self.critic_target(next_obs, next_action).float().amin(-1, keepdim=True)  # [B, N, 1]
            target = td_target(batch.reward, batch.done, next_q, c.gamma)  # [B, N, 1]
        with bf16_autocast(self.device, c.bf16):
            q = self.critic(obs, batch.action).float()  # [B, N, E]
        critic_loss = td3_critic_loss(q, target)
        optimizer_step(self.critic_opt, critic_loss, self.critic_params)

        # Actor and targets, every policy_freq critic updates.
        if self.updates % c.policy_freq == 0:
            with bf16_autocast(self.device, c.bf16):
                pi = self.actor(obs).float()  # [B, N, A]
                q_pi = self.critic.first(obs, pi).float()  # [B, N]
            actor_loss = bc_actor_loss(q_pi, pi, batch.action, c.alpha)
            optimizer_step(self.actor_opt, actor_loss, self.actor_params)
            soft_update(self.critic_target, self.critic, c.polyak)
            soft_update(self.actor_target, self.actor, c.polyak)
            self.last_actor_loss.copy_(actor_loss.detach())

        return {
            "critic_loss": critic_loss.detach(),
            "actor_loss": self.last_actor_loss.clone(),
            "q_mean": q.detach().mean(),
        }

    def act(self, obs: Tensor) -> Tensor:
        """Deterministic actions ``[E, N, O] -> [E, N, A]`` from raw observations."""
        return deterministic_act(self.actor, self.normalizer, obs)

    def state_dict(self) -> dict[str, Any]:
        scalars = {"updates": self.updates, "last_actor_loss": self.last_actor_loss}
        return {**module_states(self, TD3_STATE_NAMES), **scalars}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_module_states(self, state, TD3_STATE_NAMES)
        self.updates = int(state["updates"])
        self.last_actor_loss.copy_(state["last_actor_loss"])
