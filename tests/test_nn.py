"""The stacked layers compute exactly what a Python loop of per-agent nn.Linear layers computes."""
import torch
from torch import nn

from offline_bench.nn import StackedLinear, StackedMLP, agents_to_groups, groups_to_agents, soft_update


def test_stacked_linear_matches_loop_of_linears():
    torch.manual_seed(0)
    layers = [nn.Linear(7, 5) for _ in range(3)]
    stacked = StackedLinear(3, 7, 5)
    stacked.load_from_linears(layers)
    x = torch.randn(3, 11, 7)
    expected = torch.stack([layer(x[g]) for g, layer in enumerate(layers)])
    torch.testing.assert_close(stacked(x), expected)


def test_stacked_linear_gradients_match_loop():
    torch.manual_seed(1)
    layers = [nn.Linear(4, 2) for _ in range(2)]
    stacked = StackedLinear(2, 4, 2)
    stacked.load_from_linears(layers)
    x = torch.randn(2, 6, 4)
    stacked(x).square().sum().backward()
    sum(layer(x[g]).square().sum() for g, layer in enumerate(layers)).backward()
    for g, layer in enumerate(layers):
        torch.testing.assert_close(stacked.weight.grad[g], layer.weight.grad.T)
        torch.testing.assert_close(stacked.bias.grad[g, 0], layer.bias.grad)


def test_stacked_mlp_groups_are_independent():
    torch.manual_seed(2)
    mlp = StackedMLP(4, 3, (8, 8), 2)
    x = torch.randn(4, 5, 3)
    y = mlp(x)
    x2 = x.clone()
    x2[1] += 10.0  # changing group 1's input must not change other groups' outputs
    y2 = mlp(x2)
    assert torch.allclose(y[0], y2[0]) and torch.allclose(y[2:], y2[2:])
    assert not torch.allclose(y[1], y2[1])


def test_stacked_init_matches_nn_linear_scale():
    torch.manual_seed(3)
    layer = StackedLinear(2, 400, 10)
    bound = 1 / 400**0.5
    assert layer.weight.abs().max() <= bound and layer.weight.abs().max() > 0.9 * bound


def test_agent_group_layout_round_trip():
    x = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 4)  # [B=2, N=3, D=4]
    g = agents_to_groups(x, ensemble=2)  # [6, 2, 4]
    assert g.shape == (6, 2, 4)
    torch.testing.assert_close(g[2], x[:, 1])  # agent 1, ensemble member 0
    torch.testing.assert_close(g[3], x[:, 1])  # agent 1, ensemble member 1
    back = groups_to_agents(g, n_agents=3)  # [B, N, E, D]
    torch.testing.assert_close(back[:, :, 1], x)


def test_soft_update_moves_target_by_polyak():
    a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    before = b.weight.detach().clone()
    soft_update(b, a, 0.25)
    torch.testing.assert_close(b.weight, 0.75 * before + 0.25 * a.weight)
