"""MA-CQL's math: the penalty is cql.conservative_penalty's, the stacked update equals a per-agent loop, the
per-agent gradient clip, the proposals, and the shipped per-dataset configs."""
from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator

import pytest
import torch

from offline_bench.algos import get_algorithm
from offline_bench.algos.common import clip_grad_norm
from offline_bench.algos.cql import conservative_penalty
from offline_bench.algos.ma_cql import (
    MACQL,
    MACQLConfig,
    conservative_critic_loss,
    conservative_critic_update,
    penalty_proposals,
)
from offline_bench.batch import Batch
from offline_bench.train.config import resolve_config

from test_algorithms import make_batch, make_problem

torch.set_num_threads(1)
TINY = dict(hidden_sizes=(16, 16))


def test_penalty_is_conservative_penalty_per_agent_and_critic() -> None:
    torch.manual_seed(0)
    b, n, e, k = 5, 3, 2, 4
    q_data = torch.randn(b, n, e)
    q_sampled = torch.randn(k, b, n, e)
    log_density = torch.randn(k, 1, n)
    target = torch.randn(b, n, 1)
    loss, td, penalty = conservative_critic_loss(q_data, q_sampled, log_density, target, cql_alpha=2.0, temperature=0.7)
    expected_pen = 0.0
    for i in range(n):
        for j in range(e):
            pen = conservative_penalty(q_sampled[:, :, i, j].T, log_density[:, 0, i].expand(b, k), q_data[:, i, j], 0.7)
            expected_pen += pen.mean()
    expected_td = ((q_data - target) ** 2).mean(0).sum()
    torch.testing.assert_close(penalty, expected_pen)
    torch.testing.assert_close(td, expected_td)
    torch.testing.assert_close(loss, expected_td + 2.0 * expected_pen)
    # and a hand-computed log-sum-exp for one entry
    manual = 0.7 * math.log(sum(math.exp((q_sampled[m, 0, 0, 0] - log_density[m, 0, 0]) / 0.7) for m in range(k)))
    assert abs(manual - q_data[0, 0, 0].item() - conservative_penalty(
        q_sampled[:, 0, 0, 0], log_density[:, 0, 0], q_data[0, 0, 0], 0.7).item()) < 1e-5


def test_uniform_proposals_are_masked_and_have_uniform_log_density() -> None:
    problem = make_problem(3)  # last agent: 2 of 3 action dims
    algo = MACQL(MACQLConfig(**TINY), problem, torch.device("cpu"))
    obs = torch.randn(8, 3, problem.obs_dim)
    actions, log_density = penalty_proposals(obs, obs, algo.actor, algo.mask, algo.config)
    assert actions.shape == (10, 8, 3, 3)
    assert actions.abs().max() <= 1.0 and (actions[..., 2, 2] == 0).all()
    torch.testing.assert_close(log_density[0, 0], torch.tensor([-3 * math.log(2), -3 * math.log(2), -2 * math.log(2)]))


def test_policy_proposals_carry_gaussian_log_density() -> None:
    problem = make_problem(1)
    config = MACQLConfig(**TINY, cql_policy_actions=True, cql_n_actions=4, cql_policy_noise=0.2)
    algo = MACQL(config, problem, torch.device("cpu"))
    obs = torch.randn(6, 1, problem.obs_dim)
    torch.manual_seed(3)
    actions, log_density = penalty_proposals(obs, obs, algo.actor, algo.mask, config)
    assert actions.shape == (12, 6, 1, 3) and log_density.shape == (12, 6, 1)
    # The log-density of a 3-d N(0, 0.2^2) is at most its value at 0 and falls with distance from pi(o).
    peak = 3 * (-math.log(0.2) - 0.5 * math.log(2 * math.pi))
    assert (log_density[4:] <= peak + 1e-5).all()
    with torch.no_grad():
        pi = algo.actor(obs)
    dist = (actions[4:8] - pi).square().sum(-1)  # [4, 6, 1], unclamped where |pi + noise| < 1
    inside = (actions[4:8].abs() < 1).all(-1)
    expected = peak - dist / (2 * 0.2**2)
    torch.testing.assert_close(log_density[4:8][inside], expected[inside], atol=1e-4, rtol=1e-4)


def test_per_agent_clip_scales_each_agent_alone() -> None:
    w = torch.zeros(3 * 2, 4, 5, requires_grad=True)  # 3 agents x 2 critics, agent-major
    bn = torch.zeros(3 * 2 * 4, requires_grad=True)
    w.grad = torch.ones_like(w)
    w.grad[:2] *= 0.001  # agent 0: tiny gradient, must stay unscaled
    bn.grad = torch.ones_like(bn)
    bn.grad[:8] *= 0.001
    before = w.grad.clone()
    norms = clip_grad_norm([w, bn], max_norm=0.5, n_agents=3)
    assert norms.shape == (3,)
    torch.testing.assert_close(w.grad[:2], before[:2])
    for agent in (1, 2):
        share = torch.cat([w.grad[2 * agent: 2 * agent + 2].flatten(), bn.grad[8 * agent: 8 * agent + 8]])
        assert abs(share.norm().item() - 0.5) < 1e-4


