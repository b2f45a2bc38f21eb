"""MA-ICQ: Implicit Constraint Q-learning (Yang et al., "Believe what you see: implicit constraint approach for
offline multi-agent reinforcement learning", NeurIPS 2021), continuous and per agent, as the OMAR paper's baseline.

The authors' multi-agent code is discrete (SMAC, with a mixer); this is the per-agent version of their continuous
single-agent ``ICQ_softmax`` on independent learners Q_n(o_n, a_n) (or ``critic="centralized"``: Q_n(s, a_1..a_N)).
ICQ only trusts actions seen in the data: the critic target uses the dataset's next action a' (``batch.next_action``)
with implicit importance weights computed over the batch, per agent,

    w = clamp(B_valid / icq_alpha * softmax_batch(Q'(o', a') / icq_beta), 0, 1),   y = r + gamma (1 - d) Q'(o', a') w,

and the actor is an advantage-weighted regression onto the dataset action,

    A = r + gamma (1 - d) Q(o', a') - Q(o, a),   loss = sum_b softmax_batch(A / icq_beta)_b * mean_A (pi(o_b) - a_b)^2.

Reference implementation checked: github.com/YiqinYang/ICQ (``ICQ_softmax/ICQ/icq.py``, ``ICQ_softmax/main.py``:
beta 600 for both softmaxes, alpha 2, one critic, the target critic for y and the online critic for A). The network
and optimisation defaults are the OMAR paper's shared MPE settings (github.com/ling-pan/OMAR): hidden 64 x 2 with
input BatchNorm, batch 1024, lr 0.01, polyak 0.01, gamma 0.95, per-agent gradient norms clipped at 0.5.

Deviations:
- The actor is deterministic (tanh), like every other method of the OMAR paper's TD3 backbone, so the regression
  is a weighted squared error with every action dimension weighted alike. The authors' actor is a Gaussian around
  ``tanh(mu)`` with a learned, state-independent std per dimension and a weighted log-likelihood, which weights
  each dimension's squared error by ``1 / (2 sigma_d^2)`` (plus a ``log sigma_d`` term); ours is its fixed-variance
  case. The batch normalisation of the weights is the same.
- Which ICQ: the authors' single-agent continuous code (above), per agent. Their multi-agent learner is discrete
  and uses other forms: an actor advantage ``Q_i(tau, a_i) - sum_a pi_i(a|tau) Q_i(tau, a)`` at temperature 0.1
  and critic weights ``B * softmax(Q_tot / 1000)`` without the division by alpha or the clamp
  (``offpg_learner.py``). The OMAR paper does not say which settings its MA-ICQ baseline used.
- The target critic's pass and the gradient-free advantage passes run the critics' input BatchNorm in training
  mode (batch statistics, as the OMAR authors' networks do). Rows without a next action (zero-filled ``next_action``:
  every episode end, 1 row in 25 on MPE, 1 in 1,000 on halfcheetah-2x3) are masked out of the losses and softmaxes
  but enter those statistics. MA-TD3+BC evaluates its targets with running statistics instead (``ma_td3_bc.py``).
- The reference's own optimisation settings (batch 32, lr 3e-4, polyak 0.005, a 256-256 critic and a 4 x 256
  actor) are replaced by the OMAR paper's shared settings (above), as for every baseline of its tables.
- The authors drop every row without a next action (episode ends) from their buffer. We keep true terminals (their
  target is r: no bootstrap) and mask only rows that have neither a next action nor a terminal (time-limit ends) out
  of both losses and both softmaxes; B_valid counts the rows with a next action.
- Critic and actor are updated every step with the same batch and the target critic soft-updated after each step,
  as in the reference (ICQ needs no target actor); its actor weight decay (1e-4) is kept as ``actor_weight_decay``.
- Padded action dimensions are zeroed in the actor's output, and the regression error is a mean over each
  agent's own action dimensions (over the padded width until 2026-12-06; only world has padding).
- No ``reward_scale``: MA-CQL and OMAR multiply spread's rewards (8 / 15 / 22) to reach the scale their
  conservative penalty was tuned on; ICQ trains on the simulator's rewards, as its reference does, although its
  ``softmax(Q / 600)`` weights are not scale-free either.

As in the reference, the "advantage" is the one-step TD residual of the dataset transition (not Q(o, a) - V(o)); once
the critic fits the data it is near zero, and with beta 600 the actor loss is close to behaviour cloning.

The temperature. ``icq_beta`` 600 is the reference's value for D4RL. Where advantages and next values differ by a
few reward units across a batch, ``softmax(A / 600)`` is uniform over the batch, and so is ``softmax(Q' / 600)``: the
implicit weights sit at 1 / alpha = 0.5 (on halfcheetah-2x3 their batch mean measured 0.5, with ``Q`` 4.0-5.3 and
advantages averaging 2.0-2.6), which makes the critic's discount effectively gamma / alpha (the reference's own
return helper divides gamma by alpha too), and the actor loss is plain behaviour cloning. The OMAR paper does not
give the beta it used; the default stays the reference's. Measured on halfcheetah-2x3 (seed 0, 10k updates,
evaluations every 2k, normalized; mixed = a rebuild here, sha256 49d82c39f733, whose episodes average 40.0):

- medium (the data averages 31.5): 25.1-33.2 with beta 600, 27.7-39.5 with ``icq_beta=1``;
- mixed: beta 600 stands still (3.9-4.0), exactly as plain behaviour cloning does there (``icq_beta=1e9``, and
  MA-TD3+BC with ``alpha=0``: 3.9-4.0), while ``icq_beta=1`` weights the better transitions up and scores 47.1-54.6
  (MA-TD3+BC with its defaults: 22.8-41.3). It does not hold that: at the full budget (100k updates, evaluations
  every 500) its evaluations average 51, 51, 39, 27 and 15 over the first five blocks of 10k updates and 8.5-15.5
  after, with many that stand still; last 10 evaluations 15.9, best 63.0 (at 21k). A temperature between, or an
  early stop, is not explored here.

``bf16=True`` (off by default; not in the paper) runs the network calls under bfloat16 autocast; the network outputs
are cast back to float32 before both batch softmaxes and the losses, and parameters and Adam stay float32. Measured
on this project's CPU: 1.31x faster updates at 2 agents x 256x256 (halfcheetah-2x3), 1.06x at the authors' MPE
shape; on spread-medium-v1 and spread-expert-v1 it scored like float32 (``leaderboards/README.md``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from offline_bench.algos.base import Problem
from offline_bench.algos.common import (
    adopt_networks,
    bf16_autocast,
    deterministic_act,
    load_module_states,
    module_states,
    optimizer_step,
    action_mean,
    own_action_sizes,
    td3_networks,
)
from offline_bench.algos.ma_cql import CRITIC_KINDS
from offline_bench.batch import Batch
from offline_bench.config import cfg
from offline_bench.nn import soft_update

_MASKED = -1e9  # logit of rows left out of a batch softmax
_STATE_NAMES = ("actor", "critic", "critic_target", "actor_opt", "critic_opt", "normalizer")  # no target actor


@dataclass(frozen=True)
class MAICQConfig:
    gamma: float = cfg(0.95, "discount factor (OMAR code: 0.95 on MPE)")
    polyak: float = cfg(0.01, "target-network update rate: target <- (1 - polyak) * target + polyak * online")
    batch_size: int = cfg(1024, "transitions per update; the implicit weights are a softmax over this batch")
    actor_lr: float = cfg(0.01, "actor Adam learning rate")
    critic_lr: float = cfg(0.01, "critic Adam learning rate")
    hidden_sizes: tuple[int, ...] = cfg((64, 64), "hidden layer sizes of every agent's actor and critics")
    n_critics: int = cfg(1, "critics per agent (the ICQ code trains one); the target takes their minimum")
    icq_beta: float = cfg(600.0, "temperature of both batch softmaxes, softmax(Q'/beta) and softmax(A/beta)")
    icq_alpha: float = cfg(2.0, "implicit weights are B / alpha * softmax, clipped to [0, 1]")
    critic: str = cfg("decentralized", "critic inputs: decentralized Q_i(o_i, a_i) or centralized Q_i(s, a_1..a_N)")
    input_norm: bool = cfg(True, "BatchNorm on every network's input (the OMAR authors' MPE networks)")
    max_grad_norm: float = cfg(0.5, "clip each agent's actor and critic gradient norm to this (<= 0 disables)")
    actor_weight_decay: float = cfg(1e-4, "Adam weight decay of the actors (the ICQ code's 1e-4)")
    actor_final_init: float = cfg(3e-3, "actor output weights start in U(-x, x) so tanh starts unsaturated (<= 0: default)")
    normalize_obs: bool = cfg(False, "standardise observations with the dataset's statistics (the input BatchNorm already does)")
    bf16: bool = cfg(False, "network matmuls in bfloat16 autocast (faster on CPUs with AVX512-BF16, less precise); "
                            "the softmaxes, losses and Adam stay float32")


def masked_batch_softmax(values: Tensor, rows: Tensor, temperature: float) -> Tensor:
    """Softmax over the batch axis of ``values / temperature`` using only ``rows`` (1.0 = use): ``[B, N] -> [B, N]``.

    rows ``[B, 1]``; left-out rows get weight 0 (all rows left out: all weights 0).
    """
    logits = values / temperature + (1.0 - rows) * _MASKED  # [B, N]
    return torch.softmax(logits, dim=0) * rows  # [B, N]


def implicit_weights(next_q: Tensor, next_action_valid: Tensor, beta: float, alpha: float) -> Tensor:
    """ICQ's importance weights of the next-state values: next_q ``[B, N]``, valid ``[B, 1]`` -> ``[B, N]`` in [0, 1].

    ``clamp(B_valid / alpha * softmax_batch(next_q / beta), 0, 1)``, zero where there is no next action.
    """
    n_valid = next_action_valid.sum()  # [] (a tensor: no host sync)
    return (n_valid / alpha * masked_batch_softmax(next_q, next_action_valid, beta)).clamp(0.0, 1.0)  # [B, N]


def icq_critic_target(batch: Batch, next_q: Tensor, gamma: float, beta: float, alpha: float) -> tuple[Tensor, Tensor]:
    """``y = r + gamma (1 - d) Q'(o', a') w``: next_q ``[B, N]`` -> (target ``[B, N, 1]``, weights ``[B, N]``)."""
    w = implicit_weights(next_q, batch.next_action_valid, beta, alpha)  # [B, N]
    not_done = 1.0 - batch.done  # [B, 1]
    return batch.reward + gamma * (not_done * next_q * w).unsqueeze(-1), w  # [B, N, 1], [B, N]


