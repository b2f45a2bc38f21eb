"""Soft Actor-Critic with automatic entropy tuning: the online learner of the single-agent behaviour policies.

Paper: Haarnoja et al., "Soft Actor-Critic Algorithms and Applications" (2018), arXiv:1812.05905.
Reference implementation checked against: CleanRL ``sac_continuous_action.py`` (and rlkit's SACTrainer), the
defaults d4rl-pybullet's behaviour policies were trained with (256x256, lr 3e-4, batch 256, tau 0.005).
Deviations: none in the update; the N agents of a task (N = 1 for PyBullet) are independent SAC learners batched
over the agent axis, each with its own temperature.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from offline_bench.algos.common import AgentCritics, GaussianActor, frozen_copy, make_adam, optimizer_step, td_target
from offline_bench.batch import Batch
from offline_bench.config import cfg
from offline_bench.envs.base import TaskSpec
from offline_bench.nn import soft_update


@dataclass(frozen=True)
class SACConfig:
    hidden_sizes: tuple[int, ...] = cfg((256, 256), "hidden layer sizes of actor and critics")
    actor_lr: float = cfg(3e-4, "actor learning rate")
    critic_lr: float = cfg(3e-4, "critic learning rate")
    alpha_lr: float = cfg(3e-4, "temperature learning rate")
    gamma: float = cfg(0.99, "discount factor")
    tau: float = cfg(0.005, "target network soft-update rate")
    init_alpha: float = cfg(1.0, "initial entropy temperature")
    target_entropy_scale: float = cfg(1.0, "target entropy = -scale * action size")


class SAC:
    """Online SAC; ``update(batch)`` is the whole update."""

    config_cls: ClassVar[type] = SACConfig
    multi_agent: ClassVar[bool] = True  # independent learners over the agent axis

    def __init__(self, config: SACConfig, spec: TaskSpec, device: torch.device) -> None:
        self.config, self.spec, self.device = config, spec, device
        n, o, a = spec.n_agents, spec.obs_dim, spec.action_dim
        self.actor = GaussianActor(n, o, a, config.hidden_sizes).to(device)
        self.critic = AgentCritics(n, o, a, config.hidden_sizes, n_critics=2).to(device)
        self.critic_target = frozen_copy(self.critic)
        self.log_alpha = torch.full((n,), float(torch.tensor(config.init_alpha).log()), device=device, requires_grad=True)
        self.target_entropy = torch.tensor(
            [-config.target_entropy_scale * s for s in spec.action_sizes], device=device
        )  # [N]
        # Padded action dimensions (agents with fewer actions) carry no entropy and no effect.
        self.action_mask = torch.as_tensor(spec.action_mask(), device=device)  # [N, A]
        self.actor_opt = make_adam(self.actor.parameters(), config.actor_lr)
        self.critic_opt = make_adam(self.critic.parameters(), config.critic_lr)
        self.alpha_opt = make_adam([self.log_alpha], config.alpha_lr)
        self.updates = 0

    def update(self, batch: Batch) -> dict[str, Tensor]:
        c = self.config
        alpha = self.log_alpha.exp().detach()  # [N]

        with torch.no_grad():
            next_action, next_log_prob = self.actor.sample(batch.next_obs)  # [B, N, A], [B, N]
            next_q = self.critic_target(batch.next_obs, next_action).min(-1, keepdim=True).values  # [B, N, 1]
            soft_next_q = next_q - (alpha * next_log_prob).unsqueeze(-1)  # [B, N, 1]
            target = td_target(batch.reward, batch.done, soft_next_q, c.gamma)  # [B, N, 1]
        q = self.critic(batch.obs, batch.action)  # [B, N, 2]
        critic_loss = (q - target).square().mean(dim=(0, 2)).sum()  # sum over agents of each agent's mean
        optimizer_step(self.critic_opt, critic_loss)

        action, log_prob = self.actor.sample(batch.obs)  # [B, N, A], [B, N]
        q_pi = self.critic(batch.obs, action).min(-1).values  # [B, N]
        actor_loss = (alpha * log_prob - q_pi).mean(0).sum()
        optimizer_step(self.actor_opt, actor_loss, params=list(self.actor.parameters()))

        alpha_loss = -(self.log_alpha * (log_prob.detach() + self.target_entropy)).mean(0).sum()
        optimizer_step(self.alpha_opt, alpha_loss)

        soft_update(self.critic_target, self.critic, c.tau)
        self.updates += 1
        return {
            "critic_loss": critic_loss.detach(),
            "actor_loss": actor_loss.detach(),
            "alpha": alpha.mean(),
            "q": q.detach().mean(),
            "entropy": -log_prob.detach().mean(),
        }

    @torch.no_grad()
    def act(self, obs: Tensor) -> Tensor:
        """Deterministic actions ``[E, N, O] -> [E, N, A]`` (tanh of the mean)."""
        return self.actor.deterministic(obs) * self.action_mask  # [E, N, A]

    @torch.no_grad()
    def explore(self, obs: Tensor) -> Tensor:
        """Exploration actions sampled from the policy: ``[E, N, O] -> [E, N, A]``."""
        action, _ = self.actor.sample(obs)  # [E, N, A]
        return action * self.action_mask

    def exported_actor(self) -> torch.nn.Module:
        """The module the policy checkpoint stores (see ``offline_bench.behaviour.policy``)."""
        return self.actor

    def state_dict(self) -> dict[str, Any]:
        return {
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "critic_target": self.critic_target.state_dict(),
            "log_alpha": self.log_alpha.detach().clone(),
            "actor_opt": self.actor_opt.state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
            "alpha_opt": self.alpha_opt.state_dict(),
            "updates": self.updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.critic_target.load_state_dict(state["critic_target"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        self.alpha_opt.load_state_dict(state["alpha_opt"])
        self.updates = int(state["updates"])
