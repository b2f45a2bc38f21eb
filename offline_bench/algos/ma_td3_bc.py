"""MA-TD3+BC: TD3+BC (Fujimoto & Gu 2021) per agent on independent TD3 learners, the baseline of the OMAR paper
(Pan et al., ICML 2022, Tables 3, 5 and 6).

Each agent n has a tanh actor pi_n(o_n) and twin critics Q_n(o_n, a_n) (decentralized, de Witt et al. 2020), or
with ``critic="centralized"`` Q_n(s, a_1..a_N) (MATD3-style; in the actor update agent n's own action comes from
pi_n and the others' from the dataset). All agents and critics are one stacked network: one forward and one
backward pass per update, no Python loop over agents. The actor loss is ``td3_bc.bc_actor_loss`` per agent.

Reference implementation checked: github.com/ling-pan/OMAR (``algorithms/maddpg.py``, ``utils/networks.py``,
``main.py``), the TD3 backbone every method of the paper shares, and github.com/sfujim/TD3_BC for the BC part.
Defaults are the authors' MPE settings: hidden 64 x 2 with input BatchNorm, batch 1024, lr 0.01, polyak 0.01,
gamma 0.95, gradient norm clipped at 0.5, actor output layer initialised in +-3e-3. For halfcheetah-2x3 the
per-dataset config files set hidden 256, batch 256, lr 3e-4, polyak 0.005, gamma 0.99.

The TD3 part is the authors' backbone, shared with MA-CQL and OMAR here as in the paper ("all baselines are
implemented based on the open-source code"): no target policy smoothing (``policy_noise=0``) and an actor update
after every critic update (``policy_freq=1``). TD3+BC's own recipe (policy noise 0.2 clipped at 0.5, actor every 2
critic updates) stays available with ``--set policy_noise=0.2 --set policy_freq=2``; with the authors' lr 0.01 it
falls into a trap on tag-expert: within the first ~10 actor steps the Q term (the critic still untrained) drives
some agents' tanh outputs to the opposite bounds of the expert's +-1 actions, where tanh is saturated and the BC
gradient vanishes; one agent stays there (per-agent BC error 1.27 after 300 rounds vs 0.22 with the backbone) and
the team scores 9.0 +- 1.5 (5 seeds) instead of about 100 (leaderboards/README.md).

Deviations:
- The authors' backbone adds 1e-3 * mean(pi^2) to the actor loss; we leave it out (TD3+BC's actor loss as is).
- Observations are also normalised with the dataset's statistics (TD3+BC's recipe) before the input BatchNorm;
  set ``normalize_obs=false`` for the authors' exact inputs.
- BatchNorm: the authors keep every network in training mode, so the target networks and the critic in the
  actor step normalise with the statistics of the batch they see (next-state batches, policy actions). Ours
  normalise those inputs with the running statistics (eval mode), i.e. on the scale the critic is trained on:
  with batch statistics, Q(o, pi(o)) is evaluated in a coordinate system shifted by the policy's own action
  spread, which on a one-step bandit left the policy worse than the noisy data; with running statistics it
  recovers the best action.
- Agents with fewer action dimensions than the padded size get exact zeros on the padding (policy, target and
  evaluation actions), matching the dataset's padding; the BC term is a mean over each agent's own action
  dimensions (over the padded width until 2026-12-06, which on world weighted BC by 1/3 for the 2-dim agents).
- The twin critics have separate input BatchNorm statistics (the authors share one BatchNorm between the two
  heads); both see the same inputs, so the statistics are equal and only the affine parameters differ.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from offline_bench.algos.base import Problem
from offline_bench.algos.common import (
    adopt_networks,
    TD3_STATE_NAMES,
    bf16_autocast,
    deterministic_act,
    eval_mode,
    load_module_states,
    module_states,
    optimizer_step,
    own_action_sizes,
    td3_networks,
    td_target,
)
from offline_bench.algos.td3_bc import bc_actor_loss, td3_critic_loss
from offline_bench.batch import Batch
from offline_bench.config import cfg
from offline_bench.nn import soft_update

CRITIC_KINDS = ("decentralized", "centralized")


@dataclass(frozen=True)
class MATD3BCConfig:
    gamma: float = cfg(0.95, "discount factor (OMAR code: 0.95 on MPE)")
    polyak: float = cfg(0.01, "target-network update rate: target <- (1 - polyak) * target + polyak * online")
    batch_size: int = cfg(1024, "transitions per update (each agent sees the same rows)")
    actor_lr: float = cfg(0.01, "actor Adam learning rate")
    critic_lr: float = cfg(0.01, "critic Adam learning rate")
    hidden_sizes: tuple[int, ...] = cfg((64, 64), "hidden layer sizes of every agent's actor and critics")
    n_critics: int = cfg(2, "critics per agent; the target takes their minimum (clipped double Q)")
    policy_noise: float = cfg(0.0, "std of target-action smoothing noise (0: none, as in the OMAR authors' TD3; TD3+BC: 0.2)")
    noise_clip: float = cfg(0.5, "target-action noise is clipped to [-noise_clip, noise_clip]")
    policy_freq: int = cfg(1, "critic updates per actor and target update (1: every update, as in the OMAR code; TD3+BC: 2)")
    alpha: float = cfg(2.5, "Q weight in each agent's actor loss: lambda = alpha / mean|Q| (smaller = closer to data)")
    critic: str = cfg("decentralized", "critic inputs: decentralized Q_i(o_i, a_i) or centralized Q_i(s, a_1..a_N)")
    input_norm: bool = cfg(True, "BatchNorm on every network's input (the OMAR authors' MPE networks)")
    max_grad_norm: float = cfg(0.5, "clip each agent's actor and critic gradient norms to this (<= 0 disables)")
    actor_final_init: float = cfg(3e-3, "actor output weights start in U(-x, x) so tanh starts unsaturated (<= 0: default)")
    bf16: bool = cfg(False, "network matmuls in bfloat16 autocast (faster on CPUs with AVX512-BF16, less precise)")
    normalize_obs: bool = cfg(True, "standardise observations with the dataset's per-agent mean and std")


class MATD3BC:
    config_cls: ClassVar[type] = MATD3BCConfig
    multi_agent: ClassVar[bool] = True

    def __init__(self, config: MATD3BCConfig, problem: Problem, device: torch.device) -> None:
        if config.critic not in CRITIC_KINDS:
            raise ValueError(f"critic must be one of {', '.join(CRITIC_KINDS)}, got {config.critic!r}")
        self.config, self.problem, self.device = config, problem, torch.device(device)
        # Targets always use running BatchNorm statistics (copied from the online networks by soft_update).
        nets = td3_networks(
            problem, self.device, config.hidden_sizes, config.n_critics, config.actor_lr, config.critic_lr,
            config.normalize_obs, centralized=config.critic == "centralized", input_norm=config.input_norm,
            actor_final_init=config.actor_final_init, eval_targets=True,
        )
        adopt_networks(self, nets)
        self.action_sizes = own_action_sizes(problem, self.device)  # [N] where agents' sizes differ (world)
        self.updates = 0
        self.last_actor_loss = torch.zeros((), device=self.device)  # updated in place (CUDA graphs read it)

    def graph_key(self) -> tuple:
        """The branch the next ``update`` takes (actor step or not); a CUDA-graph runner captures one graph per key."""
        return ((self.updates + 1) % self.config.policy_freq == 0,)

    def update(self, batch: Batch) -> dict[str, Tensor]:
        c = self.config
        self.updates += 1
        obs, next_obs = self.normalizer(batch.obs), self.normalizer(batch.next_obs)  # [B, N, O]

        # Critics of all agents: clipped double-Q target with target policy smoothing.
        with torch.no_grad():
            noise = (torch.randn_like(batch.action) * c.policy_noise).clamp(-c.noise_clip, c.noise_clip)
            with bf16_autocast(self.device, c.bf16):
                next_pi = self.actor_target(next_obs).float()  # [B, N, A]
            next_action = (next_pi + noise).clamp(-1.0, 1.0) * self.mask  # [B, N, A], zero padding
            with bf16_autocast(self.device, c.bf16):
                next_q = self.critic_target(next_obs, next_action).float().amin(-1, keepdim=True)  # [B, N, 1]
            target = td_target(batch.reward, batch.done, next_q, c.gamma)  # [B, N, 1]
        with bf16_autocast(self.device, c.bf16):
            q = self.critic(obs, batch.action).float()  # [B, N, E]
        critic_loss = td3_critic_loss(q, target)
        optimizer_step(self.critic_opt, critic_loss, self.critic_params, c.max_grad_norm, self.problem.n_agents)

        # Actors (each through its own first critic; others' actions from data if centralized), then targets.
        if self.updates % c.policy_freq == 0:
            with bf16_autocast(self.device, c.bf16):
                pi = self.actor(obs).float() * self.mask  # [B, N, A], zero padding as in the data
            with bf16_autocast(self.device, c.bf16), eval_mode(self.critic):  # Q at pi on the data's input scale
                q_pi = self.critic.first(obs, pi, others=batch.action).float()  # [B, N]
            actor_loss = bc_actor_loss(q_pi, pi, batch.action, c.alpha, self.action_sizes)
            optimizer_step(self.actor_opt, actor_loss, self.actor_params, c.max_grad_norm, self.problem.n_agents)
            soft_update(self.critic_target, self.critic, c.polyak)
            soft_update(self.actor_target, self.actor, c.polyak)
            self.last_actor_loss.copy_(actor_loss.detach())

        return {
            "critic_loss": critic_loss.detach(),
            "actor_loss": self.last_actor_loss.clone(),
            "q_mean": q.detach().mean(),
        }

    def act(self, obs: Tensor) -> Tensor:
        """Deterministic actions ``[E, N, O] -> [E, N, A]`` from raw observations (BatchNorm in eval mode)."""
        return deterministic_act(self.actor, self.normalizer, obs, self.mask)

    def state_dict(self) -> dict[str, Any]:
        scalars = {"updates": self.updates, "last_actor_loss": self.last_actor_loss}
        return {**module_states(self, TD3_STATE_NAMES), **scalars}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_module_states(self, state, TD3_STATE_NAMES)
        self.updates = int(state["updates"])
        self.last_actor_loss.copy_(state["last_actor_loss"])
