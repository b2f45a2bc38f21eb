"""The CPU fast paths compute exactly what the plain stacked layers compute (values and gradients)."""
import copy
import platform

import numpy as np
import pytest
import torch

from offline_bench.algos.base import Problem
from offline_bench.algos.common import AgentCritics, fused_adam_step, make_adam, optimizer_step
from offline_bench.nn import _BF16_RELU_MIN_GRAD, StackedMLP, agents_to_groups, relu_, stacked_linear
from offline_bench.train.loop import tune_cpu_allocator

torch.set_num_threads(1)


def _grads(fn, *tensors):
    out = fn(*tensors)
    weights = torch.randn_like(out)
    return out.detach(), torch.autograd.grad((out * weights).sum(), tensors), weights


@pytest.mark.parametrize("groups", [2, 6])
def test_one_column_layer_matches_baddbmm(groups: int) -> None:
    torch.manual_seed(0)
    x = torch.randn(groups, 37, 19, requires_grad=True)
    w = torch.randn(groups, 19, 1, requires_grad=True)
    b = torch.randn(groups, 1, 1, requires_grad=True)
    out = stacked_linear(x, w, b)
    expected = torch.baddbmm(b, x, w)
    torch.testing.assert_close(out, expected)
    g = torch.randn_like(out)
    got = torch.autograd.grad((out * g).sum(), (x, w, b))
    want = torch.autograd.grad((expected * g).sum(), (x, w, b))
    for a, e in zip(got, want):
        torch.testing.assert_close(a, e)


def test_one_column_layer_on_strided_weight_views_and_gradcheck() -> None:
    """``critic.first`` passes every E-th group's weights (strided views); gradients land in the right rows."""
    torch.manual_seed(1)
    x = torch.randn(3, 5, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 4, 1, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, 1, 1, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: stacked_linear(x, w[::2], b[::2]), (x, w, b))
    stacked_linear(x, w[::2], b[::2]).sum().backward()
    assert w.grad[1::2].abs().sum() == 0 and w.grad[::2].abs().sum() > 0


def test_one_column_layer_input_without_grad_and_bf16_autocast() -> None:
    torch.manual_seed(2)
    x = torch.randn(2, 8, 5)  # no grad: only the weights'
    w = torch.randn(2, 5, 1, requires_grad=True)
    b = torch.zeros(2, 1, 1, requires_grad=True)
    got = torch.autograd.grad(stacked_linear(x, w, b).square().sum(), (w, b))
    want = torch.autograd.grad(torch.baddbmm(b, x, w).square().sum(), (w, b))
    for a, e in zip(got, want):
        torch.testing.assert_close(a, e)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # falls back to baddbmm, which autocast handles
        out = stacked_linear(x, w, b)
    assert out.dtype == torch.bfloat16


@pytest.mark.parametrize("layer_norm,input_norm", [(False, False), (True, False), (False, True)])
def test_in_place_relu_mlp_is_bitwise_the_out_of_place_one(layer_norm: bool, input_norm: bool) -> None:
    torch.manual_seed(3)
    fast = StackedMLP(3, 6, (16, 16), 1, layer_norm=layer_norm, input_norm=input_norm)
    plain = StackedMLP(3, 6, (16, 16), 1, layer_norm=layer_norm, input_norm=input_norm,
                       activation=lambda t: torch.relu(t))  # not torch.relu itself: the out-of-place path
    plain.load_state_dict(fast.state_dict())
    x = torch.randn(3, 40, 6, requires_grad=True)
    out_fast = fast(x)
    out_plain = plain(x)
    assert torch.equal(out_fast, out_plain)
    grads_fast = torch.autograd.grad(out_fast.square().sum(), [x, *fast.parameters()])
    grads_plain = torch.autograd.grad(out_plain.square().sum(), [x, *plain.parameters()])
    for a, e in zip(grads_fast, grads_plain):
        assert torch.equal(a, e)