def _slice_state(state: dict, agent: int, n_agents: int) -> dict:
    """Agent ``agent``'s share of a stacked module's state dict (every tensor is agent-major on axis 0)."""
    out = {}
    for key, value in state.items():
        if torch.is_tensor(value) and value.dim() > 0 and value.shape[0] % n_agents == 0 and "num_batches" not in key:
            size = value.shape[0] // n_agents
            out[key] = value[agent * size:(agent + 1) * size].clone()
        else:
            out[key] = value
    return out


def agent_problem(problem, i: int):
    """Agent i's single-agent share of a multi-agent problem."""
    return dataclasses.replace(
        problem, n_agents=1, obs_sizes=problem.obs_sizes[i:i + 1], action_sizes=problem.action_sizes[i:i + 1],
        obs_mean=problem.obs_mean[i:i + 1], obs_std=problem.obs_std[i:i + 1],
    )


def agent_batch(batch: Batch, i: int) -> Batch:
    """Agent i's columns of a batch (done and next_action_valid are shared)."""
    return Batch(batch.obs[:, i:i + 1], batch.action[:, i:i + 1], batch.reward[:, i:i + 1],
                 batch.next_obs[:, i:i + 1], batch.done, batch.next_action[:, i:i + 1], batch.next_action_valid)


def split_into_singles(stacked, n_agents: int, problem) -> list:
    """Single-agent learners holding exactly agent i's weights of ``stacked``."""
    singles = []
    for i in range(n_agents):
        single = type(stacked)(stacked.config, agent_problem(problem, i), torch.device("cpu"))
        for name in ("actor", "critic", "critic_target"):
            getattr(single, name).load_state_dict(_slice_state(getattr(stacked, name).state_dict(), i, n_agents))
        if hasattr(stacked, "actor_target"):
            single.actor_target.load_state_dict(_slice_state(stacked.actor_target.state_dict(), i, n_agents))
        singles.append(single)
    return singles


@pytest.mark.parametrize("n_critics", [1, 2])
def test_stacked_critic_step_matches_a_loop_of_single_agent_learners(n_critics: int) -> None:
    """One batched conservative critic step on 3 agents = 3 single-agent steps with the same weights and samples."""
    problem = make_problem(3, obs_dim=4, action_dim=2)
    config = MACQLConfig(**TINY, cql_n_actions=3, n_critics=n_critics)
    torch.manual_seed(0)
    stacked = MACQL(config, problem, torch.device("cpu"))
    singles = split_into_singles(stacked, 3, problem)
    batch = make_batch(problem, 16, torch.Generator().manual_seed(5))
    proposals = (torch.rand(3, 16, 3, 2) * 2 - 1) * stacked.mask, torch.randn(3, 1, 3)

    def step(algo, b: Batch, props) -> dict:
        obs, next_obs = algo.normalizer(b.obs), algo.normalizer(b.next_obs)
        return conservative_critic_update(algo.critic, algo.critic_target, algo.actor, algo.actor_target,
                                          algo.critic_opt, obs, next_obs, b, algo.mask, config, proposals=props)

    for _ in range(2):  # two steps: Adam's state must match too
        m = step(stacked, batch, proposals)
        total = sum(step(s, agent_batch(batch, i), (proposals[0][:, :, i:i + 1], proposals[1][:, :, i:i + 1]))["critic_loss"]
                    for i, s in enumerate(singles))
        torch.testing.assert_close(m["critic_loss"], total, atol=1e-5, rtol=1e-5)
    stacked_state = stacked.critic.state_dict()
    for i, single in enumerate(singles):
        expected = _slice_state(stacked_state, i, 3)
        for key, value in single.critic.state_dict().items():
            if "num_batches" not in key:
                torch.testing.assert_close(value, expected[key], atol=1e-5, rtol=1e-4, msg=f"critic.{key} agent {i}")


