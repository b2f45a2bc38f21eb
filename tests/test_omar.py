"""OMAR's math: the sampling search climbs a toy quadratic critic, a_hat is the better of the search and pi(o),
the Q1-only scoring pass equals the critic's first head, the actor loss equals a per-agent loop, and configs."""
from __future__ import annotations

import pytest
import torch

from offline_bench.algos import get_algorithm
from offline_bench.algos.omar import (
    OMAR,
    OMARConfig,
    first_critic_values,
    omar_actor_loss,
    rectify_actions,
    sampling_search,
)
from offline_bench.train.config import resolve_config

from test_algorithms import make_batch, make_problem
from test_ma_cql import _slice_state, agent_batch, split_into_singles

torch.set_num_threads(1)
TINY = dict(hidden_sizes=(16, 16))


def quadratic_q(optimum: torch.Tensor):
    """A toy critic per agent: Q(a) = -|a - optimum_n|^2, optimum ``[N, A]``; actions ``[K, B, N, A] -> [K, B, N]``."""
    return lambda actions: -(actions - optimum).square().sum(-1)


@pytest.mark.parametrize("n_elites,n_samples,beta", [(0, 10, 1.0), (0, 20, 5.0), (5, 20, 1.0)])
def test_search_mean_moves_towards_the_higher_q_region(n_elites: int, n_samples: int, beta: float) -> None:
    torch.manual_seed(0)
    optimum = torch.tensor([[0.6, -0.4], [-0.7, 0.2], [0.3, 0.8]])  # [N=3, A=2]
    mask = torch.ones(3, 2)
    shape = (256, 3, 2)
    distance = []
    for iters in (1, 3):
        _, _, mu, sigma = sampling_search(quadratic_q(optimum), shape, mask, iters, n_samples, 0.0, 2.0, n_elites, beta)
        distance.append((mu - optimum).norm(dim=-1).mean().item())
        assert (sigma < 2.0).all(), "the search must narrow from sigma0"
    start = optimum.norm(dim=-1).mean().item()  # the distance of mu0 = 0
    assert distance[0] < start and distance[1] < distance[0], (start, distance)


def test_rectified_action_is_best_of_search_and_policy() -> None:
    torch.manual_seed(1)
    optimum = torch.tensor([[0.5, 0.5], [-0.5, 0.0]])
    q_fn = quadratic_q(optimum)
    mask = torch.ones(2, 2)
    pi_good = optimum.expand(64, 2, 2).clone()  # pi(o) already at the optimum: nothing can beat it
    a_hat = rectify_actions(q_fn, pi_good, q_fn(pi_good[None])[0], mask, 3, 10, 0.0, 2.0)
    torch.testing.assert_close(a_hat, pi_good)
    pi_bad = -optimum.expand(64, 2, 2).clone()  # far from the optimum: the search must win
    q_bad = q_fn(pi_bad[None])[0]
    a_hat = rectify_actions(q_fn, pi_bad, q_bad, mask, 3, 10, 0.0, 2.0)
    assert (q_fn(a_hat[None])[0] > q_bad).float().mean() > 0.95
    assert a_hat.abs().max() <= 1.0


def test_search_respects_padded_action_dimensions() -> None:
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    samples, q, mu, _ = sampling_search(quadratic_q(torch.zeros(2, 2)), (8, 2, 2), mask, 2, 6, 0.0, 2.0)
    assert (samples[:, :, 1, 1] == 0).all() and (mu[:, 1, 1] == 0).all()
    assert samples.shape == (6, 8, 2, 2) and q.shape == (6, 8, 2)


