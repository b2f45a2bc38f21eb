#!/usr/bin/env python
"""The dense-product floor of one update: how fast an update could run if it did nothing but its matrix products.

    .venv/bin/python benchmarks/matmul_floor.py                      # td3bc and cql at compare_d3rlpy.py's shape
    .venv/bin/python benchmarks/matmul_floor.py --algos cql --peer cql=12.2
    .venv/bin/python benchmarks/matmul_floor.py --algos bear,bear_main,dbr,dbr_main --peer bear=28.7,bear_main=26.3
    .venv/bin/python benchmarks/matmul_floor.py --ours --algos td3bc,cql,bear_main   # share of our update in products

Every update of TD3+BC and CQL must compute the same forward and backward products, whoever writes it: d3rlpy, a
hand-written loop or ours. This script times exactly those products on random float32 tensors (``addmm`` /
``baddbmm`` / ``bmm`` / ``mm``, one thread, the shapes of ``compare_d3rlpy.py``: batch 256, obs 15, action 3,
256x256 networks, twin critics as one batched product) and adds them up. The sum is a lower bound on an update's
time in float32 on this CPU: no elementwise work, no optimizer, no sampling. ``--peer ALGO=UPDATES_PER_S`` (a d3rlpy
rate measured by ``compare_d3rlpy.py`` in the same session) prints the highest ratio any float32 implementation
could reach against it.

The products counted (E = 2 critics, R rows through the critics):
- critic step: forward of every critic layer on R rows; backward: every layer's weight gradient, and the input
  gradient of every layer but the first (the network input needs none).
- actor step (TD3+BC: every 2nd update): actor forward on B rows, critic forward on B rows (TD3+BC's first critic,
  CQL's two), backward through the critic to its input (no critic weight gradients) and through the actor.
- target: actor forward on B next observations, target critics forward on B rows.
TD3+BC: R = B. CQL(H): R = B * (1 + 3K), the data action and K uniform, K pi(.|s) and K pi(.|s') actions (K = 10),
plus the actor's mean and log-std heads (2 * 3 outputs).

BEAR and DBR (``bear``, ``bear_main``, ``dbr``, ``dbr_main``: in warm-up and after it) have too many products to
list by hand (VAEs, sampled actions, a value net), so their floor is CAPTURED: one of our updates runs under a
``TorchDispatchMode`` that records every ``mm`` / ``addmm`` / ``bmm`` / ``baddbmm`` call (shapes, strides, out=),
and the recorded calls are replayed in order on random tensors of the same layout and timed. That is the floor of
OUR update: the products our configuration computes (its sample counts: ``--set n_mmd_samples=4 --set
n_actor_q_samples=1`` are d3rlpy's). ``--captured`` times td3bc and cql that way too; for those the captured products
and the hand-listed ones have the same FLOPs (``tests/test_speed_paths.py``). ``--ours`` also times our whole update
(sampling included) in blocks alternating with the replay and prints the share of it spent in products.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from offline_bench.train.loop import tune_cpu_allocator

OBS, ACT, HID, BATCH, K, CRITICS = 15, 3, 256, 256, 10, 2


def _timed_blocks(fns: list[Callable[[], object]], n: int) -> list[float]:
    """Median seconds per call of each function over 5 blocks of ``n`` calls (CPU clock of this process); with
    several functions the blocks alternate, so all see the same machine (this VM's speed drifts by 10-20% within
    minutes)."""
    for fn in fns:
        for _ in range(max(3, n // 10)):
            fn()
    blocks: list[list[float]] = [[] for _ in fns]
    for _ in range(5):
        for fn, out in zip(fns, blocks):
            start = time.process_time()
            for _ in range(n):
                fn()
            out.append((time.process_time() - start) / n)
    return [statistics.median(b) for b in blocks]


def _timed(fn: Callable[[], object], n: int) -> float:
    return _timed_blocks([fn], n)[0]


def mlp_products(groups: int, rows: int, sizes: list[int], forward: bool, weight_grads: bool,
                 input_grads: str) -> list[Callable[[], object]]:
    """The products of ``groups`` MLPs with layer sizes ``sizes`` on ``rows`` rows: forward, weight gradients, and
    input gradients of ``"all"`` layers, of ``"hidden"`` layers (all but the first) or ``"none"``."""
    ops: list[Callable[[], object]] = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        x = torch.randn(groups, rows, fan_in)
        w = torch.randn(groups, fan_in, fan_out)
        b = torch.randn(groups, 1, fan_out)
        dy = torch.randn(groups, rows, fan_out)
        if groups == 1:
            x2, w2, b2, dy2 = x[0], w[0], b[0], dy[0]
            if forward:
                ops.append(lambda x2=x2, w2=w2, b2=b2: torch.addmm(b2, x2, w2))
            if weight_grads:
                ops.append(lambda x2=x2, dy2=dy2: torch.mm(x2.t(), dy2))
            if input_grads == "all" or (input_grads == "hidden" and i > 0):
                ops.append(lambda dy2=dy2, w2=w2: torch.mm(dy2, w2.t()))
        else:
            if forward:
                ops.append(lambda x=x, w=w, b=b: torch.baddbmm(b, x, w))
            if weight_grads:
                ops.append(lambda x=x, dy=dy: torch.bmm(x.transpose(1, 2), dy))
            if input_grads == "all" or (input_grads == "hidden" and i > 0):
                ops.append(lambda dy=dy, w=w: torch.bmm(dy, w.transpose(1, 2)))
    return ops


def update_products(algo: str) -> dict[str, tuple[float, list[Callable[[], object]]]]:
    """Named groups of products of one ``algo`` update, each with its weight per update (TD3+BC's actor: 1/2)."""
    critic = [OBS + ACT, HID, HID, 1]
    if algo == "td3bc":
        actor = [OBS, HID, HID, ACT]
        return {
            "critic step (B rows)": (1.0, mlp_products(CRITICS, BATCH, critic, True, True, "hidden")),
            "target (actor + critics, B rows)": (1.0, mlp_products(1, BATCH, actor, True, False, "none")
                                                 + mlp_products(CRITICS, BATCH, critic, True, False, "none")),
            "actor step, every 2nd update": (0.5, mlp_products(1, BATCH, critic, True, False, "all")
                                             + mlp_products(1, BATCH, actor, True, True, "hidden")),
        }
    if algo == "cql":
        actor = [OBS, HID, HID, 2 * ACT]
        rows = BATCH * (1 + 3 * K)
        return {
            f"critic step ({rows} rows)": (1.0, mlp_products(CRITICS, rows, critic, True, True, "hidden")),
            "target and proposals (actor on s, s'; critics on B rows)": (
                1.0, mlp_products(1, 2 * BATCH, actor, True, False, "none")
                + mlp_products(CRITICS, BATCH, critic, True, False, "none")),
            "actor step": (1.0, mlp_products(CRITICS, BATCH, critic, True, False, "all")
                           + mlp_products(1, BATCH, actor, False, True, "hidden")),
        }
    raise ValueError(f"unknown algorithm {algo!r} (td3bc or cql)")


CAPTURED = ("td3bc", "cql", "bear", "bear_main", "dbr", "dbr_main")  # "_main": after the warm-up (warmup_steps=0)
PEER_OF = {"dbr": "bear", "dbr_main": "bear_main"}  # compare_d3rlpy.py compares DBR with d3rlpy's BEAR
_PRODUCTS = {torch.ops.aten.mm, torch.ops.aten.addmm, torch.ops.aten.bmm, torch.ops.aten.baddbmm}


def _layout(x: object) -> object:
    """A tensor argument as (shape, stride, dtype); anything else as itself."""
    return (tuple(x.shape), tuple(x.stride()), x.dtype) if isinstance(x, torch.Tensor) else x


class _ProductRecorder(TorchDispatchMode):
    """Records every dense product dispatched inside it (forward and backward) as (op, argument layouts, kwargs)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[object, tuple, dict]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = kwargs or {}
        if func.overloadpacket in _PRODUCTS:
            self.calls.append((func, tuple(_layout(a) for a in args), {k: _layout(v) for k, v in kwargs.items()}))
        return func(*args, **kwargs)


def floor_algorithm(algo_id: str, **overrides: object) -> tuple[object, Callable[[], object]]:
    """Our ``algo_id`` (``CAPTURED``) at ``compare_d3rlpy.py``'s shape and a batch sampler, after two updates. CQL
    runs past its BC start (``bc_steps=0``) and ``*_main`` after the warm-up, as ``compare_d3rlpy.py`` measures them;
    ``overrides`` change the config where the field exists (e.g. ``n_mmd_samples=4``)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_algos import SyntheticData, load, sized_config

    name = algo_id.removesuffix("_main")
    data = SyntheticData(5_000, 1, OBS, ACT)
    cls = load(name)
    config = sized_config(cls, (HID, HID), BATCH)
    fields = {f.name for f in dataclasses.fields(config)}
    changes: dict[str, object] = {"bc_steps": 0} if name == "cql" else {}
    if algo_id.endswith("_main"):
        changes["warmup_steps"] = 0
    changes.update({k: v for k, v in overrides.items() if k in fields})
    algo = cls(dataclasses.replace(config, **changes), data.problem, torch.device("cpu"))
    for _ in range(2):
        algo.update(data.sample(BATCH))
    return algo, lambda: data.sample(BATCH)


def _record(algo: object, sample: Callable[[], object], updates: int) -> list[tuple[object, tuple, dict]]:
    with _ProductRecorder() as recorder:
        for _ in range(updates):
            algo.update(sample())
    return recorder.calls


def captured_products(algo_id: str, updates: int = 2, **overrides: object) -> list[tuple[object, tuple, dict]]:
    """The dense products of ``updates`` consecutive updates of ``floor_algorithm(algo_id, **overrides)``, in call
    order (TD3+BC's actor step runs every 2nd update, so take an even number)."""
    return _record(*floor_algorithm(algo_id, **overrides), updates)


def _materialize(x: object) -> object:
    """A random float32 tensor with a recorded (shape, stride, dtype) layout; anything else unchanged."""
    if isinstance(x, tuple) and len(x) == 3 and isinstance(x[2], torch.dtype):
        shape, stride, dtype = x
        size = 1 + sum((n - 1) * st for n, st in zip(shape, stride)) if all(shape) else 0  # expanded views share
        return torch.randn(size, dtype=dtype).as_strided(shape, stride)
    return x


def replay(calls: list[tuple[object, tuple, dict]]) -> Callable[[], None]:
    """A function that runs the recorded products in order on random tensors of the recorded layouts."""
    bound = [(func, [_materialize(a) for a in args], {k: _materialize(v) for k, v in kwargs.items()})
             for func, args, kwargs in calls]

    def run() -> None:
        for func, args, kwargs in bound:
            func(*args, **kwargs)

    return run


def captured_floor(algo_id: str, n: int, updates: int = 2, ours: bool = False,
                   **overrides: object) -> tuple[float, int, float | None]:
    """(seconds per update of the captured products alone, products per update, and with ``ours`` the seconds per
    update of our whole update (sampling included) timed in alternating blocks with the products, else None)."""
    algo, sample = floor_algorithm(algo_id, **overrides)
    calls = _record(algo, sample, updates)
    products = replay(calls)
    if not ours:
        return _timed(products, n) / updates, len(calls) // updates, None

    def whole() -> None:
        for _ in range(updates):
            algo.update(sample())

    floor, full = _timed_blocks([products, whole], n)
    return floor / updates, len(calls) // updates, full / updates


def _override(text: str) -> tuple[str, object]:
    key, _, value = text.partition("=")
    for kind in (int, float):
        try:
            return key, kind(value)
        except ValueError:
            pass
    return key, value


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--algos", default="td3bc,cql", help=f"any of {', '.join(CAPTURED)}")
    p.add_argument("--captured", action="store_true", help="td3bc and cql from captured products too")
    p.add_argument("--ours", action="store_true",
                   help="also time our whole update, in blocks alternating with its products (implies --captured)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config change for the captured updates, e.g. n_mmd_samples=4 (ignored where absent)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--n", type=int, default=0,
                   help="calls per timing block (default: 2000 / 20 for hand-listed td3bc / cql; captured, in pairs of "
                        "updates: 200 for td3bc, else 10)")
    p.add_argument("--peer", default="",
                   help="d3rlpy rates measured in the same session, e.g. td3bc=114.1,cql=12.2,bear=28.7,bear_main=26.3")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    tune_cpu_allocator()  # freed memory kept for reuse, as in training (compare_d3rlpy.py --allocator tuned)
    peers = {k: float(v) for k, v in (kv.split("=") for kv in args.peer.split(",") if kv)}
    overrides = dict(_override(kv) for kv in args.set)
    unknown = [a for a in args.algos.split(",") if a and a not in CAPTURED]
    if unknown:
        p.error(f"unknown algorithm(s) {unknown}; choose from {', '.join(CAPTURED)}")
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} thread(s), float32, CPU clock"
          + (f", config changes {overrides}" if overrides else ""), flush=True)
    for algo in [a for a in args.algos.split(",") if a]:
        ours = None
        if algo in ("td3bc", "cql") and not (args.captured or args.ours):
            n = args.n or (2000 if algo == "td3bc" else 20)
            total = 0.0
            for name, (weight, ops) in update_products(algo).items():
                seconds = weight * sum(_timed(op, n) for op in ops)
                total += seconds
                print(f"{algo:<9} {name:<58} {seconds * 1e3:8.3f} ms per update", flush=True)
            label = "all dense products"
        else:
            total, count, ours = captured_floor(algo, args.n or (200 if algo == "td3bc" else 10), ours=args.ours,
                                                **overrides)
            label = f"captured dense products ({count} per update)"
        line = f"{algo:<9} {label:<58} {total * 1e3:8.3f} ms -> at most {1 / total:.1f} updates/s"
        peer = algo if algo in peers else PEER_OF.get(algo, "")
        if peer in peers:
            line += f", at most {1 / total / peers[peer]:.2f}x d3rlpy's {peers[peer]:.1f} ({peer})"
        print(line, flush=True)
        if ours is not None:
            print(f"{algo:<9} {'ours, whole update (alternating blocks with the products)':<58} {ours * 1e3:8.3f} ms "
                  f"-> {1 / ours:.1f} updates/s, {total / ours:.0%} of it in dense products", flush=True)


if __name__ == "__main__":
    main()
