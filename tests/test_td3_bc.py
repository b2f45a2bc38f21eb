"""TD3+BC and MA-TD3+BC maths: the BC actor loss, one update against a hand-written reference, and the batched
multi-agent update against a loop of independent single-agent learners with copied weights."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from offline_bench.algos.base import Problem
from offline_bench.algos.common import clip_grad_norm
from offline_bench.algos.ma_td3_bc import MATD3BC, MATD3BCConfig
from offline_bench.algos.td3_bc import TD3BC, TD3BCConfig, bc_actor_loss
from offline_bench.batch import Batch

torch.set_num_threads(1)


def problem(n_agents: int, obs_dim: int = 4, action_dim: int = 2, seed: int = 0) -> Problem:
    rng = np.random.default_rng(seed)
    return Problem(
        n_agents, obs_dim, action_dim, (obs_dim,) * n_agents, (action_dim,) * n_agents,
        rng.normal(size=(n_agents, obs_dim)).astype(np.float32),
        rng.uniform(0.5, 2.0, size=(n_agents, obs_dim)).astype(np.float32), 1000,
    )


def batch(p: Problem, b: int, seed: int) -> Batch:
    g = torch.Generator().manual_seed(seed)
    n, o, a = p.n_agents, p.obs_dim, p.action_dim
    return Batch(
        obs=torch.randn(b, n, o, generator=g), action=torch.rand(b, n, a, generator=g) * 2 - 1,
        reward=torch.randn(b, n, 1, generator=g), next_obs=torch.randn(b, n, o, generator=g),
        done=(torch.rand(b, 1, generator=g) < 0.2).float(), next_action=torch.zeros(b, n, a),
        next_action_valid=torch.zeros(b, 1),
    )


def test_bc_actor_loss_matches_per_agent_td3_bc_formula() -> None:
    torch.manual_seed(0)
    q_pi = torch.randn(8, 3) * 5  # [B, N]
    pi, data = torch.rand(8, 3, 2) * 2 - 1, torch.rand(8, 3, 2) * 2 - 1
    expected = sum(
        -(2.5 / q_pi[:, n].abs().mean()) * q_pi[:, n].mean() + F.mse_loss(pi[:, n], data[:, n]) for n in range(3)
    )
    torch.testing.assert_close(bc_actor_loss(q_pi, pi, data, 2.5), expected)


def test_bc_actor_loss_lambda_is_detached() -> None:
    q_pi = torch.tensor([[1.0], [-3.0], [2.0], [4.0]], requires_grad=True)  # [B=4, N=1], mean|Q| = 2.5
    pi = torch.zeros(4, 1, 2)
    bc_actor_loss(q_pi, pi, pi, alpha=2.5).backward()
    # lambda = 2.5 / 2.5 = 1 treated as a constant: d/dq of -lambda * mean(q) is -1/B for every entry.
    torch.testing.assert_close(q_pi.grad, torch.full((4, 1), -0.25))


def _mlp(x: Tensor, layers: list[tuple[Tensor, Tensor]]) -> Tensor:
    for i, (w, b) in enumerate(layers):
        x = x @ w + b
        if i < len(layers) - 1:
            x = torch.relu(x)
    return x


def _group(module: torch.nn.Module, g: int) -> list[tuple[Tensor, Tensor]]:
    """Group g's (weight [in, out], bias [out]) of a StackedMLP, detached copies."""
    layers = [*module.net.hidden, module.net.out]
    return [(layer.weight[g].detach().clone(), layer.bias[g, 0].detach().clone()) for layer in layers]