@pytest.mark.parametrize("critic", ["decentralized", "centralized"])
def test_first_critic_values_equal_the_critics_first_head(critic: str) -> None:
    problem = make_problem(3)
    torch.manual_seed(0)
    algo = OMAR(OMARConfig(**TINY, critic=critic), problem, torch.device("cpu"))
    batch = make_batch(problem, 12, torch.Generator().manual_seed(0))
    algo.update(batch)  # moves BatchNorm affine parameters off their defaults
    actions = (torch.rand(5, 12, 3, problem.action_dim) * 2 - 1) * algo.mask
    fast = first_critic_values(algo.critic, batch.obs, actions, others=batch.action)
    with torch.no_grad():
        full = algo.critic.first(batch.obs, actions, others=batch.action)
    torch.testing.assert_close(fast, full, atol=1e-5, rtol=1e-5)


def test_actor_loss_formula_and_per_agent_independence() -> None:
    torch.manual_seed(2)
    pi = torch.rand(7, 3, 2, requires_grad=True)
    a_hat = torch.rand(7, 3, 2)
    q_pi = (pi.sum(-1) * torch.tensor([1.0, 2.0, 3.0]))  # [B, N], depends on pi
    loss = omar_actor_loss(pi, a_hat, q_pi, omar_coe=0.7, action_l2=1e-3)
    expected = sum(
        0.7 * ((pi[:, n] - a_hat[:, n]) ** 2).mean() - 0.3 * q_pi[:, n].mean() + 1e-3 * (pi[:, n] ** 2).mean()
        for n in range(3)
    )
    torch.testing.assert_close(loss, expected)
    (grad,) = torch.autograd.grad(loss, pi, retain_graph=True)
    for n in range(3):  # agent n's gradient is its own loss's gradient
        single = omar_actor_loss(pi[:, n:n + 1], a_hat[:, n:n + 1], q_pi[:, n:n + 1], 0.7, 1e-3)
        (g_n,) = torch.autograd.grad(single, pi, retain_graph=True)
        torch.testing.assert_close(grad[:, n], g_n[:, n])


def test_stacked_actor_step_matches_a_loop_of_single_agents() -> None:
    """The batched OMAR actor step (given a_hat) equals per-agent steps of single-agent learners."""
    from offline_bench.algos.common import optimizer_step

    problem = make_problem(3, obs_dim=4, action_dim=2)
    config = OMARConfig(**TINY, omar_coe=0.6)
    torch.manual_seed(0)
    stacked = OMAR(config, problem, torch.device("cpu"))
    singles = split_into_singles(stacked, 3, problem)
    batch = make_batch(problem, 16, torch.Generator().manual_seed(3))
    a_hat = (torch.rand(16, 3, 2) * 2 - 1) * stacked.mask

    def actor_step(algo, b, target) -> torch.Tensor:
        obs = algo.normalizer(b.obs)
        pi = algo.actor(obs) * algo.mask
        q_pi = algo.critic.first(obs, pi, others=b.action)
        loss = omar_actor_loss(pi, target, q_pi, config.omar_coe, config.action_l2)
        optimizer_step(algo.actor_opt, loss, algo.actor_params, config.max_grad_norm, algo.problem.n_agents)
        return loss.detach()

    for _ in range(2):
        total = actor_step(stacked, batch, a_hat)
        loop = sum(actor_step(s, agent_batch(batch, i), a_hat[:, i:i + 1]) for i, s in enumerate(singles))
        torch.testing.assert_close(total, loop, atol=1e-5, rtol=1e-5)
    for i, single in enumerate(singles):
        expected = _slice_state(stacked.actor.state_dict(), i, 3)
        for key, value in single.actor.state_dict().items():
            if "num_batches" not in key:
                torch.testing.assert_close(value, expected[key], atol=1e-5, rtol=1e-4, msg=f"actor.{key} agent {i}")


