"""CQL maths: the importance-sampled penalty, the Lagrange multiplier, the BC warm start, and that the
conservative term pushes Q down on out-of-distribution actions."""
from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch

from offline_bench.algos.base import Problem
from offline_bench.algos.common import GaussianActor, tanh_gaussian_log_prob, tanh_gaussian_sample
from offline_bench.algos.cql import CQL, CQLConfig, conservative_penalty
from offline_bench.batch import Batch

torch.set_num_threads(1)


def test_penalty_equals_hand_computed_logsumexp() -> None:
    q_sampled = torch.tensor([[1.0, 2.0, 3.0], [0.0, -1.0, 5.0]])  # [B=2, K=3]
    log_density = torch.tensor([[0.0, 0.5, -0.5], [0.0, 0.0, 0.0]])
    q_data = torch.tensor([0.5, 1.0])
    for t in (1.0, 2.0):
        expected = torch.tensor([
            t * math.log(sum(math.exp((q - ld) / t) for q, ld in zip(qs, lds))) - qd
            for qs, lds, qd in zip(q_sampled.tolist(), log_density.tolist(), q_data.tolist())
        ])
        torch.testing.assert_close(conservative_penalty(q_sampled, log_density, q_data, t), expected)


def test_penalty_gradient_is_softmax_minus_data() -> None:
    q_sampled = torch.randn(4, 6, requires_grad=True)
    q_data = torch.randn(4, requires_grad=True)
    conservative_penalty(q_sampled, torch.zeros(()).expand(4, 6), q_data).sum().backward()
    torch.testing.assert_close(q_sampled.grad, torch.softmax(q_sampled.detach(), -1))
    torch.testing.assert_close(q_data.grad, -torch.ones(4))


def test_penalty_broadcasts_one_density_over_critics() -> None:
    q = torch.randn(5, 1, 2, 7)  # [B, N, E, K]
    log_density = torch.randn(5, 1, 1, 7)  # the same proposal for both critics
    out = conservative_penalty(q, log_density, q[..., 0])
    assert out.shape == (5, 1, 2)
    torch.testing.assert_close(out[:, :, 1], conservative_penalty(q[:, :, 1], log_density[:, :, 0], q[:, :, 1, 0]))


def test_tanh_gaussian_log_prob_matches_change_of_variables() -> None:
    mean, log_std = torch.tensor([[0.3, -0.2]]), torch.tensor([[-0.5, 0.1]])
    u = torch.tensor([[0.7, -1.1]])
    normal = torch.distributions.Normal(mean, log_std.exp()).log_prob(u).sum(-1)
    expected = normal - torch.log(1 - torch.tanh(u) ** 2).sum(-1)
    torch.testing.assert_close(tanh_gaussian_log_prob(u, mean, log_std), expected)
    actor = GaussianActor(1, 3, 2, (8,))
    action, log_pi = actor.sample(torch.randn(4, 1, 3), n_samples=5)
    assert action.shape == (5, 4, 1, 2) and log_pi.shape == (5, 4, 1) and action.abs().max() < 1


def toy_problem() -> Problem:
    return Problem(1, 2, 1, (2,), (1,), np.zeros((1, 2), np.float32), np.ones((1, 2), np.float32), 4096)


def toy_batch(b: int, gen: torch.Generator) -> Batch:
    """Every state's data action is near +0.5; rewards are 0, so the true Q is 0 for every action."""
    obs = torch.randn(b, 1, 2, generator=gen)
    action = (0.5 + 0.05 * torch.randn(b, 1, 1, generator=gen)).clamp(-1, 1)
    return Batch(obs, action, torch.zeros(b, 1, 1), torch.randn(b, 1, 2, generator=gen), torch.zeros(b, 1),
                 torch.zeros(b, 1, 1), torch.zeros(b, 1))


def train_toy(config: CQLConfig, updates: int) -> tuple[CQL, float, float]:
    torch.manual_seed(0)
    algo = CQL(config, toy_problem(), torch.device("cpu"))
    gen = torch.Generator().manual_seed(1)
    for _ in range(updates):
        algo.update(toy_batch(64, gen))
    obs = torch.randn(256, 1, 2, generator=gen)
    with torch.no_grad():
        q_data = algo.critic(obs, torch.full((256, 1, 1), 0.5)).mean().item()
        q_ood = algo.critic(obs, torch.full((256, 1, 1), -0.9)).mean().item()
    return algo, q_data, q_ood


def test_conservative_term_lowers_q_on_out_of_distribution_actions() -> None:
    base = dataclasses.replace(CQLConfig(), hidden_sizes=(32, 32), critic_lr=3e-3, actor_lr=1e-3, bc_steps=30)
    _, data_plain, ood_plain = train_toy(dataclasses.replace(base, cql_alpha=0.0), 120)
    _, data_cql, ood_cql = train_toy(dataclasses.replace(base, cql_alpha=5.0), 120)
    gap_plain, gap_cql = ood_plain - data_plain, ood_cql - data_cql
    assert gap_cql < gap_plain - 0.5, (gap_plain, gap_cql)
    assert ood_cql < data_cql - 0.5, (data_cql, ood_cql)