def test_td3_bc_update_matches_hand_written_reference() -> None:
    """One critic + actor update (policy_freq 1) against the reference maths on copied weights: the critic loss,
    the actor loss (through the just-stepped critic) and the target networks' polyak movement."""
    p = problem(1)
    config = dataclasses.replace(TD3BCConfig(), hidden_sizes=(8, 8), policy_freq=1, polyak=0.5)
    torch.manual_seed(0)
    algo = TD3BC(config, p, torch.device("cpu"))
    actor, q1, q2 = _group(algo.actor, 0), _group(algo.critic, 0), _group(algo.critic, 1)
    bt = batch(p, 16, seed=1)
    mean, std = torch.as_tensor(p.obs_mean[0]), torch.as_tensor(p.obs_std[0])
    s, s2 = (bt.obs[:, 0] - mean) / std, (bt.next_obs[:, 0] - mean) / std  # [B, O]
    a, r, d = bt.action[:, 0], bt.reward[:, 0], bt.done  # [B, A], [B, 1], [B, 1]

    torch.manual_seed(5)
    noise = (torch.randn(16, 1, 2) * 0.2).clamp(-0.5, 0.5)[:, 0]  # the same draw update() makes
    a2 = (torch.tanh(_mlp(s2, actor)) + noise).clamp(-1, 1)
    sa2 = torch.cat([s2, a2], 1)
    y = r + 0.99 * (1 - d) * torch.min(_mlp(sa2, q1), _mlp(sa2, q2))
    sa = torch.cat([s, a], 1)
    critic_loss = F.mse_loss(_mlp(sa, q1), y) + F.mse_loss(_mlp(sa, q2), y)

    torch.manual_seed(5)
    metrics = algo.update(bt)
    torch.testing.assert_close(metrics["critic_loss"], critic_loss)
    # The actor loss is computed after the critic step, with the updated first critic.
    q1_new = _group(algo.critic, 0)
    pi = torch.tanh(_mlp(s, actor))
    q = _mlp(torch.cat([s, pi], 1), q1_new)
    actor_loss = -(2.5 / q.abs().mean()) * q.mean() + F.mse_loss(pi, a)
    torch.testing.assert_close(metrics["actor_loss"], actor_loss)
    # Targets moved halfway (polyak 0.5) from the initial weights to the stepped ones.
    w0 = actor[0][0]
    torch.testing.assert_close(
        algo.actor_target.net.hidden[0].weight[0], 0.5 * w0 + 0.5 * algo.actor.net.hidden[0].weight[0].detach()
    )


def _agent_slice(full: dict, single: dict, n: int, n_agents: int) -> dict:
    """Agent n's entries of an agent-major batched state dict, shaped like the single-agent one."""
    out = {}
    for key, value in single.items():
        src = full[key]
        if isinstance(src, Tensor) and src.numel() == n_agents * value.numel() and src.numel() > value.numel():
            out[key] = src.reshape(n_agents, -1)[n].reshape(value.shape).clone()
        else:
            out[key] = src.clone() if isinstance(src, Tensor) else src
    return out


def test_ma_td3_bc_batched_update_equals_loop_of_single_agents() -> None:
    """N agents in one stacked network == N independent learners (BatchNorm, per-agent clipping and Adam included)."""
    n = 3
    config = dataclasses.replace(
        MATD3BCConfig(), hidden_sizes=(8, 8), policy_noise=0.0, policy_freq=1, max_grad_norm=0.05, batch_size=32
    )
    p = problem(n)
    torch.manual_seed(0)
    batched = MATD3BC(config, p, torch.device("cpu"))
    singles = []
    for i in range(n):
        pi_ = Problem(1, p.obs_dim, p.action_dim, (p.obs_dim,), (p.action_dim,), p.obs_mean[i:i + 1],
                      p.obs_std[i:i + 1], 1000)
        single = MATD3BC(config, pi_, torch.device("cpu"))
        for name in ("actor", "critic", "actor_target", "critic_target", "normalizer"):
            mod = getattr(single, name)
            mod.load_state_dict(_agent_slice(getattr(batched, name).state_dict(), mod.state_dict(), i, n))
        singles.append(single)

    for step in range(3):
        bt = batch(p, 32, seed=10 + step)
        metrics = batched.update(bt)
        loss_sum = 0.0
        for i, single in enumerate(singles):
            sub = Batch(**{k: v[:, i:i + 1] if v.dim() == 3 else v for k, v in bt.__dict__.items()})
            loss_sum = loss_sum + single.update(sub)["critic_loss"]
        torch.testing.assert_close(metrics["critic_loss"], loss_sum, rtol=1e-5, atol=1e-6)
    probe = batch(p, 5, seed=99).obs
    expected = torch.cat([s.act(probe[:, i:i + 1]) for i, s in enumerate(singles)], dim=1)  # [E, N, A]
    torch.testing.assert_close(batched.act(probe), expected, rtol=1e-5, atol=1e-6)


