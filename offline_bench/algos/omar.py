"""OMAR: Offline Multi-Agent RL with Actor Rectification (Pan, Huang, Ma & Xu, "Plan better amid conservatism:
offline multi-agent reinforcement learning with actor rectification", ICML 2022, Algorithm 1, Eqs. (2)-(3)).

The critics are MA-CQL's (``ma_cql.conservative_critic_update``, imported, not copied). The actor of each agent is
rectified by a zeroth-order search on its first critic: starting from N(mu0, sigma0^2), J iterations draw K actions
per state, score them with Q_n(o_n, .) and refine the Gaussian; the best of the last population and pi_n(o_n)
becomes the target action a_hat. Actor loss per agent (tau = ``omar_coe``):

    omar_coe * mean (pi(o) - a_hat)^2 - (1 - omar_coe) * mean Q(o, pi(o)) + 1e-3 * mean pi(o)^2

The refinement follows the authors' code, which differs from Eq. (3) as printed: on MPE (``omar_n_elites=0``) the
new mean is the softmax(beta * Q)-weighted mean of the samples (beta = 1 in the code) and the new sigma the RMS
deviation of the samples around that *new* mean; on halfcheetah-2x3 (``omar_n_elites=5``) it is CEM: the top-M of
the samples plus the previous elites give the mean and (unbiased) std. The search is batched over the batch, the
agents and the K samples at once: a Python loop runs only over the J iterations.

Reference implementation checked: github.com/ling-pan/OMAR (``algorithms/maddpg.py`` with ``omar=1``, ``main.py``).
Defaults are its MPE settings (3 iterations, 10 samples, mu0 0, sigma0 2, plus MA-CQL's); ``omar_coe`` and
``cql_alpha`` per dataset and the halfcheetah-2x3 settings live in ``offline_bench/configs/omar/*.yaml``. Those
``omar_coe`` values are the authors' ``env_config_map`` as it is, which sets tau = 1.0 on all four spread datasets,
world-random and halfcheetah-2x3-random: there the actor loss has no Q term and the actor regresses onto the
search's rectified action alone (the paper's text says the best tau is "neither close to 1 nor 0"; we follow the
code that produced its tables).

Deviations: MA-CQL's (see ``ma_cql.py``; its ``reward_scale`` also sets the scale the softmax(beta * Q) weights see;
its opt-in ``cql_lagrange`` applies here too; its gamma of 0.99 on halfcheetah-2x3, where the authors' runs used 0.95,
also changes the scale of the Q term that ``omar_coe`` balances against the search's target), and:
- With a centralized critic, agent n's search varies only its own action; the others' come from the dataset.
- Sampled actions are zeroed on padded action dimensions, like every action the critics see, and the actor's
  squared errors are means over each agent's own action dimensions (the authors' per-agent ``F.mse_loss``;
  until 2026-12-06 over the padded width, which on world scaled the 2-dim agents' terms by 1/3).
- The search scores samples with critic 0 of each agent only, as the authors do (``critic.Q1``), through a
  gradient-free pass over the first critic's weights (``first_critic_values``); its input BatchNorm uses the
  samples' batch statistics, as the authors' train-mode BatchNorm does, but does not update the running statistics
  (a critic is never run in eval mode, so they are unused).

Option, off by default: ``bf16=true`` (MA-CQL's; the search's scores are computed in bfloat16 too, its statistics
in float32). 2.1-2.3x faster updates at the halfcheetah-2x3 shape on this project's CPU, 1.4x at the authors' MPE
shape. On spread-mixed-v1 (5 seeds, 2,000 rounds) OMAR scored 27.3 +- 4.4 in bf16 against 29.6 +- 4.2 in float32,
lower on every seed by 1.4-3.4 points; scoring the search in float32 did not recover it (25.5 +- 6.1). Tables
comparing OMAR with other algorithms stay in float32.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from offline_bench.algos.base import Problem
from offline_bench.algos.common import (
    adopt_networks,
    TD3_STATE_NAMES,
    AgentCritics,
    bf16_autocast,
    deterministic_act,
    load_module_states,
    module_states,
    optimizer_step,
    action_mean,
    own_action_sizes,
    td3_networks,
)
from offline_bench.algos.ma_cql import (
    CRITIC_KINDS,
    conservative_critic_update,
    load_multiplier_state,
    multiplier_state,
    penalty_multiplier,
)
from offline_bench.batch import Batch
from offline_bench.config import cfg
from offline_bench.nn import soft_update


@dataclass(frozen=True)
class OMARConfig:
    gamma: float = cfg(0.95, "discount factor (OMAR code: 0.95 on every task; halfcheetah-2x3's config sets 0.99)")
    polyak: float = cfg(0.01, "target-network update rate: target <- (1 - polyak) * target + polyak * online")
    batch_size: int = cfg(1024, "transitions per update (each agent sees the same rows)")
    actor_lr: float = cfg(0.01, "actor Adam learning rate")
    critic_lr: float = cfg(0.01, "critic Adam learning rate")
    hidden_sizes: tuple[int, ...] = cfg((64, 64), "hidden layer sizes of every agent's actor and critics")
    n_critics: int = cfg(2, "critics per agent; the target takes their minimum (clipped double Q)")
    policy_noise: float = cfg(0.0, "std of target-action smoothing noise (0: none, as in the OMAR authors' TD3)")
    noise_clip: float = cfg(0.5, "target-action noise is clipped to [-noise_clip, noise_clip]")
    policy_freq: int = cfg(1, "critic updates per actor and target update (1: every update, as in the OMAR code)")
    cql_alpha: float = cfg(1.0, "weight of MA-CQL's conservative penalty (per dataset in configs/omar/*.yaml)")
    cql_n_actions: int = cfg(10, "actions sampled per state from each CQL proposal")
    cql_temperature: float = cfg(1.0, "temperature of the CQL log-sum-exp")
    cql_policy_actions: bool = cfg(False, "also penalise noisy current- and next-policy actions (halfcheetah-2x3)")
    cql_policy_noise: float = cfg(0.2, "std of the Gaussian noise on the CQL policy proposals")
    cql_lagrange: bool = cfg(False, "tune each agent's penalty weight alpha' by dual descent (CQL's Lagrange variant; off in the OMAR code)")
    cql_target_gap: float = cfg(5.0, "Lagrange threshold: alpha' grows while cql_alpha * penalty > this, shrinks below")
    bf16: bool = cfg(False, "network matmuls in bfloat16 autocast (~2x faster at 256x256 on CPUs with AMX; the "
                            "search's statistics, losses and optimizers stay float32)")
    omar_coe: float = cfg(1.0, "tau of Eq. (2): weight of the rectification term vs the Q term (per dataset)")
    omar_iters: int = cfg(3, "iterations J of the sampling search (halfcheetah-2x3: 2)")
    omar_n_samples: int = cfg(10, "actions K sampled per state and iteration (halfcheetah-2x3: 20)")
    omar_mu: float = cfg(0.0, "initial mean mu0 of the sampling Gaussian")
    omar_sigma: float = cfg(2.0, "initial std sigma0 of the sampling Gaussian")
    omar_n_elites: int = cfg(0, "0: softmax-weighted refinement (MPE); M > 0: CEM with the top-M elites (halfcheetah-2x3: 5)")
    omar_beta: float = cfg(1.0, "inverse temperature beta of the softmax(beta * Q) weights (the authors' code: 1)")
    critic: str = cfg("decentralized", "critic inputs: decentralized Q_i(o_i, a_i) or centralized Q_i(s, a_1..a_N)")
    input_norm: bool = cfg(True, "BatchNorm on every network's input (the OMAR authors' MPE networks)")
    max_grad_norm: float = cfg(0.5, "clip each agent's actor and critic gradient norm to this (<= 0 disables)")
    action_l2: float = cfg(1e-3, "weight of mean(pi(o)^2) in the actor loss (the OMAR code's 1e-3)")
    actor_final_init: float = cfg(3e-3, "actor output weights start in U(-x, x) so tanh starts unsaturated (<= 0: default)")
    normalize_obs: bool = cfg(False, "standardise observations with the dataset's statistics (the input BatchNorm already does)")
    reward_scale: float = cfg(1.0, "rewards are multiplied by this in the critic target (the penalty is not scale-free)")


@torch.no_grad()
def first_critic_values(critic: AgentCritics, obs: Tensor, action: Tensor, others: Tensor | None = None) -> Tensor:
    """``critic.first`` without gradients, computing only critic 0 of each agent: ``[..., N, A] -> [..., N]``.

    The sampling search scores K x J actions per state; skipping the other E - 1 critics there makes OMAR's extra
    cost E times smaller. Input BatchNorm (if any) normalises with this input's batch statistics, as in train mode.
    """
    return critic.first_strided(obs, action, others, batch_stats=True)


@torch.no_grad()
def sampling_search(
    q_fn: Callable[[Tensor], Tensor],
    shape: torch.Size | tuple[int, ...],
    mask: Tensor,
    iters: int,
    n_samples: int,
    mu0: float,
    sigma0: float,
    n_elites: int = 0,
    beta: float = 1.0,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """OMAR's zeroth-order search, batched over states, agents and samples.

    q_fn maps actions ``[K, B, N, A] -> [K, B, N]``; ``shape = (B, N, A)``; mask ``[N, A]`` zeroes padded dimensions.
    Returns the last population ``[K', B, N, A]`` with its values ``[K', B, N]`` (K' = K, or K + M with CEM elites)
    and the refined mean and std ``[B, N, A]``.
    """
    device = mask.device
    mu = torch.full(tuple(shape), mu0, device=device)  # [B, N, A]
    sigma = torch.full_like(mu, sigma0)  # [B, N, A]
    elites = elite_q = None
    for _ in range(iters):
        noise = torch.randn((n_samples, *shape), device=device)  # [K, B, N, A]
        samples = (mu + sigma * noise).clamp(-1.0, 1.0) * mask  # [K, B, N, A]
        q = q_fn(samples)  # [K, B, N]
        if n_elites > 0:  # CEM: the top-M of the new samples and the previous elites
            if elites is not None:
                samples = torch.cat([samples, elites])  # [K+M, B, N, A]
                q = torch.cat([q, elite_q])  # [K+M, B, N]
            elite_q, idx = q.topk(n_elites, dim=0)  # [M, B, N]
            elites = samples.gather(0, idx.unsqueeze(-1).expand(-1, -1, -1, shape[-1]))  # [M, B, N, A]
            mu, sigma = elites.mean(0), elites.std(0)  # [B, N, A]
        else:  # softmax(beta * Q)-weighted mean, RMS deviation around it
            weights = torch.softmax(beta * q, dim=0).unsqueeze(-1)  # [K, B, N, 1]
            mu = (weights * samples).sum(0)  # [B, N, A]
            sigma = (samples - mu).square().mean(0).sqrt()  # [B, N, A]
    return samples, q, mu, sigma


@torch.no_grad()
def rectify_actions(
    q_fn: Callable[[Tensor], Tensor],
    pi_action: Tensor,
    q_pi: Tensor,
    mask: Tensor,
    iters: int,
    n_samples: int,
    mu0: float,
    sigma0: float,
    n_elites: int = 0,
    beta: float = 1.0,
) -> Tensor:
    """OMAR's target actions a_hat: the best of the search's last population, or pi(o) where that is better.

    q_fn as in ``sampling_search``; pi_action ``[B, N, A]``; q_pi ``[B, N]`` (Q of pi(o)). Returns ``[B, N, A]``.
    """
    samples, q, _, _ = sampling_search(q_fn, pi_action.shape, mask, iters, n_samples, mu0, sigma0, n_elites, beta)
    best_q, best_idx = q.max(0)  # [B, N]
    index = best_idx.unsqueeze(0).unsqueeze(-1).expand(1, -1, -1, pi_action.shape[-1])  # [1, B, N, A]
    best = samples.gather(0, index).squeeze(0)  # [B, N, A]
    keep_pi = (q_pi >= best_q).unsqueeze(-1)  # [B, N, 1]: ties keep pi(o), as the authors' max does
    return torch.where(keep_pi, pi_action, best)  # [B, N, A]


def omar_actor_loss(pi: Tensor, a_hat: Tensor, q_pi: Tensor, omar_coe: float, action_l2: float,
                    action_sizes: Tensor | None = None) -> Tensor:
    """Eq. (2) per agent, summed over agents: pi, a_hat ``[B, N, A]``, q_pi ``[B, N]`` -> scalar. The squared
    errors are means over each agent's own action dimensions (``action_sizes [N]``; None: all A), as the authors'
    per-agent ``F.mse_loss``."""
    mimic = action_mean((pi - a_hat).square(), action_sizes)  # [N]
    l2 = action_mean(pi.square(), action_sizes)  # [N]
    return (omar_coe * mimic - (1.0 - omar_coe) * q_pi.mean(0) + action_l2 * l2).sum()


class OMAR:
    config_cls: ClassVar[type] = OMARConfig
    multi_agent: ClassVar[bool] = True

    def __init__(self, config: OMARConfig, problem: Problem, device: torch.device) -> None:
        if config.critic not in CRITIC_KINDS:
            raise ValueError(f"critic must be one of {', '.join(CRITIC_KINDS)}, got {config.critic!r}")
        if config.omar_iters < 1 or config.omar_n_samples < 1:
            raise ValueError("omar_iters and omar_n_samples must be >= 1")
        if not 0 <= config.omar_n_elites <= config.omar_n_samples:
            raise ValueError(f"omar_n_elites must be in [0, omar_n_samples], got {config.omar_n_elites}")
        if not 0.0 <= config.omar_coe <= 1.0:
            raise ValueError(f"omar_coe must be in [0, 1], got {config.omar_coe}")
        self.config, self.problem, self.device = config, problem, torch.device(device)
        nets = td3_networks(
            problem, self.device, config.hidden_sizes, config.n_critics, config.actor_lr, config.critic_lr,
            config.normalize_obs, centralized=config.critic == "centralized", input_norm=config.input_norm,
            actor_final_init=config.actor_final_init,
        )
        adopt_networks(self, nets)
        self.action_sizes = own_action_sizes(problem, self.device)  # [N] where agents' sizes differ (world)
        self.multiplier = penalty_multiplier(config, problem.n_agents, self.device)
        self.updates = 0
        self.last_actor_loss = torch.zeros((), device=self.device)  # updated in place (CUDA graphs read it)
        self.last_rectified = torch.zeros((), device=self.device)

    def graph_key(self) -> tuple:
        """The branch the next ``update`` takes (actor step or not); a CUDA-graph runner captures one graph per key."""
        return ((self.updates + 1) % self.config.policy_freq == 0,)

    def update(self, batch: Batch) -> dict[str, Tensor]:
        c = self.config
        self.updates += 1
        obs, next_obs = self.normalizer(batch.obs), self.normalizer(batch.next_obs)  # [B, N, O]

        # Critics: MA-CQL's conservative critic step, shared code.
        metrics = conservative_critic_update(
            self.critic, self.critic_target, self.actor, self.actor_target, self.critic_opt,
            obs, next_obs, batch, self.mask, c, multiplier=self.multiplier,
        )

        # Actors: rectify towards the best sampled action (or keep pi(o)), plus the Q term; then the targets.
        if self.updates % c.policy_freq == 0:
            with bf16_autocast(self.device, c.bf16):
                pi = self.actor(obs).float() * self.mask  # [B, N, A]
                q_pi = self.critic.first(obs, pi, others=batch.action).float()  # [B, N]

            def q_fn(actions: Tensor) -> Tensor:
                with bf16_autocast(self.device, c.bf16):
                    return first_critic_values(self.critic, obs, actions, others=batch.action).float()  # [K, B, N]

            a_hat = rectify_actions(
                q_fn, pi.detach(), q_pi.detach(), self.mask,
                c.omar_iters, c.omar_n_samples, c.omar_mu, c.omar_sigma, c.omar_n_elites, c.omar_beta,
            )  # [B, N, A]
            actor_loss = omar_actor_loss(pi, a_hat, q_pi, c.omar_coe, c.action_l2, self.action_sizes)
            optimizer_step(self.actor_opt, actor_loss, self.actor_params, c.max_grad_norm, self.problem.n_agents)
            soft_update(self.critic_target, self.critic, c.polyak)
            soft_update(self.actor_target, self.actor, c.polyak)
            self.last_actor_loss.copy_(actor_loss.detach())
            self.last_rectified.copy_((a_hat != pi.detach()).any(-1).float().mean())

        metrics["actor_loss"] = self.last_actor_loss.clone()
        metrics["rectified_fraction"] = self.last_rectified.clone()
        return metrics

    def act(self, obs: Tensor) -> Tensor:
        """Deterministic actions ``[E, N, O] -> [E, N, A]`` from raw observations (BatchNorm in eval mode)."""
        return deterministic_act(self.actor, self.normalizer, obs, self.mask)

    def state_dict(self) -> dict[str, Any]:
        scalars = {
            "updates": self.updates, "last_actor_loss": self.last_actor_loss, "last_rectified": self.last_rectified,
        }
        return {**module_states(self, TD3_STATE_NAMES), **scalars, **multiplier_state(self.multiplier)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_module_states(self, state, TD3_STATE_NAMES)
        load_multiplier_state(self.multiplier, state)
        self.updates = int(state["updates"])
        self.last_actor_loss.copy_(state["last_actor_loss"])
        self.last_rectified.copy_(state["last_rectified"])
