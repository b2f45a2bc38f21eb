"""Small building blocks every algorithm imports: observation normaliser, actors, critic ensembles, optimizers.

Everything is batched over agents (and critic ensembles) with ``offline_bench.nn.StackedMLP``: one network per
group, G = agents x ensemble, one kernel per layer for all of them. Public tensors are agent-last-but-one:
``obs [B, N, O]``, ``action [B, N, A]``, critic values ``[B, N, E]``. Extra leading axes (``[K, B, N, A]`` for K
sampled actions per state) are accepted by the critic and flattened inside.
"""
from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from offline_bench.algos.base import Problem
from offline_bench.nn import StackedBatchNorm, StackedMLP, agents_to_groups, groups_to_agents, stacked_linear

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # rlkit's SAC bounds, also CORL's and d3rlpy's (CQL sets its authors' -5)
_LOG2 = math.log(2.0)


class ObsNormalizer(nn.Module):
    """``(obs - mean) / std`` with the dataset statistics from ``Problem``: ``[..., N, O] -> [..., N, O]``.

    The statistics are buffers, so they travel with ``state_dict`` and the device.
    """

    def __init__(self, problem: Problem, enabled: bool = True) -> None:
        super().__init__()
        mean = torch.as_tensor(problem.obs_mean, dtype=torch.float32).reshape(problem.n_agents, problem.obs_dim)
        std = torch.as_tensor(problem.obs_std, dtype=torch.float32).reshape(problem.n_agents, problem.obs_dim)
        if not enabled:
            mean, std = torch.zeros_like(mean), torch.ones_like(std)
        if bool((std <= 0).any()):
            raise ValueError("Problem.obs_std must be > 0 everywhere (use 1 on padding and constant features)")
        self.register_buffer("mean", mean)  # [N, O]
        self.register_buffer("inv_std", 1.0 / std)  # [N, O]

    def forward(self, obs: Tensor) -> Tensor:
        return (obs - self.mean) * self.inv_std  # [..., N, O]


class DeterministicActor(nn.Module):
    """One tanh policy per agent: ``[B, N, O] -> [B, N, A]`` in [-1, 1] (TD3, TD3+BC, OMAR).

    ``final_init`` draws the output layer's weights from U(-final_init, final_init) (3e-3 in the OMAR code).
    """

    def __init__(
        self,
        n_agents: int,
        obs_dim: int,
        action_dim: int,
        hidden_sizes: Sequence[int],
        input_norm: bool = False,
        final_init: float | None = None,
    ) -> None:
        super().__init__()
        self.n_agents, self.obs_dim, self.action_dim = n_agents, obs_dim, action_dim
        self.net = StackedMLP(n_agents, obs_dim, hidden_sizes, action_dim, input_norm=input_norm)
        if final_init is not None:  # small last layer so tanh starts unsaturated (MADDPG/OMAR authors' init)
            nn.init.uniform_(self.net.out.weight, -final_init, final_init)

    def forward(self, obs: Tensor) -> Tensor:
        assert obs.dim() == 3 and obs.shape[1:] == (self.n_agents, self.obs_dim), f"obs {tuple(obs.shape)}"
        out = self.net(agents_to_groups(obs))  # [N, B, A]
        return torch.tanh(out).transpose(0, 1)  # [B, N, A]


def tanh_gaussian_log_prob(pre_tanh: Tensor, mean: Tensor, log_std: Tensor) -> Tensor:
    """Log-density of ``tanh(u)``, ``u ~ Normal(mean, exp(log_std))``, summed over the action axis: ``[..., A] -> [...]``.

    Uses the stable identity ``log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u))``.
    """
    std = log_std.exp()
    normal = -0.5 * ((pre_tanh - mean) / std).square() - log_std - 0.5 * math.log(2 * math.pi)  # [..., A]
    squash = 2.0 * (_LOG2 - pre_tanh - nn.functional.softplus(-2.0 * pre_tanh))  # [..., A]
    return (normal - squash).sum(-1)  # [...]


