"""DBR's pieces: the advantage split, the two behaviour models, the dual constraint and its multiplier.

The shared harness (tests/test_algorithms.py -k dbr) covers metrics, act() contract and exact resume.
"""
from __future__ import annotations

import pytest
import torch

from offline_bench.algos.bear import ConditionalVAE
from offline_bench.algos.dbr import DBR, MINUS, PLUS, DBRConfig, dual_violation, split_masks
from test_bear import assert_resumes_exactly, forbid_host_syncs, problem, random_batch, two_mode_bandit

torch.set_num_threads(1)

TINY = dict(hidden_sizes=(16, 16), vae_hidden_sizes=(16, 16))


def test_split_masks_put_rows_above_the_value_in_d_plus_below_in_d_minus_ties_in_both() -> None:
    ret = torch.tensor([[2.0], [0.0], [1.0], [-3.0]])  # [B, N]
    value = torch.tensor([[1.0], [1.0], [1.0], [-4.0]])
    masks = split_masks(ret, value)  # [B, N, 2]
    assert masks.shape == (4, 1, 2) and masks.dtype == torch.float32
    torch.testing.assert_close(masks[:, 0, PLUS], torch.tensor([1.0, 0.0, 1.0, 1.0]))
    torch.testing.assert_close(masks[:, 0, MINUS], torch.tensor([0.0, 1.0, 1.0, 0.0]))


def test_dual_violation_sign_and_bound() -> None:
    eps = 0.05
    # satisfied: closer to beta+ than beta- is, and beta- is farther than eps
    assert dual_violation(torch.tensor([0.2]), torch.tensor([0.5]), eps) < 0
    # violated: closer to beta- than to beta+
    assert dual_violation(torch.tensor([0.5]), torch.tensor([0.2]), eps) > 0
    # beta- nearer than eps: the bound is eps, as in BEAR
    torch.testing.assert_close(dual_violation(torch.tensor([0.3]), torch.tensor([0.01]), eps), torch.tensor([0.25]))


def test_bound_cap_limits_how_loose_the_constraint_gets() -> None:
    d_plus, d_minus = torch.tensor([0.4]), torch.tensor([0.9])
    assert dual_violation(d_plus, d_minus, 0.05) < 0  # the paper: satisfied, however far from beta- the policy is
    torch.testing.assert_close(dual_violation(d_plus, d_minus, 0.05, bound_max=0.3), torch.tensor([0.1]))
    torch.testing.assert_close(dual_violation(d_plus, d_minus, 0.05, bound_max=0.01), torch.tensor([0.35]))  # >= eps


def test_anchor_caps_the_bound_at_the_behaviour_models_separation() -> None:
    eps = 0.05
    d_plus, d_minus = torch.tensor([0.6]), torch.tensor([0.65])  # far from both models: the paper's g < 0
    assert dual_violation(d_plus, d_minus, eps) < 0
    torch.testing.assert_close(dual_violation(d_plus, d_minus, eps, separation=torch.tensor([0.15])),
                               torch.tensor([0.45]))  # the anchored bound: 0.6 - 0.15
    # near beta+ the anchor changes nothing: D(pi, beta-) ~ D(beta+, beta-) is the smaller one
    torch.testing.assert_close(dual_violation(torch.tensor([0.1]), torch.tensor([0.14]), eps,
                                              separation=torch.tensor([0.15])), torch.tensor([-0.04]))
    # an uninformative split (beta+ = beta-): the bound falls to epsilon, BEAR towards beta+
    torch.testing.assert_close(dual_violation(torch.tensor([0.1]), torch.tensor([0.5]), eps,
                                              separation=torch.tensor([0.0])), torch.tensor([0.05]))


def test_anchor_carries_no_gradient() -> None:
    separation = torch.tensor([0.1], requires_grad=True)
    d_plus = torch.tensor([0.3], requires_grad=True)
    dual_violation(d_plus, torch.tensor([0.5]), 0.05, repel_negative=True, separation=separation).sum().backward()
    assert d_plus.grad.item() == 1.0 and (separation.grad is None or separation.grad.item() == 0.0)


