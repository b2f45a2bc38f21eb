"""``train.graphs``: what a CUDA-graph capture of the updates relies on, checked on CPU for every algorithm.

The capture itself needs a GPU (``benchmarks/cuda_graphs_check.py`` compares graphed with eager training there).
Here: the runner's own steps (static index, metric stacking, counters) train exactly like the plain loop; each
algorithm's ``update`` changes its Python state only by advancing a counter (what a replay can repeat); and
``graph_key()`` names the branch the next update takes.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from offline_bench.data import DeviceSampler, load_dataset, write_dataset
from offline_bench.train.graphs import GraphCaptureError, GraphedUpdates, counter_attributes, find_optimizers
from offline_bench.train.loop import TrainError, prepare, train_run
from tests.test_algorithms import CASES, load, tiny_config
from tests.test_data import synthetic

torch.set_num_threads(1)
# Short phases, so a few updates cover every branch: actor every 2nd update, CQL's 2-update BC warm start, a 3-update
# BEAR/DBR warm-up.
PHASES = {"policy_freq": 2, "bc_steps": 2, "warmup_steps": 3}
UPDATES = 7


def sampler_for(root: Path, n_agents: int, seed: int = 0) -> DeviceSampler:
    if n_agents == 1:
        arrays, manifest = synthetic(1, (15,), (3,), [40, 50, 30])
        dataset_id = "hopper-random-v0"
    else:
        arrays, manifest = synthetic(3, (6, 4, 6), (5, 3, 5), [40, 50, 30])
        dataset_id = "spread-random-v0"
    if not (root / f"{dataset_id}.hdf5").exists():
        write_dataset(root, dataset_id, arrays, manifest)
    dataset = load_dataset(dataset_id, root=root)
    sampler = DeviceSampler(dataset, "cpu", seed=seed)
    sampler.problem = dataset.problem()  # for build()
    return sampler


def build(algo_id: str, sampler: DeviceSampler, seed: int = 0) -> object:
    algo_cls = load(algo_id)
    config = tiny_config(algo_cls)
    fields = {f.name for f in dataclasses.fields(config)}
    config = dataclasses.replace(config, batch_size=16, **{k: v for k, v in PHASES.items() if k in fields})
    torch.manual_seed(seed)
    return algo_cls(config, sampler.problem, torch.device("cpu"))


def tensors(state: object, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor in a (nested) state dict, by path."""
    out: dict[str, torch.Tensor] = {}
    if isinstance(state, torch.Tensor):
        out[prefix] = state.detach().clone()
    elif isinstance(state, dict):
        for key, value in state.items():
            out |= tensors(value, f"{prefix}/{key}")
    elif isinstance(state, (list, tuple)):
        for i, value in enumerate(state):
            out |= tensors(value, f"{prefix}/{i}")
    return out


@pytest.mark.parametrize("algo_id,n_agents", CASES)
def test_runner_without_capture_trains_exactly_like_the_plain_loop(tmp_path: Path, algo_id: str,
                                                                    n_agents: int) -> None:
    plain_sampler, runner_sampler = sampler_for(tmp_path, n_agents), sampler_for(tmp_path, n_agents)
    plain, graphed = build(algo_id, plain_sampler), build(algo_id, runner_sampler)
    runner = GraphedUpdates(graphed, runner_sampler, 16, "cpu", capture=False)
    torch.manual_seed(1)
    plain_metrics = [plain.update(plain_sampler.sample(16)) for _ in range(UPDATES)]
    torch.manual_seed(1)
    runner_metrics = [runner.step() for _ in range(UPDATES)]
    for expected, got in zip(plain_metrics, runner_metrics):
        assert list(got) == list(expected)
        for key in expected:
            assert torch.equal(got[key], expected[key].float().reshape(-1).mean()), key
    a, b = tensors(plain.state_dict()), tensors(graphed.state_dict())
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{algo_id}: {key} differs after {UPDATES} updates"


@pytest.mark.parametrize("algo_id,n_agents", CASES)
def test_updates_advance_only_counters_and_the_key_names_the_branch(tmp_path: Path, algo_id: str,
                                                                    n_agents: int) -> None:
    """Per update: only int counters move (else a replay could not repeat it), and two updates with the same
    ``graph_key()`` change the same state tensors (the branch is a function of the key)."""
    sampler = sampler_for(tmp_path, n_agents)
    algo = build(algo_id, sampler)
    changed_by_key: dict[object, set[str]] = {}
    keys = []
    for _ in range(UPDATES):
        key = algo.graph_key()
        keys.append(key)
        hash(key)
        before_vars, before = dict(vars(algo)), tensors(algo.state_dict())
        algo.update(sampler.sample(16))
        assert len(counter_attributes(algo, before_vars, key)) == 1, "one counter per update"
        after = tensors(algo.state_dict())
        # optimizer moments appear at their first step; the networks, targets and multipliers exist from the start
        changed = {k for k in before if "/state/" not in k and not torch.equal(before[k], after[k])}
        if key in changed_by_key:
            assert changed == changed_by_key[key], f"{algo_id}: key {key} changed different tensors"
        changed_by_key[key] = changed
    if algo_id in {"td3bc", "ma-td3bc", "ma-cql", "omar"}:  # actor every 2nd update
        assert keys == [((i + 1) % 2 == 0,) for i in range(UPDATES)]
        actor = {k for k in changed_by_key[(True,)] if "actor" in k and "target" not in k}
        assert actor and not {k for k in changed_by_key[(False,)] if "actor" in k and "target" not in k}
    elif algo_id == "cql":  # behaviour-cloning warm start for 2 updates
        assert keys == [(i < 2,) for i in range(UPDATES)]
    elif algo_id in {"bear", "dbr"}:  # warm-up for 3 updates
        assert keys == [(i < 3,) for i in range(UPDATES)]
    else:
        assert set(keys) == {()}