def tanh_gaussian_sample(mean: Tensor, log_std: Tensor, n_samples: int | None = None) -> tuple[Tensor, Tensor]:
    """Reparameterised ``tanh(mean + std * eps)`` and its log-density: ``[..., A] -> ([..., A], [...])``, or with
    ``n_samples=K`` ``([K, ..., A], [K, ...])``. Lets a caller draw from one ``distribution()`` forward several times."""
    shape = mean.shape if n_samples is None else (n_samples, *mean.shape)
    pre_tanh = mean + log_std.exp() * torch.randn(shape, device=mean.device, dtype=mean.dtype)  # [(K,) ..., A]
    return torch.tanh(pre_tanh), tanh_gaussian_log_prob(pre_tanh, mean, log_std)


class GaussianActor(nn.Module):
    """One tanh-Gaussian policy per agent (SAC, CQL, BEAR): mean and log-std heads from one stacked MLP.

    ``sample(obs)`` draws reparameterised actions with their log-probabilities; ``sample(obs, k)`` draws K actions
    per state from one network forward. ``deterministic(obs)`` is ``tanh(mean)`` for evaluation.
    """

    def __init__(
        self,
        n_agents: int,
        obs_dim: int,
        action_dim: int,
        hidden_sizes: Sequence[int],
        input_norm: bool = False,
        log_std_min: float = LOG_STD_MIN,
        log_std_max: float = LOG_STD_MAX,
    ) -> None:
        super().__init__()
        self.n_agents, self.obs_dim, self.action_dim = n_agents, obs_dim, action_dim
        self.log_std_min, self.log_std_max = log_std_min, log_std_max
        self.net = StackedMLP(n_agents, obs_dim, hidden_sizes, 2 * action_dim, input_norm=input_norm)

    def distribution(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """``obs [B, N, O] -> (mean [B, N, A], log_std [B, N, A])`` of the pre-tanh Gaussian."""
        assert obs.dim() == 3 and obs.shape[1:] == (self.n_agents, self.obs_dim), f"obs {tuple(obs.shape)}"
        out = self.net(agents_to_groups(obs)).transpose(0, 1)  # [B, N, 2A]
        mean, log_std = out.chunk(2, dim=-1)  # [B, N, A] each
        return mean, log_std.clamp(self.log_std_min, self.log_std_max)

    def sample(self, obs: Tensor, n_samples: int | None = None) -> tuple[Tensor, Tensor]:
        """Reparameterised samples: ``[B, N, O] -> (action [B, N, A], log_prob [B, N])``, or with ``n_samples=K``
        ``(action [K, B, N, A], log_prob [K, B, N])``."""
        mean, log_std = self.distribution(obs)
        return tanh_gaussian_sample(mean, log_std, n_samples)

    def log_prob(self, obs: Tensor, action: Tensor, eps: float = 1e-6) -> Tensor:
        """Log-density of given actions (e.g. dataset actions, for behaviour cloning): ``[B, N, A] -> [B, N]``."""
        mean, log_std = self.distribution(obs)
        pre_tanh = torch.atanh(action.clamp(-1.0 + eps, 1.0 - eps))  # [B, N, A]
        return tanh_gaussian_log_prob(pre_tanh, mean, log_std)

    def deterministic(self, obs: Tensor) -> Tensor:
        mean, _ = self.distribution(obs)
        return torch.tanh(mean)  # [B, N, A]

    def forward(self, obs: Tensor) -> Tensor:
        return self.deterministic(obs)


class AgentCritics(nn.Module):
    """E critics per agent as ONE stacked MLP over N x E groups: ``forward(obs, action) -> [..., N, E]``.

    - decentralized (default): critic i of agent n sees ``(o_n, a_n)`` (independent learners, OMAR's setting);
    - ``centralized=True``: every critic of agent n sees the state ``s = (o_1..o_N)`` and a joint action
      ``(a_1..a_N)`` (MATD3-style). ``forward(obs, action, others=data_action)`` puts agent n's own action from
      ``action`` and the other agents' from ``others`` (the actor update: ``a_n = pi_n(o_n)``, ``a_-n`` from data).
      Decentralized critics ignore ``others``.
    - ``input_norm=True`` adds a per-group input BatchNorm (the OMAR authors' MPE networks).

    ``obs [..., N, O]`` may have fewer leading axes than ``action [..., N, A]``; it is broadcast (K sampled actions
    per state need no copies of the observations by the caller).
    """

    def __init__(
        self,
        n_agents: int,
        obs_dim: int,
        action_dim: int,
        hidden_sizes: Sequence[int],
        n_critics: int = 2,
        centralized: bool = False,
        input_norm: bool = False,
        layer_norm: bool = False,
    ) -> None:
        super().__init__()
        self.n_agents, self.obs_dim, self.action_dim = n_agents, obs_dim, action_dim
        self.n_critics, self.centralized = n_critics, centralized
        in_dim = (obs_dim + action_dim) * (n_agents if centralized else 1)
        self.net = StackedMLP(
            n_agents * n_critics, in_dim, hidden_sizes, 1, input_norm=input_norm, layer_norm=layer_norm
        )
        if centralized:
            self.register_buffer("own", torch.eye(n_agents, dtype=torch.bool).unsqueeze(-1), persistent=False)

    def _inputs(self, obs: Tensor, action: Tensor, others: Tensor | None) -> Tensor:
        """Each agent's critic input: ``[..., N, D]``."""
        n = self.n_agents
        obs = obs.expand(*action.shape[:-1], self.obs_dim)  # [..., N, O]
        if not self.centralized:
            return torch.cat([obs, action], dim=-1)  # [..., N, O+A]
        lead = action.shape[:-2]
        state = obs.flatten(-2).unsqueeze(-2).expand(*lead, n, n * self.obs_dim)  # [..., N, N*O]
        if others is None:
            joint = action.flatten(-2).unsqueeze(-2).expand(*lead, n, n * self.action_dim)  # [..., N, N*A]
        else:
            # joint[..., i, j] = action[..., j] if i == j else others[..., j]
            joint = torch.where(self.own, action.unsqueeze(-3), others.unsqueeze(-3))  # [..., N, N, A]
            joint = joint.flatten(-2)  # [..., N, N*A]
        return torch.cat([state, joint], dim=-1)  # [..., N, N*(O+A)]

    def _groups(self, flat: Tensor) -> Tensor:
        """``[B', N, D] -> [N*E, B', D]`` (agent-major groups, as ``agents_to_groups``).

        One agent without input BatchNorm: a broadcast view (no copy). Otherwise one copy laid out ``[B', N*E, D]``
        and returned transposed, so the input BatchNorm's ``[B', G*D]`` view of it is free (the agent-major
        ``[G, B', D]`` copy it replaces needed a second one there).
        """
        b, n, d = flat.shape
        if n == 1 and self.net.input_norm is None:
            return flat.transpose(0, 1).expand(self.n_critics, b, d)  # [E, B', D]
        rows = flat.unsqueeze(2).expand(b, n, self.n_critics, d).reshape(b, n * self.n_critics, d)  # [B', N*E, D]
        return rows.transpose(0, 1)  # [N*E, B', D]

    def forward(self, obs: Tensor, action: Tensor, others: Tensor | None = None) -> Tensor:
        assert action.shape[-2:] == (self.n_agents, self.action_dim), f"action {tuple(action.shape)}"
        assert obs.shape[-2:] == (self.n_agents, self.obs_dim), f"obs {tuple(obs.shape)}"
        x = self._inputs(obs, action, others)  # [..., N, D]
        lead = x.shape[:-2]
        flat = x.reshape(-1, self.n_agents, x.shape[-1])  # [B', N, D]
        q = self.net(self._groups(flat))  # [N*E, B', 1]
        q = groups_to_agents(q, self.n_agents).squeeze(-1)  # [B', N, E]
        return q.reshape(*lead, self.n_agents, self.n_critics)  # [..., N, E]

    def first(self, obs: Tensor, action: Tensor, others: Tensor | None = None) -> Tensor:
        """Only critic 0 of each agent (TD3's actor objective): ``-> [..., N]``.

        Runs the stacked layers on every E-th group (strided weight views), so the actor step pays for one critic
        per agent, not E. Input BatchNorm in eval mode (running statistics, nothing updated) takes the same path
        with critic 0's statistics; in train mode it runs all critics, so their statistics keep updating together
        (as the authors' one BatchNorm shared by both heads), and keeps the first.
        """
        norm = self.net.input_norm
        if self.n_critics == 1 or (norm is not None and (norm.training or norm.norm.running_mean is None)):
            return self.forward(obs, action, others)[..., 0]
        return self.first_strided(obs, action, others)

    def first_strided(self, obs: Tensor, action: Tensor, others: Tensor | None = None,
                      batch_stats: bool = False) -> Tensor:
        """Critic 0 of each agent alone, through every E-th group of the stacked layers (strided weight views):
        ``-> [..., N]``. An input BatchNorm normalises with critic 0's running statistics, or with
        ``batch_stats=True`` with this input's batch statistics (train mode's normalisation) without updating the
        running ones (OMAR's sampling search)."""
        e, n = self.n_critics, self.n_agents
        x = self._inputs(obs, action, others)  # [..., N, D]
        lead = x.shape[:-2]
        h = x.reshape(-1, n, x.shape[-1]).transpose(0, 1)  # [N, B', D]
        if self.net.input_norm is not None:
            h = _first_of_each_agent_norm(self.net.input_norm, h, n, e, batch_stats)  # [N, B', D]
        for i, layer in enumerate(self.net.hidden):
            h = torch.baddbmm(layer.bias[::e], h, layer.weight[::e])  # [N, B', H]
            if self.net.norms is not None:
                h = self.net.norms[i](h)
            h = h.relu_() if self.net.activation is torch.relu else self.net.activation(h)  # in place: see StackedMLP
        q = stacked_linear(h, self.net.out.weight[::e], self.net.out.bias[::e])  # [N, B', 1]
        return q.squeeze(-1).transpose(0, 1).reshape(*lead, n)  # [..., N]


def _first_of_each_agent_norm(norm: StackedBatchNorm, x: Tensor, n_agents: int, n_critics: int,
                              batch_stats: bool) -> Tensor:
    """The input BatchNorm of ``N * E`` agent-major groups applied to critic 0 of each agent only: ``x [N, B', D]
    -> [N, B', D]``, on those groups' running statistics or (``batch_stats``) on x's own, updating nothing."""
    bn, d = norm.norm, x.shape[-1]

    def pick(t: Tensor | None) -> Tensor | None:  # [N*E*D] -> [N*D], critic 0's features
        return None if t is None else t.view(n_agents, n_critics, d)[:, 0].reshape(-1)

    mean, var = (None, None) if batch_stats else (pick(bn.running_mean), pick(bn.running_var))
    flat = x.transpose(0, 1).reshape(x.shape[1], n_agents * d)  # [B', N*D]
    flat = F.batch_norm(flat, mean, var, pick(bn.weight), pick(bn.bias), training=batch_stats, eps=bn.eps)
    return flat.reshape(-1, n_agents, d).transpose(0, 1)  # [N, B', D]


@contextlib.contextmanager
def eval_mode(*modules: nn.Module) -> Iterator[None]:
    """Run ``modules`` in eval mode (BatchNorm uses its running statistics), then restore each one's mode."""
    modes = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(modules, modes):
            m.train(mode)


def td_target(reward: Tensor, done: Tensor, next_q: Tensor, gamma: float) -> Tensor:
    """``y = r + gamma * (1 - done) * Q'``: reward ``[B, N, 1]``, done ``[B, 1]``, next_q ``[B, N, E]`` -> ``[B, N, E]``."""
    not_done = (1.0 - done).unsqueeze(-1)  # [B, 1, 1]
    return reward + gamma * not_done * next_q  # [B, N, E]


def frozen_copy(module: nn.Module) -> nn.Module:
    """A target network: a deep copy with gradients off (update it with ``offline_bench.nn.soft_update``)."""
    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


def make_adam(params: Iterable[nn.Parameter] | Iterable[Tensor], lr: float, weight_decay: float = 0.0) -> torch.optim.Adam:
    """Adam with the fused kernel (CPU and CUDA): the optimizer step is a large share of a small network's update."""
    params = list(params)
    device = params[0].device if params else torch.device("cpu")
    if device.type in ("cpu", "cuda"):
        try:
            return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
        except RuntimeError:  # torch < 2.4 has no fused CPU kernel
            pass
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, foreach=True)


