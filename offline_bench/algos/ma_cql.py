"""MA-CQL: Conservative Q-Learning (Kumar et al. 2020) on independent TD3 learners, the baseline of the OMAR paper
(Pan et al., "Plan better amid conservatism: offline multi-agent RL with actor rectification", ICML 2022, Eq. (1)).

Each agent n has a tanh actor pi_n(o_n) and twin critics Q_n(o_n, a_n) (decentralized, de Witt et al. 2020), or
with ``critic="centralized"`` Q_n(s, a_1..a_N) (MATD3-style). Critic loss per agent and critic:

    (Q(o, a) - y)^2 + cql_alpha * [ T * logsumexp_k((Q(o, a_k) - log p(a_k)) / T) - Q(o, a) ],
    y = r + gamma * (1 - d) * min_e Q'_e(o', pi'(o'))

with K uniform actions a_k on [-1, 1]^A (log p = -A log 2) on MPE; ``cql_policy_actions=true`` (the authors'
halfcheetah-2x3 setting) adds K actions pi(o) + N(0, 0.2^2) and K actions pi(o') + N(0, 0.2^2), all scored at o and
importance-weighted by their Gaussian log-density. The actor maximises Q_n's first critic plus a 1e-3 action L2
term. All agents and critics are one stacked network; one forward and backward pass per update.
``conservative_critic_update`` is the whole critic step; OMAR imports it.

Reference implementation checked: github.com/ling-pan/OMAR (``algorithms/maddpg.py`` with ``cql=1``,
``utils/networks.py``, ``main.py``). Defaults are its MPE settings: hidden 64 x 2 with input BatchNorm, batch 1024,
lr 0.01, polyak 0.01, gamma 0.95, 10 sampled actions, temperature 1, per-agent gradient norms clipped at 0.5, actor
output layer in +-3e-3, no target policy smoothing and no delayed actor (the authors' TD3 backbone has neither; the
paper's Algorithm 1, line 5, does add smoothing noise to the target action, which we leave out with the code that
produced its tables). ``cql_alpha`` per dataset and the halfcheetah-2x3 settings live in
``offline_bench/configs/ma-cql/*.yaml``.

Deviations:
- Rewards are multiplied by ``reward_scale`` in the critic target (1 except on spread: 8 on its random and mixed
  data, 15 on medium, 22 on expert; see ``configs/ma-cql/spread*.yaml``). The authors rewrote simple_spread's reward
  (+min(1/d, 10) per landmark, -5 per collision) and chose cql_alpha per dataset on that scale; we keep mpe2's
  standard reward, whose per-step std is that many times smaller on each dataset's own states, and neither the
  penalty (linear in Q against a quadratic TD error) nor the temperature-1 log-sum-exp is scale-free.
  With alpha 1 on the unscaled reward the penalty outgrows the TD term: Q of random actions falls without bound
  below Q of the data, the TD error climbs to hundreds and the policy ends below the random reference.
- One batch per update round, shared by all agents (the authors draw a fresh batch for each agent).
- The policy-action proposals are importance-weighted by their Gaussian log-density; the authors' code subtracts
  the density itself (``calc_gaussian_pdf``), which we take for a slip. The three proposal sets go through the
  critic in one forward pass (the authors use three), so the critics' input BatchNorm sees their union.
- With a centralized critic, agent n's penalty samples only its own action; the other agents' actions come from
  the dataset (the authors' centralized variant is not public).
- Padded action dimensions (agents with smaller action spaces) are zeroed in every action the critics see, and the
  uniform log-density uses each agent's true action size (as does the actor's L2 term's mean, since 2026-12-06).
- Twin critics have separate input BatchNorm affine parameters (the authors share one BatchNorm between the heads);
  both see the same inputs, so the normalising statistics are the same.
- halfcheetah-2x3 trains with gamma 0.99 (``configs/*/halfcheetah-2x3.yaml``, every multi-agent algorithm): the
  authors' ``main.py`` sets 0.99 for HalfCheetah but never passes it to the agent, whose default of 0.95 is what
  their runs, and so the paper's Table 6, used. We take 0.99 as their intent (elsewhere, as with OMAR's per-dataset
  ``omar_coe``, we follow what the code ran). Q is then about 5x larger there, and neither the conservative
  penalty nor OMAR's balance of its two actor terms is scale-free (``--set gamma=0.95`` trains as the authors' runs
  did). One probe (MA-CQL, halfcheetah-2x3-medium, seed 0, 10k rounds, ``leaderboards/README.md``) did not separate
  them: both stood still (last 5 evaluations 3.6 at either discount; the data averages 31.5), with the mean Q of the
  data's actions at 10k rounds 104.5 at 0.99 against 48.7 at 0.95.
- The target networks' soft update also copies the online input BatchNorm's running statistics
  (``nn.soft_update``; the authors average parameters only). The targets run in train mode and normalise with batch
  statistics, so nothing reads those running statistics.

Option, off by default and not in the authors' code: ``cql_lagrange=true`` replaces the fixed weight by CQL's Lagrange
form (Kumar et al. 2020), one multiplier alpha' >= 0 per agent tuned by dual descent so that ``cql_alpha * penalty``
stays near ``cql_target_gap`` (``cql.lagrange_conservative_loss``, shared with the single-agent CQL). It bounds the
penalty where the fixed weight lets Q of the uniform actions fall without bound below Q of the data (tag-medium and
tag-expert at cql_alpha 5, world-mixed at 1; see leaderboards/README.md), but that runaway is not what costs the
score there: on tag-medium-v1, seed 0, with the penalty held at its target, MA-CQL scored 37.5 and OMAR 15.0 against
52.1 and 41.5 with the fixed weight (mean of the last 10 evaluations; one evaluation's spread is 12-17 points).

Option, off by default: ``bf16=true`` runs the network calls (actors, critics, targets) under bfloat16 autocast;
parameters, gradients, clipping, Adam, the TD loss and the penalty's log-sum-exp stay float32. On this project's CPU
(AMX) updates are 2.3x faster at the halfcheetah-2x3 shape (256x256) and 1.4-1.6x at the authors' MPE shape; on
spread-mixed-v1 (5 seeds, 2,000 rounds) MA-CQL scored 31.4 +- 2.3 in bf16 against 32.0 +- 2.3 in float32.

Environment (not a deviation of the update): the MPE datasets v1 give each agent the 2-D force action of the
authors' MPE. On v0 (mpe2's own 5-dim action, three of whose dimensions move nothing or repeat another) the penalty
runs away on medium and expert data: no transition constrains Q along the free dimensions, so the critic ranks
uniform actions ever lower there (spread-expert-v0 seed 0: penalty +35 -> -960, TD loss 62 -> 1,600 in 550 rounds;
the same transitions as 2-D forces keep it between -20 and -27 over 2,000 rounds).

As in the authors' code, the input BatchNorm normalises every forward pass with that pass's own batch statistics
(train mode), the actor's pass included. The actor's gradient then has no component along each action dimension's
batch mean or batch scale (BatchNorm's backward removes both), so the Q term cannot set how large the actions are;
only the 1e-3 L2 term acts on it. On spread-expert-v1 the actor's mean |action| stays at 0.13-0.19 against the
data's 0.40 (seed 0, rounds 200-600).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import torch
from torch import Tensor, nn

from offline_bench.algos.base import Problem
from offline_bench.algos.common import (
    adopt_networks,
    TD3_STATE_NAMES,
    AgentCritics,
    DeterministicActor,
    bf16_autocast,
    deterministic_act,
    load_module_states,
    make_adam,
    module_states,
    optimizer_step,
    action_mean,
    own_action_sizes,
    td3_networks,
    td_target,
    uniform_actions,
)
from offline_bench.algos.cql import conservative_penalty, lagrange_conservative_loss
from offline_bench.algos.td3_bc import td3_critic_loss
from offline_bench.batch import Batch
from offline_bench.config import cfg
from offline_bench.nn import soft_update

CRITIC_KINDS = ("decentralized", "centralized")
_LOG_2PI = math.log(2.0 * math.pi)


@dataclass(frozen=True)
class MACQLConfig:
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
    cql_alpha: float = cfg(1.0, "weight of the conservative penalty (per dataset in configs/ma-cql/*.yaml)")
    cql_n_actions: int = cfg(10, "actions sampled per state from each proposal (uniform; and pi(o), pi(o') if on)")
    cql_temperature: float = cfg(1.0, "temperature of the log-sum-exp")
    cql_policy_actions: bool = cfg(False, "also penalise noisy current- and next-policy actions (halfcheetah-2x3)")
    cql_policy_noise: float = cfg(0.2, "std of the Gaussian noise on the policy proposals")
    critic: str = cfg("decentralized", "critic inputs: decentralized Q_i(o_i, a_i) or centralized Q_i(s, a_1..a_N)")
    input_norm: bool = cfg(True, "BatchNorm on every network's input (the OMAR authors' MPE networks)")
    max_grad_norm: float = cfg(0.5, "clip each agent's actor and critic gradient norm to this (<= 0 disables)")
    action_l2: float = cfg(1e-3, "weight of mean(pi(o)^2) in the actor loss (the OMAR code's 1e-3)")
    actor_final_init: float = cfg(3e-3, "actor output weights start in U(-x, x) so tanh starts unsaturated (<= 0: default)")
    normalize_obs: bool = cfg(False, "standardise observations with the dataset's statistics (the input BatchNorm already does)")
    reward_scale: float = cfg(1.0, "rewards are multiplied by this in the critic target (the penalty is not scale-free)")
    cql_lagrange: bool = cfg(False, "tune each agent's penalty weight alpha' by dual descent (CQL's Lagrange variant; off in the OMAR code)")
    cql_target_gap: float = cfg(5.0, "Lagrange threshold: alpha' grows while cql_alpha * penalty > this, shrinks below")
    bf16: bool = cfg(False, "network matmuls in bfloat16 autocast (~2.3x faster at 256x256 on CPUs with AMX; "
                            "losses and optimizers stay float32)")


class ConservativeCriticConfig(Protocol):
    """The config fields ``conservative_critic_update`` reads (MA-CQL's and OMAR's configs both have them)."""

    gamma: float
    policy_noise: float
    noise_clip: float
    cql_alpha: float
    cql_n_actions: int
    cql_temperature: float
    cql_policy_actions: bool
    cql_policy_noise: float
    max_grad_norm: float
    reward_scale: float
    critic_lr: float
    cql_lagrange: bool
    cql_target_gap: float
    bf16: bool


class PenaltyMultiplier:
    """CQL's Lagrange multiplier alpha' >= 0, one per agent (log-parameterised, 1 at the start), with its own Adam at
    the critics' learning rate, as in the single-agent CQL. Used when ``cql_lagrange`` is on."""

    def __init__(self, n_agents: int, lr: float, device: torch.device) -> None:
        self.log_alpha_prime = nn.Parameter(torch.zeros(n_agents, device=device))  # [N]
        self.optimizer = make_adam([self.log_alpha_prime], lr)

    def state_dict(self) -> dict[str, Any]:
        return {"log_alpha_prime": self.log_alpha_prime.detach().clone(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            self.log_alpha_prime.copy_(state["log_alpha_prime"])
        self.optimizer.load_state_dict(state["optimizer"])


def penalty_multiplier(config: ConservativeCriticConfig, n_agents: int,
                       device: torch.device) -> PenaltyMultiplier | None:
    """The multiplier an MA-CQL-critic algorithm needs: one (at ``critic_lr``) when ``cql_lagrange`` is on, else None."""
    return PenaltyMultiplier(n_agents, config.critic_lr, device) if config.cql_lagrange else None


def penalty_proposals(
    obs: Tensor, next_obs: Tensor, actor: DeterministicActor, mask: Tensor, config: ConservativeCriticConfig
) -> tuple[Tensor, Tensor]:
    """The actions the conservative penalty pushes down and their proposal log-densities.

    obs, next_obs ``[B, N, O]`` (normalised), mask ``[N, A]`` -> actions ``[K', B, N, A]`` and log_density
    ``[K', 1 or B, N]``, with ``K' = K`` (uniform only) or ``3K`` (uniform, pi(o) + noise, pi(o') + noise).
    """
    k = config.cql_n_actions
    b, n, a = obs.shape[0], mask.shape[0], mask.shape[1]
    true_dims = mask.sum(-1)  # [N]
    uniform = uniform_actions((k, b, n, a), obs.device) * mask  # [K, B, N, A]
    uniform_log_density = (-math.log(2.0) * true_dims).expand(k, 1, n)  # [K, 1, N]
    if not config.cql_policy_actions:
        return uniform, uniform_log_density
    sigma = config.cql_policy_noise
    with torch.no_grad(), bf16_autocast(obs.device, config.bf16):
        pi_now = actor(obs).float()  # [B, N, A]
        pi_next = actor(next_obs).float()  # [B, N, A]
    centres = torch.stack([pi_now, pi_next]).repeat_interleave(k, dim=0)  # [2K, B, N, A]
    noise = torch.randn_like(centres) * sigma  # [2K, B, N, A]
    policy = (centres + noise).clamp(-1.0, 1.0) * mask  # [2K, B, N, A]
    gauss = (-0.5 * (noise / sigma).square() - math.log(sigma) - 0.5 * _LOG_2PI) * mask  # [2K, B, N, A]
    policy_log_density = gauss.sum(-1)  # [2K, B, N]
    actions = torch.cat([uniform, policy])  # [3K, B, N, A]
    log_density = torch.cat([uniform_log_density.expand(k, b, n), policy_log_density])  # [3K, B, N]
    return actions, log_density


def conservative_critic_loss(
    q_data: Tensor, q_sampled: Tensor, log_density: Tensor, target: Tensor, cql_alpha: float, temperature: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Eq. (1) of the OMAR paper, per agent and critic, summed over both.

    q_data ``[B, N, E]``; q_sampled ``[K, B, N, E]``; log_density ``[K, 1 or B, N]``; target ``[B, N, 1]``.
    Returns (loss, td_loss, penalty) scalars; the penalty is the mean over the batch, summed over agents/critics.
    """
    td_loss, penalty = conservative_critic_terms(q_data, q_sampled, log_density, target, temperature)
    penalty = penalty.sum()
    return td_loss + cql_alpha * penalty, td_loss, penalty


def conservative_critic_terms(
    q_data: Tensor, q_sampled: Tensor, log_density: Tensor, target: Tensor, temperature: float
) -> tuple[Tensor, Tensor]:
    """The two terms of Eq. (1): the TD loss (scalar, summed over agents and critics) and the batch-mean penalty of
    each agent and critic ``[N, E]``. Shapes as in ``conservative_critic_loss``."""
    td_loss = td3_critic_loss(q_data, target)
    q_k_last = q_sampled.permute(1, 2, 3, 0)  # [B, N, E, K]
    density_k_last = log_density.permute(1, 2, 0).unsqueeze(2)  # [1 or B, N, 1, K]
    penalty = conservative_penalty(q_k_last, density_k_last, q_data, temperature)  # [B, N, E]
    return td_loss, penalty.mean(0)  # scalar, [N, E]


def conservative_critic_update(
    critic: AgentCritics,
    critic_target: AgentCritics,
    actor: DeterministicActor,
    actor_target: DeterministicActor,
    optimizer: torch.optim.Optimizer,
    obs: Tensor,
    next_obs: Tensor,
    batch: Batch,
    mask: Tensor,
    config: ConservativeCriticConfig,
    proposals: tuple[Tensor, Tensor] | None = None,
    multiplier: PenaltyMultiplier | None = None,
) -> dict[str, Tensor]:
    """One MA-CQL critic step for all agents at once (obs, next_obs normalised ``[B, N, O]``, mask ``[N, A]``).

    ``proposals`` (actions ``[K, B, N, A]``, log-density ``[K, 1 or B, N]``) replaces ``penalty_proposals``' draw,
    for tests or other proposal schemes. With ``cql_lagrange`` the penalty's weight is ``multiplier``'s alpha' per
    agent (``lagrange_conservative_loss``), which this step also updates.
    """
    c = config
    if c.cql_lagrange and multiplier is None:
        raise ValueError("cql_lagrange=true needs the PenaltyMultiplier (see penalty_multiplier)")

    def amp() -> torch.autocast:
        return bf16_autocast(obs.device, c.bf16)

    with torch.no_grad():
        with amp():
            next_action = actor_target(next_obs).float()  # [B, N, A]
        if c.policy_noise > 0:
            noise = (torch.randn_like(next_action) * c.policy_noise).clamp(-c.noise_clip, c.noise_clip)
            next_action = (next_action + noise).clamp(-1.0, 1.0)
        with amp():
            next_q = critic_target(next_obs, next_action * mask).float().amin(-1, keepdim=True)  # [B, N, 1]
        target = td_target(batch.reward * c.reward_scale, batch.done, next_q, c.gamma)  # [B, N, 1]
        if proposals is None:
            proposals = penalty_proposals(obs, next_obs, actor, mask, c)
        sampled, log_density = proposals  # [K, B, N, A], [K, 1 or B, N]
    with amp():
        q_data = critic(obs, batch.action).float()  # [B, N, E]
        q_sampled = critic(obs, sampled, others=batch.action).float()  # [K, B, N, E]
    alpha_prime = None
    if c.cql_lagrange:
        td_loss, penalty = conservative_critic_terms(q_data, q_sampled, log_density, target, c.cql_temperature)
        cql_term, alpha_prime_loss, alpha_prime = lagrange_conservative_loss(
            penalty, multiplier.log_alpha_prime, c.cql_alpha, c.cql_target_gap
        )
        optimizer_step(multiplier.optimizer, alpha_prime_loss)
        loss, penalty = td_loss + cql_term, penalty.sum()
    else:
        loss, td_loss, penalty = conservative_critic_loss(q_data, q_sampled, log_density, target, c.cql_alpha,
                                                          c.cql_temperature)
    norms = optimizer_step(optimizer, loss, list(critic.parameters()), c.max_grad_norm, critic.n_agents)  # [N]
    metrics = {
        "critic_loss": loss.detach(),
        "td_loss": td_loss.detach(),
        "cql_penalty": penalty.detach(),
        "q_mean": q_data.detach().mean(),
    }
    if alpha_prime is not None:
        metrics["cql_alpha_prime"] = alpha_prime.detach().mean()
    if norms is not None:  # clipping on (the authors' 0.5 by default)
        metrics["critic_grad_norm"] = norms.mean()
    return metrics


class MACQL:
    config_cls: ClassVar[type] = MACQLConfig
    multi_agent: ClassVar[bool] = True

    def __init__(self, config: MACQLConfig, problem: Problem, device: torch.device) -> None:
        if config.critic not in CRITIC_KINDS:
            raise ValueError(f"critic must be one of {', '.join(CRITIC_KINDS)}, got {config.critic!r}")
        if config.cql_n_actions < 1:
            raise ValueError(f"cql_n_actions must be >= 1, got {config.cql_n_actions}")
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

    def graph_key(self) -> tuple:
        """The branch the next ``update`` takes (actor step or not); a CUDA-graph runner captures one graph per key."""
        return ((self.updates + 1) % self.config.policy_freq == 0,)

    def update(self, batch: Batch) -> dict[str, Tensor]:
        c = self.config
        self.updates += 1
        obs, next_obs = self.normalizer(batch.obs), self.normalizer(batch.next_obs)  # [B, N, O]

        # Critics of all agents: TD error + conservative penalty, one batched step.
        metrics = conservative_critic_update(
            self.critic, self.critic_target, self.actor, self.actor_target, self.critic_opt,
            obs, next_obs, batch, self.mask, c, multiplier=self.multiplier,
        )

        # Actors through their first critic (others' actions from the data if centralized), then the targets.
        if self.updates % c.policy_freq == 0:
            with bf16_autocast(self.device, c.bf16):
                pi = self.actor(obs).float() * self.mask  # [B, N, A]
                q_pi = self.critic.first(obs, pi, others=batch.action).float()  # [B, N]
            actor_loss = (-q_pi.mean(0) + c.action_l2 * action_mean(pi.square(), self.action_sizes)).sum()
            optimizer_step(self.actor_opt, actor_loss, self.actor_params, c.max_grad_norm, self.problem.n_agents)
            soft_update(self.critic_target, self.critic, c.polyak)
            soft_update(self.actor_target, self.actor, c.polyak)
            self.last_actor_loss.copy_(actor_loss.detach())

        metrics["actor_loss"] = self.last_actor_loss.clone()
        return metrics

    def act(self, obs: Tensor) -> Tensor:
        """Deterministic actions ``[E, N, O] -> [E, N, A]`` from raw observations (BatchNorm in eval mode)."""
        return deterministic_act(self.actor, self.normalizer, obs, self.mask)

    def state_dict(self) -> dict[str, Any]:
        scalars = {"updates": self.updates, "last_actor_loss": self.last_actor_loss}
        return {**module_states(self, TD3_STATE_NAMES), **scalars, **multiplier_state(self.multiplier)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_module_states(self, state, TD3_STATE_NAMES)
        load_multiplier_state(self.multiplier, state)
        self.updates = int(state["updates"])
        self.last_actor_loss.copy_(state["last_actor_loss"])


def multiplier_state(multiplier: PenaltyMultiplier | None) -> dict[str, Any]:
    """The checkpoint entry of a multiplier (none without ``cql_lagrange``, so older checkpoints still load)."""
    return {} if multiplier is None else {"cql_multiplier": multiplier.state_dict()}


def load_multiplier_state(multiplier: PenaltyMultiplier | None, state: dict[str, Any]) -> None:
    if multiplier is None:
        return
    if "cql_multiplier" not in state:
        raise ValueError("this checkpoint was written without cql_lagrange; resume it with the same settings")
    multiplier.load_state_dict(state["cql_multiplier"])
