"""CUDA graphs of whole updates (``offline_bench.train.graphs``): do they train like eager updates, and how much faster?

For every algorithm and shape: two instances from the same seed on the same synthetic data, one updated eagerly
(``algo.update(data.sample(B))``), one through ``GraphedUpdates`` (captured after its warm-up updates). Prints

- the largest parameter difference after ``--updates`` updates, relative to the parameter's scale (the two take the
  same batches and, the default CUDA generator advancing the same way in a replay, the same random draws, so only
  rounding should separate them; not yet measured on a GPU);
- whether the metrics agree, and the eager and graphed updates/s (median of ``--reps`` timed rounds) with the speed-up.

Shapes: Hopper-sized single-agent (obs 15, act 3, 256x256, batch 256: the d3rlpy comparison's) for every
algorithm; 3 MPE-sized agents (obs 18, act 2, 64x64) at batch 256 and at the OMAR authors' 1024 for the multi-agent
ones.

On a GPU: ``python3 benchmarks/cuda_graphs_check.py`` (not yet run on one; its duration is unmeasured). ``--device cpu`` runs the same
steps without the capture (``capture=False``): the test suite uses it to check this script, not to measure.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_algos import MULTI_AGENT, SyntheticData, make_algo  # noqa: E402

from offline_bench.algos import ALGORITHMS  # noqa: E402
from offline_bench.train.graphs import GraphedUpdates  # noqa: E402

SHAPES = {  # name: (agents, obs, action, hidden, batch, algorithms)
    "hopper": (1, 15, 3, (256, 256), 256, list(ALGORITHMS)),
    "mpe3": (3, 18, 2, (64, 64), 256, MULTI_AGENT),
    "mpe3-b1024": (3, 18, 2, (64, 64), 1024, ["ma-cql", "omar"]),
}


def params(algo: object) -> dict[str, torch.Tensor]:
    out = {}
    for name, value in vars(algo).items():
        if isinstance(value, torch.nn.Module):
            out |= {f"{name}.{k}": v.detach().float() for k, v in value.state_dict().items() if v.is_floating_point()}
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step, n: int, reps: int, device: torch.device) -> float:
    """Median updates/s over ``reps`` rounds of ``n`` steps."""
    rates = []
    for _ in range(reps):
        sync(device)
        start = time.perf_counter()
        for _ in range(n):
            step()
        sync(device)
        rates.append(n / (time.perf_counter() - start))
    return statistics.median(rates)


def check(algo_id: str, shape: str, args: argparse.Namespace) -> dict:
    n_agents, obs, act, hidden, batch, _ = SHAPES[shape]
    device = torch.device(args.device)
    capture = device.type == "cuda"
    eager_data = SyntheticData(50_000, n_agents, obs, act, seed=args.seed, device=device)
    graph_data = SyntheticData(50_000, n_agents, obs, act, seed=args.seed, device=device)
    eager = make_algo(algo_id, eager_data, hidden, batch, device, args.seed)
    graphed = make_algo(algo_id, graph_data, hidden, batch, device, args.seed)
    runner = GraphedUpdates(graphed, graph_data, batch, device, capture=capture)

    # Agreement: the same batches and (same generator offsets) the same random draws, update by update.
    torch.manual_seed(args.seed + 1)
    eager_metrics = [eager.update(eager_data.sample(batch)) for _ in range(args.updates)]
    torch.manual_seed(args.seed + 1)
    graph_metrics = [runner.step() for _ in range(args.updates)]
    sync(device)
    a, b = params(eager), params(graphed)
    worst, worst_name = 0.0, ""
    for name in a:
        scale = a[name].abs().max().clamp(min=1e-3)
        diff = float(((a[name] - b[name]).abs().max() / scale).cpu())
        if diff > worst:
            worst, worst_name = diff, name
    metric_diff = max(
        float((m_e[k].float().reshape(-1).mean() - m_g[k]).abs().cpu()) / max(1.0, abs(float(m_g[k].cpu())))
        for m_e, m_g in zip(eager_metrics[-5:], graph_metrics[-5:]) for k in m_e
    )
    finite = all(bool(torch.isfinite(v).all()) for v in b.values())

    # Speed: both from where the agreement run left them (graphs captured, warm).
    eager_rate = timed(lambda: eager.update(eager_data.sample(batch)), args.n, args.reps, device)
    graph_rate = timed(runner.step, args.n, args.reps, device)
    return {
        "algo": algo_id, "shape": shape, "device": str(device), "captured": capture, "graphs": len(runner.graphs),
        "updates": args.updates, "max_rel_param_diff": worst, "worst_param": worst_name,
        "max_rel_metric_diff": metric_diff, "finite": finite,
        "eager_updates_per_s": eager_rate, "graphed_updates_per_s": graph_rate, "speedup": graph_rate / eager_rate,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--algos", default=",".join(ALGORITHMS))
    p.add_argument("--shapes", default=",".join(SHAPES))
    p.add_argument("--updates", type=int, default=200, help="updates of the agreement check")
    p.add_argument("--n", type=int, default=300, help="updates per timed round")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default="", help="write the rows here as JSON lines")
    args = p.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("no CUDA device here: run this on a GPU, or with --device cpu to check the script (no capture)")
    wanted = [a for a in args.algos.split(",") if a]
    where = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu (no capture)"
    print(f"# torch {torch.__version__}, device {args.device} ({where})", flush=True)
    print(f"{'algorithm':<10}{'shape':<12}{'graphs':>7}{'rel param diff':>16}{'metric diff':>13}"
          f"{'eager/s':>10}{'graphed/s':>11}{'speed-up':>10}", flush=True)
    rows = []
    for shape in [s for s in args.shapes.split(",") if s]:
        for algo_id in [a for a in SHAPES[shape][5] if a in wanted]:
            row = check(algo_id, shape, args)
            rows.append(row)
            flag = "" if row["finite"] else "  NOT FINITE"
            print(f"{algo_id:<10}{shape:<12}{row['graphs']:>7}{row['max_rel_param_diff']:>16.2e}"
                  f"{row['max_rel_metric_diff']:>13.2e}{row['eager_updates_per_s']:>10.1f}"
                  f"{row['graphed_updates_per_s']:>11.1f}{row['speedup']:>9.2f}x{flag}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
