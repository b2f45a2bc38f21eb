"""The shared harness: every registered algorithm on a tiny problem (N = 1, and N = 3 for multi-agent ones).

Parametrised over the ids in ``offline_bench.algos.ALGORITHMS``; an algorithm whose module does not exist yet fails
for its own id only, with a message naming the missing module.
"""
from __future__ import annotations

import copy
import dataclasses
import importlib
import math

import numpy as np
import pytest
import torch
from torch import Tensor

from offline_bench.algos import ALGORITHMS, Problem
from offline_bench.batch import Batch

torch.set_num_threads(1)

SINGLE_AGENT_ONLY = {"td3bc", "cql", "bear", "dbr"}
# Spellings other projects use for our canonical field names (STYLE.md rule 1).
NON_CANONICAL = {
    "discount": "gamma",
    "tau": "polyak",
    "target_update_rate": "polyak",
    "lr": "actor_lr / critic_lr",
    "policy_lr": "actor_lr",
    "qf_lr": "critic_lr",
    "hidden_dim": "hidden_sizes",
    "hidden_size": "hidden_sizes",
    "hidden_layers": "hidden_sizes",
    "num_critics": "n_critics",
    "num_qs": "n_critics",
    "n_qs": "n_critics",
    "batch": "batch_size",
    "target_noise": "policy_noise",
    "target_policy_noise": "policy_noise",
    "target_noise_clip": "noise_clip",
    "policy_delay": "policy_freq",
    "update_actor_interval": "policy_freq",
    "min_q_weight": "cql_alpha",
    "conservative_weight": "cql_alpha",
    "env_name": "dataset_id",
    "device": "(chosen by the loop)",
    "seed": "(chosen by the loop)",
}
TINY_HIDDEN = (16, 16)


def load(algo_id: str) -> type:
    """The algorithm class of ``algo_id``, or a test failure that says which module or class is missing."""
    module_name, class_name = ALGORITHMS[algo_id].split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        pytest.fail(f"{algo_id}: cannot import {module_name} ({exc})")
    if not hasattr(module, class_name):
        pytest.fail(f"{algo_id}: {module_name} defines no class {class_name}")
    return getattr(module, class_name)


def tiny_config(algo_cls: type) -> object:
    """The default config with every ``*hidden_sizes`` field shrunk, so a test update takes milliseconds."""
    config = algo_cls.config_cls()
    small = {
        f.name: TINY_HIDDEN
        for f in dataclasses.fields(config)
        if f.name.endswith("hidden_sizes") and isinstance(getattr(config, f.name), tuple)
    }
    return dataclasses.replace(config, **small)


def make_problem(n_agents: int, obs_dim: int = 6, action_dim: int = 3) -> Problem:
    """A problem whose last agent (when N > 1) has smaller, zero-padded observation and action spaces."""
    obs_sizes = tuple(obs_dim if i < n_agents - 1 or n_agents == 1 else obs_dim - 2 for i in range(n_agents))
    action_sizes = tuple(action_dim if i < n_agents - 1 or n_agents == 1 else action_dim - 1 for i in range(n_agents))
    rng = np.random.default_rng(n_agents)
    mean = rng.normal(size=(n_agents, obs_dim)).astype(np.float32)
    std = rng.uniform(0.5, 2.0, size=(n_agents, obs_dim)).astype(np.float32)
    for i, size in enumerate(obs_sizes):
        mean[i, size:], std[i, size:] = 0.0, 1.0
    return Problem(n_agents, obs_dim, action_dim, obs_sizes, action_sizes, mean, std, dataset_size=1000)


def make_batch(problem: Problem, batch_size: int, generator: torch.Generator) -> Batch:
    """Random tensors shaped (and padded) like a sampled Batch."""
    b, n, o, a = batch_size, problem.n_agents, problem.obs_dim, problem.action_dim
    obs_mask = torch.zeros(n, o)
    act_mask = torch.zeros(n, a)
    for i, (so, sa) in enumerate(zip(problem.obs_sizes, problem.action_sizes)):
        obs_mask[i, :so], act_mask[i, :sa] = 1.0, 1.0
    mean, std = torch.as_tensor(problem.obs_mean), torch.as_tensor(problem.obs_std)
    obs = (mean + std * torch.randn(b, n, o, generator=generator)) * obs_mask  # [B, N, O]
    next_obs = (mean + std * torch.randn(b, n, o, generator=generator)) * obs_mask
    action = (torch.rand(b, n, a, generator=generator) * 2 - 1) * act_mask  # [B, N, A]
    next_action = (torch.rand(b, n, a, generator=generator) * 2 - 1) * act_mask
    valid = (torch.rand(b, 1, generator=generator) < 0.9).float()  # [B, 1]
    reward = torch.randn(b, n, 1, generator=generator)  # [B, N, 1]
    done = (torch.rand(b, 1, generator=generator) < 0.1).float() * valid  # [B, 1]
    return Batch(obs, action, reward, next_obs, done, next_action * valid.unsqueeze(-1), valid)


