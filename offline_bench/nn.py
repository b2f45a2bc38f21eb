"""Networks batched over a group axis (agents, critic ensembles, or agents x ensembles).

A "group" is one independent network. ``StackedLinear`` holds the weights of G linear layers in one tensor and
applies them in one ``baddbmm``, so N agents with E critics each cost one kernel per layer, not N x E.
Inputs and outputs are ``[G, B, D]``.

Speed note (CPU): a batched matmul whose output has ONE column (a critic's or value net's last layer) is 5-10x
slower in oneMKL's batched path than G plain matrix-vector products, forward and backward; ``stacked_linear``
routes that case through ``_ColumnLinear`` (same maths, G ``addmm`` calls and a hand-written backward).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable


class _ColumnLinear(torch.autograd.Function):
    """``x [G, B, in] @ weight [G, in, 1] + bias [G, 1, 1]`` as G ``addmm`` products (see ``stacked_linear``)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        out = x.new_empty(x.shape[0], x.shape[1], 1)  # [G, B, 1]
        for g in range(x.shape[0]):
            torch.addmm(bias[g], x[g], weight[g], out=out[g])  # [B, 1]
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:  # type: ignore[override]
        x, weight = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = grad * weight.transpose(1, 2)  # [G, B, 1] * [G, 1, in] -> [G, B, in]
        if ctx.needs_input_grad[1]:
            grad_w = torch.stack([torch.mm(x[g].t(), grad[g]) for g in range(x.shape[0])])  # [G, in, 1]
        if ctx.needs_input_grad[2]:
            grad_b = grad.sum(1, keepdim=True)  # [G, 1, 1]
        return grad_x, grad_w, grad_b


_BF16_RELU_MIN_GRAD = 1 << 18  # below this the custom autograd node costs more than the faster ReLU saves


