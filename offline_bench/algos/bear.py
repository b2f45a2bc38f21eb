"""BEAR: Bootstrapping Error Accumulation Reduction (Kumar, Fu, Tucker & Levine, NeurIPS 2019, arXiv 1906.00949).

Checked against the authors' code (github.com/aviralkumar2907/BEAR, ``algos.py:BEAR``, ``main.py``) and d3rlpy's
``BEAR`` (``d3rlpy/algos/qlearning/torch/bear_impl.py``); the code here is our own.

The update, in the authors' order:

1. behaviour model: a conditional VAE of a | s (750-750 encoder and decoder, latent 2|A|), loss
   ``MSE(recon, a) + 0.5 * KL(q(z|s,a) || N(0, I))``, log-std of q clamped to [-4, 15];
2. critics: an ensemble of ``n_critics`` Q-functions (one batched network) regressed on the soft clipped
   double-Q target ``r + gamma (1 - d) max_k [0.75 min_e Q'_e(s', a_k) + 0.25 max_e Q'_e(s', a_k)]`` over
   ``n_target_samples`` = 10 actions ``a_k`` of the target actor;
3. actor (tanh-Gaussian): ``-min_e mean_k Q_e(s, a_k) + alpha * MMD(pi(.|s), beta(.|s))`` over
   ``n_mmd_samples`` = 5 actor samples (the Q term is ``min_e mean_k Q_e(s, a_k)`` over the first
   ``n_actor_q_samples`` of them: all, as the authors do, each critic averaged over the samples before the minimum
   over critics; d3rlpy uses 1) (pre-tanh Gaussian noise clipped to +-0.5, the authors' "trick") and as many VAE
   samples (latent clipped to +-0.5); the MMD compares PRE-tanh actions of both, as the authors do, so the kernel
   does not saturate. During the first ``warmup_steps`` updates the actor minimises ``alpha * MMD`` only;
4. Lagrange multiplier: ``log alpha`` ascends ``alpha * (MMD - epsilon)`` (epsilon = ``mmd_threshold`` = 0.05) and
   is clamped to [-5, 10] (a tensor op: no host sync);
5. polyak averaging of the critic and actor targets.

Evaluation (``act``) picks, per state, the action with the highest ``min_e Q_e`` among 10 actor samples
``tanh(mean + std * eps_k)``.

MMD kernels (authors' definitions, also d3rlpy's): Laplacian ``exp(-||x - y||_1 / (2 sigma))`` and "Gaussian"
``exp(-||x - y||_2^2 / (2 sigma))`` (sigma, not sigma^2, in the denominator); the returned distance is
``sqrt(MMD^2 + 1e-6)``. The authors use sigma = 10 with the Laplacian kernel on hopper/halfcheetah and 20 on
walker2d/ant and with the Gaussian kernel.

Deviations from the authors' code:

- batch 256 and learning rates actor 1e-4, critic 3e-4, VAE 3e-4 (d3rlpy's; the authors use batch 100 and Adam's
  default 1e-3 everywhere); the Lagrange multiplier starts at 1 (d3rlpy) instead of ``exp(randn())``;
- warm-up counted in updates (40k, d3rlpy's default) instead of 20 "epochs" of ``eval_freq`` updates (20k with the
  ``--eval_freq=1000`` of the authors' README commands, 100k at their argparse default of 5000);
- the actor's log-std is clamped to [-20, 2] (the shared ``GaussianActor``); the authors leave it free;
- the ensemble-variance actor term (``lambda * std_q``) is left out: the authors' runs disable it
  (``use_ensemble_variance=False``); no SAC entropy term (d3rlpy adds one, the authors do not);
- ``act`` ranks actor samples by the ensemble minimum (the authors' ``select_action`` uses the first critic) and
  draws them with a FIXED set of 10 noise vectors ``eps_k`` (``eps_0 = 0``, i.e. ``tanh(mean)``; the rest from a
  constant seed) instead of fresh noise each step, so evaluation is deterministic (the Algorithm contract) and
  does not consume the training RNG stream.
- observations are normalised with the dataset statistics (``normalize_obs``; the authors use raw observations).

Optional ``bf16=true`` (off by default, as in TD3+BC, CQL and DBR): the network calls (VAE, actor, critics, targets)
run under bfloat16 autocast: 1.4-1.6x faster updates at 256x256 on this project's CPU (AMX), 1.8x on the hopper-medium
learning check, which scored like float32 (``leaderboards/README.md``); parameters, gradients, Adam,
the losses, the MMD and the multiplier stay float32 (the MMD subtracts kernel means of similar size, which bfloat16
could not resolve).

Shared with DBR (``dbr.py`` imports them): ``mmd_distance``, ``ConditionalVAE``, ``sample_raw_actions``,
``soft_clipped_target``, ``bear_td_target``, ``probe_noise``, ``best_of_samples``.
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
    ObsNormalizer,
    bf16_autocast,
    frozen_copy,
    load_module_states,
    make_adam,
    module_states,
    optimizer_step,
    td_target,
)
from offline_bench.batch import Batch
from offline_bench.config import cfg
from offline_bench.nn import StackedMLP, agents_to_groups, soft_update

MMD_KERNELS = ("laplacian", "gaussian")
# Modules and optimizers a checkpoint carries; the Lagrange multiplier is saved as a tensor.
_STATE_NAMES = ("obs_norm", "actor", "actor_target", "critic", "critic_target", "vae",
                "actor_opt", "critic_opt", "vae_opt", "lagrange_opt")


@dataclass(frozen=True)
class BEARConfig:
    gamma: float = cfg(0.99, "discount factor")
    polyak: float = cfg(0.005, "target network averaging rate (tau)")
    batch_size: int = cfg(256, "transitions per update (authors: 100; d3rlpy: 256)")
    actor_lr: float = cfg(1e-4, "actor learning rate")
    critic_lr: float = cfg(3e-4, "critic learning rate")
    vae_lr: float = cfg(3e-4, "behaviour-model (conditional VAE) learning rate")
    lagrange_lr: float = cfg(1e-3, "learning rate of log alpha, the MMD constraint's Lagrange multiplier")
    hidden_sizes: tuple[int, ...] = cfg((400, 300), "actor and critic hidden layers (authors: 400-300)")
    vae_hidden_sizes: tuple[int, ...] = cfg((750, 750), "VAE encoder and decoder hidden layers")
    latent_factor: int = cfg(2, "VAE latent size as a multiple of the action size (latent = 2|A|)")
    vae_kl_weight: float = cfg(0.5, "weight of the VAE's KL term")
    n_critics: int = cfg(2, "critics in the ensemble (one batched network)")
    target_lambda: float = cfg(0.75, "soft clipped double-Q: weight of the ensemble min (1 - it on the max)")
    n_target_samples: int = cfg(10, "actor samples per next state in the critic target (max over them)")
    n_mmd_samples: int = cfg(5, "actor and VAE samples per state for the MMD (authors 5-10, d3rlpy 4)")
    n_action_samples: int = cfg(10, "actor samples ranked by Q when acting")
    n_actor_q_samples: int = cfg(5, "MMD actor samples averaged in the actor's Q term (authors: all; d3rlpy: 1)")
    mmd_kernel: str = cfg("laplacian", "MMD kernel: laplacian or gaussian")
    mmd_sigma: float = cfg(10.0, "MMD kernel bandwidth (authors: 10 laplacian on hopper/halfcheetah, 20 otherwise; "
                                 "configs/bear/ sets 20 on walker2d and ant)")
    mmd_threshold: float = cfg(0.05, "epsilon: the MMD level the Lagrange multiplier enforces")
    initial_lagrange: float = cfg(1.0, "initial value of alpha, the Lagrange multiplier")
    log_lagrange_min: float = cfg(-5.0, "lower clamp of log alpha")
    log_lagrange_max: float = cfg(10.0, "upper clamp of log alpha")
    actor_noise_clip: float = cfg(0.5, "clip of the actor's standard-normal noise in the actor update (authors' trick)")
    warmup_steps: int = cfg(40_000, "updates during which the actor minimises the MMD only")
    normalize_obs: bool = cfg(True, "normalise observations with the dataset mean and std")
    bf16: bool = cfg(False, "network matmuls in bfloat16 autocast (faster on CPUs with AVX512-BF16; the MMD, "
                            "losses and optimizers stay float32)")


# ----------------------------------------------------------------------------------------------------------- math


def mmd_distance(x: Tensor, y: Tensor, kernel: str, sigma: float) -> Tensor:
    """Sample MMD between ``x [..., n, A]`` and ``y [..., m, A]`` per leading index: ``-> [...]``.

    ``sqrt(mean k(x, x') + mean k(y, y') - 2 mean k(x, y) + 1e-6)`` with the authors' kernels (module docstring).
    """
    if kernel not in MMD_KERNELS:
        raise ValueError(f"mmd_kernel must be one of {MMD_KERNELS}, got {kernel!r}")
    assert x.shape[:-2] == y.shape[:-2] and x.shape[-1] == y.shape[-1], f"x {tuple(x.shape)} vs y {tuple(y.shape)}"

    def k(a: Tensor, b: Tensor) -> Tensor:
        diff = a.unsqueeze(-2) - b.unsqueeze(-3)  # [..., n, m, A]
        dist = diff.abs().sum(-1) if kernel == "laplacian" else diff.square().sum(-1)  # [..., n, m]
        return torch.exp(-dist / (2.0 * sigma)).mean(dim=(-2, -1))  # [...]

    return (k(x, x) + k(y, y) - 2.0 * k(x, y) + 1e-6).sqrt()  # [...]


def actor_q_term(q: Tensor) -> Tensor:
    """BEAR's actor objective at K actor samples: ``q [K, B, N, E] -> [B, N]``, ``min_e mean_k Q_e(s, a_k)``, each
    critic averaged over the samples first, then the minimum over critics (the authors' ``critic_qs.mean(1)``
    then ``min(0)``; the minimum of the means, not the mean of per-sample minima)."""
    return q.mean(0).amin(-1)  # [B, N]


def soft_clipped_target(q: Tensor, lmbda: float) -> Tensor:
    """Soft clipped double-Q over the ensemble axis, ``[..., E] -> [...]``:
    ``lmbda * min_e q + (1 - lmbda) * max_e q``."""
    return lmbda * q.amin(-1) + (1.0 - lmbda) * q.amax(-1)


def sample_raw_actions(actor: GaussianActor, obs: Tensor, n_samples: int, noise_clip: float | None = None) -> Tensor:
    """Reparameterised PRE-tanh actor samples: ``obs [B, N, O] -> [K, B, N, A]`` (``tanh`` gives the actions).

    ``noise_clip`` clips the standard-normal noise (the authors' ``sample_multiple``); ``None`` leaves it free.
    """
    mean, log_std = actor.distribution(obs)  # [B, N, A] each
    noise = torch.randn((n_samples, *mean.shape), device=mean.device, dtype=mean.dtype)  # [K, B, N, A]
    if noise_clip is not None:
        noise = noise.clamp(-noise_clip, noise_clip)
    return mean + log_std.exp() * noise  # [K, B, N, A]


class ConditionalVAE(nn.Module):
    """``n_models`` conditional VAEs of a | s per agent, all one stacked network (groups = agents x models).

    BEAR uses one model (beta); DBR two (beta+ and beta-) trained on the same batch with per-row weights.
    Layout in and out is agent-major like the critics: ``obs [B, N, O]``, ``action [B, N, A]``.
    """

    def __init__(
        self,
        n_agents: int,
        obs_dim: int,
        action_dim: int,
        hidden_sizes: tuple[int, ...] = (750, 750),
        latent_dim: int | None = None,
        n_models: int = 1,
    ) -> None:
        super().__init__()
        self.n_agents, self.obs_dim, self.action_dim, self.n_models = n_agents, obs_dim, action_dim, n_models
        self.latent_dim = latent_dim or 2 * action_dim
        groups = n_agents * n_models
        self.encoder = StackedMLP(groups, obs_dim + action_dim, hidden_sizes, 2 * self.latent_dim)
        self.decoder = StackedMLP(groups, obs_dim + self.latent_dim, hidden_sizes, action_dim)

    def _groups(self, x: Tensor) -> Tensor:
        return agents_to_groups(x, self.n_models)  # [B, N, D] -> [N*M, B, D]

    def decode_raw(self, obs_groups: Tensor, z: Tensor | None = None, latent_clip: float = 0.5) -> Tensor:
        """Pre-tanh decoder output ``[G, B, A]`` for ``obs_groups [G, B, O]``; ``z`` defaults to clipped N(0, I)."""
        if z is None:
            shape = (*obs_groups.shape[:-1], self.latent_dim)
            z = torch.randn(shape, device=obs_groups.device, dtype=obs_groups.dtype).clamp(-latent_clip, latent_clip)
        return self.decoder(torch.cat([obs_groups, z], dim=-1))  # [G, B, A]

    def loss(self, obs: Tensor, action: Tensor, weights: Tensor | None = None, kl_weight: float = 0.5) -> Tensor:
        """Per-model VAE loss ``[N, M]``: weighted row mean of ``mean_A (tanh(dec) - a)^2 + kl_weight * mean_L KL``.

        ``weights [B, N, M]`` (e.g. DBR's D+ / D- masks) select and weight rows per model; a model whose weights
        sum to zero in this batch gets loss 0. ``None`` weighs every row 1 (the authors' plain mean).
        """
        b = obs.shape[0]
        obs_g, act_g = self._groups(obs), self._groups(action)  # [G, B, O], [G, B, A]
        stats = self.encoder(torch.cat([obs_g, act_g], dim=-1))  # [G, B, 2L]
        mean, log_std = stats.chunk(2, dim=-1)  # [G, B, L] each
        log_std = log_std.clamp(-4.0, 15.0)
        std = log_std.exp()
        z = mean + std * torch.randn_like(std)  # [G, B, L]
        recon = torch.tanh(self.decode_raw(obs_g, z))  # [G, B, A]
        recon_row = (recon - act_g).square().mean(-1)  # [G, B]
        kl_row = -0.5 * (1.0 + 2.0 * log_std - mean.square() - std.square()).mean(-1)  # [G, B]
        row = recon_row + kl_weight * kl_row  # [G, B]
        if weights is None:
            per_group = row.mean(-1)  # [G]
        else:
            assert weights.shape == (b, self.n_agents, self.n_models), f"weights {tuple(weights.shape)}"
            w = weights.reshape(b, -1).transpose(0, 1)  # [G, B] (agent-major, like agents_to_groups)
            per_group = (row * w).sum(-1) / w.sum(-1).clamp(min=1.0)  # [G]
        return per_group.reshape(self.n_agents, self.n_models)  # [N, M]

    def sample_raw(self, obs: Tensor, n_samples: int) -> Tensor:
        """Pre-tanh behaviour samples per model: ``obs [B, N, O] -> [B, N, M, K, A]``."""
        b, n, _ = obs.shape
        obs_g = self._groups(obs)  # [G, B, O]
        rep = obs_g.unsqueeze(1).expand(-1, n_samples, -1, -1).reshape(obs_g.shape[0], n_samples * b, -1)  # [G, K*B, O]
        raw = self.decode_raw(rep)  # [G, K*B, A]
        raw = raw.reshape(n, self.n_models, n_samples, b, self.action_dim)  # [N, M, K, B, A]
        return raw.permute(3, 0, 1, 2, 4)  # [B, N, M, K, A]


def bear_td_target(
    actor_target: GaussianActor,
    critic_target: AgentCritics,
    next_obs: Tensor,
    reward: Tensor,
    done: Tensor,
    gamma: float,
    n_samples: int,
    lmbda: float,
) -> Tensor:
    """BEAR's critic target ``[B, N, 1]``: soft clipped double-Q, maxed over ``n_samples`` target-actor actions.

    ``next_obs`` is already normalised ``[B, N, O]``; reward ``[B, N, 1]``, done ``[B, 1]``. Call under no_grad.
    """
    next_action = torch.tanh(sample_raw_actions(actor_target, next_obs, n_samples))  # [K, B, N, A]
    q_next = critic_target(next_obs, next_action)  # [K, B, N, E]
    q_next = soft_clipped_target(q_next, lmbda).amax(0)  # [B, N]
    return td_target(reward, done, q_next.unsqueeze(-1), gamma)  # [B, N, 1]


def probe_noise(n_samples: int, action_dim: int, device: torch.device) -> Tensor:
    """Fixed standard-normal noise ``[K, A]`` for acting: row 0 is zero (``tanh(mean)``), the rest are drawn from a
    constant seed, so ``act`` is a deterministic function of the observation and never touches the global RNG."""
    gen = torch.Generator().manual_seed(20190601)
    noise = torch.randn(n_samples, action_dim, generator=gen)  # [K, A]
    noise[0] = 0.0
    return noise.to(device)


def best_of_samples(actor: GaussianActor, critic: AgentCritics, obs: Tensor, noise: Tensor) -> Tensor:
    """BEAR's action selection: per state and agent, the candidate ``tanh(mean + std * noise_k)`` with the highest
    ``min_e Q_e``. ``obs [B, N, O]`` (normalised), ``noise [K, A]`` -> ``[B, N, A]``.
    """
    mean, log_std = actor.distribution(obs)  # [B, N, A] each
    actions = torch.tanh(mean + log_std.exp() * noise[:, None, None, :])  # [K, B, N, A]
    q = critic(obs, actions).amin(-1)  # [K, B, N]
    best = q.argmax(0)  # [B, N]
    index = best.unsqueeze(0).unsqueeze(-1).expand(1, *actions.shape[1:])  # [1, B, N, A]
    return actions.gather(0, index).squeeze(0)  # [B, N, A]


# ------------------------------------------------------------------------------------------------------ algorithm


class BEAR:
    """BEAR update rule (module docstring). Single-agent: ``Problem.n_agents`` must be 1."""

    config_cls: ClassVar[type] = BEARConfig
    multi_agent: ClassVar[bool] = False

    def __init__(self, config: BEARConfig, problem: Problem, device: torch.device) -> None:
        if problem.n_agents != 1:
            raise ValueError(f"BEAR is single-agent but the dataset has {problem.n_agents} agents; "
                             "use a multi-agent algorithm (ma-td3bc, ma-cql, ma-icq, omar)")
        if config.mmd_kernel not in MMD_KERNELS:
            raise ValueError(f"mmd_kernel must be one of {MMD_KERNELS}, got {config.mmd_kernel!r}")
        if not 1 <= config.n_actor_q_samples <= config.n_mmd_samples:
            raise ValueError(f"n_actor_q_samples must be in [1, n_mmd_samples={config.n_mmd_samples}], "
                             f"got {config.n_actor_q_samples}; lower it or raise n_mmd_samples")
        self.config, self.problem, self.device = config, problem, torch.device(device)
        n, o, a = problem.n_agents, problem.obs_dim, problem.action_dim
        self.obs_norm = ObsNormalizer(problem, enabled=config.normalize_obs).to(self.device)
        self.actor = GaussianActor(n, o, a, config.hidden_sizes).to(self.device)
        self.actor_target = frozen_copy(self.actor)
        self.critic = AgentCritics(n, o, a, config.hidden_sizes, n_critics=config.n_critics).to(self.device)
        self.critic_target = frozen_copy(self.critic)
        self.vae = ConditionalVAE(n, o, a, config.vae_hidden_sizes, config.latent_factor * a).to(self.device)
        self.log_lagrange = torch.full((n,), math.log(config.initial_lagrange), device=self.device, requires_grad=True)
        self.actor_opt = make_adam(self.actor.parameters(), config.actor_lr)
        self.critic_opt = make_adam(self.critic.parameters(), config.critic_lr)
        self.vae_opt = make_adam(self.vae.parameters(), config.vae_lr)
        self.lagrange_opt = make_adam([self.log_lagrange], config.lagrange_lr)
        self.act_noise = probe_noise(config.n_action_samples, a, self.device)  # [K, A]
        self.step = 0  # Python counter: the warm-up switch never reads a tensor

    def _amp(self) -> torch.autocast:
        """bfloat16 autocast around network calls when ``bf16`` is on (a no-op context otherwise)."""
        return bf16_autocast(self.device, self.config.bf16)

    def graph_key(self) -> tuple:
        """The branch the next ``update`` takes (warm-up or not); a CUDA-graph runner captures one graph per key."""
        return (self.step < self.config.warmup_steps,)

    def update(self, batch: Batch) -> dict[str, Tensor]:
        c = self.config
        obs, next_obs = self.obs_norm(batch.obs), self.obs_norm(batch.next_obs)  # [B, N, O]

        # 1. behaviour model beta: conditional VAE by maximum likelihood (ELBO) on the data.
        with self._amp():
            vae_loss = self.vae.loss(obs, batch.action, kl_weight=c.vae_kl_weight).float().sum()
        optimizer_step(self.vae_opt, vae_loss)

        # 2. critics: soft clipped double-Q target over target-actor samples.
        with torch.no_grad(), self._amp():
            target = bear_td_target(self.actor_target, self.critic_target, next_obs, batch.reward, batch.done,
                                    c.gamma, c.n_target_samples, c.target_lambda).float()  # [B, N, 1]
        with self._amp():
            q_data = self.critic(obs, batch.action).float()  # [B, N, E]
        critic_loss = (q_data - target).square().mean(dim=(0, 1)).sum()  # sum of the critics' MSEs
        optimizer_step(self.critic_opt, critic_loss)

        # 3. actor: maximise min_e Q under the MMD constraint (MMD only during warm-up).
        with self._amp():
            raw_pi = sample_raw_actions(self.actor, obs, c.n_mmd_samples, c.actor_noise_clip).float()  # [K, B, N, A]
        with torch.no_grad(), self._amp():
            raw_beta = self.vae.sample_raw(obs, c.n_mmd_samples)[:, :, 0].float()  # [B, N, K, A]
        mmd = mmd_distance(raw_pi.permute(1, 2, 0, 3), raw_beta, c.mmd_kernel, c.mmd_sigma)  # [B, N]
        lagrange = self.log_lagrange.exp().detach()  # [N]
        constraint = (lagrange * mmd.mean(0)).sum()
        if self.step < c.warmup_steps:
            actor_loss = constraint
            q_pi = torch.zeros((), device=self.device)
        else:
            with self._amp():
                q_pi = self.critic(obs, torch.tanh(raw_pi[: c.n_actor_q_samples])).float()  # [K', B, N, E]
            q_pi = actor_q_term(q_pi)  # [B, N]
            actor_loss = -q_pi.mean(0).sum() + constraint
        optimizer_step(self.actor_opt, actor_loss, params=list(self.actor.parameters()))

        # 4. Lagrange multiplier: dual ascent on alpha * (MMD - epsilon), log alpha clamped (tensor op, no sync).
        lagrange_loss = -(self.log_lagrange.exp() * (mmd.detach().mean(0) - c.mmd_threshold)).sum()
        optimizer_step(self.lagrange_opt, lagrange_loss)
        with torch.no_grad():
            self.log_lagrange.clamp_(c.log_lagrange_min, c.log_lagrange_max)

        # 5. targets.
        soft_update(self.critic_target, self.critic, c.polyak)
        soft_update(self.actor_target, self.actor, c.polyak)
        self.step += 1
        return {
            "critic_loss": critic_loss.detach(),
            "actor_loss": actor_loss.detach(),
            "vae_loss": vae_loss.detach(),
            "mmd": mmd.detach().mean(),
            "lagrange": self.log_lagrange.detach().exp().mean(),
            "q_data": q_data.detach().mean(),
            "q_pi": q_pi.detach().mean(),
            "target": target.mean(),
        }

    @torch.no_grad()
    def act(self, obs: Tensor) -> Tensor:
        """``[E, N, O]`` raw observations -> ``[E, N, A]``: the best of ``n_action_samples`` actor samples by Q."""
        return best_of_samples(self.actor, self.critic, self.obs_norm(obs), self.act_noise)

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            **module_states(self, _STATE_NAMES),
            "log_lagrange": self.log_lagrange.detach().clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        load_module_states(self, state, _STATE_NAMES)
        with torch.no_grad():
            self.log_lagrange.copy_(state["log_lagrange"])


__all__ = [
    "BEAR",
    "BEARConfig",
    "ConditionalVAE",
    "actor_q_term",
    "bear_td_target",
    "best_of_samples",
    "mmd_distance",
    "probe_noise",
    "sample_raw_actions",
    "soft_clipped_target",
]