def cases() -> list[tuple[str, int]]:
    out = []
    for algo_id in ALGORITHMS:
        out.append((algo_id, 1))
        if algo_id not in SINGLE_AGENT_ONLY:
            out.append((algo_id, 3))
    return out


CASES = [pytest.param(a, n, id=f"{a}-N{n}") for a, n in cases()]
IDS = list(ALGORITHMS)


def build(algo_id: str, n_agents: int, seed: int = 0) -> tuple[object, Problem]:
    algo_cls = load(algo_id)
    problem = make_problem(n_agents)
    torch.manual_seed(seed)
    return algo_cls(tiny_config(algo_cls), problem, torch.device("cpu")), problem


def assert_finite_scalars(metrics: dict[str, Tensor], algo_id: str) -> None:
    assert isinstance(metrics, dict) and metrics, f"{algo_id}: update() must return a non-empty dict of metrics"
    for key, value in metrics.items():
        assert isinstance(value, Tensor), f"{algo_id}: metric {key} is {type(value).__name__}, not a Tensor"
        assert value.dim() == 0, f"{algo_id}: metric {key} has shape {tuple(value.shape)}, expected 0-dim"
        assert not value.requires_grad, f"{algo_id}: metric {key} is attached to the graph (detach it)"
        assert torch.isfinite(value), f"{algo_id}: metric {key} = {value}"


@pytest.mark.parametrize("algo_id,n_agents", CASES)
def test_updates_give_finite_scalar_metrics_with_stable_keys(algo_id: str, n_agents: int) -> None:
    algo, problem = build(algo_id, n_agents)
    gen = torch.Generator().manual_seed(1)
    keys = None
    for _ in range(4):
        metrics = algo.update(make_batch(problem, 32, gen))
        assert_finite_scalars(metrics, algo_id)
        keys = keys or set(metrics)
        assert set(metrics) == keys, f"{algo_id}: metric keys change between updates ({keys} vs {set(metrics)})"


@pytest.mark.parametrize("algo_id,n_agents", CASES)
def test_updates_change_the_policy(algo_id: str, n_agents: int) -> None:
    algo, problem = build(algo_id, n_agents)
    gen = torch.Generator().manual_seed(2)
    probe = make_batch(problem, 16, gen).obs
    before = algo.act(probe).clone()
    for _ in range(4):
        algo.update(make_batch(problem, 32, gen))
    assert not torch.equal(before, algo.act(probe)), f"{algo_id}: 4 updates left act() unchanged"


@pytest.mark.parametrize("algo_id,n_agents", CASES)
def test_act_shape_bounds_and_no_side_effects(algo_id: str, n_agents: int) -> None:
    algo, problem = build(algo_id, n_agents)
    gen = torch.Generator().manual_seed(3)
    for _ in range(2):
        algo.update(make_batch(problem, 32, gen))
    state_before = copy.deepcopy(algo.state_dict())
    obs = make_batch(problem, 5, gen).obs * 10.0  # far outside the data: actions must still be in bounds
    with torch.no_grad():
        action = algo.act(obs)
    assert action.shape == (5, n_agents, problem.action_dim), f"{algo_id}: act() gave {tuple(action.shape)}"
    assert torch.isfinite(action).all() and action.abs().max() <= 1.0, f"{algo_id}: actions outside [-1, 1]"
    torch.testing.assert_close(algo.act(obs), action, msg=f"{algo_id}: act() is not deterministic")
    single = algo.act(obs[:1])  # one env: BatchNorm layers must be in eval mode
    torch.testing.assert_close(single, action[:1], msg=f"{algo_id}: act() depends on the rest of the batch")
    _assert_states_equal(state_before, algo.state_dict(), f"{algo_id}: act() changed the state")


@pytest.mark.parametrize("algo_id,n_agents", CASES)
def test_state_dict_resumes_exactly(algo_id: str, n_agents: int, tmp_path) -> None:
    algo, problem = build(algo_id, n_agents, seed=0)
    gen = torch.Generator().manual_seed(4)
    for _ in range(3):
        algo.update(make_batch(problem, 32, gen))
    path = tmp_path / "checkpoint.pt"
    torch.save(algo.state_dict(), path)
    resumed, _ = build(algo_id, n_agents, seed=99)  # different initial weights, all overwritten by the load
    resumed.load_state_dict(torch.load(path, weights_only=True))

    batches = [make_batch(problem, 32, gen) for _ in range(3)]
    torch.manual_seed(7)
    expected = [algo.update(b) for b in batches]
    torch.manual_seed(7)
    got = [resumed.update(b) for b in batches]
    for step, (m_exp, m_got) in enumerate(zip(expected, got)):
        assert m_exp.keys() == m_got.keys()
        for key in m_exp:
            assert torch.equal(m_exp[key], m_got[key]), f"{algo_id}: step {step} metric {key} differs after resume"
    probe = batches[0].obs
    assert torch.equal(algo.act(probe), resumed.act(probe)), f"{algo_id}: policies differ after resume"


