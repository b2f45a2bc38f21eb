"""BEAR's maths: MMD, conditional VAE, soft clipped double-Q target, Lagrange multiplier, warm-up, acting.

The shared harness (tests/test_algorithms.py -k bear) covers metrics, act() contract and exact resume.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torch import Tensor

from offline_bench.algos.base import Problem
from offline_bench.algos.bear import (
    BEAR,
    BEARConfig,
    ConditionalVAE,
    actor_q_term,
    bear_td_target,
    best_of_samples,
    mmd_distance,
    probe_noise,
    sample_raw_actions,
    soft_clipped_target,
)
from offline_bench.algos.common import AgentCritics, GaussianActor
from offline_bench.batch import Batch

torch.set_num_threads(1)

TINY = dict(hidden_sizes=(16, 16), vae_hidden_sizes=(16, 16))


def problem(obs_dim: int = 4, action_dim: int = 2, n_agents: int = 1) -> Problem:
    mean = np.zeros((n_agents, obs_dim), np.float32)
    std = np.ones((n_agents, obs_dim), np.float32)
    return Problem(n_agents, obs_dim, action_dim, (obs_dim,) * n_agents, (action_dim,) * n_agents, mean, std, 1000)


def random_batch(p: Problem, b: int, gen: torch.Generator, done: float = 0.0) -> Batch:
    n, o, a = p.n_agents, p.obs_dim, p.action_dim
    return Batch(
        obs=torch.randn(b, n, o, generator=gen),
        action=torch.rand(b, n, a, generator=gen) * 2 - 1,
        reward=torch.randn(b, n, 1, generator=gen),
        next_obs=torch.randn(b, n, o, generator=gen),
        done=torch.full((b, 1), done),
        next_action=torch.zeros(b, n, a),
        next_action_valid=torch.zeros(b, 1),
    )


def naive_mmd(x: Tensor, y: Tensor, kernel: str, sigma: float) -> float:
    """The authors' formula written with Python loops over sample pairs (x [n, A], y [m, A])."""

    def k(u: Tensor, v: Tensor) -> float:
        d = (u - v).abs().sum() if kernel == "laplacian" else (u - v).square().sum()
        return math.exp(-float(d) / (2.0 * sigma))

    kxx = sum(k(u, v) for u in x for v in x) / len(x) ** 2
    kyy = sum(k(u, v) for u in y for v in y) / len(y) ** 2
    kxy = sum(k(u, v) for u in x for v in y) / (len(x) * len(y))
    return math.sqrt(kxx + kyy - 2 * kxy + 1e-6)


@pytest.mark.parametrize("kernel,sigma", [("laplacian", 10.0), ("gaussian", 20.0), ("gaussian", 0.5)])
def test_mmd_is_near_zero_for_identical_samples_and_grows_with_shift(kernel: str, sigma: float) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(8, 5, 3, generator=gen)  # [B, K, A]
    same = mmd_distance(x, x.clone(), kernel, sigma)  # [B]
    assert same.shape == (8,)
    assert same.max() < 2e-3, f"MMD of identical samples is {same.max():.4g}, expected sqrt(1e-6)"
    shifts = [0.1, 0.5, 1.0, 3.0]
    values = [mmd_distance(x, x + s, kernel, sigma).mean().item() for s in shifts]
    assert all(b > a for a, b in zip(values, values[1:])), f"MMD does not grow with the shift: {values}"
    assert values[0] > same.mean().item() + 1e-3


def test_mmd_matches_the_pairwise_formula_per_state() -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 2, 4, 2, generator=gen)  # [B, N, K, A]
    y = torch.randn(3, 2, 6, 2, generator=gen) + 0.7  # different sample count
    for kernel, sigma in (("laplacian", 10.0), ("gaussian", 1.0)):
        got = mmd_distance(x, y, kernel, sigma)  # [B, N]
        assert got.shape == (3, 2)
        for b in range(3):
            for n in range(2):
                assert got[b, n].item() == pytest.approx(naive_mmd(x[b, n], y[b, n], kernel, sigma), rel=1e-4)


