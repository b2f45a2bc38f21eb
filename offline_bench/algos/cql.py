"""CQL: "Conservative Q-Learning for Offline Reinforcement Learning" (Kumar, Zhou, Tucker & Levine, NeurIPS 2020).

SAC-based continuous CQL(H): a tanh-Gaussian actor with automatic entropy tuning, twin critics, and a critic loss
``TD error + cql_alpha * (T * logsumexp((Q(s, a_k) - log mu(a_k)) / T) - Q(s, a_data))`` where the a_k are
``cql_n_actions`` uniform random actions, actions from pi(.|s) and from pi(.|s') (importance-sampled, "min_q_version
3"). ``cql_lagrange=True`` replaces the fixed weight by a multiplier alpha' >= 0 tuned so the penalty stays near
``cql_target_gap``. The actor is trained by behaviour cloning (max log-likelihood of the data action, plus the
entropy term) for the first ``bc_steps`` updates, then by the SAC objective.

Reference implementation checked: github.com/aviralkumar2907/CQL (``d4rl/rlkit/torch/sac/cql.py`` and
``examples/cql_mujoco_new.py``); compared with CORL's ``cql.py`` and d3rlpy's ``CQL``. Defaults are the authors'
Gym-MuJoCo settings: policy lr 1e-4, critic lr 3e-4, 3 x 256 networks, batch 256, cql_alpha 5 without Lagrange,
10 actions, temperature 1, 40k BC warm-start steps, deterministic backup (no entropy in the target), polyak 5e-3.

Deviations:
- Twin critics are one stacked network; the data action and all 3K sampled actions go through it in ONE forward.
- (Not a deviation.) Every policy action of an update (the penalty's pi(.|s) and pi(.|s') proposals and the TD
  target's a') is drawn from the actor before its step, as the reference does by computing all losses before
  stepping; they carry no gradient.
- Default ``nn.Linear`` initialisation (the reference uses rlkit's fan-in init, CORL orthogonal init).
- (Not a deviation.) The actor's log-std is clamped to [-5, 2] and, in the warm start's likelihood of the data
  action, its mean to [-9, 9]: the bounds of the authors' copy of rlkit (``rlkit/torch/sac/policies.py``,
  ``LOG_SIG_MIN = -5``, ``MEAN_MIN/MAX``). Until 2026-12-06 the log-std floor was upstream rlkit's -20 (also CORL's
  and d3rlpy's), which only differs once the policy's std falls below e^-5.
- The tanh correction of the log-density is exact (``log(1 - tanh(u)^2)`` via softplus); rlkit adds 1e-6 inside
  the log, which only matters for |u| above about 7.
- The behaviour-cloning warm start runs exactly ``bc_steps`` updates (40,000); the reference counts its epoch up
  before comparing with ``policy_eval_start`` and so runs 39,999.
- Observations are standardised with the dataset's statistics (``normalize_obs``; CORL's option, off in the
  authors' code), with the raw std as in TD3+BC here (CORL adds 1e-3 to it).
- (Not a deviation.) With ``cql_lagrange`` the threshold is the authors': alpha' grows while
  ``cql_alpha * penalty > cql_target_gap``. CORL and d3rlpy compare their threshold with the penalty before the
  ``cql_alpha`` scaling (and CORL starts alpha' at e, not 1), so their tau is ``cql_target_gap = cql_alpha * tau``
  here.
- Optional ``bf16=true``: network matmuls under bfloat16 autocast (float32 parameters, optimizer and losses);
  off by default. On this project's CPUs (AVX512-BF16) it makes an update ~2.5x faster; the float32 update does
  the same FLOPs as d3rlpy's and runs at the same speed.
- Losses are means over the batch summed over agents, so the same code runs with an agent axis; CQL itself is
  single-agent (MA-CQL in ``ma_cql.py`` reuses ``conservative_penalty``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from offline_bench.algos.base import Problem
from offline_bench.algos.common import (
    AgentCritics,
    GaussianActor,
    bf16_autocast,
    ObsNormalizer,
    deterministic_act,
    frozen_copy,
    load_module_states,
    make_adam,
    module_states,
    optimizer_step,
    tanh_gaussian_log_prob,
    tanh_gaussian_sample,
    td_target,
    uniform_actions,
)
from offline_bench.batch import Batch
from offline_bench.config import cfg
from offline_bench.nn import soft_update


@dataclass(frozen=True)
class CQLConfig:
    gamma: float = cfg(0.99, "discount factor")
    polyak: float = cfg(0.005, "target-critic update rate: target <- (1 - polyak) * target + polyak * online")
    batch_size: int = cfg(256, "transitions per update")
    actor_lr: float = cfg(1e-4, "actor Adam learning rate")
    critic_lr: float = cfg(3e-4, "critic Adam learning rate (also the Lagrange multiplier's)")
    hidden_sizes: tuple[int, ...] = cfg((256, 256, 256), "hidden layer sizes of actor and critics")
    n_critics: int = cfg(2, "critics in the ensemble; targets and the actor use their minimum")
    cql_alpha: float = cfg(5.0, "weight of the conservative penalty (min_q_weight); scales the Lagrange gap too")
    cql_n_actions: int = cfg(10, "actions sampled per state from each of: uniform, pi(.|s), pi(.|s')")
    cql_temperature: float = cfg(1.0, "temperature of the log-sum-exp")
    cql_lagrange: bool = cfg(False, "tune the penalty weight alpha' by dual descent towards cql_target_gap")
    cql_target_gap: float = cfg(5.0, "Lagrange threshold tau: alpha' grows while cql_alpha * penalty > tau")
    bc_steps: int = cfg(40_000, "updates that train the actor by behaviour cloning before the SAC objective")
    auto_entropy: bool = cfg(True, "tune the entropy coefficient towards target_entropy (SAC)")
    entropy_alpha: float = cfg(1.0, "entropy coefficient (the initial value when auto_entropy is on)")
    target_entropy_per_dim: float = cfg(-1.0, "target entropy per action dimension (SAC's -|A| heuristic)")
    log_std_min: float = cfg(-5.0, "lower clamp of the actor's log-std (the CQL authors' -5; rlkit's SAC, CORL and "
                                   "d3rlpy use -20)")
    normalize_obs: bool = cfg(True, "standardise observations with the dataset's mean and std")
    bf16: bool = cfg(False, "network matmuls in bfloat16 autocast (~2x faster updates on CPUs with AVX512-BF16)")


def sac_actor_loss(log_pi: Tensor, q_pi: Tensor, entropy_alpha: Tensor) -> Tensor:
    """``E[alpha * log pi(a|s) - Q(s, a)]``: log_pi, q_pi ``[B, N]``, entropy_alpha ``[N]`` -> scalar (sum over agents)."""
    return (entropy_alpha * log_pi - q_pi).mean(0).sum()


def entropy_alpha_loss(log_alpha: Tensor, log_pi: Tensor, target_entropy: Tensor) -> Tensor:
    """SAC temperature loss ``-log_alpha * (log pi + target_entropy)``: log_alpha ``[N]``, log_pi ``[B, N]`` -> scalar."""
    return -(log_alpha * (log_pi.detach() + target_entropy).mean(0)).sum()


def conservative_penalty(q_sampled: Tensor, log_density: Tensor, q_data: Tensor, temperature: float = 1.0) -> Tensor:
    """CQL(H) importance-sampled penalty: temperature * logsumexp((q_sampled - log_density) / temperature, -1) - q_data.

    q_sampled, log_density: [..., K] (K sampled actions on the last axis; log_density of the proposal that drew
    each action, 0 where not importance-weighted); q_data: [...]. Returns [...] (caller takes mean, scales by alpha).
    """
    assert q_sampled.shape == torch.broadcast_shapes(q_sampled.shape, log_density.shape), "log_density must broadcast to q_sampled"
    assert q_sampled.shape[:-1] == q_data.shape, f"q_data {tuple(q_data.shape)} vs q_sampled {tuple(q_sampled.shape)}"
    soft_max = temperature * torch.logsumexp((q_sampled - log_density) / temperature, dim=-1)  # [...]
    return soft_max - q_data  # [...]


def lagrange_conservative_loss(
    penalty: Tensor, log_alpha_prime: Tensor, cql_alpha: float, target_gap: float
) -> tuple[Tensor, Tensor, Tensor]:
    """CQL's Lagrange form (Kumar et al. 2020, Eq. (5) with the dual variable alpha' >= 0).

    penalty ``[N, E]`` (the batch-mean penalty of each agent and critic), log_alpha_prime ``[N]`` -> (the critics'
    term ``sum alpha'_n * (cql_alpha * penalty - target_gap)``, the multiplier's loss, alpha' ``[N]``). Minimising the
    multiplier's loss raises alpha' while ``cql_alpha * penalty`` (mean over critics) is above ``target_gap`` and lowers
    it towards 0 below, so the penalty is held near ``target_gap / cql_alpha`` instead of growing without bound.
    """
    gap = cql_alpha * penalty - target_gap  # [N, E]
    alpha_prime = log_alpha_prime.exp().clamp(0.0, 1e6)  # [N]
    alpha_prime_loss = -(alpha_prime * gap.detach().mean(-1)).sum()
    critic_term = (alpha_prime.detach().unsqueeze(-1) * gap).sum()
    return critic_term, alpha_prime_loss, alpha_prime


BC_MEAN_MAX = 9.0  # the warm start's likelihood clamps the pre-tanh mean to +-9 (rlkit's MEAN_MIN/MAX)
# Modules and optimizers a checkpoint carries; the entropy and Lagrange multipliers are saved as tensors.
_STATE_NAMES = ("actor", "critic", "critic_target", "actor_opt", "critic_opt", "alpha_opt", "alpha_prime_opt",
                "normalizer")


class CQL:
    config_cls: ClassVar[type] = CQLConfig
    multi_agent: ClassVar[bool] = False

    def __init__(self, config: CQLConfig, problem: Problem, device: torch.device) -> None:
        if problem.n_agents != 1:
            raise ValueError(f"cql is single-agent but the dataset has {problem.n_agents} agents; use --algo ma-cql")
        self.config, self.problem, self.device = config, problem, torch.device(device)
        n, o, a = problem.n_agents, problem.obs_dim, problem.action_dim
        self.normalizer = ObsNormalizer(problem, enabled=config.normalize_obs).to(self.device)
        self.actor = GaussianActor(n, o, a, config.hidden_sizes, log_std_min=config.log_std_min).to(self.device)
        self.critic = AgentCritics(n, o, a, config.hidden_sizes, config.n_critics).to(self.device)
        self.critic_target = frozen_copy(self.critic)
        self.log_alpha = nn.Parameter(torch.full((n,), math.log(config.entropy_alpha), device=self.device))  # [N]
        self.log_alpha_prime = nn.Parameter(torch.zeros(n, device=self.device))  # [N]: alpha' = 1 at the start
        sizes = torch.tensor(problem.action_sizes, dtype=torch.float32, device=self.device)
        self.target_entropy = config.target_entropy_per_dim * sizes  # [N]
        self.random_log_density = -sizes * math.log(2.0)  # [N]: log of the uniform density on [-1, 1]^A
        self.actor_params = list(self.actor.parameters())
        self.critic_params = list(self.critic.parameters())
        self.actor_opt = make_adam(self.actor_params, config.actor_lr)
        self.critic_opt = make_adam(self.critic_params, config.critic_lr)
        self.alpha_opt = make_adam([self.log_alpha], config.actor_lr)
        self.alpha_prime_opt = make_adam([self.log_alpha_prime], config.critic_lr)
        self.updates = 0

    def graph_key(self) -> tuple:
        """The branch the next ``update`` takes (behaviour-cloning warm start or not); a CUDA-graph runner captures one graph per key."""
        return (self.updates + 1 <= self.config.bc_steps,)

    def update(self, batch: Batch) -> dict[str, Tensor]:
        c = self.config
        self.updates += 1
        k = c.cql_n_actions
        obs, next_obs = self.normalizer(batch.obs), self.normalizer(batch.next_obs)  # [B, N, O]
        b, n, a = batch.action.shape

        # Actor: entropy coefficient, then behaviour cloning (warm start) or the SAC objective.
        with bf16_autocast(self.device, c.bf16):
            mean, log_std = (t.float() for t in self.actor.distribution(obs))  # [B, N, A] each
        pi, log_pi = tanh_gaussian_sample(mean, log_std)  # [B, N, A], [B, N]
        if c.auto_entropy:
            optimizer_step(self.alpha_opt, entropy_alpha_loss(self.log_alpha, log_pi, self.target_entropy))
        entropy_alpha = self.log_alpha.detach().exp()  # [N]
        if self.updates <= c.bc_steps:
            data_pre_tanh = torch.atanh(batch.action.clamp(-1.0 + 1e-6, 1.0 - 1e-6))  # [B, N, A]
            # The authors' policy.log_prob clamps the mean (rlkit's MEAN_MIN/MAX); sampling does not.
            log_pi_data = tanh_gaussian_log_prob(data_pre_tanh, mean.clamp(-BC_MEAN_MAX, BC_MEAN_MAX), log_std)  # [B, N]
            actor_loss = sac_actor_loss(log_pi, log_pi_data, entropy_alpha)
        else:
            with bf16_autocast(self.device, c.bf16):
                q_pi = self.critic(obs, pi).float().amin(-1)  # [B, N]
            actor_loss = sac_actor_loss(log_pi, q_pi, entropy_alpha)
        # Every sampled action comes from the actor BEFORE its step, as in the reference, which computes all losses
        # before stepping any optimizer (the random draws come in the same order either way).
        with torch.no_grad():
            # Deterministic backup: min over target critics at a' ~ pi(.|s'), no entropy term.
            with bf16_autocast(self.device, c.bf16):
                next_mean, next_log_std = (t.float() for t in self.actor.distribution(next_obs))  # [B, N, A]
            next_actions, next_log_pi = tanh_gaussian_sample(next_mean, next_log_std, k + 1)  # [K+1, B, N, A], [K+1, B, N]
            with bf16_autocast(self.device, c.bf16):
                next_q = self.critic_target(next_obs, next_actions[0]).float().amin(-1, keepdim=True)  # [B, N, 1]
            target = td_target(batch.reward, batch.done, next_q, c.gamma)  # [B, N, 1]
            # Proposal actions for the penalty, all evaluated at s: uniform, pi(.|s), pi(.|s').
            curr_actions, curr_log_pi = tanh_gaussian_sample(mean.detach(), log_std.detach(), k)  # [K, B, N, A]
            random_actions = uniform_actions((k, b, n, a), obs.device)  # [K, B, N, A]
            actions = torch.cat([batch.action.unsqueeze(0), random_actions, curr_actions, next_actions[1:]])  # [1+3K, B, N, A]
            log_density = torch.cat([
                self.random_log_density.expand(k, b, n), curr_log_pi, next_log_pi[1:],
            ]).permute(1, 2, 0).unsqueeze(2)  # [B, N, 1, 3K]

        optimizer_step(self.actor_opt, actor_loss, self.actor_params)

        # Critic: TD error on the data action plus the conservative penalty, one forward for all actions.
        with bf16_autocast(self.device, c.bf16):
            q_all = self.critic(obs, actions).float()  # [1+3K, B, N, E]
        q_data = q_all[0]  # [B, N, E]
        q_sampled = q_all[1:].permute(1, 2, 3, 0)  # [B, N, E, 3K]
        td_loss = (q_data - target).square().mean(0).sum()
        penalty = conservative_penalty(q_sampled, log_density, q_data, c.cql_temperature).mean(0)  # [N, E]
        if c.cql_lagrange:
            cql_loss, alpha_prime_loss, alpha_prime = lagrange_conservative_loss(
                penalty, self.log_alpha_prime, c.cql_alpha, c.cql_target_gap
            )
            optimizer_step(self.alpha_prime_opt, alpha_prime_loss)
        else:
            cql_loss = c.cql_alpha * penalty.sum()
        critic_loss = td_loss + cql_loss
        optimizer_step(self.critic_opt, critic_loss, self.critic_params)
        soft_update(self.critic_target, self.critic, c.polyak)

        metrics = {
            "critic_loss": critic_loss.detach(),
            "td_loss": td_loss.detach(),
            "cql_penalty": penalty.detach().mean(),
            "actor_loss": actor_loss.detach(),
            "entropy_alpha": entropy_alpha.mean(),
            "q_data": q_data.detach().mean(),
            "log_pi": log_pi.detach().mean(),
        }
        if c.cql_lagrange:
            metrics["cql_alpha_prime"] = alpha_prime.detach().mean()
        return metrics

    def act(self, obs: Tensor) -> Tensor:
        """Deterministic actions ``tanh(mean)``: ``[E, N, O] -> [E, N, A]`` from raw observations."""
        return deterministic_act(self.actor, self.normalizer, obs)  # the actor's forward is tanh(mean)

    def state_dict(self) -> dict[str, Any]:
        return {
            **module_states(self, _STATE_NAMES),
            "log_alpha": self.log_alpha.detach().clone(),
            "log_alpha_prime": self.log_alpha_prime.detach().clone(),
            "updates": self.updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_module_states(self, state, _STATE_NAMES)
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
            self.log_alpha_prime.copy_(state["log_alpha_prime"])
        self.updates = int(state["updates"])