@pytest.mark.parametrize("dataset,coe,alpha,scale", [
    ("spread-mixed", 1.0, 1.0, 8.0), ("spread-expert", 1.0, 5.0, 22.0), ("tag-medium", 0.7, 5.0, 1.0),
    ("world-medium", 0.1, 0.5, 1.0), ("world-mixed", 0.7, 1.0, 1.0), ("halfcheetah-2x3-expert", 0.5, 5.0, 1.0),
])
def test_shipped_dataset_configs_resolve(dataset: str, coe: float, alpha: float, scale: float) -> None:
    config = resolve_config("omar", get_algorithm("omar").config_cls, dataset).algo_config
    assert (config.omar_coe, config.cql_alpha) == (coe, alpha)
    assert config.reward_scale == scale
    if dataset.startswith("halfcheetah-2x3"):
        assert (config.omar_iters, config.omar_n_samples, config.omar_n_elites) == (2, 20, 5)
        assert config.hidden_sizes == (256, 256) and config.gamma == 0.99 and config.cql_policy_actions
    else:
        assert (config.omar_iters, config.omar_n_samples, config.omar_n_elites) == (3, 10, 0)
        assert config.omar_sigma == 2.0 and config.omar_mu == 0.0


def test_omar_update_with_cem_and_centralized_critic_runs() -> None:
    problem = make_problem(2)
    config = OMARConfig(**TINY, omar_iters=2, omar_n_samples=6, omar_n_elites=2, critic="centralized",
                        cql_policy_actions=True)
    torch.manual_seed(0)
    algo = OMAR(config, problem, torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        metrics = algo.update(make_batch(problem, 16, gen))
    assert all(torch.isfinite(v) for v in metrics.values())
    assert 0.0 <= metrics["rectified_fraction"] <= 1.0


def test_bad_search_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="omar_n_elites"):
        OMAR(OMARConfig(**TINY, omar_n_elites=20), make_problem(1), torch.device("cpu"))
    with pytest.raises(ValueError, match="omar_coe"):
        OMAR(OMARConfig(**TINY, omar_coe=1.5), make_problem(1), torch.device("cpu"))


@pytest.mark.slow
def test_omar_and_ma_cql_beat_random_on_spread_mixed(tmp_path) -> None:
    """Issue 5's learning check, one seed: on spread-mixed (187,500 transitions) OMAR and MA-CQL, with the shipped
    per-dataset configs at the authors' budget (2,000 rounds, batch 1024), end clearly above the random reference
    (mean normalized score of the last 10 evaluations > 5). About 10 minutes on one CPU thread.

    Five seeds of each give OMAR 29.6 +- 4.2 and MA-CQL 32.0 +- 2.3 on spread-mixed-v1 (2-D forces;
    ``leaderboards/learning-checks-spread.md`` has v0's 26.2 +- 7.9 and 26.2 +- 6.2): at this budget OMAR is still
    rising. At 6,000 rounds OMAR leads, 38.4 +- 3.1 against 30.2 +- 6.0, ahead on 4 of 5 seeds
    (``leaderboards/learning-checks-spread-long.md``, 8-12 min per run). One seed's order is not asserted here.

    Uses ``$OFFLINE_BENCH_DATA/spread-mixed`` when collected there, else re-makes it by re-running the spread
    behaviour training up to its medium step (``collect --retrain``, about 10 more minutes).
    """
    import os

    from offline_bench.data import collect, load_dataset
    from offline_bench.evaluate import normalized_score
    from offline_bench.train.loop import train

    root = os.environ.get("OFFLINE_BENCH_DATA")
    try:
        load_dataset("spread-mixed", root=root)
    except Exception:  # noqa: BLE001 - any missing/unverifiable file: make a fresh one
        root = str(tmp_path / "data")
        collect("spread-mixed", root=root, retrain=True, run_dir=tmp_path / "behaviour")
    dataset = load_dataset("spread-mixed", root=root)
    assert dataset.manifest["transitions"] >= 100_000
    refs = dataset.manifest["references"]
    scores = {}
    for algo in ("omar", "ma-cql"):
        outcome = train(algo, "spread-mixed", seed=0, root=root, runs=tmp_path / "runs", device="cpu")
        last_k = outcome.result["last_k_return"]
        scores[algo] = normalized_score(last_k, refs["random"], refs["expert"])
    assert scores["ma-cql"] > 5 and scores["omar"] > 5, scores