def test_mmd_rejects_unknown_kernel() -> None:
    with pytest.raises(ValueError, match="mmd_kernel"):
        mmd_distance(torch.zeros(2, 3, 1), torch.zeros(2, 3, 1), "cosine", 1.0)
    with pytest.raises(ValueError, match="mmd_kernel"):
        BEAR(BEARConfig(mmd_kernel="rbf", **TINY), problem(), torch.device("cpu"))


def test_rejects_multi_agent_problems_and_bad_sample_counts() -> None:
    with pytest.raises(ValueError, match="single-agent"):
        BEAR(BEARConfig(**TINY), problem(n_agents=2), torch.device("cpu"))
    with pytest.raises(ValueError, match="n_actor_q_samples"):
        BEAR(BEARConfig(n_mmd_samples=4, n_actor_q_samples=5, **TINY), problem(), torch.device("cpu"))


def test_soft_clipped_target_mixes_min_and_max() -> None:
    q = torch.tensor([[1.0, 3.0], [2.0, -2.0]])  # [B, E]
    torch.testing.assert_close(soft_clipped_target(q, 0.75), torch.tensor([1.5, -1.0]))
    q3 = torch.tensor([[0.0, 4.0, 1.0]])  # the middle critic plays no part
    torch.testing.assert_close(soft_clipped_target(q3, 0.75), torch.tensor([1.0]))
    torch.testing.assert_close(soft_clipped_target(q3, 1.0), torch.tensor([0.0]))  # lambda = 1: clipped double Q


def test_td_target_takes_the_max_over_target_samples_and_stops_at_terminals() -> None:
    torch.manual_seed(0)
    actor = GaussianActor(1, 4, 2, (16, 16))
    critic = AgentCritics(1, 4, 2, (16, 16), n_critics=3)
    p = problem()
    batch = random_batch(p, 6, torch.Generator().manual_seed(2))
    done = torch.tensor([[0.0], [1.0], [0.0], [1.0], [0.0], [0.0]])
    with torch.no_grad():
        torch.manual_seed(5)
        y = bear_td_target(actor, critic, batch.next_obs, batch.reward, done, 0.9, 10, 0.75)  # [B, 1, 1]
        torch.manual_seed(5)  # the same target-actor samples, by hand
        actions = torch.tanh(sample_raw_actions(actor, batch.next_obs, 10))  # [K, B, 1, A]
        q = critic(batch.next_obs, actions)  # [K, B, 1, E]
        mixed = 0.75 * q.min(-1).values + 0.25 * q.max(-1).values  # [K, B, 1]
        expected = batch.reward[..., 0] + 0.9 * (1 - done) * mixed.max(0).values  # [B, 1]
    assert y.shape == (6, 1, 1)
    torch.testing.assert_close(y[..., 0], expected)
    torch.testing.assert_close(y[done[:, 0] == 1], batch.reward[done[:, 0] == 1])
    # the max over samples is at least the mean over them
    assert (mixed.max(0).values >= mixed.mean(0)).all()


def test_vae_reconstruction_improves_within_a_few_hundred_updates() -> None:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(4, 2, generator=gen)
    vae = ConditionalVAE(1, 4, 2, hidden_sizes=(32, 32))
    opt = torch.optim.Adam(vae.parameters(), lr=3e-3)
    test_obs = torch.randn(256, 1, 4, generator=gen)
    test_action = torch.tanh(test_obs @ w)  # [B, 1, A]: a deterministic behaviour policy

    def recon_error() -> float:
        with torch.no_grad():  # decode at the latent mean z = 0: the model's "most likely" action
            z = torch.zeros(1, 256, vae.latent_dim)
            recon = torch.tanh(vae.decode_raw(test_obs.transpose(0, 1), z)).transpose(0, 1)  # [B, 1, A]
        return (recon - test_action).square().mean().item()

    before = recon_error()
    for _ in range(300):
        obs = torch.randn(64, 1, 4, generator=gen)
        loss = vae.loss(obs, torch.tanh(obs @ w)).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = recon_error()
    assert after < 0.25 * before, f"VAE reconstruction error {before:.4f} -> {after:.4f} after 300 updates"


