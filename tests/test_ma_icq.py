"""MA-ICQ's math: implicit weights in [0, 1] and zero without a next action, the target, the AWR weights, rows
without a usable target left out, a stacked step equal to a per-agent loop, bf16, and the task config."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from offline_bench.algos import get_algorithm
from offline_bench.algos.ma_icq import (
    MAICQ,
    MAICQConfig,
    awr_actor_loss,
    icq_critic_target,
    implicit_weights,
    masked_batch_softmax,
)
from offline_bench.batch import Batch
from offline_bench.train.config import resolve_config

from test_algorithms import make_batch, make_problem
from test_ma_cql import _slice_state, agent_batch, forbid_host_syncs, split_into_singles

torch.set_num_threads(1)
TINY = dict(hidden_sizes=(16, 16))


def test_implicit_weights_are_clipped_and_zero_without_next_action() -> None:
    torch.manual_seed(0)
    next_q = torch.randn(64, 3) * 500.0  # large spread: some weights would exceed 1 before clipping
    valid = (torch.rand(64, 1) < 0.7).float()
    w = implicit_weights(next_q, valid, beta=600.0, alpha=2.0)
    assert w.shape == (64, 3)
    assert (w >= 0).all() and (w <= 1).all()
    assert (w[valid[:, 0] == 0] == 0).all()
    assert (w == 1).any(), "the clip at 1 must bind for large Q spreads"
    # Hand computation for agent 0: B_valid / alpha * softmax over valid rows, clipped.
    rows = valid[:, 0] == 1
    soft = torch.softmax(next_q[rows, 0] / 600.0, 0)
    torch.testing.assert_close(w[rows, 0], (rows.sum() / 2.0 * soft).clamp(0, 1))


def test_equal_values_give_weight_one_over_alpha() -> None:
    w = implicit_weights(torch.zeros(10, 2), torch.ones(10, 1), beta=600.0, alpha=2.0)
    torch.testing.assert_close(w, torch.full((10, 2), 0.5))


def test_no_valid_rows_gives_zero_weights_not_nan() -> None:
    w = implicit_weights(torch.randn(4, 2), torch.zeros(4, 1), beta=1.0, alpha=2.0)
    assert torch.equal(w, torch.zeros(4, 2))


def test_target_uses_weighted_next_value_and_stops_at_terminals() -> None:
    b, n = 4, 2
    reward = torch.arange(b * n, dtype=torch.float32).reshape(b, n, 1)
    done = torch.tensor([[0.0], [1.0], [0.0], [0.0]])
    valid = torch.tensor([[1.0], [0.0], [1.0], [0.0]])
    zeros = torch.zeros(b, n, 3)
    batch = Batch(zeros, zeros, reward, zeros, done, zeros, valid)
    next_q = torch.full((b, n), 10.0)
    target, w = icq_critic_target(batch, next_q, gamma=0.9, beta=600.0, alpha=2.0)
    # two valid rows with equal values: w = 2 / 2 * 1/2 = 0.5
    torch.testing.assert_close(w[valid[:, 0] == 1], torch.full((2, n), 0.5))
    torch.testing.assert_close(target[0], reward[0] + 0.9 * 10.0 * 0.5)
    torch.testing.assert_close(target[1], reward[1])  # terminal: no bootstrap
    torch.testing.assert_close(target[3], reward[3])  # no next action: weight 0


def test_awr_weights_favour_higher_advantage_and_ignore_masked_rows() -> None:
    adv = torch.tensor([[0.0], [600.0], [1200.0], [5000.0]])
    rows = torch.tensor([[1.0], [1.0], [1.0], [0.0]])
    w = masked_batch_softmax(adv, rows, 600.0)
    assert w[3, 0] == 0 and w[0, 0] < w[1, 0] < w[2, 0]
    torch.testing.assert_close(w.sum(), torch.tensor(1.0))
    pi = torch.zeros(4, 1, 2, requires_grad=True)
    data = torch.ones(4, 1, 2)
    loss = awr_actor_loss(pi, data, adv, rows, 600.0)
    torch.testing.assert_close(loss, (w[:, 0] * 1.0).sum())  # every squared error is 1


def test_at_beta_600_reward_scale_values_give_behaviour_cloning_and_a_halved_discount() -> None:
    """The docstring's "The temperature": values spread over a few reward units (halfcheetah-2x3's advantages and
    next values) leave both softmaxes uniform at beta 600, so the actor loss is plain behaviour cloning and the
    implicit weights are 1 / alpha; at beta 1 the same values are weighted apart."""
    torch.manual_seed(0)
    b, n = 256, 2
    values = 2.6 + 2.0 * torch.randn(b, n)  # [B, N]: a few reward units around the mean advantage measured there
    rows = torch.ones(b, 1)
    pi, data = torch.randn(b, n, 3).tanh(), torch.randn(b, n, 3).tanh()
    bc = (pi - data).square().mean(-1).mean(0).sum()  # uniform weights: mean squared error per agent, summed
    torch.testing.assert_close(awr_actor_loss(pi, data, values, rows, 600.0), bc, rtol=2e-3, atol=0.0)
    weights = implicit_weights(values, rows, 600.0, 2.0)  # [B, N]
    torch.testing.assert_close(weights, torch.full((b, n), 0.5), rtol=2e-2, atol=0.0)
    sharp = masked_batch_softmax(values, rows, 1.0)  # [B, N]
    assert sharp.max() > 20.0 / b, "at beta 1 the best rows weigh far more than 1/B"


def test_rows_without_target_do_not_move_the_critic() -> None:
    """A batch whose rows all lack a next action and a terminal gives a zero critic loss and no critic change."""
    problem = make_problem(2)
    torch.manual_seed(0)
    algo = MAICQ(MAICQConfig(**TINY), problem, torch.device("cpu"))
    base = make_batch(problem, 16, torch.Generator().manual_seed(0))
    zeros = torch.zeros(16, 1)
    batch = Batch(base.obs, base.action, base.reward, base.next_obs, zeros, base.next_action * 0, zeros)
    before = {k: v.clone() for k, v in algo.critic.state_dict().items()}
    metrics = algo.update(batch)
    assert metrics["critic_loss"] == 0 and metrics["actor_loss"] == 0
    for key, value in algo.critic.state_dict().items():
        if "running" not in key and "num_batches" not in key:
            torch.testing.assert_close(value, before[key], msg=key)


def test_stacked_update_matches_a_loop_of_single_agent_learners() -> None:
    """MA-ICQ's update has no randomness: 3 agents stacked = 3 single-agent learners with the same weights.

    The batch softmaxes are per agent, so each single learner sees exactly its agent's weights."""
    problem = make_problem(3, obs_dim=4, action_dim=2)
    torch.manual_seed(0)
    stacked = MAICQ(MAICQConfig(**TINY, n_critics=2), problem, torch.device("cpu"))
    singles = split_into_singles(stacked, 3, problem)
    gen = torch.Generator().manual_seed(1)
    for _ in range(2):
        batch = make_batch(problem, 16, gen)
        m = stacked.update(batch)
        loop = [s.update(agent_batch(batch, i)) for i, s in enumerate(singles)]
        torch.testing.assert_close(m["critic_loss"], sum(x["critic_loss"] for x in loop), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(m["actor_loss"], sum(x["actor_loss"] for x in loop), atol=1e-5, rtol=1e-5)
    for name in ("actor", "critic", "critic_target"):
        for i, single in enumerate(singles):
            expected = _slice_state(getattr(stacked, name).state_dict(), i, 3)
            for key, value in getattr(single, name).state_dict().items():
                if "num_batches" not in key:
                    torch.testing.assert_close(value, expected[key], atol=1e-5, rtol=1e-4, msg=f"{name}.{key} agent {i}")


def test_actor_imitates_the_higher_advantage_action() -> None:
    """Two data actions at the same state; the one with the higher TD advantage r + gamma Q(o', a') - Q(o, a)
    dominates the learned action (the critic is frozen, lr 0, so the advantage stays r - Q(o, a) ~ r)."""
    problem = make_problem(1, obs_dim=2, action_dim=1)
    config = MAICQConfig(hidden_sizes=(16, 16), icq_beta=0.1, actor_lr=3e-3, critic_lr=0.0, input_norm=False)
    torch.manual_seed(0)
    algo = MAICQ(config, problem, torch.device("cpu"))
    b = 64
    obs = torch.zeros(b, 1, 2)
    action = torch.where(torch.arange(b) % 2 == 0, 0.8, -0.8).reshape(b, 1, 1)
    reward = (action > 0).float()  # a = 0.8 earns 1, a = -0.8 earns 0
    done = torch.ones(b, 1)  # one-step episodes: Q(o, a) = r
    batch = Batch(obs, action, reward, obs, done, torch.zeros_like(action), torch.zeros(b, 1))
    for _ in range(300):
        algo.update(batch)
    assert algo.act(obs[:1]).item() > 0.4


@pytest.mark.parametrize("overrides", [{}, {"critic": "centralized", "input_norm": False, "n_critics": 2}])
def test_bf16_update_is_finite_makes_no_host_syncs_and_tracks_float32(overrides: dict) -> None:
    problem = make_problem(3)
    batches = [make_batch(problem, 64, torch.Generator().manual_seed(i)) for i in range(3)]
    runs = {}
    for bf16 in (False, True):
        torch.manual_seed(0)
        algo = MAICQ(dataclasses.replace(MAICQConfig(), **TINY, **overrides, bf16=bf16), problem, torch.device("cpu"))
        with forbid_host_syncs():
            runs[bf16] = [algo.update(batch) for batch in batches]
        assert all(v.dtype == torch.float32 and torch.isfinite(v) for m in runs[bf16] for v in m.values())
        assert all(p.dtype == torch.float32 for p in [*algo.actor.parameters(), *algo.critic.parameters()])
    # Same networks and draws: the first update's outputs differ only by bfloat16 rounding.
    for key in ("critic_loss", "actor_loss", "q_mean", "icq_weight_mean"):
        torch.testing.assert_close(runs[True][0][key], runs[False][0][key], rtol=5e-2, atol=5e-2)
    assert not torch.equal(runs[True][0]["q_mean"], runs[False][0]["q_mean"]), "bf16=True ran in float32"


def test_task_config_resolves() -> None:
    config = resolve_config("ma-icq", get_algorithm("ma-icq").config_cls, "halfcheetah-2x3-medium").algo_config
    assert config.hidden_sizes == (256, 256) and config.batch_size == 256 and config.gamma == 0.99
    default = resolve_config("ma-icq", get_algorithm("ma-icq").config_cls, "spread-mixed").algo_config
    assert (default.icq_beta, default.icq_alpha, default.batch_size) == (600.0, 2.0, 1024)