def action_mask(problem: Problem, device: torch.device) -> Tensor:
    """``[N, A]``: 1 on each agent's true action dimensions, 0 on padding."""
    mask = torch.zeros(problem.n_agents, problem.action_dim, device=device)
    for n, size in enumerate(problem.action_sizes):
        mask[n, :size] = 1.0
    return mask


def own_action_sizes(problem: Problem, device: torch.device) -> Tensor | None:
    """``[N]`` each agent's true action size where agents' sizes differ (padded to A, as on world), else None."""
    if all(size == problem.action_dim for size in problem.action_sizes):
        return None
    return torch.tensor(problem.action_sizes, dtype=torch.float32, device=device)


def action_mean(x: Tensor, action_sizes: Tensor | None, over_batch: bool = True) -> Tensor:
    """Per-agent mean of ``x [B, N, A]`` over each agent's OWN action dimensions (and the batch): ``-> [N]``, or
    ``[B, N]`` with ``over_batch=False``. Padded dimensions (zero in x) are not counted, as in the authors' per-agent
    ``F.mse_loss`` over an agent's own actions; ``action_sizes`` None (every agent uses all A) is the plain mean."""
    if action_sizes is None:
        return x.mean(dim=(0, 2)) if over_batch else x.mean(-1)
    per_row = x.sum(-1) / action_sizes  # [B, N]
    return per_row.mean(0) if over_batch else per_row