def test_vae_weights_select_rows_per_model() -> None:
    torch.manual_seed(0)
    vae = ConditionalVAE(1, 3, 2, hidden_sizes=(8,), n_models=2)
    gen = torch.Generator().manual_seed(4)
    obs, action = torch.randn(10, 1, 3, generator=gen), torch.rand(10, 1, 2, generator=gen) * 2 - 1
    weights = torch.zeros(10, 1, 2)
    weights[:4, 0, 0] = 1.0  # model 0 sees rows 0-3; model 1 sees no row
    torch.manual_seed(9)
    loss = vae.loss(obs, action, weights)  # [N, M]
    changed = action.clone()
    changed[4:] = -changed[4:]  # rows no model sees
    torch.manual_seed(9)
    loss_changed = vae.loss(obs, changed, weights)
    assert loss.shape == (1, 2)
    torch.testing.assert_close(loss, loss_changed)
    assert loss[0, 0] > 0 and loss[0, 1] == 0
    changed[0] = -changed[0]  # a row model 0 sees
    torch.manual_seed(9)
    assert vae.loss(obs, changed, weights)[0, 0] != loss[0, 0]


def test_vae_samples_come_from_their_own_model() -> None:
    torch.manual_seed(0)
    vae = ConditionalVAE(1, 3, 2, hidden_sizes=(8,), n_models=2)
    obs = torch.randn(5, 1, 3)
    torch.manual_seed(1)
    before = vae.sample_raw(obs, 4)  # [B, N, M, K, A]
    assert before.shape == (5, 1, 2, 4, 2)
    with torch.no_grad():
        vae.decoder.out.bias[1] += 1.0  # shift model 1's output only (group 1 = agent 0, model 1)
    torch.manual_seed(1)
    after = vae.sample_raw(obs, 4)
    torch.testing.assert_close(after[:, :, 0], before[:, :, 0])
    torch.testing.assert_close(after[:, :, 1], before[:, :, 1] + 1.0)


@pytest.mark.parametrize("threshold,direction", [(-1.0, 1), (10.0, -1)])
def test_lagrange_multiplier_rises_above_the_threshold_and_falls_below(threshold: float, direction: int) -> None:
    p = problem()
    torch.manual_seed(0)
    algo = BEAR(BEARConfig(mmd_threshold=threshold, warmup_steps=0, **TINY), p, torch.device("cpu"))
    gen = torch.Generator().manual_seed(5)
    values = [algo.update(random_batch(p, 32, gen))["lagrange"].item() for _ in range(5)]
    steps = np.diff([1.0, *values])
    assert (direction * steps > 0).all(), f"lagrange went {values} with threshold {threshold}"


def test_lagrange_multiplier_is_clamped() -> None:
    p = problem()
    torch.manual_seed(0)
    config = BEARConfig(mmd_threshold=-1.0, lagrange_lr=1.0, log_lagrange_max=0.5, **TINY)
    algo = BEAR(config, p, torch.device("cpu"))
    gen = torch.Generator().manual_seed(6)
    for _ in range(5):
        metrics = algo.update(random_batch(p, 32, gen))
    assert metrics["lagrange"].item() == pytest.approx(math.exp(0.5))


def _actor_after_one_update(warmup_steps: int, critic_scale: float) -> list[Tensor]:
    p = problem()
    torch.manual_seed(0)
    algo = BEAR(BEARConfig(warmup_steps=warmup_steps, **TINY), p, torch.device("cpu"))
    with torch.no_grad():
        for param in algo.critic.parameters():
            param.mul_(critic_scale)
    torch.manual_seed(1)
    algo.update(random_batch(p, 32, torch.Generator().manual_seed(7)))
    return [param.detach().clone() for param in algo.actor.parameters()]


def test_warmup_trains_the_actor_on_the_mmd_only() -> None:
    # During warm-up the actor's step cannot depend on the critic; afterwards it must.
    same = zip(_actor_after_one_update(10, 1.0), _actor_after_one_update(10, 3.0))
    assert all(torch.equal(a, b) for a, b in same)
    after = zip(_actor_after_one_update(0, 1.0), _actor_after_one_update(0, 3.0))
    assert not all(torch.equal(a, b) for a, b in after)


