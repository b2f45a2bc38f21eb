#!/usr/bin/env python
"""Count the host syncs in one training update of every algorithm on CUDA (needs a GPU).

    python benchmarks/cuda_syncs.py                  # every algorithm, single- and multi-agent shapes
    python benchmarks/cuda_syncs.py --algos omar,cql --updates 3

A training step should queue its GPU work and return: a host sync (``.item()``, a boolean mask, a tensor in an
``if``, a copy to the host) stalls the CPU until the GPU catches up and costs a large share of a small network's
update. ``torch.cuda.set_sync_debug_mode("warn")`` makes torch warn at each synchronizing call; this script runs a
few warm updates, then counts the warnings of ``--updates`` more (batch drawn as ``DeviceSampler`` draws it, then
``update()``) and prints where in our code each one comes from. Exit status 1 if any algorithm syncs.
"""
from __future__ import annotations

import argparse
import sys
import traceback
import warnings
from collections import Counter
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_algos import SyntheticData, load, sized_config  # noqa: E402

from offline_bench.algos import ALGORITHMS  # noqa: E402

SINGLE = ("td3bc", "cql", "bear", "dbr")


def our_frame(stack: list[traceback.FrameSummary]) -> str:
    """The innermost frame in offline_bench, as ``file:line  code``."""
    for frame in reversed(stack):
        if "offline_bench" in frame.filename:
            return f"{Path(frame.filename).name}:{frame.lineno}  {frame.line}"
    return "(outside offline_bench)"


def count_syncs(algo_id: str, data: SyntheticData, hidden: tuple[int, ...], batch: int, warm: int,
                updates: int) -> Counter:
    algo_cls = load(algo_id)
    torch.manual_seed(0)
    algo = algo_cls(sized_config(algo_cls, hidden, batch), data.problem, data.device)
    for _ in range(warm):
        algo.update(data.sample(batch))
    torch.cuda.synchronize()
    where: Counter = Counter()
    original = warnings.showwarning

    def record(message, category, filename, lineno, file=None, line=None) -> None:
        if "synchroniz" in str(message):  # torch's sync-debug warning; other warnings are not syncs
            where[our_frame(traceback.extract_stack()[:-1])] += 1
        else:
            original(message, category, filename, lineno, file, line)

    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = record
            for _ in range(updates):
                algo.update(data.sample(batch))
    finally:
        warnings.showwarning = original
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    return where


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--algos", default=",".join(ALGORITHMS))
    p.add_argument("--warm", type=int, default=3, help="updates before counting (first calls allocate)")
    p.add_argument("--updates", type=int, default=2, help="updates counted")
    args = p.parse_args()
    if not torch.cuda.is_available():
        sys.exit("cuda_syncs.py needs a CUDA device (torch.cuda.is_available() is False)")
    shapes = {"hopper (1 agent, 256x256, B=256)": (SyntheticData(20_000, 1, 15, 3, device="cuda"), (256, 256), 256),
              "spread (3 agents, 64x64, B=1024)": (SyntheticData(20_000, 3, 18, 2, device="cuda"), (64, 64), 1024)}
    total = 0
    for algo_id in [a for a in args.algos.split(",") if a]:
        for shape, (data, hidden, batch) in shapes.items():
            if algo_id in SINGLE and data.problem.n_agents > 1:
                continue
            where = count_syncs(algo_id, data, hidden, batch, args.warm, args.updates)
            n = sum(where.values())
            total += n
            print(f"{algo_id:<9} {shape:<34} {n / args.updates:5.1f} syncs/update", flush=True)
            for line, k in where.most_common():
                print(f"    {k / args.updates:4.1f}  {line}", flush=True)
    sys.exit(1 if total else 0)


if __name__ == "__main__":
    main()