def test_a_rebound_attribute_is_refused() -> None:
    class Rebinding:
        def __init__(self) -> None:
            self.updates, self.loss = 0, torch.zeros(())

        def update(self) -> None:
            self.updates += 1
            self.loss = torch.ones(())  # a new tensor: a graph replay would not rebind it

    algo = Rebinding()
    before = dict(vars(algo))
    algo.update()
    with pytest.raises(GraphCaptureError, match="rebinds self.loss"):
        counter_attributes(algo, before)


def test_runner_needs_graph_key_and_cuda_for_capture(tmp_path: Path) -> None:
    sampler = sampler_for(tmp_path, 1)
    with pytest.raises(GraphCaptureError, match="graph_key"):
        GraphedUpdates(object(), sampler, 16, "cpu", capture=False)
    with pytest.raises(ValueError, match="CUDA device"):
        GraphedUpdates(build("td3bc", sampler), sampler, 16, "cpu", capture=True)


def test_find_optimizers_reaches_the_lagrange_multiplier(tmp_path: Path) -> None:
    sampler = sampler_for(tmp_path, 3)
    algo_cls = load("ma-cql")
    algo = algo_cls(dataclasses.replace(tiny_config(algo_cls), cql_lagrange=True), sampler.problem,
                    torch.device("cpu"))
    found = find_optimizers(algo)
    assert algo.multiplier.optimizer in found and algo.critic_opt in found and algo.actor_opt in found
    assert len(found) == 3


def test_train_refuses_cuda_graphs_on_cpu(tmp_path: Path) -> None:
    sampler_for(tmp_path, 1)
    _, resolved = prepare("td3bc", "hopper-random", steps=2,
                          sets={"cuda_graphs": True, "device": "cpu", "hidden_sizes": [8, 8], "batch_size": 4})
    with pytest.raises(TrainError, match="cuda_graphs=true needs a CUDA device"):
        train_run(load_dataset("hopper-random-v0", root=tmp_path), load("td3bc"), resolved, runs=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def test_the_gpu_check_script_runs_here_without_capture(tmp_path: Path) -> None:
    """``benchmarks/cuda_graphs_check.py`` is meant for a GPU; on CPU (no capture) its agreement check must be exact,
    so a lent GPU's minutes are not spent on the script's own bugs."""
    import json
    import subprocess
    import sys

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "cuda_graphs_check.py"
    out = tmp_path / "rows.jsonl"
    subprocess.run([sys.executable, str(script), "--device", "cpu", "--algos", "td3bc,omar", "--shapes", "hopper,mpe3",
                    "--updates", "3", "--n", "1", "--reps", "1", "--json", str(out)], check=True, timeout=300,
                   capture_output=True)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["algo"], r["shape"]) for r in rows] == [("td3bc", "hopper"), ("omar", "hopper"), ("omar", "mpe3")]
    for row in rows:
        assert row["max_rel_param_diff"] == 0.0 and row["max_rel_metric_diff"] == 0.0 and row["finite"]
        assert not row["captured"] and row["graphs"] == 0


def test_the_prepared_gpu_session_script_runs_here_in_smoke_mode(tmp_path: Path) -> None:
    """``benchmarks/gpu_check.sh`` is one device call's command; ``SMOKE=1`` walks its steps on CPU at toy sizes."""
    import json
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, SMOKE="1", PYTHON=sys.executable, OUT=str(tmp_path))
    done = subprocess.run(["sh", "benchmarks/gpu_check.sh"], cwd=root, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [json.loads(line) for line in (tmp_path / "graphs.jsonl").read_text().splitlines()]
    assert {r["algo"] for r in rows} == {"td3bc", "omar"} and all(r["max_rel_param_diff"] == 0.0 for r in rows)
    assert (tmp_path / "d3rlpy.txt").exists()  # the comparison ran, or says why it was skipped


def test_cuda_graphs_like_device_may_change_on_resume() -> None:
    """How a run executes is not what it computes: a run begun with CUDA graphs on a GPU resumes on CPU without."""
    from offline_bench.train.loop import _same_run

    stored = {"algo": "td3bc", "dataset": {"sha256": "x"},
              "algo_config": {"alpha": 2.5}, "train_config": {"device": "cuda", "cuda_graphs": True, "steps": 10}}
    record = {"algo": "td3bc", "dataset": {"sha256": "x"},
              "algo_config": {"alpha": 2.5}, "train_config": {"device": "cpu", "cuda_graphs": False, "steps": 10}}
    assert _same_run(stored, record) == []
    record["train_config"]["steps"] = 20
    assert _same_run(stored, record) == ["steps 10 vs 20"]