@pytest.mark.parametrize("task,quality,alpha,scale", [
    ("spread", "random", 0.5, 8.0), ("spread", "mixed", 1.0, 8.0), ("spread", "medium", 5.0, 15.0),
    ("spread", "expert", 5.0, 22.0), ("tag", "medium", 5.0, 1.0), ("world", "medium", 0.5, 1.0),
    ("halfcheetah-2x3", "mixed", 5.0, 1.0),
])
def test_shipped_dataset_configs_resolve(task: str, quality: str, alpha: float, scale: float) -> None:
    resolved = resolve_config("ma-cql", get_algorithm("ma-cql").config_cls, f"{task}-{quality}")
    config = resolved.algo_config
    assert config.cql_alpha == alpha
    assert config.reward_scale == scale  # spread's reward, scaled per dataset to the authors'
    if task == "halfcheetah-2x3":
        assert config.hidden_sizes == (256, 256) and config.batch_size == 256 and config.gamma == 0.99
        assert config.cql_policy_actions and config.polyak == 0.005 and config.actor_lr == 3e-4
    else:
        assert config.hidden_sizes == (64, 64) and config.batch_size == 1024 and not config.cql_policy_actions


def test_reward_scale_multiplies_the_reward_in_the_target_only() -> None:
    """reward_scale=c gives the same critic step as rewards multiplied by c (and touches nothing else)."""
    problem = make_problem(2)
    gen = torch.Generator().manual_seed(3)
    batch = make_batch(problem, 32, gen)
    scaled = dataclasses.replace(batch, reward=batch.reward * 4.0)
    states = []
    for config, data in ((MACQLConfig(**TINY, reward_scale=4.0), batch), (MACQLConfig(**TINY), scaled)):
        torch.manual_seed(0)
        algo = MACQL(config, problem, torch.device("cpu"))
        metrics = algo.update(data)
        states.append((metrics["td_loss"], algo.critic.state_dict()))
    torch.testing.assert_close(states[0][0], states[1][0])
    for key, value in states[0][1].items():
        torch.testing.assert_close(value, states[1][1][key], msg=key)
    assert states[0][0] > 0