def test_lagrange_multiplier_moves_towards_the_target_gap() -> None:
    base = dataclasses.replace(CQLConfig(), hidden_sizes=(8, 8), cql_lagrange=True, critic_lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for gap, direction in ((1e3, -1.0), (-1e3, 1.0)):  # penalty far below / above the threshold
        torch.manual_seed(0)
        algo = CQL(dataclasses.replace(base, cql_target_gap=gap), toy_problem(), torch.device("cpu"))
        for _ in range(5):
            metrics = algo.update(toy_batch(32, gen))
        assert direction * (metrics["cql_alpha_prime"].item() - 1.0) > 0.02, (gap, metrics["cql_alpha_prime"])


def test_bc_warm_start_clones_the_data_action_then_switches_to_q() -> None:
    config = dataclasses.replace(CQLConfig(), hidden_sizes=(32, 32), actor_lr=3e-3, bc_steps=150, cql_alpha=1.0)
    torch.manual_seed(0)
    algo = CQL(config, toy_problem(), torch.device("cpu"))
    gen = torch.Generator().manual_seed(2)
    for _ in range(150):
        algo.update(toy_batch(64, gen))
    action = algo.act(torch.randn(64, 1, 2, generator=gen))
    assert (action - 0.5).abs().mean() < 0.1, action.mean()
    # After the warm start the actor follows the critic: its loss now depends on Q, not on the data action.
    bt = toy_batch(64, gen)
    shifted = Batch(bt.obs, -bt.action, bt.reward, bt.next_obs, bt.done, bt.next_action, bt.next_action_valid)
    state = copy.deepcopy(algo.state_dict())
    torch.manual_seed(3)
    loss_a = algo.update(bt)["actor_loss"]
    algo.load_state_dict(state)
    torch.manual_seed(3)
    loss_b = algo.update(shifted)["actor_loss"]
    torch.testing.assert_close(loss_a, loss_b)  # the data action no longer enters the actor loss


def test_random_proposal_density_is_uniform_on_the_box() -> None:
    p = Problem(1, 3, 4, (3,), (4,), np.zeros((1, 3), np.float32), np.ones((1, 3), np.float32), 10)
    algo = CQL(dataclasses.replace(CQLConfig(), hidden_sizes=(8,)), p, torch.device("cpu"))
    torch.testing.assert_close(algo.random_log_density, torch.tensor([4 * math.log(0.5)]))
    torch.testing.assert_close(algo.target_entropy, torch.tensor([-4.0]))


def test_actor_uses_the_authors_log_std_floor_and_bc_mean_clamp() -> None:
    """The CQL authors' rlkit copy clamps the policy's log-std to [-5, 2] (upstream rlkit: -20) and, in the warm
    start's likelihood of the data action, the pre-tanh mean to [-9, 9]."""
    p = toy_problem()
    algo = CQL(dataclasses.replace(CQLConfig(), hidden_sizes=(8,), auto_entropy=False, bc_steps=10), p,
               torch.device("cpu"))
    with torch.no_grad():
        out = algo.actor.net.out
        out.weight.zero_()
        out.bias[..., :1].fill_(40.0)  # pre-tanh mean 40
        out.bias[..., 1:].fill_(-50.0)  # log-std -50
    mean, log_std = algo.actor.distribution(torch.randn(3, 1, 2))
    assert torch.equal(log_std, torch.full_like(log_std, -5.0))
    b = toy_batch(16, torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    loss = algo.update(b)["actor_loss"]
    # The same loss by hand: the sampled log pi uses the unclamped mean, the data likelihood the clamped one.
    torch.manual_seed(0)
    _, log_pi = tanh_gaussian_sample(mean[:1].expand(16, 1, 1), torch.full((16, 1, 1), -5.0))
    data = torch.atanh(b.action.clamp(-1 + 1e-6, 1 - 1e-6))
    expected = (log_pi - tanh_gaussian_log_prob(data, torch.full((16, 1, 1), 9.0), torch.full((16, 1, 1), -5.0))).mean()
    torch.testing.assert_close(loss, expected)


def test_bf16_update_tracks_float32() -> None:
    metrics = {}
    for bf16 in (False, True):
        config = dataclasses.replace(CQLConfig(), hidden_sizes=(32, 32), bc_steps=1, bf16=bf16)
        torch.manual_seed(0)
        algo = CQL(config, toy_problem(), torch.device("cpu"))
        gen = torch.Generator().manual_seed(4)
        torch.manual_seed(1)
        metrics[bf16] = [algo.update(toy_batch(64, gen)) for _ in range(3)]
    for m32, m16 in zip(metrics[False], metrics[True]):
        for key in ("critic_loss", "cql_penalty", "actor_loss"):
            assert m16[key].dtype == torch.float32 and torch.isfinite(m16[key])
            torch.testing.assert_close(m16[key], m32[key], rtol=0.05, atol=0.05)


@pytest.mark.slow
def test_cql_learns_the_best_action_of_a_noisy_bandit() -> None:
    """One-step episodes with best action 0.8 tanh(o_0) and data actions a* + N(0, 0.3): past the BC warm start
    the policy moves from the data's spread towards the best action."""
    p = Problem(1, 2, 1, (2,), (1,), np.zeros((1, 2), np.float32), np.ones((1, 2), np.float32), 10_000)
    config = dataclasses.replace(CQLConfig(), hidden_sizes=(64, 64), actor_lr=1e-3, critic_lr=1e-3, bc_steps=500,
                                 cql_alpha=1.0)
    torch.manual_seed(0)
    algo = CQL(config, p, torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)

    def bandit(b: int) -> Batch:
        obs = torch.randn(b, 1, 2, generator=gen)
        best = 0.8 * torch.tanh(obs[..., :1])
        action = (best + 0.3 * torch.randn(b, 1, 1, generator=gen)).clamp(-1, 1)
        return Batch(obs, action, -(action - best).square(), torch.zeros_like(obs), torch.ones(b, 1),
                     torch.zeros_like(action), torch.zeros(b, 1))

    for _ in range(1500):
        algo.update(bandit(256))
    probe = bandit(1000)
    best = 0.8 * torch.tanh(probe.obs[..., :1])
    policy_error = (algo.act(probe.obs) - best).abs().mean()
    data_error = (probe.action - best).abs().mean()
    assert policy_error < 0.5 * data_error, (policy_error, data_error)