@torch.no_grad()
def deterministic_act(
    actor: nn.Module, normalizer: ObsNormalizer, obs: Tensor, mask: Tensor | None = None
) -> Tensor:
    """Evaluation actions from raw observations: ``[E, N, O] -> [E, N, A]``, ``actor(normalizer(obs))`` with the
    actor in eval mode (BatchNorm uses its running statistics; its mode is restored), times ``mask [N, A]`` if given."""
    obs = obs.to(normalizer.mean.device, torch.float32)  # [E, N, O]
    with eval_mode(actor):
        action = actor(normalizer(obs))  # [E, N, A]
    return action if mask is None else action * mask  # [E, N, A]


def module_states(owner: object, names: Sequence[str]) -> dict[str, Any]:
    """``{name: owner.<name>.state_dict()}`` for modules and optimizers; the caller adds its counters and tensors."""
    return {name: getattr(owner, name).state_dict() for name in names}


def load_module_states(owner: object, state: dict[str, Any], names: Sequence[str]) -> None:
    """Inverse of ``module_states``: ``owner.<name>.load_state_dict(state[name])`` for each name."""
    for name in names:
        getattr(owner, name).load_state_dict(state[name])


# The ``TD3Networks`` fields a checkpoint carries (parameter lists and the mask are rebuilt by ``td3_networks``).
TD3_STATE_NAMES = ("actor", "critic", "actor_target", "critic_target", "actor_opt", "critic_opt", "normalizer")


