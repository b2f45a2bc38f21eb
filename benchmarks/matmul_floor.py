#!/usr/bin/env python
"""The dense-product floor of one update: how fast an update could run if it did nothing but its matrix products.

    .venv/bin/python benchmarks/matmul_floor.py                      # td3bc and cql at compare_d3rlpy.py's shape
    .venv/bin/python benchmarks/matmul_floor.py --algos cql --peer cql=12.2

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
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

OBS, ACT, HID, BATCH, K, CRITICS = 15, 3, 256, 256, 10, 2


def _timed(fn: Callable[[], object], n: int) -> float:
    """Median seconds per call of ``fn`` over 5 blocks of ``n`` calls (CPU clock of this process)."""
    for _ in range(max(3, n // 10)):
        fn()
    blocks = []
    for _ in range(5):
        start = time.process_time()
        for _ in range(n):
            fn()
        blocks.append((time.process_time() - start) / n)
    return statistics.median(blocks)


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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--algos", default="td3bc,cql")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--n", type=int, default=0, help="calls per timing block (default: 2000 / 20 for td3bc / cql)")
    p.add_argument("--peer", default="", help="d3rlpy rates measured in the same session, e.g. td3bc=114.1,cql=12.2")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    peers = {k: float(v) for k, v in (kv.split("=") for kv in args.peer.split(",") if kv)}
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} thread(s), float32, CPU clock", flush=True)
    for algo in [a for a in args.algos.split(",") if a]:
        n = args.n or (2000 if algo == "td3bc" else 20)
        total = 0.0
        for name, (weight, ops) in update_products(algo).items():
            seconds = weight * sum(_timed(op, n) for op in ops)
            total += seconds
            print(f"{algo:<6} {name:<58} {seconds * 1e3:8.3f} ms per update", flush=True)
        line = f"{algo:<6} {'all dense products':<58} {total * 1e3:8.3f} ms -> at most {1 / total:.1f} updates/s"
        if algo in peers:
            line += f", at most {1 / total / peers[algo]:.2f}x d3rlpy's {peers[algo]:.1f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