def awr_actor_loss(pi: Tensor, data_action: Tensor, advantage: Tensor, rows: Tensor, beta: float,
                   action_sizes: Tensor | None = None) -> Tensor:
    """Advantage-weighted regression per agent, summed over agents: pi, data_action ``[B, N, A]``, advantage
    ``[B, N]``, rows ``[B, 1]`` -> scalar ``sum_n sum_b softmax_b(A / beta) * mean_{A_n} (pi - a)^2``, the mean over
    each agent's own action dimensions (``action_sizes [N]``; None: all A)."""
    weights = masked_batch_softmax(advantage, rows, beta)  # [B, N]
    error = action_mean((pi - data_action).square(), action_sizes, over_batch=False)  # [B, N]
    return (weights * error).sum()


class MAICQ:
    config_cls: ClassVar[type] = MAICQConfig
    multi_agent: ClassVar[bool] = True

    def __init__(self, config: MAICQConfig, problem: Problem, device: torch.device) -> None:
        if config.critic not in CRITIC_KINDS:
            raise ValueError(f"critic must be one of {', '.join(CRITIC_KINDS)}, got {config.critic!r}")
        if config.icq_beta <= 0 or config.icq_alpha <= 0:
            raise ValueError("icq_beta and icq_alpha must be > 0")
        self.config, self.problem, self.device = config, problem, torch.device(device)
        nets = td3_networks(
            problem, self.device, config.hidden_sizes, config.n_critics, config.actor_lr, config.critic_lr,
            config.normalize_obs, centralized=config.critic == "centralized", input_norm=config.input_norm,
            actor_final_init=config.actor_final_init, actor_weight_decay=config.actor_weight_decay,
            actor_target=False,
        )
        adopt_networks(self, nets)
        self.action_sizes = own_action_sizes(problem, self.device)  # [N] where agents' sizes differ (world)
        self.updates = 0

    def _amp(self) -> torch.autocast:
        """bfloat16 autocast around network calls when ``bf16`` is on (a no-op context otherwise)."""
        return bf16_autocast(self.device, self.config.bf16)

    def graph_key(self) -> tuple:
        """The branch the next ``update`` takes (always the same); a CUDA-graph runner captures one graph per key."""
        return ()

    def update(self, batch: Batch) -> dict[str, Tensor]:
        c = self.config
        n = self.problem.n_agents
        self.updates += 1
        obs, next_obs = self.normalizer(batch.obs), self.normalizer(batch.next_obs)  # [B, N, O]
        # Rows with a usable target: a next action in the same episode, or a true terminal (target = r).
        rows = torch.maximum(batch.next_action_valid, batch.done)  # [B, 1]
        n_rows = rows.sum().clamp(min=1.0)  # []

        # Critics: regress onto the implicitly weighted target built from the dataset's next action.
        with torch.no_grad():
            with self._amp():
                next_q = self.critic_target(next_obs, batch.next_action).float().amin(-1)  # [B, N]
            target, weights = icq_critic_target(batch, next_q, c.gamma, c.icq_beta, c.icq_alpha)  # [B, N, 1]
        with self._amp():
            q = self.critic(obs, batch.action).float()  # [B, N, E]
        critic_loss = ((q - target).square() * rows.unsqueeze(-1)).sum(0).sum() / n_rows
        optimizer_step(self.critic_opt, critic_loss, self.critic_params, c.max_grad_norm, n)

        # Actors: advantage-weighted regression onto the dataset actions, advantages from the updated critic.
        with torch.no_grad():
            with self._amp():
                q_now = self.critic.first(obs, batch.action).float()  # [B, N]
                q_next = self.critic.first(next_obs, batch.next_action).float()  # [B, N]
            not_done = 1.0 - batch.done  # [B, 1]
            advantage = batch.reward.squeeze(-1) + c.gamma * not_done * q_next * batch.next_action_valid - q_now
        with self._amp():
            pi = self.actor(obs).float() * self.mask  # [B, N, A]
        actor_loss = awr_actor_loss(pi, batch.action, advantage, rows, c.icq_beta, self.action_sizes)
        optimizer_step(self.actor_opt, actor_loss, self.actor_params, c.max_grad_norm, n)

        soft_update(self.critic_target, self.critic, c.polyak)
        valid = batch.next_action_valid  # [B, 1]
        return {
            "critic_loss": critic_loss.detach(),
            "actor_loss": actor_loss.detach(),
            "q_mean": q.detach().mean(),
            "icq_weight_mean": (weights * valid).sum() / (valid.sum() * n).clamp(min=1.0),
            "advantage_mean": (advantage * rows).sum() / (n_rows * n),
        }

    def act(self, obs: Tensor) -> Tensor:
        """Deterministic actions ``[E, N, O] -> [E, N, A]`` from raw observations (BatchNorm in eval mode)."""
        return deterministic_act(self.actor, self.normalizer, obs, self.mask)

    def state_dict(self) -> dict[str, Any]:
        return {**module_states(self, _STATE_NAMES), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_module_states(self, state, _STATE_NAMES)
        self.updates = int(state["updates"])