@dataclass(frozen=True)
class TD3Networks:
    """What every TD3-backbone algorithm (TD3+BC, MA-TD3+BC, MA-CQL, MA-ICQ, OMAR) builds: see ``td3_networks``."""

    normalizer: ObsNormalizer
    actor: DeterministicActor
    critic: AgentCritics
    actor_target: DeterministicActor | None  # None when the algorithm has no target actor (MA-ICQ)
    critic_target: AgentCritics
    actor_params: list[nn.Parameter]
    critic_params: list[nn.Parameter]
    actor_opt: torch.optim.Adam
    critic_opt: torch.optim.Adam
    mask: Tensor  # [N, A]: 1 on each agent's true action dimensions, 0 on padding


def adopt_networks(owner: object, nets: TD3Networks) -> None:
    """Make every field of ``nets`` an attribute of ``owner`` (``owner.actor``, ``owner.critic_opt``, ``owner.mask``,
    ...): the TD3-backbone algorithms use them by these names in their updates and checkpoints. A field that is
    None (MA-ICQ's target actor) is left out, so the algorithm has no such attribute."""
    for field in fields(nets):
        value = getattr(nets, field.name)
        if value is not None:
            setattr(owner, field.name, value)


def td3_networks(
    problem: Problem,
    device: torch.device,
    hidden_sizes: Sequence[int],
    n_critics: int,
    actor_lr: float,
    critic_lr: float,
    normalize_obs: bool,
    centralized: bool = False,
    input_norm: bool = False,
    actor_final_init: float = 0.0,
    actor_weight_decay: float = 0.0,
    actor_target: bool = True,
    eval_targets: bool = False,
) -> TD3Networks:
    """Normaliser, deterministic actor, critic ensemble, frozen targets, Adam optimizers and action mask.

    Construction order is fixed (actor, then critics, then targets as copies), so one seed gives the same weights
    in every algorithm. ``actor_final_init <= 0`` keeps the default output-layer init; ``eval_targets`` puts the
    targets in eval mode (their BatchNorm normalises with the running statistics).
    """
    n, o, a = problem.n_agents, problem.obs_dim, problem.action_dim
    final_init = actor_final_init if actor_final_init > 0 else None
    normalizer = ObsNormalizer(problem, enabled=normalize_obs).to(device)
    actor = DeterministicActor(n, o, a, hidden_sizes, input_norm=input_norm, final_init=final_init).to(device)
    critic = AgentCritics(
        n, o, a, hidden_sizes, n_critics, centralized=centralized, input_norm=input_norm
    ).to(device)
    actor_tgt = frozen_copy(actor) if actor_target else None
    critic_tgt = frozen_copy(critic)
    if eval_targets:
        critic_tgt.eval()
        if actor_tgt is not None:
            actor_tgt.eval()
    actor_params, critic_params = list(actor.parameters()), list(critic.parameters())
    return TD3Networks(
        normalizer=normalizer,
        actor=actor,
        critic=critic,
        actor_target=actor_tgt,
        critic_target=critic_tgt,
        actor_params=actor_params,
        critic_params=critic_params,
        actor_opt=make_adam(actor_params, actor_lr, weight_decay=actor_weight_decay),
        critic_opt=make_adam(critic_params, critic_lr),
        mask=action_mask(problem, device),
    )