def _far_policy_violation(anchor: bool, bound_max: float = 0.0) -> dict[str, torch.Tensor]:
    """One update with the actor's pre-tanh mean pushed to +4, far from both (fresh) behaviour models."""
    p = problem()
    torch.manual_seed(0)
    config = DBRConfig(warmup_steps=0, anchor_bound=anchor, mmd_bound_max=bound_max, **TINY)
    algo = DBR(config, p, torch.device("cpu"))
    with torch.no_grad():
        algo.actor.net.out.bias[..., : p.action_dim] += 4.0
    return algo.update(random_batch(p, 64, torch.Generator().manual_seed(3)))


def test_a_policy_that_leaves_the_data_violates_the_anchored_constraint_but_not_the_papers() -> None:
    """The collapse mechanism in miniature: far from both models, D(pi, beta+) ~ D(pi, beta-), so the paper's
    g stays near 0; the anchored bound does not grow with the drift, so g is large and alpha rises."""
    paper, anchored = _far_policy_violation(False), _far_policy_violation(True)
    assert paper["mmd_plus"] > 3 * paper["mmd_separation"], "the policy should be far from both models"
    assert abs(paper["violation"]) < 0.1 * paper["mmd_plus"]
    assert anchored["violation"] > 0.5 * anchored["mmd_plus"] and anchored["lagrange"] > 1.0


def test_the_fixed_cap_is_on_by_default_and_bounds_even_the_papers_constraint() -> None:
    """The default ``mmd_bound_max`` (0.1) caps the bound whatever the behaviour models' distances: far from the
    data, ``g = E[D(pi, beta+)] - 0.1`` with or without the anchor."""
    assert DBRConfig().mmd_bound_max == 0.1
    for anchor in (False, True):
        capped = _far_policy_violation(anchor, bound_max=DBRConfig().mmd_bound_max)
        torch.testing.assert_close(capped["violation"], capped["mmd_plus"] - 0.1)


def test_multiplier_is_frozen_during_warmup_and_moves_after() -> None:
    p = problem()
    torch.manual_seed(0)
    algo = DBR(DBRConfig(warmup_steps=3, **TINY), p, torch.device("cpu"))
    gen = torch.Generator().manual_seed(4)
    for _ in range(3):
        metrics = algo.update(random_batch(p, 32, gen))
        assert metrics["lagrange"] == 1.0 and metrics["q_pi"] == 0.0
    metrics = algo.update(random_batch(p, 32, gen))
    assert metrics["lagrange"] != 1.0


@pytest.mark.parametrize("repel", [False, True])
def test_dual_violation_gradient_reaches_beta_minus_only_when_repelling(repel: bool) -> None:
    d_plus = torch.tensor([0.2], requires_grad=True)
    d_minus = torch.tensor([0.5], requires_grad=True)
    dual_violation(d_plus, d_minus, 0.05, repel_negative=repel).sum().backward()
    assert d_plus.grad.item() == 1.0
    assert (d_minus.grad is not None and d_minus.grad.item() == -1.0) == repel
    # below eps the bound is the constant eps: no gradient to beta- even when repelling
    d_minus_small = torch.tensor([0.01], requires_grad=True)
    dual_violation(d_plus, d_minus_small, 0.05, repel_negative=True).sum().backward()
    assert d_minus_small.grad.item() == 0.0