def test_conservative_term_lowers_unseen_actions() -> None:
    """With a large cql_alpha, a few hundred tiny updates push Q of actions far from the data below Q of the data."""
    problem = make_problem(1, obs_dim=3, action_dim=2)
    config = MACQLConfig(hidden_sizes=(32, 32), cql_alpha=5.0, critic_lr=3e-3, actor_lr=1e-4, input_norm=False)
    torch.manual_seed(0)
    algo = MACQL(config, problem, torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    base = make_batch(problem, 128, gen)
    data_action = torch.full_like(base.action, 0.5)  # the data only ever shows a = (0.5, 0.5)
    batch = Batch(base.obs, data_action, base.reward * 0, base.next_obs, base.done, base.next_action, base.next_action_valid)
    for _ in range(150):
        algo.update(batch)
    with torch.no_grad():
        q_data = algo.critic.first(batch.obs, data_action).mean()
        q_far = algo.critic.first(batch.obs, -data_action).mean()
    assert q_data > q_far + 0.5, (q_data, q_far)


@contextlib.contextmanager
def forbid_host_syncs() -> Iterator[None]:
    """Make every tensor -> Python conversion raise (the CPU stand-in for a device sync)."""
    names = ("item", "__bool__", "__float__", "__int__", "tolist", "numpy")
    saved = {name: getattr(torch.Tensor, name) for name in names}

    def refuse(self: torch.Tensor, *args: object, **kwargs: object) -> None:
        raise AssertionError("host sync inside update()")

    try:
        for name in names:
            setattr(torch.Tensor, name, refuse)
        yield
    finally:
        for name, fn in saved.items():
            setattr(torch.Tensor, name, fn)


@pytest.mark.parametrize("algo_id,overrides", [
    ("ma-cql", {}),
    ("ma-cql", {"cql_policy_actions": True, "critic": "centralized", "policy_noise": 0.2, "policy_freq": 2}),
    ("omar", {}),
    ("omar", {"omar_n_elites": 3, "critic": "centralized", "cql_policy_actions": True}),
    ("ma-icq", {}),
    ("ma-icq", {"critic": "centralized", "n_critics": 2}),
])
def test_update_makes_no_host_syncs(algo_id: str, overrides: dict) -> None:
    algo_cls = get_algorithm(algo_id)
    problem = make_problem(3)
    torch.manual_seed(0)
    algo = algo_cls(dataclasses.replace(algo_cls.config_cls(), **TINY, **overrides), problem, torch.device("cpu"))
    batches = [make_batch(problem, 16, torch.Generator().manual_seed(i)) for i in range(2)]
    with forbid_host_syncs():
        for batch in batches:
            metrics = algo.update(batch)
    assert all(torch.isfinite(v) for v in metrics.values())


@pytest.mark.parametrize("algo_id,overrides", [
    ("ma-cql", {}),
    ("ma-cql", {"cql_policy_actions": True, "critic": "centralized", "policy_noise": 0.2, "input_norm": False}),
    ("omar", {}),
    ("omar", {"omar_n_elites": 3, "critic": "centralized", "cql_policy_actions": True, "input_norm": False}),
])
def test_bf16_update_is_finite_makes_no_host_syncs_and_tracks_float32(algo_id: str, overrides: dict) -> None:
    algo_cls = get_algorithm(algo_id)
    problem = make_problem(3)
    batches = [make_batch(problem, 32, torch.Generator().manual_seed(i)) for i in range(3)]
    runs = {}
    for bf16 in (False, True):
        torch.manual_seed(0)
        config = dataclasses.replace(algo_cls.config_cls(), **TINY, **overrides, bf16=bf16)
        algo = algo_cls(config, problem, torch.device("cpu"))
        with forbid_host_syncs():
            runs[bf16] = [algo.update(batch) for batch in batches]
        assert all(v.dtype == torch.float32 and torch.isfinite(v) for m in runs[bf16] for v in m.values())
        assert all(p.dtype == torch.float32 for p in [*algo.actor.parameters(), *algo.critic.parameters()])
    # Same networks and draws: the first update's outputs differ only by bfloat16 rounding.
    for key in ("q_mean", "td_loss", "cql_penalty"):
        torch.testing.assert_close(runs[True][0][key], runs[False][0][key], rtol=5e-2, atol=5e-2)
    assert not torch.equal(runs[True][0]["q_mean"], runs[False][0]["q_mean"]), "bf16=True ran in float32"


@pytest.mark.slow
def test_penalty_stays_bounded_on_spread_expert_v1_and_runs_away_on_v0(tmp_path) -> None:
    """The MPE action layouts (``offline_bench.envs.tasks``): MA-CQL with spread-expert's shipped config (alpha 5,
    reward x 22), 500 rounds on 100,000 transitions of each version. On v0 (mpe2's 5-dim layout, three free
    dimensions) the conservative penalty runs away below -100 and the TD loss above 200; on v1 (2-D forces) both
    stay bounded. About 2 minutes on one CPU thread (114 s here on 2026-12-05)."""
    import csv

    from offline_bench.data import collect
    from offline_bench.train.loop import train

    last = {}
    for version in ("v0", "v1"):
        dataset = f"spread-expert-{version}"
        collect(dataset, steps=100_000, root=tmp_path / "data")
        outcome = train("ma-cql", dataset, seed=0, steps=500, root=tmp_path / "data", runs=tmp_path / "runs",
                        sets={"eval_every": 500, "eval_episodes": 2})
        with open(outcome.run_dir / "metrics.csv", newline="") as f:
            last[version] = list(csv.DictReader(f))[-1]
    assert float(last["v0"]["cql_penalty"]) < -100 and float(last["v0"]["td_loss"]) > 200, last["v0"]
    assert float(last["v1"]["cql_penalty"]) > -50 and float(last["v1"]["td_loss"]) < 150, last["v1"]


@pytest.mark.parametrize("algo_id", ["ma-cql", "omar"])
def test_lagrange_multiplier_is_per_agent_and_moves_towards_the_target_gap(algo_id: str) -> None:
    """cql_lagrange: alpha' of every agent falls when the penalty is far below the threshold and rises when far above
    (the same rule as the single-agent CQL, lagrange_conservative_loss), and the update makes no host syncs."""
    algo_cls = get_algorithm(algo_id)
    problem = make_problem(3)
    batches = [make_batch(problem, 16, torch.Generator().manual_seed(i)) for i in range(5)]
    for gap, direction in ((1e3, -1.0), (-1e3, 1.0)):
        config = dataclasses.replace(algo_cls.config_cls(), **TINY, cql_lagrange=True, cql_target_gap=gap)
        torch.manual_seed(0)
        algo = algo_cls(config, problem, torch.device("cpu"))
        with forbid_host_syncs():
            for batch in batches:
                metrics = algo.update(batch)
        alpha_prime = algo.multiplier.log_alpha_prime.detach().exp()  # [N]
        assert alpha_prime.shape == (3,)
        assert bool((direction * (alpha_prime - 1.0) > 0.02).all()), (gap, alpha_prime)
        assert direction * (metrics["cql_alpha_prime"].item() - 1.0) > 0  # the weight the last critic step used


def test_lagrange_off_has_no_multiplier_and_lagrange_refuses_a_checkpoint_without_one() -> None:
    """Without cql_lagrange there is no multiplier and no checkpoint entry for it (older runs still resume);
    a cql_lagrange run refuses a checkpoint written without it."""
    problem = make_problem(2)
    torch.manual_seed(0)
    plain = MACQL(MACQLConfig(**TINY), problem, torch.device("cpu"))
    assert plain.multiplier is None and "cql_multiplier" not in plain.state_dict()
    lagrange = MACQL(MACQLConfig(**TINY, cql_lagrange=True), problem, torch.device("cpu"))
    assert "cql_multiplier" in lagrange.state_dict()
    with pytest.raises(ValueError, match="without cql_lagrange"):
        lagrange.load_state_dict(plain.state_dict())