@pytest.mark.parametrize("rows", [8, _BF16_RELU_MIN_GRAD // 64 + 1])  # below and above the autograd-node size
def test_bf16_relu_through_int16_bits_matches_relu(rows: int) -> None:
    """The CPU bfloat16 ReLU (int16 view) equals ``relu_`` in values (zeros included) and gradients, with and
    without autograd; signed zeros and a NaN with its sign bit set are the documented exceptions."""
    torch.manual_seed(7)
    base = torch.randn(2, rows, 32).bfloat16()
    base[0, 0, :4] = torch.tensor([0.0, -0.0, 1e-40, -1e-40]).bfloat16()  # zeros and subnormals
    with torch.no_grad():
        assert torch.equal(relu_(base.clone()), base.clone().relu_())
    grad_out = torch.randn_like(base)
    results = []
    for fn in (relu_, torch.Tensor.relu_):
        x = base.clone().requires_grad_(True)
        y = fn(x * 1)  # in place on a non-leaf, as in StackedMLP
        (g,) = torch.autograd.grad((y.float() * grad_out.float()).sum(), x)
        results.append((y.detach(), g))
    (y_fast, g_fast), (y_ref, g_ref) = results
    assert y_fast.dtype == torch.bfloat16 and torch.equal(y_fast, y_ref)
    assert torch.equal(g_fast, g_ref)
    assert relu_(torch.tensor([-0.0]).bfloat16()).view(torch.int16).item() == 0  # +0.0, not -0.0


def test_bf16_relu_leaves_float32_and_the_mlp_output_unchanged() -> None:
    torch.manual_seed(8)
    x = torch.randn(3, 5)
    assert torch.equal(relu_(x.clone()), x.relu())
    net = StackedMLP(2, 6, (64, 64), 1)
    plain = StackedMLP(2, 6, (64, 64), 1, activation=lambda t: torch.relu(t))
    plain.load_state_dict(net.state_dict())
    rows = _BF16_RELU_MIN_GRAD // (2 * 64) + 1  # with gradients, the custom autograd node's size
    inp = torch.randn(2, rows, 6)
    with torch.autocast("cpu", torch.bfloat16):
        with torch.no_grad():  # the int16 clamp without a graph
            assert torch.equal(net(inp), plain(inp))
        assert torch.equal(net(inp), plain(inp))


def _adam_pair(seed: int) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.optim.Adam, torch.optim.Adam]:
    torch.manual_seed(seed)
    a = [torch.randn(7, 5, requires_grad=True), torch.randn(5, requires_grad=True)]
    b = [t.detach().clone().requires_grad_(True) for t in a]
    return a, b, make_adam(a, 3e-3, weight_decay=1e-3), make_adam(b, 3e-3, weight_decay=1e-3)


def test_fused_adam_step_is_bitwise_adam_step() -> None:
    a, b, opt_a, opt_b = _adam_pair(9)
    assert opt_a.param_groups[0]["fused"], "make_adam should give the fused kernel on CPU"
    for i in range(6):
        grads = [torch.randn_like(t) for t in a]
        for p, g in zip(a, grads):
            p.grad = g.clone()
        for p, g in zip(b, grads):
            p.grad = g.clone()
        opt_a.step()
        took = fused_adam_step(opt_b)
        assert took == (i > 0), "the first step (state creation) must go through Adam.step"
        if not took:
            opt_b.step()
    for p, q in zip(a, b):
        assert torch.equal(p, q)
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(opt_a.state[p][key], opt_b.state[q][key])
    # A checkpoint round trip keeps the shortcut exact (the state tensors are new objects afterwards).
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))  # as from torch.load: no shared tensors
    for p, q in zip(a, b):
        p.grad, q.grad = torch.ones_like(p), torch.ones_like(q)
    opt_a.step()
    assert fused_adam_step(opt_b)
    assert all(torch.equal(p, q) for p, q in zip(a, b))


def test_fused_adam_step_declines_what_it_does_not_cover() -> None:
    a, _, opt, _ = _adam_pair(10)
    a[0].grad, a[1].grad = torch.ones_like(a[0]), torch.ones_like(a[1])
    opt.step()
    a[1].grad = None  # a parameter without a gradient: Adam skips it, the shortcut does not try
    assert not fused_adam_step(opt)
    opt.param_groups[0]["capturable"] = True  # a CUDA-graph capture
    a[1].grad = torch.ones_like(a[1])
    assert not fused_adam_step(opt)
    opt.param_groups[0]["capturable"] = False
    plain = torch.optim.Adam([torch.zeros(3, requires_grad=True)], foreach=True)
    assert not fused_adam_step(plain)
    # optimizer_step still trains through Adam.step where the shortcut declines (first step).
    w = torch.zeros(3, requires_grad=True)
    opt_w = make_adam([w], 0.1)
    optimizer_step(opt_w, (w - 1).square().sum())
    assert torch.all(w > 0)


@pytest.mark.parametrize("n_agents,input_norm", [(1, True), (3, True), (3, False)])
def test_critic_groups_layout_matches_agent_major_groups(n_agents: int, input_norm: bool) -> None:
    torch.manual_seed(4)
    critic = AgentCritics(n_agents, 5, 2, (8, 8), n_critics=2, input_norm=input_norm)
    obs, action = torch.randn(33, n_agents, 5), torch.rand(33, n_agents, 2) * 2 - 1
    flat = torch.cat([obs, action], dim=-1)  # [B, N, D]
    q = critic(obs, action)  # [B, N, E]
    reference = critic.net(agents_to_groups(flat, 2).contiguous())  # [N*E, B, 1], the agent-major layout
    torch.testing.assert_close(q, reference.reshape(n_agents, 2, 33).permute(2, 0, 1))