def clip_grad_norm(params: Iterable[Tensor], max_norm: float | None, n_agents: int = 1) -> Tensor | None:
    """Clip gradient norms without a host sync; ``None`` or <= 0 disables clipping. Returns the norms before
    clipping (``[n_agents]``).

    Each agent's gradient is clipped on its own, as when every agent has its own optimizer (the MADDPG/OMAR
    code). This needs agent-major parameters: every tensor reshapes to ``[n_agents, -1]`` with row n holding
    agent n's entries, which holds for ``StackedLinear``/``StackedBatchNorm`` weights over G = agents x ensemble
    groups and for per-agent vectors like ``log_alpha [N]``.
    """
    if max_norm is None or max_norm <= 0:
        return None
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return None
    rows = [g.view(n_agents, -1) for g in grads]  # [N, numel / N] each
    norms = torch.stack([r.square().sum(1) for r in rows]).sum(0).sqrt()  # [N]
    coef = (max_norm / (norms + 1e-6)).clamp(max=1.0).unsqueeze(1)  # [N, 1]
    torch._foreach_mul_(rows, [coef] * len(rows))
    return norms


def optimizer_step(optimizer: torch.optim.Optimizer, loss: Tensor, params: Sequence[Tensor] | None = None,
                   max_grad_norm: float | None = None, n_agents: int = 1) -> Tensor | None:
    """``zero_grad -> backward -> (clip per agent) -> step``. With ``params``, backward computes gradients for
    those only, so an actor loss that goes through a critic does not compute the critic's weight gradients.
    Returns the per-agent gradient norms before clipping (``[n_agents]``), or None when clipping is off."""
    optimizer.zero_grad(set_to_none=True)
    if params is None:
        params = [p for group in optimizer.param_groups for p in group["params"]]
    loss.backward(inputs=list(params))
    norms = clip_grad_norm(params, max_grad_norm, n_agents)
    if not fused_adam_step(optimizer):
        optimizer.step()
    return norms