def test_two_behaviour_models_fit_their_own_subsets() -> None:
    """beta+ fitted on the rewarded mode only, beta- on the other: samples land on their own mode."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    vae = ConditionalVAE(1, 2, 1, hidden_sizes=(32, 32), n_models=2)
    opt = torch.optim.Adam(vae.parameters(), lr=3e-3)
    for _ in range(300):
        batch = two_mode_bandit(64, gen)
        good = batch.reward[..., 0]  # [B, 1]
        masks = split_masks(good, torch.full_like(good, 0.5))  # rewarded rows in D+, the rest in D-
        loss = vae.loss(batch.obs, batch.action, masks).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        samples = torch.tanh(vae.sample_raw(torch.randn(128, 1, 2, generator=gen), 8))  # [B, N, 2, K, A]
    plus, minus = samples[:, :, PLUS].mean().item(), samples[:, :, MINUS].mean().item()
    assert plus > 0.35 and minus < -0.35, f"beta+ mean {plus:.3f}, beta- mean {minus:.3f} (modes at +-0.5)"


@pytest.mark.parametrize("threshold", [0.05, 10.0])
def test_lagrange_multiplier_moves_with_the_sign_of_the_violation(threshold: float) -> None:
    p = problem()
    torch.manual_seed(0)
    algo = DBR(DBRConfig(mmd_threshold=threshold, warmup_steps=0, **TINY), p, torch.device("cpu"))
    gen = torch.Generator().manual_seed(2)
    before = algo.log_lagrange.detach().clone()
    for _ in range(3):
        metrics = algo.update(random_batch(p, 32, gen))
        after = algo.log_lagrange.detach().clone()
        assert metrics["violation"] != 0
        assert torch.sign(after - before).item() == torch.sign(metrics["violation"]).item()
        before = after
    if threshold == 10.0:  # max(eps, D-) = eps = 10 > any MMD: always satisfied, so alpha falls
        assert metrics["violation"] < 0 and metrics["lagrange"] < 1.0


def test_rejects_multi_agent_problems_and_bad_kernels() -> None:
    with pytest.raises(ValueError, match="single-agent"):
        DBR(DBRConfig(**TINY), problem(n_agents=2), torch.device("cpu"))
    with pytest.raises(ValueError, match="mmd_kernel"):
        DBR(DBRConfig(mmd_kernel="rbf", **TINY), problem(), torch.device("cpu"))


@pytest.mark.parametrize("warmup_steps,repel", [(0, False), (0, True), (10, False)])
def test_update_makes_no_host_syncs(warmup_steps: int, repel: bool) -> None:
    p = problem()
    torch.manual_seed(0)
    algo = DBR(DBRConfig(warmup_steps=warmup_steps, repel_negative=repel, **TINY), p, torch.device("cpu"))
    batches = [random_batch(p, 16, torch.Generator().manual_seed(i)) for i in range(2)]
    with forbid_host_syncs():
        for batch in batches:
            metrics = algo.update(batch)
    assert all(torch.isfinite(v) for v in metrics.values())
    assert 0.0 <= metrics["plus_fraction"] <= 1.0


@pytest.mark.slow
def test_dbr_splits_the_bandit_into_its_two_modes_and_prefers_the_good_one() -> None:
    p = problem(obs_dim=2, action_dim=1)
    config = DBRConfig(hidden_sizes=(32, 32), vae_hidden_sizes=(32, 32), warmup_steps=100, actor_lr=1e-3,
                       critic_lr=1e-3, vae_lr=1e-3, value_lr=1e-3)
    torch.manual_seed(0)
    algo = DBR(config, p, torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    fractions = []
    for step in range(500):
        metrics = algo.update(two_mode_bandit(64, gen))
        if step >= 300:
            fractions.append(metrics["plus_fraction"].item())
    assert all(torch.isfinite(v) for v in metrics.values())
    # The critic learns r(a); the data's value sits between the modes, so D+ is the rewarded half.
    assert 0.3 < sum(fractions) / len(fractions) < 0.7, f"mean D+ fraction {sum(fractions) / len(fractions):.3f}"
    probe = torch.randn(256, 1, 2, generator=gen)
    with torch.no_grad():
        samples = torch.tanh(algo.behaviour.sample_raw(probe, 8))  # [B, 1, 2, K, 1]
    assert samples[:, :, PLUS].mean() > 0.35 and samples[:, :, MINUS].mean() < -0.35
    assert algo.act(probe).mean() > 0.3, "the policy should act on the rewarded side"


def test_resumes_exactly_across_the_end_of_warmup(tmp_path) -> None:
    p = problem()
    assert_resumes_exactly(lambda: DBR(DBRConfig(warmup_steps=2, **TINY), p, torch.device("cpu")), p, tmp_path)


def test_bf16_update_is_finite_makes_no_host_syncs_and_tracks_float32() -> None:
    p = problem()
    batches = [random_batch(p, 32, torch.Generator().manual_seed(i)) for i in range(3)]
    runs = {}
    for bf16 in (False, True):
        torch.manual_seed(0)
        algo = DBR(DBRConfig(warmup_steps=1, bf16=bf16, **TINY), p, torch.device("cpu"))
        with forbid_host_syncs():
            runs[bf16] = [algo.update(batch) for batch in batches]
        assert all(v.dtype == torch.float32 and torch.isfinite(v) for m in runs[bf16] for v in m.values())
    # same initial critic, so the first update's Q(data) differs only by bfloat16 rounding
    torch.testing.assert_close(runs[True][0]["q_data"], runs[False][0]["q_data"], rtol=3e-2, atol=3e-2)