def test_act_returns_the_candidate_with_the_highest_min_q() -> None:
    torch.manual_seed(0)
    actor = GaussianActor(1, 4, 2, (16, 16))
    critic = AgentCritics(1, 4, 2, (16, 16), n_critics=2)
    noise = probe_noise(10, 2, torch.device("cpu"))
    assert noise.shape == (10, 2) and torch.equal(noise[0], torch.zeros(2))
    obs = torch.randn(7, 1, 4)
    with torch.no_grad():
        chosen = best_of_samples(actor, critic, obs, noise)  # [B, 1, A]
        mean, log_std = actor.distribution(obs)
        for k in range(10):  # no candidate beats the chosen one
            candidate = torch.tanh(mean + log_std.exp() * noise[k])
            assert (critic(obs, candidate).min(-1).values <= critic(obs, chosen).min(-1).values + 1e-6).all()
        assert critic(obs, torch.tanh(mean)).min(-1).values.le(critic(obs, chosen).min(-1).values + 1e-6).all()


@contextlib.contextmanager
def forbid_host_syncs() -> Iterator[None]:
    """Make every tensor -> Python conversion raise (the CPU stand-in for a device sync)."""
    names = ("item", "__bool__", "__float__", "__int__", "tolist", "numpy")
    saved = {name: getattr(Tensor, name) for name in names}

    def refuse(self: Tensor, *args: object, **kwargs: object) -> None:
        raise AssertionError("host sync inside update()")

    try:
        for name in names:
            setattr(Tensor, name, refuse)
        yield
    finally:
        for name, fn in saved.items():
            setattr(Tensor, name, fn)


@pytest.mark.parametrize("warmup_steps", [0, 10])
def test_update_makes_no_host_syncs(warmup_steps: int) -> None:
    p = problem()
    torch.manual_seed(0)
    algo = BEAR(BEARConfig(warmup_steps=warmup_steps, **TINY), p, torch.device("cpu"))
    batches = [random_batch(p, 16, torch.Generator().manual_seed(i)) for i in range(2)]
    with forbid_host_syncs():
        for batch in batches:
            metrics = algo.update(batch)
    assert all(torch.isfinite(v) for v in metrics.values())


@pytest.mark.parametrize("warmup_steps", [0, 10])
def test_bf16_update_is_finite_makes_no_host_syncs_and_tracks_float32(warmup_steps: int) -> None:
    p = problem()
    batches = [random_batch(p, 32, torch.Generator().manual_seed(i)) for i in range(3)]
    runs = {}
    for bf16 in (False, True):
        torch.manual_seed(0)
        algo = BEAR(BEARConfig(warmup_steps=warmup_steps, bf16=bf16, **TINY), p, torch.device("cpu"))
        with forbid_host_syncs():
            runs[bf16] = [algo.update(batch) for batch in batches]
        assert all(v.dtype == torch.float32 and torch.isfinite(v) for m in runs[bf16] for v in m.values())
        for module in (algo.actor, algo.critic, algo.vae):  # parameters (and so Adam's state) stay float32
            assert all(q.dtype == torch.float32 for q in module.parameters())
    # Same initial networks, so the first update's outputs differ only by bfloat16 rounding (and the noise, which
    # autocast draws in bfloat16 for the actor's samples: the MMD is compared loosely).
    for key in ("q_data", "target", "vae_loss"):
        torch.testing.assert_close(runs[True][0][key], runs[False][0][key], rtol=3e-2, atol=3e-2)
    torch.testing.assert_close(runs[True][0]["mmd"], runs[False][0]["mmd"], rtol=0.2, atol=0.05)
    assert not torch.equal(runs[True][0]["q_data"], runs[False][0]["q_data"]), "bf16=True ran in float32"


# ---------------------------------------------------------------------------------------------- learning check