def fused_adam_step(optimizer: torch.optim.Optimizer) -> bool:
    """``optimizer.step()`` of a fused ``torch.optim.Adam`` (``make_adam``) as its two kernels, without the Python
    bookkeeping around them; returns False, having done nothing, where that shortcut does not apply.

    ``Adam.step`` regroups the parameters, looks up their state and dispatches to ``_fused_adam`` on every call,
    about 60 us on this project's CPU against ~100 us for the kernels of a 256x256 critic, and an update takes up
    to five optimizer steps. The shortcut makes the same two calls ``_fused_adam`` makes (``_foreach_add_`` on the
    step counters, then ``_fused_adam_``) with the same arguments, so parameters and state are bit-identical
    (tested). It applies to one param group with ``fused=True`` and default flags (no amsgrad, maximize,
    capturable, differentiable, decoupled weight decay), every parameter with a gradient and an initialised state
    on one device; the first step (which creates the state), a CUDA-graph capture (``capturable``) and anything
    else go through ``optimizer.step()``.
    """
    if type(optimizer) is not torch.optim.Adam or len(optimizer.param_groups) != 1:
        return False
    group = optimizer.param_groups[0]
    if (not group["fused"] or group["amsgrad"] or group["maximize"] or group["capturable"]
            or group["differentiable"] or group.get("decoupled_weight_decay", False)
            or getattr(optimizer, "grad_scale", None) is not None or getattr(optimizer, "found_inf", None) is not None):
        return False
    params, state = group["params"], optimizer.state
    grads = [p.grad for p in params]
    if not params or len(state) != len(params) or any(g is None for g in grads):
        return False
    device = params[0].device
    if any(p.device != device or p.dtype != params[0].dtype for p in params):
        return False
    lr, (beta1, beta2) = group["lr"], group["betas"]
    if any(isinstance(v, Tensor) for v in (lr, beta1, beta2)):
        return False
    states = [state[p] for p in params]
    steps = [s["step"] for s in states]
    torch._foreach_add_(steps, 1)
    torch._fused_adam_(
        params, grads, [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states], [], steps,
        amsgrad=False, lr=lr, beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"],
        eps=group["eps"], maximize=False, grad_scale=None, found_inf=None,
    )
    return True


def bf16_autocast(device: torch.device, enabled: bool) -> torch.autocast:
    """Network matmuls in bfloat16 (parameters, gradients and optimizer state stay float32). About 3x faster
    matmuls on CPUs with AVX512-BF16/AMX and on recent GPUs, at bfloat16's ~3 significant digits; cast network
    outputs back with ``.float()`` before losses (autocast keeps reductions such as logsumexp in bfloat16).
    While a CUDA graph is being captured (``train.graphs``) the cast-weight cache is off, as CUDA graphs require."""
    capturing = enabled and device.type == "cuda" and torch.cuda.is_current_stream_capturing()
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled, cache_enabled=not capturing)


def uniform_actions(shape: Sequence[int], device: torch.device, dtype: torch.dtype = torch.float32) -> Tensor:
    """Uniform random actions in [-1, 1] with torch's global generator."""
    return torch.rand(*shape, device=device, dtype=dtype) * 2.0 - 1.0


__all__ = [
    "TD3_STATE_NAMES",
    "AgentCritics",
    "DeterministicActor",
    "GaussianActor",
    "ObsNormalizer",
    "TD3Networks",
    "action_mask",
    "action_mean",
    "bf16_autocast",
    "clip_grad_norm",
    "deterministic_act",
    "eval_mode",
    "frozen_copy",
    "fused_adam_step",
    "load_module_states",
    "make_adam",
    "module_states",
    "optimizer_step",
    "own_action_sizes",
    "tanh_gaussian_log_prob",
    "tanh_gaussian_sample",
    "td3_networks",
    "td_target",
    "uniform_actions",
]