@pytest.mark.parametrize("algo_id", IDS)
def test_config_is_frozen_documented_and_canonical(algo_id: str) -> None:
    algo_cls = load(algo_id)
    config_cls = algo_cls.config_cls
    assert dataclasses.is_dataclass(config_cls), f"{algo_id}: config_cls must be a dataclass"
    assert config_cls.__dataclass_params__.frozen, f"{algo_id}: config dataclass must be frozen"
    config = config_cls()
    hash(config)  # every default is immutable
    for f in dataclasses.fields(config_cls):
        assert f.metadata.get("help", "").strip(), f"{algo_id}: field {f.name} has no help text (use cfg())"
        assert f.name not in NON_CANONICAL, f"{algo_id}: field {f.name} should be called {NON_CANONICAL[f.name]}"
    names = {f.name for f in dataclasses.fields(config_cls)}
    for required in ("gamma", "batch_size"):
        assert required in names, f"{algo_id}: config lacks {required}"
    assert 0.0 < config.gamma < 1.0 and config.batch_size > 0
    if "polyak" in names:
        assert 0.0 < config.polyak <= 1.0, f"{algo_id}: polyak is the target update rate, in (0, 1]"


@pytest.mark.parametrize("algo_id", IDS)
def test_declares_agent_support(algo_id: str) -> None:
    algo_cls = load(algo_id)
    assert isinstance(algo_cls.multi_agent, bool)
    assert algo_cls.multi_agent == (algo_id not in SINGLE_AGENT_ONLY), (
        f"{algo_id}: multi_agent should be {algo_id not in SINGLE_AGENT_ONLY}"
    )


def _assert_states_equal(a: object, b: object, msg: str) -> None:
    if isinstance(a, Tensor):
        assert isinstance(b, Tensor) and torch.equal(a, b), msg
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), msg
        for key in a:
            _assert_states_equal(a[key], b[key], f"{msg} ({key})")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), msg
        for x, y in zip(a, b):
            _assert_states_equal(x, y, msg)
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), msg
    else:
        assert a == b, msg


def test_multi_agent_actor_losses_average_over_each_agents_own_action_dimensions() -> None:
    """world pads its 2-dim agents to the leader's 6: the per-agent squared errors (OMAR's rectification and L2
    terms, TD3+BC's BC term, MA-ICQ's regression) are means over an agent's own dimensions, as the authors'
    per-agent ``F.mse_loss``, not over the padded width; with equal sizes nothing changes, bit for bit."""
    import torch.nn.functional as F

    from offline_bench.algos.common import own_action_sizes
    from offline_bench.algos.ma_icq import awr_actor_loss
    from offline_bench.algos.omar import omar_actor_loss
    from offline_bench.algos.td3_bc import bc_actor_loss

    sizes = (6, 2)
    problem = Problem(2, 3, 6, (3, 3), sizes, np.zeros((2, 3), np.float32), np.ones((2, 3), np.float32), 10)
    action_sizes = own_action_sizes(problem, torch.device("cpu"))
    assert action_sizes.tolist() == [6.0, 2.0]
    mask = torch.tensor([[1.0] * 6, [1.0] * 2 + [0.0] * 4])
    g = torch.Generator().manual_seed(0)
    pi, a = (torch.rand(5, 2, 6, generator=g) * mask for _ in range(2))
    q_pi, adv = torch.randn(5, 2, generator=g), torch.randn(5, 2, generator=g)

    def own_mse(x: Tensor, y: Tensor, n: int) -> Tensor:
        return F.mse_loss(x[:, n, : sizes[n]], y[:, n, : sizes[n]])

    zero = torch.zeros_like(pi)
    expected = sum(0.9 * own_mse(pi, a, n) - 0.1 * q_pi[:, n].mean() + 1e-3 * own_mse(pi, zero, n) for n in range(2))
    torch.testing.assert_close(omar_actor_loss(pi, a, q_pi, 0.9, 1e-3, action_sizes), expected)
    lmbda = 2.5 / q_pi.abs().mean(0)
    expected = sum(-lmbda[n] * q_pi[:, n].mean() + own_mse(pi, a, n) for n in range(2))
    torch.testing.assert_close(bc_actor_loss(q_pi, pi, a, 2.5, action_sizes), expected)
    rows = torch.ones(5, 1)
    w = torch.softmax(adv / 3.0, dim=0)
    expected = sum((w[:, n] * (pi[:, n, : sizes[n]] - a[:, n, : sizes[n]]).square().mean(-1)).sum() for n in range(2))
    torch.testing.assert_close(awr_actor_loss(pi, a, adv, rows, 3.0, action_sizes), expected)
    # equal sizes: the plain means, unchanged
    same = Problem(2, 3, 6, (3, 3), (6, 6), np.zeros((2, 3), np.float32), np.ones((2, 3), np.float32), 10)
    assert own_action_sizes(same, torch.device("cpu")) is None
    assert torch.equal(bc_actor_loss(q_pi, pi, a, 2.5, None),
                       (-(lmbda * q_pi.mean(0)) + (pi - a).square().mean(dim=(0, 2))).sum())