def test_clip_grad_norm_clips_each_agent_separately() -> None:
    w = torch.nn.Parameter(torch.zeros(2, 3, 4))  # agent-major: agent 0 -> w[0], agent 1 -> w[1]
    w.grad = torch.cat([torch.full((1, 3, 4), 10.0), torch.full((1, 3, 4), 0.01)])
    norms = clip_grad_norm([w], max_norm=1.0, n_agents=2)
    torch.testing.assert_close(norms, torch.tensor([10.0 * 12 ** 0.5, 0.01 * 12 ** 0.5]))
    torch.testing.assert_close(w.grad[0].norm(), torch.tensor(1.0), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(w.grad[1], torch.full((3, 4), 0.01))  # under the limit: untouched


def test_centralized_critic_sees_other_agents() -> None:
    """With critic=centralized agent 0's Q changes when agent 1's action changes; decentralized it does not."""
    p = problem(2)
    for kind, should_change in (("centralized", True), ("decentralized", False)):
        config = dataclasses.replace(MATD3BCConfig(), hidden_sizes=(8, 8), critic=kind, input_norm=False)
        algo = MATD3BC(config, p, torch.device("cpu"))
        bt = batch(p, 6, seed=3)
        action2 = bt.action.clone()
        action2[:, 1] = -action2[:, 1]
        with torch.no_grad():
            q0, q1 = algo.critic(bt.obs, bt.action)[:, 0], algo.critic(bt.obs, action2)[:, 0]
        assert (not torch.allclose(q0, q1)) == should_change, kind


def test_single_agent_td3_bc_rejects_multi_agent_problem() -> None:
    try:
        TD3BC(TD3BCConfig(), problem(2), torch.device("cpu"))
    except ValueError as exc:
        assert "ma-td3bc" in str(exc)
    else:
        raise AssertionError("TD3BC accepted a 2-agent problem")


def test_first_critic_matches_full_ensemble_and_its_gradient() -> None:
    from offline_bench.algos.common import AgentCritics

    for n_agents, layer_norm in ((1, False), (3, True)):
        critic = AgentCritics(n_agents, 5, 2, (8, 8), n_critics=3, layer_norm=layer_norm)
        obs = torch.randn(7, n_agents, 5)
        action = torch.randn(4, 7, n_agents, 2, requires_grad=True)  # extra leading axis: K samples per state
        first = critic.first(obs, action)
        torch.testing.assert_close(first, critic(obs, action)[..., 0])
        (grad_first,) = torch.autograd.grad(first.sum(), action)
        (grad_full,) = torch.autograd.grad(critic(obs, action)[..., 0].sum(), action)
        torch.testing.assert_close(grad_first, grad_full)


def test_bf16_update_tracks_float32() -> None:
    p = problem(1, obs_dim=6, action_dim=3)
    losses = {}
    for bf16 in (False, True):
        config = dataclasses.replace(TD3BCConfig(), hidden_sizes=(32, 32), policy_freq=1, bf16=bf16)
        torch.manual_seed(0)
        algo = TD3BC(config, p, torch.device("cpu"))
        torch.manual_seed(1)
        losses[bf16] = [algo.update(batch(p, 64, seed=s)) for s in range(3)]
    for m32, m16 in zip(losses[False], losses[True]):
        assert m16["critic_loss"].dtype == torch.float32
        torch.testing.assert_close(m16["critic_loss"], m32["critic_loss"], rtol=0.05, atol=0.05)
        torch.testing.assert_close(m16["actor_loss"], m32["actor_loss"], rtol=0.05, atol=0.05)


def bandit_batch(n_agents: int, b: int, gen: torch.Generator) -> Batch:
    """One-step episodes: the best action of agent n is a*(o) = 0.8 tanh(o_0); data actions are a* + N(0, 0.3)."""
    obs = torch.randn(b, n_agents, 2, generator=gen)
    best = 0.8 * torch.tanh(obs[..., :1])  # [B, N, 1]
    action = (best + 0.3 * torch.randn(b, n_agents, 1, generator=gen)).clamp(-1, 1)
    reward = -(action - best).square()  # [B, N, 1]
    return Batch(obs, action, reward, torch.zeros_like(obs), torch.ones(b, 1), torch.zeros_like(action),
                 torch.zeros(b, 1))


@pytest.mark.slow
@pytest.mark.parametrize("n_agents", [1, 2])
def test_learns_the_best_action_of_a_noisy_bandit(n_agents: int) -> None:
    """The Q term pulls the policy from the noisy data towards the best action (error well below the data's)."""
    p = Problem(n_agents, 2, 1, (2,) * n_agents, (1,) * n_agents, np.zeros((n_agents, 2), np.float32),
                np.ones((n_agents, 2), np.float32), 10_000)
    if n_agents == 1:
        algo = TD3BC(dataclasses.replace(TD3BCConfig(), hidden_sizes=(64, 64), actor_lr=1e-3, critic_lr=1e-3), p,
                     torch.device("cpu"))
    else:
        algo = MATD3BC(dataclasses.replace(MATD3BCConfig(), actor_lr=1e-3, critic_lr=1e-3, batch_size=256), p,
                       torch.device("cpu"))
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    for _ in range(1500):
        algo.update(bandit_batch(n_agents, 256, gen))
    probe = bandit_batch(n_agents, 1000, gen)
    best = 0.8 * torch.tanh(probe.obs[..., :1])
    policy_error = (algo.act(probe.obs) - best).abs().mean()
    data_error = (probe.action - best).abs().mean()  # ~0.24
    assert policy_error < 0.5 * data_error, (policy_error, data_error)