def two_mode_bandit(b: int, gen: torch.Generator, obs_dim: int = 2) -> Batch:
    """One-step episodes: half the actions near +0.5 earn 1, half near -0.5 earn 0; nothing else is in the data."""
    good = (torch.rand(b, 1, 1, generator=gen) < 0.5).float()  # [B, 1, 1]
    action = (good - 0.5) + 0.05 * torch.randn(b, 1, 1, generator=gen)  # [B, 1, 1]
    return Batch(
        obs=torch.randn(b, 1, obs_dim, generator=gen),
        action=action,
        reward=good,
        next_obs=torch.randn(b, 1, obs_dim, generator=gen),
        done=torch.ones(b, 1),
        next_action=torch.zeros(b, 1, 1),
        next_action_valid=torch.zeros(b, 1),
    )


def _bandit_run(config: BEARConfig, updates: int = 500) -> tuple[BEAR, dict[str, Tensor]]:
    p = problem(obs_dim=2, action_dim=1)
    torch.manual_seed(0)
    algo = BEAR(config, p, torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    for _ in range(updates):
        metrics = algo.update(two_mode_bandit(64, gen))
    return algo, metrics


@pytest.mark.slow
@pytest.mark.parametrize("bf16", [False, True])
def test_mmd_constraint_keeps_the_policy_nearer_the_data_than_no_constraint(bf16: bool) -> None:
    common = dict(hidden_sizes=(32, 32), vae_hidden_sizes=(32, 32), warmup_steps=100, actor_lr=1e-3,
                  critic_lr=1e-3, vae_lr=1e-3, bf16=bf16)
    constrained, m_on = _bandit_run(BEARConfig(lagrange_lr=0.05, **common))
    free, m_off = _bandit_run(BEARConfig(log_lagrange_min=-20.0, log_lagrange_max=-20.0, **common))
    probe = torch.randn(256, 1, 2, generator=torch.Generator().manual_seed(1))
    a_on, a_off = constrained.act(probe), free.act(probe)
    # The critic extrapolates upwards beyond the good mode; without the constraint the actor follows it to the
    # action bound, with it the actor stays nearer the data (and still on the rewarding side).
    assert a_off.mean() > 0.95, f"unconstrained actor should reach the bound, got {a_off.mean():.3f}"
    assert 0.3 < a_on.mean() < a_off.mean() - 0.1, f"constrained {a_on.mean():.3f} vs free {a_off.mean():.3f}"
    assert m_on["mmd"] < m_off["mmd"] - 0.1
    assert all(torch.isfinite(v) for v in m_on.values())


def assert_resumes_exactly(make, p: Problem, tmp_path) -> None:
    """Save after 3 updates (warm-up ends after 2), reload into a fresh instance, compare the next 3 updates."""
    torch.manual_seed(0)
    algo = make()
    gen = torch.Generator().manual_seed(8)
    for _ in range(3):
        algo.update(random_batch(p, 32, gen))
    torch.save(algo.state_dict(), tmp_path / "checkpoint.pt")
    torch.manual_seed(123)
    resumed = make()
    resumed.load_state_dict(torch.load(tmp_path / "checkpoint.pt", weights_only=True))
    assert resumed.step == algo.step == 3
    batches = [random_batch(p, 32, gen) for _ in range(3)]
    torch.manual_seed(7)
    expected = [algo.update(b) for b in batches]
    torch.manual_seed(7)
    got = [resumed.update(b) for b in batches]
    for m_exp, m_got in zip(expected, got):
        for key in m_exp:
            assert torch.equal(m_exp[key], m_got[key]), f"{key} differs after resume"
    probe = batches[0].obs
    assert torch.equal(algo.act(probe), resumed.act(probe))


def test_resumes_exactly_across_the_end_of_warmup(tmp_path) -> None:
    p = problem()
    assert_resumes_exactly(lambda: BEAR(BEARConfig(warmup_steps=2, **TINY), p, torch.device("cpu")), p, tmp_path)


def test_actor_q_term_is_the_minimum_over_critics_of_their_sample_means() -> None:
    """The authors' order (``critic_qs.mean(1)`` over samples, then ``min(0)`` over critics): here the per-sample
    minima average to 0 but each critic's mean is 1, so the other order would give 0."""
    q = torch.tensor([[2.0, 0.0], [0.0, 2.0]]).reshape(2, 1, 1, 2)  # [K=2, B=1, N=1, E=2]
    assert actor_q_term(q).item() == 1.0
    assert q.amin(-1).mean(0).item() == 0.0