class _Bf16ReluCPU(torch.autograd.Function):
    """In-place ReLU of a CPU bfloat16 tensor through its int16 bits (see ``relu_``)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        x.view(torch.int16).clamp_min_(0)  # a bfloat16 with its sign bit set is a negative int16
        ctx.mark_dirty(x)
        ctx.save_for_backward(x)
        return x

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (out,) = ctx.saved_tensors
        return torch.ops.aten.threshold_backward(grad, out, 0)


def relu_(x: Tensor) -> Tensor:
    """``x.relu_()``, faster for CPU bfloat16 (autocast's matmul outputs under ``bf16=True``).

    torch's CPU ReLU converts bfloat16 to float32 and back; it measured 1.4-2.6x slower per element than on
    float32 and about 10% of a bfloat16 DBR update. Read as int16, a bfloat16 is negative exactly when its sign bit
    is set, so ``clamp_min_(0)`` on the int16 view is the same ReLU on whole 16-bit lanes (4-8x faster here). Results equal
    ``relu_`` bit for bit except: -0.0 becomes +0.0, and a NaN with its sign bit set becomes 0 (ReLU keeps NaN).
    """
    if x.dtype != torch.bfloat16 or x.device.type != "cpu":
        return x.relu_()
    if not (x.requires_grad and torch.is_grad_enabled()):
        return x.view(torch.int16).clamp_min_(0).view(torch.bfloat16)
    if x.numel() < _BF16_RELU_MIN_GRAD:
        return x.relu_()
    return _Bf16ReluCPU.apply(x)


def stacked_linear(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """``x [G, B, in] @ weight [G, in, out] + bias [G, 1, out] -> [G, B, out]``: ``torch.baddbmm``, except on CPU
    for one output column with G > 1, where G matrix-vector products are several times faster (module docstring).
    ``weight`` and ``bias`` may be strided views (every E-th group of a stacked layer)."""
    if (
        weight.shape[-1] == 1
        and x.shape[0] > 1
        and x.device.type == "cpu"
        and x.dtype == weight.dtype == bias.dtype
        and not torch.is_autocast_enabled("cpu")
    ):
        return _ColumnLinear.apply(x, weight, bias)  # [G, B, 1]
    return torch.baddbmm(bias, x, weight)  # [G, B, out]


class StackedLinear(nn.Module):
    """G independent ``nn.Linear(in_dim, out_dim)`` layers applied at once: ``[G, B, in] -> [G, B, out]``.

    Initialised exactly like ``nn.Linear`` (uniform in +-1/sqrt(in_dim) for weight and bias), per group.
    """

    def __init__(self, groups: int, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.groups, self.in_dim, self.out_dim = groups, in_dim, out_dim
        self.weight = nn.Parameter(torch.empty(groups, in_dim, out_dim))
        self.bias = nn.Parameter(torch.empty(groups, 1, out_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.in_dim)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        assert x.dim() == 3 and x.shape[0] == self.groups, f"expected [{self.groups}, B, {self.in_dim}], got {tuple(x.shape)}"
        return stacked_linear(x, self.weight, self.bias)  # [G, B, out]

    def load_from_linears(self, layers: Sequence[nn.Linear]) -> None:
        """Copy the weights of G ``nn.Linear`` layers in (used by tests and by checkpoint conversion)."""
        with torch.no_grad():
            for g, layer in enumerate(layers):
                self.weight[g].copy_(layer.weight.T)
                self.bias[g, 0].copy_(layer.bias)

    def extra_repr(self) -> str:
        return f"groups={self.groups}, in_dim={self.in_dim}, out_dim={self.out_dim}"


class StackedBatchNorm(nn.Module):
    """BatchNorm over the feature axis, with separate statistics per group: ``[G, B, D] -> [G, B, D]``.

    The OMAR authors' MPE networks normalise their input with ``BatchNorm1d``; this is that layer for G networks
    at once (affine on, as in ``nn.BatchNorm1d``'s default).
    """

    def __init__(self, groups: int, dim: int, affine: bool = True) -> None:
        super().__init__()
        self.groups, self.dim = groups, dim
        self.norm = nn.BatchNorm1d(groups * dim, affine=affine)

    def forward(self, x: Tensor) -> Tensor:
        g, b, d = x.shape
        flat = x.transpose(0, 1).reshape(b, g * d)  # [B, G*D]
        return self.norm(flat).reshape(b, g, d).transpose(0, 1)  # [G, B, D]


class StackedMLP(nn.Module):
    """G independent MLPs ``in_dim -> hidden_sizes... -> out_dim`` evaluated together: ``[G, B, in] -> [G, B, out]``."""

    def __init__(
        self,
        groups: int,
        in_dim: int,
        hidden_sizes: Sequence[int],
        out_dim: int,
        activation: Callable[[Tensor], Tensor] = torch.relu,
        input_norm: bool = False,
        layer_norm: bool = False,
    ) -> None:
        super().__init__()
        self.groups = groups
        self.activation = activation
        self.input_norm = StackedBatchNorm(groups, in_dim) if input_norm else None
        sizes = [in_dim, *hidden_sizes]
        self.hidden = nn.ModuleList(StackedLinear(groups, a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        # Layer norms are per group: normalise the last axis, then a per-group affine transform.
        self.norms = (
            nn.ModuleList(nn.LayerNorm(h, elementwise_affine=False) for h in hidden_sizes) if layer_norm else None
        )
        self.out = StackedLinear(groups, sizes[-1], out_dim)

    def forward(self, x: Tensor) -> Tensor:
        if self.input_norm is not None:
            x = self.input_norm(x)
        for i, layer in enumerate(self.hidden):
            x = layer(x)  # [G, B, H]
            if self.norms is not None:
                x = self.norms[i](x)
            # ReLU in place on the fresh layer output: neither baddbmm's nor LayerNorm's backward needs that output,
            # and at large batches one fewer [G, B, H] allocation is a measurable share of the step.
            x = relu_(x) if self.activation is torch.relu else self.activation(x)
        return self.out(x)  # [G, B, out]


def agents_to_groups(x: Tensor, ensemble: int = 1) -> Tensor:
    """``[B, N, D] -> [N * ensemble, B, D]``: agent-major groups, each agent's input repeated per ensemble member."""
    b, n, d = x.shape
    x = x.transpose(0, 1)  # [N, B, D]
    if ensemble == 1:
        return x
    return x.unsqueeze(1).expand(n, ensemble, b, d).reshape(n * ensemble, b, d)  # [N*E, B, D]


def groups_to_agents(x: Tensor, n_agents: int) -> Tensor:
    """``[N * E, B, D] -> [B, N, E, D]`` (the inverse layout of ``agents_to_groups``)."""
    g, b, d = x.shape
    return x.reshape(n_agents, g // n_agents, b, d).permute(2, 0, 1, 3)  # [B, N, E, D]


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, polyak: float) -> None:
    """target <- (1 - polyak) * target + polyak * source, for parameters; buffers (BatchNorm statistics) are copied."""
    t_params = list(target.parameters())
    s_params = list(source.parameters())
    torch._foreach_lerp_(t_params, s_params, polyak)
    for t_buf, s_buf in zip(target.buffers(), source.buffers()):
        t_buf.copy_(s_buf)


def set_requires_grad(module: nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)
