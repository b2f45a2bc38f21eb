"""MATD3: decentralized deterministic actors, centralized twin critics; the online learner of multi-agent behaviour.

Paper: Ackermann et al., "Reducing Overestimation Bias in Multi-Agent Domains Using Double Centralized Critics"
(2019), arXiv:1910.01465; the OMAR paper (Pan et al., 2022) made its datasets with it.
Reference implementation checked against: Fujimoto's TD3 (target policy smoothing, clipped double Q, delayed
actor updates) with MADDPG's centralized critic Q_i(s, a_1..a_N) and actor gradient through a_i = pi_i(o_i) with
the other agents' actions from the buffer (Lowe et al. 2017, ``maddpg/trainer/maddpg.py``).
Deviations: all agents' actors and critics are one stacked network each (agent axis), updated in one pass;
defaults follow MADDPG's MPE settings (64x64, gamma 0.95, tau 0.01, batch 1024) with TD3's lr 1e-3.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from offline_bench.algos.common import AgentCritics, DeterministicActor, frozen_copy, make_adam, optimizer_step, td_target
from offline_bench.batch import Batch
from offline_bench.config import cfg
from offline_bench.envs.base import TaskSpec
from offline_bench.nn import soft_update


@dataclass(frozen=True)
class MATD3Config:
    hidden_sizes: tuple[int, ...] = cfg((64, 64), "hidden layer sizes of actors and critics (MADDPG's MPE nets)")
    actor_lr: float = cfg(1e-3, "actor learning rate")
    critic_lr: float = cfg(1e-3, "critic learning rate")
    gamma: float = cfg(0.95, "discount factor (MADDPG's MPE value)")
    tau: float = cfg(0.01, "target network soft-update rate")
    policy_noise: float = cfg(0.2, "std of the target policy smoothing noise")
    noise_clip: float = cfg(0.5, "clip of the target policy smoothing noise")
    policy_delay: int = cfg(2, "critic updates per actor (and target) update")
    exploration_noise: float = cfg(0.1, "std of the Gaussian exploration noise while collecting")


class MATD3:
    """Online MATD3 over N agents; ``update(batch)`` is the whole update."""

    config_cls: ClassVar[type] = MATD3Config
    multi_agent: ClassVar[bool] = True

    def __init__(self, config: MATD3Config, spec: TaskSpec, device: torch.device) -> None:
        self.config, self.spec, self.device = config, spec, device
        n, o, a = spec.n_agents, spec.obs_dim, spec.action_dim
        self.actor = DeterministicActor(n, o, a, config.hidden_sizes).to(device)
        self.actor_target = frozen_copy(self.actor)
        self.critic = AgentCritics(n, o, a, config.hidden_sizes, n_critics=2, centralized=True).to(device)
        self.critic_target = frozen_copy(self.critic)
        self.actor_opt = make_adam(self.actor.parameters(), config.actor_lr)
        self.critic_opt = make_adam(self.critic.parameters(), config.critic_lr)
        # [N, A]: padded action dims stay 0 everywhere, also in the critics' inputs
        self.action_mask = torch.as_tensor(spec.action_mask(), device=device)
        self.updates = 0

    def update(self, batch: Batch) -> dict[str, Tensor]:
        c = self.config
        with torch.no_grad():
            noise = (torch.randn_like(batch.action) * c.policy_noise).clamp(-c.noise_clip, c.noise_clip)  # [B, N, A]
            next_action = ((self.actor_target(batch.next_obs) + noise).clamp(-1.0, 1.0)) * self.action_mask
            next_q = self.critic_target(batch.next_obs, next_action).min(-1, keepdim=True).values  # [B, N, 1]
            target = td_target(batch.reward, batch.done, next_q, c.gamma)  # [B, N, 1]
        q = self.critic(batch.obs, batch.action)  # [B, N, 2]
        critic_loss = (q - target).square().mean(dim=(0, 2)).sum()  # sum over agents of each agent's mean
        optimizer_step(self.critic_opt, critic_loss)
        metrics = {"critic_loss": critic_loss.detach(), "q": q.detach().mean()}

        self.updates += 1
        if self.updates % c.policy_delay == 0:
            # Agent i's critic sees its own action from pi_i and the others' from the buffer (MADDPG's gradient).
            action = self.actor(batch.obs) * self.action_mask  # [B, N, A]
            q_pi = self.critic.first(batch.obs, action, others=batch.action)  # [B, N]
            actor_loss = -q_pi.mean(0).sum()
            optimizer_step(self.actor_opt, actor_loss, params=list(self.actor.parameters()))
            soft_update(self.actor_target, self.actor, c.tau)
            soft_update(self.critic_target, self.critic, c.tau)
            metrics["actor_loss"] = actor_loss.detach()
        return metrics

    @torch.no_grad()
    def act(self, obs: Tensor) -> Tensor:
        """Deterministic actions ``[E, N, O] -> [E, N, A]``."""
        return self.actor(obs) * self.action_mask

    @torch.no_grad()
    def explore(self, obs: Tensor) -> Tensor:
        """Actions with Gaussian exploration noise: ``[E, N, O] -> [E, N, A]``."""
        action = self.actor(obs)  # [E, N, A]
        action = action + self.config.exploration_noise * torch.randn_like(action)
        return action.clamp(-1.0, 1.0) * self.action_mask

    def exported_actor(self) -> torch.nn.Module:
        return self.actor

    def state_dict(self) -> dict[str, Any]:
        return {
            "actor": self.actor.state_dict(),
            "actor_target": self.actor_target.state_dict(),
            "critic": self.critic.state_dict(),
            "critic_target": self.critic_target.state_dict(),
            "actor_opt": self.actor_opt.state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
            "updates": self.updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in ("actor", "actor_target", "critic", "critic_target", "actor_opt", "critic_opt"):
            getattr(self, name).load_state_dict(state[name])
        self.updates = int(state["updates"])