def test_first_critic_uses_the_fast_last_layer_and_matches_forward() -> None:
    torch.manual_seed(5)
    problem = Problem(3, 5, 2, (5,) * 3, (2,) * 3, np.zeros((3, 5), np.float32), np.ones((3, 5), np.float32), 10)
    critic = AgentCritics(problem.n_agents, 5, 2, (8, 8), n_critics=2)
    obs, action = torch.randn(17, 3, 5), torch.rand(17, 3, 2) * 2 - 1
    torch.testing.assert_close(critic.first(obs, action), critic(obs, action)[..., 0])


@pytest.mark.parametrize("centralized", [False, True])
def test_first_critic_with_eval_mode_input_norm_runs_one_critic_per_agent_and_matches_forward(centralized: bool) -> None:
    """MA-TD3+BC's actor step: the critic in eval mode, input BatchNorm on running statistics. ``first`` then runs
    critic 0 of each agent only, and its values and gradients are those of the full forward's first critic (bit for
    bit at these sizes), without touching the running statistics; in train mode it still runs every critic."""
    from offline_bench.algos.common import eval_mode

    torch.manual_seed(6)
    critic = AgentCritics(3, 5, 2, (16, 16), n_critics=2, centralized=centralized, input_norm=True)
    bn = critic.net.input_norm.norm
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    for _ in range(3):  # train mode: the running statistics move away from 0 / 1
        critic(torch.randn(40, 3, 5) * 3 + 1, torch.rand(40, 3, 2))
    obs, action, others = torch.randn(9, 3, 5), torch.rand(9, 3, 2).requires_grad_(), torch.rand(9, 3, 2)
    running = bn.running_mean.clone(), bn.running_var.clone()
    with eval_mode(critic):
        shapes = []
        hook = critic.net.hidden[1].register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape)))
        first = critic.first(obs, action, others=others)
        hook.remove()
        full = critic(obs, action, others=others)[..., 0]
    assert shapes == [] and torch.equal(first, full)  # the stacked layer module did not run: strided weights only
    assert torch.equal(bn.running_mean, running[0]) and torch.equal(bn.running_var, running[1])
    (grad_first,) = torch.autograd.grad(first.sum(), action)
    (grad_full,) = torch.autograd.grad(full.sum(), action)
    assert torch.equal(grad_first, grad_full)
    critic.first(obs, action, others=others)  # train mode: every critic runs, so every critic's statistics move
    assert not torch.equal(bn.running_mean.view(3, 2, -1)[:, 1], running[0].view(3, 2, -1)[:, 1])


def test_allocator_tuning_is_idempotent() -> None:
    first = tune_cpu_allocator()
    assert tune_cpu_allocator() is first
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert first is True


@pytest.fixture(scope="module")
def matmul_floor():
    """``benchmarks/matmul_floor.py`` as a module."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import matmul_floor

    return matmul_floor


def _flops(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


@pytest.mark.parametrize("algo_id", ["td3bc", "cql", "bear", "bear_main", "dbr", "dbr_main"])
def test_matmul_floor_times_the_products_our_update_computes(matmul_floor, algo_id: str) -> None:
    """benchmarks/matmul_floor.py's floor is only a bound on our update if it times the same matrix products. The
    captured floor (BEAR and DBR have no hand list) replays exactly the products of our update: the replay's FLOPs
    equal the FLOPs torch counts in the same updates (two, as TD3+BC's actor step runs every 2nd update), with every
    product in its recorded layout (expanded inputs, ``out=``). For TD3+BC and CQL the hand list's FLOPs match too
    (within 1%: our one-column last layer's input gradient is an elementwise product, which the counter does not
    see)."""
    calls = matmul_floor.captured_products(algo_id, updates=2)
    assert calls, "no products recorded"
    replayed = _flops(matmul_floor.replay(calls)) / 2
    algo, sample = matmul_floor.floor_algorithm(algo_id)  # the same construction, counted by torch this time
    ours = _flops(lambda: [algo.update(sample()) for _ in range(2)]) / 2
    assert replayed == pytest.approx(ours)
    if algo_id in ("td3bc", "cql"):
        hand = sum(weight * _flops(lambda ops=ops: [op() for op in ops])
                   for weight, ops in matmul_floor.update_products(algo_id).values())
        assert hand == pytest.approx(ours, rel=0.01)
    if algo_id.endswith("_main"):  # after the warm-up the actor also takes Q at its samples: more products
        assert len(calls) // 2 > len(matmul_floor.captured_products(algo_id.removesuffix("_main"), updates=1))


def test_matmul_floor_times_our_update_beside_its_products(matmul_floor) -> None:
    """``matmul_floor.py --ours``: our whole update and its replayed products are both timed (alternating blocks)."""
    floor, count, ours = matmul_floor.captured_floor("td3bc", n=2, ours=True)
    assert count == len(matmul_floor.captured_products("td3bc", updates=2)) // 2
    assert 0.0 < floor < float("inf") and ours is not None and 0.0 < ours < float("inf")
    assert matmul_floor.captured_floor("td3bc", n=2)[2] is None
