#!/usr/bin/env python
"""Our updates/s against d3rlpy 2.8.1's ``fit`` on the same synthetic Hopper-sized data, in one run, with ratios.

    .venv/bin/python benchmarks/compare_d3rlpy.py                       # td3bc, cql (+ bear, dbr when present)
    .venv/bin/python benchmarks/compare_d3rlpy.py --algos td3bc --n td3bc=500 --reps 3 --json out.jsonl
    python benchmarks/compare_d3rlpy.py --device cuda --python python3 --peer-script ./d3rlpy_speed.py --max-wait 0

The peer side runs ``/work/shared/bench/d3rlpy_speed.py --modes fit`` in its own virtual environment
(``--venv``, default /tmp/d3rlpy-venv; created with ``pip install torch==2.13.0 d3rlpy==2.8.1`` when missing), or
in an interpreter that already has d3rlpy (``--python``). ``--device cuda`` runs both sides on the GPU: d3rlpy's
algorithms are created with ``device="cuda:0"`` (the script's ``make_algo`` is wrapped), and our repetitions end with
``torch.cuda.synchronize()`` (d3rlpy's ``fit`` turns each step's losses into Python floats, ``asdict_as_float``, so it syncs every step).
Our side runs in this process on the same recipe (200k transitions, obs 15 ~ N(0, 1), act 3 ~ U(-1, 1),
reward ~ N(0, 1), a terminal every 1000 steps), batch 256, 256x256 networks as in d3rlpy's defaults, and counts
what a user's training loop pays per update: drawing the batch plus ``update()``. CQL runs past its BC warm start
(``bc_steps=0``: d3rlpy has none, and the SAC actor step is the more expensive one); BEAR and DBR are compared in
their warm-up phase with d3rlpy's BEAR warm-up ("bear") and after it ("bear_main").

Each measurement: warm-up updates, then repetitions of N updates; a repetition counts as clean when other
processes used less than ``--quiet-threshold`` cores during it (the machine is shared), and we wait up to
``--max-wait`` seconds for a quiet machine before each. Ours and d3rlpy's alternate algorithm by algorithm so
both see the same machine. Goals (issue 4): on CPU TD3+BC >= 2x d3rlpy, CQL/BEAR/DBR >= 1.5x; on a GPU >= 5x.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_algos import SyntheticData, config_fields, load, sized_config, synchronize  # noqa: E402

from offline_bench.algos import ALGORITHMS  # noqa: E402

D3RLPY_SCRIPT = Path("/work/shared/bench/d3rlpy_speed.py")
# our id -> (d3rlpy algo names to compare with, goal ratio, config changes for a like-for-like update)
PAIRS: dict[str, tuple[tuple[str, ...], float, dict]] = {
    "td3bc": (("td3bc",), 2.0, {}),
    "cql": (("cql",), 1.5, {"bc_steps": 0}),
    "bear": (("bear", "bear_main"), 1.5, {}),
    "dbr": (("bear", "bear_main"), 1.5, {}),
}
GPU_GOAL = 5.0  # issue 4: on a GPU, where per-step overhead dominates, every algorithm >= 5x d3rlpy
DEFAULT_N = {"td3bc": 1000, "cql": 100, "bear": 300, "dbr": 300}
CLK_TCK = os.sysconf("SC_CLK_TCK")


CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = time.perf_counter


def _snap() -> tuple[float, float, float]:
    """(clock s, machine-wide busy CPU s, this process's CPU s)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return _clock(), (sum(v) - v[3] - v[4]) / CLK_TCK, time.process_time()


def _others(a: tuple[float, float, float], b: tuple[float, float, float]) -> float:
    return max(0.0, ((b[1] - a[1]) - (b[2] - a[2])) / (b[0] - a[0]))


def wait_quiet(threshold: float, max_wait: float) -> None:
    end = time.perf_counter() + max_wait
    while time.perf_counter() < end:
        a = _snap()
        time.sleep(1.0)
        if _others(a, _snap()) < threshold:
            return


def make_ours(algo_id: str, phase: str, args: argparse.Namespace, data: SyntheticData, bf16: bool = False) -> object:
    """Our algorithm at the comparison's shape (256x256, batch 256), in its warm-up ("default") or "main" phase."""
    algo_cls = load(algo_id)
    config = sized_config(algo_cls, (256, 256), 256)
    changes = dict(PAIRS[algo_id][2])
    if bf16:
        changes["bf16"] = True
    if phase == "main" and "warmup_steps" in {f.name for f in dataclasses.fields(config)}:
        changes["warmup_steps"] = 0
    config = dataclasses.replace(config, **changes)
    torch.manual_seed(args.seed)
    return algo_cls(config, data.problem, torch.device(args.device))


def flops_ours(algo_id: str, phase: str, args: argparse.Namespace, data: SyntheticData) -> float:
    """Matrix-product FLOPs of one of our updates (torch's FlopCounterMode, mean of 2 updates after 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    algo = make_ours(algo_id, phase, args, data)
    for _ in range(2):
        algo.update(data.sample(256))
    with FlopCounterMode(display=False) as counter:
        for _ in range(2):
            algo.update(data.sample(256))
    return counter.get_total_flops() / 2


# Run in the peer's interpreter: the same count for d3rlpy's update (argv: folder of d3rlpy_speed.py, algo name).
_PEER_FLOPS = """
import sys, torch
sys.path.insert(0, sys.argv[1])
import d3rlpy_speed as m
from torch.utils.flop_counter import FlopCounterMode
torch.set_num_threads(1)
dataset = m.make_dataset()
name = sys.argv[2]
cfg, algo = m.make_algo(name)
algo.build_with_dataset(dataset)
if name == "bear_main":
    algo.set_grad_step(cfg.warmup_steps)
batches = [dataset.sample_transition_batch(cfg.batch_size) for _ in range(4)]
for batch in batches[:2]:
    algo.update(batch)
with FlopCounterMode(display=False) as counter:
    for batch in batches[2:]:
        algo.update(batch)
print(counter.get_total_flops() / 2)
"""


def flops_d3rlpy(python: Path, name: str, args: argparse.Namespace) -> float:
    """Matrix-product FLOPs of one d3rlpy update of ``name``, counted the same way in the peer's interpreter."""
    cmd = [str(python), "-c", _PEER_FLOPS, str(Path(args.peer_script).parent), name]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return float(out.split()[-1])


def measure_ours(algo_id: str, phase: str, args: argparse.Namespace, data: SyntheticData, bf16: bool = False,
                 graphs: bool = False) -> dict:
    """Updates/s of ours; ``graphs``: through ``GraphedUpdates`` (each kind of update a CUDA graph, captured during
    the untimed warm-up)."""
    algo = make_ours(algo_id, phase, args, data, bf16)
    device = torch.device(args.device)
    if graphs:
        from offline_bench.train.graphs import GraphedUpdates

        step = GraphedUpdates(algo, data, 256, device).step
    else:
        def step() -> None:
            algo.update(data.sample(256))
    n = args.n_of.get(algo_id, DEFAULT_N.get(algo_id, 300))
    for _ in range(max(20, n // 10)):
        step()
    synchronize(device)
    clean, dirty = [], []
    while len(clean) < args.reps and len(clean) + len(dirty) < args.max_reps:
        if args.max_wait > 0:
            wait_quiet(args.quiet_threshold, args.max_wait)
        a = _snap()
        for _ in range(n):
            step()
        synchronize(device)
        b = _snap()
        rate, other = n / (b[0] - a[0]), _others(a, b)
        (clean if other < args.quiet_threshold else dirty).append(rate)
    rates = clean or dirty
    return {"median": statistics.median(rates), "min": min(rates), "max": max(rates), "clean": bool(clean),
            "reps": rates, "n": n}


def ensure_venv(venv: Path) -> Path:
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import d3rlpy, sys; sys.exit(d3rlpy.__version__ != '2.8.1')"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    print(f"# creating {venv} with d3rlpy 2.8.1 (one time)", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "torch==2.13.0", "d3rlpy==2.8.1"], check=True)
    return python


def measure_d3rlpy(python: Path, name: str, args: argparse.Namespace) -> dict:
    n = args.n_of.get(name, args.n_of.get({"bear_main": "bear"}.get(name, name), DEFAULT_N.get(name, 300)))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "d3rlpy.jsonl"
        # With --clock cpu the peer script's clock is swapped for this process's CPU time, as on our side; with
        # --device other than cpu its make_algo is wrapped to create the algorithm on that device.
        patches = []
        if args.clock == "cpu":
            patches.append("real = m._snap; m._snap = lambda: (time.process_time(),) + real()[1:]; ")
        if args.device != "cpu":
            dev = args.device if ":" in args.device else args.device + ":0"
            patches.append(f"make = m.make_algo; m.make_algo = lambda name: (lambda c: (c, c.create(device={dev!r})))"
                           "(make(name)[0]); ")
        script = Path(args.peer_script)
        launcher = ("import sys, time; sys.path.insert(0, sys.argv[1]); import d3rlpy_speed as m; " + "".join(patches)
                    + "sys.argv = [m.__file__] + sys.argv[2:]; m.main()")
        head = ([str(python), "-c", launcher, str(script.parent)] if patches else [str(python), str(script)])
        cmd = head + ["--algos", name, "--modes", "fit", "--threads", str(args.threads),
               "--n", str(n), "--reps", str(args.reps), "--max-reps", str(args.max_reps),
               "--quiet-threshold", str(args.quiet_threshold), "--max-wait", str(args.max_wait),
               "--json", str(out)]
        env = dict(os.environ)
        if args.allocator == "tuned":  # the same glibc settings as tune_cpu_allocator, for the peer process
            env["GLIBC_TUNABLES"] = f"glibc.malloc.mmap_threshold={32 << 20}:glibc.malloc.trim_threshold={1 << 30}"
        subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
        row = json.loads(out.read_text().splitlines()[-1])
    return {k: row[k] for k in ("median", "min", "max", "clean", "reps")} | {"n": n}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    present = [a for a in PAIRS if a in ALGORITHMS]
    p.add_argument("--algos", default=",".join(present), help="ours to compare (td3bc, cql, bear, dbr)")
    p.add_argument("--n", default="", help="updates per repetition, e.g. td3bc=1000,cql=100")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--max-reps", type=int, default=6)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet-threshold", type=float, default=0.15)
    p.add_argument("--max-wait", type=float, default=60.0)
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="rates from wall time (the shared script's way) or from each process's CPU time, which a "
                        "busy machine distorts less (both sides use the same clock)")
    p.add_argument("--allocator", choices=("default", "tuned"), default="default",
                   help="glibc malloc as it comes, or tuned to keep freed memory (what offline-bench's CPU training "
                        "does, train.loop.tune_cpu_allocator) on BOTH sides")
    p.add_argument("--venv", default="/tmp/d3rlpy-venv")
    p.add_argument("--python", default="", help="an interpreter that has d3rlpy 2.8.1 (instead of --venv)")
    p.add_argument("--peer-script", default=str(D3RLPY_SCRIPT), help="the shared d3rlpy_speed.py (or a copy)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i], for both sides")
    p.add_argument("--bf16", action="store_true",
                   help="also measure ours with bf16=True (algorithms that have the option) against the same peer")
    p.add_argument("--cuda-graphs", action="store_true",
                   help="also measure ours with each update replayed as a CUDA graph (train.graphs; CUDA only)")
    p.add_argument("--skip-d3rlpy", action="store_true", help="measure ours only")
    p.add_argument("--flops", action="store_true",
                   help="also count each side's matrix-product FLOPs per update (torch's FlopCounterMode) and print "
                        "the achieved GFLOP/s and the ratio per FLOP: the two sides' updates need not do equal work")
    p.add_argument("--json", default="", help="append one JSON line per comparison here")
    args = p.parse_args()
    if args.cuda_graphs and not args.device.startswith("cuda"):
        p.error("--cuda-graphs needs --device cuda")
    args.n_of = {k: int(v) for k, v in (kv.split("=") for kv in args.n.split(",") if kv)}
    torch.set_num_threads(args.threads)
    global _clock
    _clock = CLOCK[args.clock]
    python = None if args.skip_d3rlpy else (Path(args.python) if args.python else ensure_venv(Path(args.venv)))
    if args.allocator == "tuned":
        from offline_bench.train.loop import tune_cpu_allocator

        tune_cpu_allocator()
    data = SyntheticData(200_000, 1, 15, 3, seed=args.seed, device=args.device)
    where = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu"
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} thread(s), cpu_count {os.cpu_count()}, "
          f"clock {args.clock}, allocator {args.allocator}, device {args.device} ({where})", flush=True)
    print(f"{'ours':<16}{'upd/s':>9}  {'d3rlpy':<10}{'upd/s':>9}  {'ratio':>6}  {'goal':>5}", flush=True)
    rows = []
    for algo_id in [a for a in args.algos.split(",") if a]:
        try:
            load(algo_id)
        except BaseException as exc:  # pytest.fail raises an OutcomeException
            print(f"{algo_id:<16} skipped: {exc}", flush=True)
            continue
        peers, goal, _ = PAIRS[algo_id]
        if args.device.startswith("cuda"):
            goal = GPU_GOAL
        for peer in peers:
            phase = "main" if peer.endswith("_main") else "default"
            has_bf16 = "bf16" in config_fields(algo_id)
            variants = [(False, False)] + ([(True, False)] if args.bf16 and has_bf16 else [])
            variants += [(False, True)] if args.cuda_graphs else []
            results = [((bf16, graphs), measure_ours(algo_id, phase, args, data, bf16, graphs))
                       for bf16, graphs in variants]
            theirs = measure_d3rlpy(python, peer, args) if python else None
            for (bf16, graphs), ours in results:
                ratio = ours["median"] / theirs["median"] if theirs else float("nan")
                label = algo_id + ("(main)" if phase == "main" else "") + ("+bf16" if bf16 else "") + ("+graphs" if graphs else "")
                flag = "" if ours["clean"] and (theirs is None or theirs["clean"]) else "  [contended]"
                verdict = "" if theirs is None else ("ok" if ratio >= goal else "below goal")
                print(f"{label:<16}{ours['median']:>9.1f}  {peer:<10}"
                      f"{(theirs or {}).get('median', float('nan')):>9.1f}  {ratio:>5.2f}x  {goal:>4.1f}x {verdict}{flag}",
                      flush=True)
                row = {"ours": algo_id, "phase": phase, "bf16": bf16, "cuda_graphs": graphs, "peer": peer, "ours_result": ours,
                       "d3rlpy_result": theirs, "ratio": ratio, "goal": goal, "threads": args.threads,
                       "torch": torch.__version__, "clock": args.clock, "allocator": args.allocator,
                       "device": args.device}
                if args.flops and theirs is not None and not bf16 and not graphs:
                    ours_f, theirs_f = flops_ours(algo_id, phase, args, data), flops_d3rlpy(python, peer, args)
                    ours_g, theirs_g = ours["median"] * ours_f / 1e9, theirs["median"] * theirs_f / 1e9
                    print(f"{'':<16}flops per update: ours {ours_f / 1e6:.0f} M ({ours_g:.1f} GFLOP/s), d3rlpy "
                          f"{theirs_f / 1e6:.0f} M ({theirs_g:.1f} GFLOP/s), ratio per FLOP {ours_g / theirs_g:.2f}x",
                          flush=True)
                    row.update(ours_flops=ours_f, d3rlpy_flops=theirs_f, ratio_per_flop=ours_g / theirs_g)
                rows.append(row)
    if args.json:
        with open(args.json, "a") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
