"""The training loop on real tiny datasets: run files, exact resume, determinism, config precedence."""
import csv
import dataclasses
import json
import math
import re
from pathlib import Path

import pytest
import torch

from offline_bench import config as config_lib
from offline_bench.algos.td3_bc import TD3BC
from offline_bench.data import catalog, collect, load_dataset
from offline_bench.data.catalog import task_references
from offline_bench.train import (
    TrainConfig,
    TrainError,
    prepare,
    resolve_config,
    train,
    train_run,
)
from offline_bench.train.config import CONFIG_DIR, split_dataset_id

torch.set_num_threads(1)

TINY = {"hidden_sizes": "[16,16]", "batch_size": 32, "eval_every": 10, "eval_episodes": 2, "log_every": 5,
        "checkpoint_every": 10}


def tiny_datasets(tmp_path_factory) -> Path:
    """Tiny real datasets, collected once per test session and shared by the train test modules:
    hopper-random (single-agent, D4RL references) and spread-random (3 agents, no expert reference yet)."""
    root = tmp_path_factory.getbasetemp() / "train-datasets"
    if not (root / "spread-random-v1.json").exists():
        collect("hopper-random", steps=500, root=root)
        collect("spread-random", steps=200, root=root)
    return root


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    return tiny_datasets(tmp_path_factory)


def read_metrics(run_dir: Path, drop=("time_s",)) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k not in drop} for row in csv.DictReader(f)]


def read_result(run_dir: Path) -> dict:
    result = json.loads((run_dir / "result.json").read_text())
    result.pop("wall_time_s")
    return result


def assert_same_state(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same_state(a[key], b[key])
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same_state(x, y)
    else:
        assert a == b


def test_run_directory_contents(data_root, tmp_path):
    outcome = train("td3bc", "hopper-random", steps=30, sets=TINY, root=data_root, runs=tmp_path)
    run_dir = tmp_path / "hopper-random-v0" / "td3bc" / "seed0"
    assert outcome.status == "finished" and outcome.run_dir == run_dir
    assert sorted(p.name for p in run_dir.iterdir()) == ["checkpoint.pt", "config.json", "metrics.csv", "result.json"]

    config = json.loads((run_dir / "config.json").read_text())
    manifest = json.loads((data_root / "hopper-random-v0.json").read_text())
    assert config["algo"] == "td3bc" and config["dataset"]["id"] == "hopper-random-v0"
    assert config["dataset"]["sha256"] == manifest["sha256"]
    assert config["dataset"]["episode_return_mean"] == manifest["episode_returns"]["mean"]  # the data's own score
    assert config["algo_config"]["hidden_sizes"] == [16, 16] and config["train_config"]["steps"] == 30
    assert config["sources"]["hidden_sizes"] == "--set" and config["sources"]["steps"] == "--steps"
    assert config["device"] == "cpu" and config["versions"]["torch"] == torch.__version__
    cpuinfo = Path("/proc/cpuinfo")
    models = [line.split(":", 1)[1].strip() for line in (cpuinfo.read_text().splitlines() if cpuinfo.exists() else [])
              if line.startswith("model name")]
    if models:  # the CPU's model (tables name it under their runs), not only "x86_64"; ARM's cpuinfo has none
        assert config["device_name"] == models[0]

    rows = read_metrics(run_dir)
    assert [int(r["step"]) for r in rows] == [5, 10, 15, 20, 25, 30]
    eval_rows = [r for r in rows if r["eval_return"]]
    assert [int(r["step"]) for r in eval_rows] == [10, 20, 30]
    for row in eval_rows:  # the hopper references are D4RL's, so every evaluation has a normalized score
        expected = 100 * (float(row["eval_return"]) - 20.058972) / (1441.8059623430963 - 20.058972)
        assert float(row["normalized_score"]) == pytest.approx(expected)
        assert 1 <= float(row["eval_length"]) <= 1000  # mean steps per episode, hopper's time limit at most
    assert all(r["eval_length"] == "" for r in rows if not r["eval_return"])
    assert all(float(r["critic_loss"]) > 0 for r in rows)

    result = json.loads((run_dir / "result.json").read_text())
    scores = [float(r["normalized_score"]) for r in eval_rows]
    assert result["statistic"] == "last_k_mean" and result["last_k"] == 10
    assert result["score"] == pytest.approx(sum(scores) / 3) == pytest.approx(result["last_k_score"])
    assert result["final_score"] == pytest.approx(scores[-1]) and result["best_score"] == pytest.approx(max(scores))
    assert result["evaluations"] == 3 and result["steps_done"] == 30
    lengths = [float(r["eval_length"]) for r in eval_rows]
    assert result["final_length"] == lengths[-1] and result["last_k_length"] == pytest.approx(sum(lengths) / 3)

    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert ckpt["step"] == 30 and {"algo", "sampler", "torch_rng", "numpy_rng", "evals"} <= ckpt.keys()


class ConfigCheckingTD3BC(TD3BC):
    """TD3+BC that records whether config.json existed when its first update ran."""

    seen: list = []

    def update(self, batch):
        if self.updates == 0:
            ConfigCheckingTD3BC.seen.append((self.run_dir / "config.json").exists())
        return super().update(batch)


def test_config_json_is_written_before_the_first_update(data_root, tmp_path):
    _, resolved = prepare("td3bc", "hopper-random", steps=3, sets={**TINY, "eval_every": 3})
    dataset = load_dataset("hopper-random", root=data_root)
    ConfigCheckingTD3BC.run_dir = tmp_path / "hopper-random-v0" / "td3bc" / "seed0"
    train_run(dataset, ConfigCheckingTD3BC, resolved, runs=tmp_path)
    assert ConfigCheckingTD3BC.seen == [True]


def test_resume_after_interruption_equals_uninterrupted_run(data_root, tmp_path):
    args = dict(steps=40, sets=TINY, root=data_root)
    whole = train("td3bc", "hopper-random", runs=tmp_path / "a", **args)
    stopped = train("td3bc", "hopper-random", runs=tmp_path / "b", stop_after=27, **args)
    assert stopped.status == "stopped" and not (stopped.run_dir / "result.json").exists()
    assert int(read_metrics(stopped.run_dir)[-1]["step"]) == 25  # rows past the checkpoint (step 20) exist ...
    resumed = train("td3bc", "hopper-random", runs=tmp_path / "b", **args)
    assert resumed.status == "finished" and resumed.start_step == 20  # ... and are truncated back on resume
    assert read_metrics(resumed.run_dir) == read_metrics(whole.run_dir)
    assert read_result(resumed.run_dir) == read_result(whole.run_dir)
    a = torch.load(whole.run_dir / "checkpoint.pt", weights_only=False)
    b = torch.load(resumed.run_dir / "checkpoint.pt", weights_only=False)
    assert_same_state(a["algo"], b["algo"])
    assert_same_state(a["sampler"], b["sampler"])


def test_metrics_reach_the_disk_before_the_checkpoint_that_follows_them(data_root, tmp_path, monkeypatch):
    """After a power loss a checkpoint must not be ahead of metrics.csv (resume keeps the rows up to its step): the
    rows are fsynced before each checkpoint is written, and each rename's folder after it."""
    import os

    from offline_bench.train import loop

    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(Path(os.readlink(f"/proc/self/fd/{fd}")).name)
        real_fsync(fd)

    monkeypatch.setattr(loop.os, "fsync", fsync)
    train("td3bc", "hopper-random", steps=20, sets={**TINY, "checkpoint_every": 10}, root=data_root, runs=tmp_path)
    checkpoints = [i for i, name in enumerate(synced) if name == "checkpoint.pt.tmp"]
    assert len(checkpoints) == 2
    for i in checkpoints:
        assert synced[i - 1] == "metrics.csv" and synced[i + 1] == "seed0"  # rows, checkpoint, its folder


def test_resume_of_a_run_from_before_the_episode_length(data_root, tmp_path):
    """A run stopped before metrics.csv had ``eval_length`` and its checkpoint's evaluations a length resumes: its
    old rows keep an empty length, new evaluation rows have one, and result.json leaves the length out (its last
    evaluations are not all measured) while the scores are the same as an uninterrupted run's."""
    args = dict(steps=40, sets=TINY, root=data_root)
    whole = train("td3bc", "hopper-random", runs=tmp_path / "a", **args)
    stopped = train("td3bc", "hopper-random", runs=tmp_path / "b", stop_after=27, **args)
    ckpt_path = stopped.run_dir / "checkpoint.pt"
    ckpt = torch.load(ckpt_path, weights_only=False)
    ckpt["evals"] = [{k: v for k, v in e.items() if k != "length"} for e in ckpt["evals"]]
    torch.save(ckpt, ckpt_path)
    rows = read_metrics(stopped.run_dir, drop=("eval_length",))
    with open(stopped.run_dir / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)

    resumed = train("td3bc", "hopper-random", runs=tmp_path / "b", **args)
    assert resumed.status == "finished" and resumed.start_step == 20
    lengths = {int(r["step"]): r["eval_length"] for r in read_metrics(resumed.run_dir) if r["eval_return"]}
    assert lengths[10] == lengths[20] == "" and float(lengths[30]) >= 1 and float(lengths[40]) >= 1
    old, new = read_result(resumed.run_dir), read_result(whole.run_dir)
    assert "last_k_length" not in old and "final_length" not in old
    assert old == {k: v for k, v in new.items() if k not in ("final_length", "last_k_length")}


def test_training_flushes_subnormals_and_restores_the_default(data_root, tmp_path, monkeypatch):
    """Runs train with subnormals flushed to zero (they made long CPU runs several times slower) and leave torch's
    default behind; inside an update a subnormal reads as zero."""
    import offline_bench.algos.td3_bc as td3_bc_module
    from offline_bench.train.loop import cpu_denormals_flushed

    subnormal = torch.tensor([1e-39])
    assert (subnormal * 1.0).item() != 0.0  # torch's default: subnormals kept
    with cpu_denormals_flushed() as supported:
        if not supported:
            pytest.skip("this CPU cannot flush subnormals")
        assert (subnormal * 1.0).item() == 0.0
    assert (subnormal * 1.0).item() != 0.0

    seen = []
    original = td3_bc_module.TD3BC.update

    def update(self, batch):
        seen.append((subnormal * 1.0).item())
        return original(self, batch)

    monkeypatch.setattr(td3_bc_module.TD3BC, "update", update)
    train("td3bc", "hopper-random", steps=3, sets=TINY, root=data_root, runs=tmp_path)
    assert seen == [0.0, 0.0, 0.0]
    assert (subnormal * 1.0).item() != 0.0  # restored when train returns


def test_deterministic_per_seed_and_seeds_differ(data_root, tmp_path):
    args = dict(steps=10, sets={**TINY, "log_every": 10}, root=data_root)
    first = train("td3bc", "hopper-random", runs=tmp_path / "a", **args)
    again = train("td3bc", "hopper-random", runs=tmp_path / "b", **args)
    other = train("td3bc", "hopper-random", runs=tmp_path / "a", seed=1, **args)
    assert other.run_dir.name == "seed1"
    assert read_metrics(first.run_dir) == read_metrics(again.run_dir)
    assert read_metrics(first.run_dir) != read_metrics(other.run_dir)


def test_finished_run_is_not_rerun_and_changed_config_is_refused(data_root, tmp_path):
    args = dict(sets=TINY, root=data_root, runs=tmp_path)
    done = train("td3bc", "hopper-random", steps=10, **args)
    before = (done.run_dir / "metrics.csv").read_text()
    again = train("td3bc", "hopper-random", steps=10, **args)
    assert again.status == "already finished" and again.result["score"] == done.result["score"]
    assert (done.run_dir / "metrics.csv").read_text() == before
    empty_root = {**args, "root": tmp_path / "no-datasets"}  # a finished run needs no dataset to say so
    assert train("td3bc", "hopper-random", steps=10, **empty_root).status == "already finished"
    # Killed between the final checkpoint and result.json: the rerun only writes the result.
    expected = read_result(done.run_dir)
    (done.run_dir / "result.json").unlink()
    rerun = train("td3bc", "hopper-random", steps=10, **args)
    assert (rerun.status, rerun.start_step) == ("finished", 10)
    assert read_result(done.run_dir) == expected and (done.run_dir / "metrics.csv").read_text() == before

    train("td3bc", "hopper-random", steps=30, seed=2, stop_after=10, **args)
    with pytest.raises(TrainError, match="different config.*alpha 2.5 vs 1.0"):
        train("td3bc", "hopper-random", steps=30, seed=2, **{**args, "sets": {**TINY, "alpha": 1.0}})


def test_multi_agent_run_without_references_records_raw_returns(tmp_path, monkeypatch):
    # A multi-agent task before its expert policy exists (every task has one now, so one is taken away).
    monkeypatch.setitem(catalog.REFERENCES, "world", dataclasses.replace(task_references("world"), expert=None))
    collect("world-random", steps=60, root=tmp_path / "data")
    outcome = train("ma-td3bc", "world-random", steps=10, sets={**TINY, "hidden_sizes": "[8]"},
                    root=tmp_path / "data", runs=tmp_path / "runs")
    result = outcome.result
    assert result["normalized"] is False and result["score"] is None and result["statistic"] is None
    assert math.isfinite(result["final_return"])
    eval_rows = [r for r in read_metrics(outcome.run_dir) if r["eval_return"]]
    assert [r["normalized_score"] for r in eval_rows] == [""]


def test_a_resumed_run_keeps_the_references_it_started_with(tmp_path, monkeypatch, caplog):
    """An expert reference added to the catalog between a kill and the resume does not mix two normalizations in
    one run (before, the resumed run scored its later evaluations only and failed to summarize): the run keeps its
    config.json's pair and says which newer pair a new run would get."""
    full = task_references("world")
    monkeypatch.setitem(catalog.REFERENCES, "world", dataclasses.replace(full, expert=None))
    collect("world-random", steps=60, root=tmp_path / "data")
    args = dict(steps=30, sets={**TINY, "hidden_sizes": "[8]"}, root=tmp_path / "data", runs=tmp_path / "runs")
    assert train("ma-td3bc", "world-random", stop_after=12, **args).status == "stopped"
    monkeypatch.setitem(catalog.REFERENCES, "world", full)  # the expert policy lands in the index meanwhile
    with caplog.at_level("WARNING", logger="offline_bench.train.loop"):
        outcome = train("ma-td3bc", "world-random", **args)
    assert outcome.status == "finished" and outcome.start_step == 10
    result = outcome.result
    assert result["normalized"] is False and result["references"]["expert"] is None and result["evaluations"] == 3
    assert "keeps the reference returns it started with" in caplog.text
    assert [r["normalized_score"] for r in read_metrics(outcome.run_dir) if r["eval_return"]] == ["", "", ""]


def test_single_agent_algorithm_refuses_multi_agent_data(data_root, tmp_path):
    with pytest.raises(TrainError, match="td3bc is a single-agent algorithm but spread-random-v1 has 3 agents"):
        train("td3bc", "spread-random", steps=5, sets=TINY, root=data_root, runs=tmp_path)
    assert not (tmp_path / "spread-random-v1").exists()
    # before a missing dataset's collect command is suggested: collecting it would not help
    with pytest.raises(TrainError, match="td3bc is a single-agent algorithm but tag-random-v1 has 3 agents"):
        train("td3bc", "tag-random", steps=5, sets=TINY, root=tmp_path / "empty", runs=tmp_path)


def test_a_missing_mixed_dataset_says_its_collect_may_need_retrain(tmp_path):
    from offline_bench.data import DatasetError

    with pytest.raises(DatasetError, match=r"^dataset spread-mixed-v1 is not collected in .*: run `offline-bench "
                       r"collect spread-mixed-v1 --root .*`, adding --retrain where no behaviour run of spread is "
                       r"saved on this machine \(it re-runs \d+ training steps"):
        train("omar", "spread-medium-replay", steps=5, sets=TINY, root=tmp_path / "empty", runs=tmp_path)


def test_v0_mpe_data_trains_and_evaluates_in_its_own_action_layout(tmp_path):
    """A v0 MPE file (mpe2's 5-dim layout, no layout in its manifest) still trains: its policy has 5 action dims and
    is evaluated in an env of the same layout; config.json records the layout."""
    collect("spread-random-v0", steps=60, root=tmp_path / "data")
    outcome = train("ma-td3bc", "spread-random-v0", steps=4, sets={**TINY, "eval_every": 2}, root=tmp_path / "data",
                    runs=tmp_path / "runs")
    config = json.loads((outcome.run_dir / "config.json").read_text())
    assert config["dataset"]["action_layout"] == "mpe2" and config["dataset"]["id"] == "spread-random-v0"
    assert outcome.result["evaluations"] == 2 and math.isfinite(outcome.result["final_return"])


# ------------------------------------------------------------------------------------------------- config layers
def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_config_precedence(tmp_path):
    from offline_bench.algos.td3_bc import TD3BCConfig

    configs = tmp_path / "configs"
    _write(configs / "train" / "hopper.yaml", "steps: 100\neval_every: 10\nlog_every: 7\nalpha: 1.0\n")
    _write(configs / "train" / "hopper-medium.yaml", "steps: 200\n")
    _write(configs / "td3bc" / "hopper.yaml", "alpha: 2.0\ngamma: 0.9\neval_every: 20\n")
    _write(configs / "td3bc" / "hopper-medium.yaml", "alpha: 3.0\npolicy_freq: 3\n")
    _write(configs / "td3bc" / "walker2d.yaml", "alpha: 9.0\n")
    user = _write(tmp_path / "mine.yaml", "policy_freq: 4\nbatch_size: 64\n")
    resolved = resolve_config("td3bc", TD3BCConfig, "hopper-medium-replay-v0", config_file=user,
                              sets={"batch_size": "128", "hidden_sizes": "[8,8]"}, flags={"steps": 5, "seed": None},
                              config_dir=configs)
    a, t = resolved.algo_config, resolved.train_config
    # hopper-medium-replay is the mixed quality: hopper-medium.yaml does not apply.
    assert (t.steps, t.eval_every, t.log_every) == (5, 20, 7)
    assert (a.alpha, a.gamma, a.policy_freq, a.batch_size, a.hidden_sizes) == (2.0, 0.9, 4, 128, (8, 8))
    assert resolved.sources["log_every"] == "configs/train/hopper.yaml"
    assert resolved.sources["steps"] == "--steps" and resolved.sources["batch_size"] == "--set"
    medium = resolve_config("td3bc", TD3BCConfig, "hopper-medium", config_dir=configs)
    assert (medium.train_config.steps, medium.algo_config.alpha, medium.algo_config.policy_freq) == (200, 3.0, 3)
    assert resolve_config("td3bc", TD3BCConfig, None, config_dir=configs).algo_config == TD3BCConfig()


def test_unknown_key_lists_valid_keys(tmp_path):
    from offline_bench.algos.td3_bc import TD3BCConfig

    with pytest.raises(ValueError, match=r"unknown config key 'alhpa' \(from --set\); valid keys for td3bc: .*alpha"):
        resolve_config("td3bc", TD3BCConfig, "hopper-random", sets={"alhpa": 1})
    bad = _write(tmp_path / "bad.yaml", "eval_evry: 3\n")
    with pytest.raises(ValueError, match="eval_evry.*--config.*loop keys: .*eval_every"):
        resolve_config("td3bc", TD3BCConfig, "hopper-random", config_file=bad)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        resolve_config("td3bc", TD3BCConfig, "hopper-random", flags={"steps": 0})


def test_shipped_loop_budgets():
    """Issue 5: OMAR authors' update-round budgets for MPE and halfcheetah-2x3; D4RL's 1M steps for PyBullet."""
    from offline_bench.algos.td3_bc import TD3BCConfig

    expected = {"spread-mixed": (2000, 10), "spread-random": (6000, 10), "tag-expert": (2000, 10),
                "tag-mixed": (1000, 10), "world-medium": (1000, 10), "halfcheetah-2x3-medium": (100_000, 500),
                "hopper-medium": (1_000_000, 5000), "ant-expert": (1_000_000, 5000)}
    for dataset_id, (steps, eval_every) in expected.items():
        t = resolve_config("td3bc", TD3BCConfig, dataset_id).train_config
        assert (t.steps, t.eval_every, t.eval_episodes) == (steps, eval_every, 10), dataset_id
    from offline_bench.data import TASKS

    for path in (CONFIG_DIR / "train").glob("*.yaml"):  # every file is named <task> or <task>-<quality>
        assert path.stem in TASKS or split_dataset_id(path.stem)[0] in TASKS, path.name
    assert set(TASKS) <= {p.stem for p in (CONFIG_DIR / "train").glob("*.yaml")}


@pytest.mark.parametrize("algo", ["ma-td3bc", "ma-cql", "ma-icq", "omar"])
def test_multi_agent_mujoco_settings_for_every_multi_agent_algorithm(algo):
    """Issue 5: on halfcheetah-2x3 every multi-agent algorithm takes the authors' MaMuJoCo networks and rates."""
    from offline_bench.algos import get_algorithm

    config = resolve_config(algo, get_algorithm(algo).config_cls, "halfcheetah-2x3-mixed").algo_config
    assert config.hidden_sizes == (256, 256) and config.batch_size == 256
    assert (config.actor_lr, config.critic_lr, config.polyak, config.gamma) == (3e-4, 3e-4, 0.005, 0.99)
    mpe = resolve_config(algo, get_algorithm(algo).config_cls, "spread-mixed").algo_config
    assert mpe.hidden_sizes == (64, 64) and mpe.batch_size == 1024 and mpe.gamma == 0.95


def test_split_dataset_id():
    assert split_dataset_id("halfcheetah-2x3-medium-replay-v0") == ("halfcheetah-2x3", "mixed", 0)
    assert split_dataset_id("spread-expert") == ("spread", "expert", None)
    with pytest.raises(ValueError, match="expected <task>-<quality>"):
        split_dataset_id("hopper")
    assert TrainConfig().device == "auto"


def test_a_run_in_progress_is_locked(data_root, tmp_path):
    run_dir = tmp_path / "hopper-random-v0" / "td3bc" / "seed0"
    run_dir.mkdir(parents=True)
    (run_dir / ".lock").write_text("1")  # pid 1 is alive: another process trains this run
    with pytest.raises(TrainError, match="is being trained by process 1"):
        train("td3bc", "hopper-random", steps=4, sets=TINY, root=data_root, runs=tmp_path)
    (run_dir / ".lock").write_text("999999999")  # a killed process's stale lock is taken over
    assert train("td3bc", "hopper-random", steps=4, sets=TINY, root=data_root, runs=tmp_path).status == "finished"
    assert not (run_dir / ".lock").exists()


def test_the_run_lock_holds_its_pid_from_the_start_and_leaves_another_process_lock_alone(tmp_path):
    import os

    from offline_bench.train.loop import _RunLock

    with _RunLock(tmp_path) as lock:
        assert lock.path.read_text() == str(os.getpid())
        assert sorted(p.name for p in tmp_path.iterdir()) == [".lock"]  # no private file left beside it
        lock.path.write_text("1")  # another live process took the run meanwhile (pid 1 is alive)
    assert (tmp_path / ".lock").read_text() == "1"  # not ours, so not removed
    with pytest.raises(TrainError, match="being trained by process 1"):
        _RunLock(tmp_path).__enter__()
    (tmp_path / ".lock").write_text("")  # empty or damaged: nobody's, taken over
    with _RunLock(tmp_path) as lock:
        assert lock.path.read_text() == str(os.getpid())
    assert not (tmp_path / ".lock").exists()


def test_every_shipped_config_file_resolves():
    """Every configs/<algo-id>/<task>[-<quality>].yaml names a registered algorithm and only valid keys."""
    from offline_bench.algos import ALGORITHMS, get_algorithm
    from offline_bench.data import TASKS

    checked = 0
    for folder in CONFIG_DIR.iterdir():
        if not folder.is_dir() or folder.name == "train":
            continue
        assert folder.name in ALGORITHMS, f"configs/{folder.name} is not an algorithm id"
        for path in folder.glob("*.yaml"):
            dataset_id = f"{path.stem}-random" if path.stem in TASKS else path.stem
            resolve_config(folder.name, get_algorithm(folder.name).config_cls, dataset_id)  # raises on a bad key
            checked += 1
    assert checked > 0


def test_references_come_as_one_pair_from_the_manifest_or_the_catalog():
    from types import SimpleNamespace

    from offline_bench.train.loop import dataset_facts

    catalog = SimpleNamespace(random=-23.9, expert=-12.7)
    partial = SimpleNamespace(dataset_id="spread-mixed-v0", references=catalog,
                              manifest={"references": {"random": -24.7, "expert": None}})
    assert dataset_facts(partial)["references"] == {"random": -23.9, "expert": -12.7, "source": "catalog"}
    complete = SimpleNamespace(dataset_id="spread-mixed-v0", references=catalog,
                               manifest={"references": {"random": -24.7, "expert": -12.0}})
    assert dataset_facts(complete)["references"] == {"random": -24.7, "expert": -12.0, "source": "manifest"}


def test_finished_run_with_a_different_config_is_refused(data_root, tmp_path):
    done = train("td3bc", "hopper-random", steps=10, sets=TINY, root=data_root, runs=tmp_path)
    with pytest.raises(TrainError, match=r"holds a finished run with a different config \(gamma 0.99 vs 0.5\)"):
        train("td3bc", "hopper-random", steps=10, sets={**TINY, "gamma": 0.5}, root=data_root, runs=tmp_path)
    loaded = load_dataset("hopper-random", root=data_root)  # train_run (a loaded dataset) refuses it the same way
    _, resolved = prepare("td3bc", "hopper-random", steps=20, sets=TINY)
    with pytest.raises(TrainError, match="finished run with a different config .*steps 10 vs 20"):
        train_run(loaded, TD3BC, resolved, runs=tmp_path)
    assert train("td3bc", "hopper-random", steps=10, sets=TINY, root=data_root, runs=tmp_path).result == done.result


def test_runs_made_before_an_option_existed_match_it_at_its_default(data_root, tmp_path):
    """A finished run whose config.json predates an option (here: no ``bf16`` key) is the same run when that option
    is left at its default (new options keep the old behaviour), and a different one when it is set."""
    done = train("td3bc", "hopper-random", steps=10, sets=TINY, root=data_root, runs=tmp_path)
    config_path = done.run_dir / "config.json"
    stored = json.loads(config_path.read_text())
    del stored["algo_config"]["bf16"]
    config_path.write_text(json.dumps(stored))
    assert train("td3bc", "hopper-random", steps=10, sets=TINY, root=data_root, runs=tmp_path).result == done.result
    with pytest.raises(TrainError, match=r"different config \(bf16 None vs True\)"):
        train("td3bc", "hopper-random", steps=10, sets={**TINY, "bf16": True}, root=data_root, runs=tmp_path)


def test_config_values_are_typed_and_counts_checked():
    from offline_bench.algos import get_algorithm
    from offline_bench.algos.td3_bc import TD3BCConfig

    def resolved(algo, **sets):
        return resolve_config(algo, get_algorithm(algo).config_cls, "hopper-random", sets=sets).algo_config

    config = resolve_config("td3bc", TD3BCConfig, "hopper-random", flags={"steps": "1e3"},
                            sets={"hidden_sizes": "(8, 8)", "alpha": "1e-1", "policy_freq": "3.0", "bf16": "yes"})
    assert (config.algo_config.hidden_sizes, config.algo_config.alpha, config.algo_config.policy_freq) == (
        (8, 8), 0.1, 3)
    assert config.algo_config.bf16 is True and config.train_config.steps == 1000
    assert resolved("td3bc", hidden_sizes="8").hidden_sizes == (8,)  # one layer
    assert resolved("td3bc", hidden_sizes="[]").hidden_sizes == ()  # a linear network
    # Zero is legitimate where it means "none" or names a mode: no warm-up / BC phase, OMAR's softmax refinement.
    assert resolved("bear", warmup_steps="0").warmup_steps == 0
    assert resolved("cql", bc_steps="0").bc_steps == 0
    assert resolved("omar", omar_n_elites="0").omar_n_elites == 0
    for algo, key in [("bear", "latent_factor"), ("bear", "n_mmd_samples"), ("cql", "cql_n_actions"),
                      ("omar", "omar_iters"), ("omar", "omar_n_samples"), ("ma-icq", "n_critics")]:
        with pytest.raises(ValueError, match=rf"^{key} must be >= 1, got 0 \(from --set\)$"):
            resolved(algo, **{key: "0"})
    with pytest.raises(ValueError, match=r"^warmup_steps must be >= 0, got -1"):
        resolved("bear", warmup_steps="-1")
    with pytest.raises(ValueError, match="^steps must be >= 1, got 0"):
        TrainConfig(steps=0)


def test_float_values_must_be_finite_and_inside_their_meaning():
    """A discount of 2 or a negative learning rate would train to a finished run (or fail inside torch naming no
    key); each is refused with the key, the range and the layer it came from. Range edges that mean something pass."""
    from offline_bench.algos import get_algorithm
    from offline_bench.behaviour.matd3 import MATD3Config
    from offline_bench.behaviour.sac import SACConfig

    def resolved(algo, **sets):
        return resolve_config(algo, get_algorithm(algo).config_cls, "hopper-random", sets=sets).algo_config

    for algo, key, value, message in [
        ("td3bc", "gamma", "2", "must be in [0, 1], got 2"),
        ("td3bc", "polyak", "0", "must be in (0, 1], got 0"),
        ("td3bc", "actor_lr", "-0.1", "must be > 0, got -0.1"),
        ("td3bc", "policy_noise", "-1", "must be >= 0, got -1"),
        ("td3bc", "alpha", "nan", "must be a finite number, got 'nan'"),
        ("bear", "vae_lr", "inf", "must be a finite number, got 'inf'"),
        ("bear", "mmd_sigma", "0", "must be > 0, got 0"),
        ("cql", "entropy_alpha", "0", "must be > 0, got 0"),  # its logarithm is the learned parameter
        ("ma-icq", "icq_beta", "-600", "must be > 0, got -600"),
        ("omar", "omar_sigma", "0", "must be > 0, got 0"),
    ]:
        with pytest.raises(ValueError, match=rf"^{key} {re.escape(message)} \(from --set\)$"):
            resolved(algo, **{key: value})
    # The edges that are meaningful: behaviour cloning (alpha 0, cql_alpha 0 is SAC), a myopic critic, no noise.
    config = resolved("td3bc", alpha="0", gamma="0", policy_noise="0", polyak="1")
    assert (config.alpha, config.gamma, config.policy_noise, config.polyak) == (0.0, 0.0, 0.0, 1.0)
    assert resolved("cql", cql_alpha="0").cql_alpha == 0.0
    # Seeds beyond what torch takes, from a flag or --set; and the shipped configs' defaults all pass the rules.
    with pytest.raises(ValueError, match=r"^--seed must be at most 2\*\*63 - 1"):
        resolve_config("td3bc", get_algorithm("td3bc").config_cls, "hopper-random", flags={"seed": 2**64})
    for config_cls in [get_algorithm(a).config_cls for a in ("td3bc", "cql", "bear", "dbr", "ma-td3bc", "ma-cql",
                                                             "ma-icq", "omar")] + [MATD3Config, SACConfig]:
        defaults = config_cls()
        for f in dataclasses.fields(config_cls):
            assert config_lib.coerce_field(config_cls, f.name, getattr(defaults, f.name)) == getattr(defaults, f.name)


class BrokenTD3BC(TD3BC):
    """Fails inside construction the way a bad size does deep in torch."""

    def __init__(self, config, problem, device):
        raise IndexError("amin(): Expected reduction dim 0 to have non-zero size.")


def test_algorithm_that_cannot_be_built_is_a_train_error_without_a_run_directory(data_root, tmp_path):
    _, resolved = prepare("td3bc", "hopper-random", steps=3, sets=TINY)
    dataset = load_dataset("hopper-random", root=data_root)
    with pytest.raises(TrainError, match=r"^cannot build td3bc with this config \(IndexError: amin\(\).*--set"):
        train_run(dataset, BrokenTD3BC, resolved, runs=tmp_path)
    assert not any(tmp_path.iterdir())


class DivergingTD3BC(TD3BC):
    """Diverges after 13 updates, as a too-large learning rate does: its actor's weights become NaN."""

    def update(self, batch):
        metrics = super().update(batch)
        if self.updates == 13:
            with torch.no_grad():
                for p in self.actor.parameters():
                    p.fill_(float("nan"))
        return metrics


def test_a_diverged_run_is_one_error_naming_the_step_the_metrics_and_what_to_do(data_root, tmp_path):
    """NaN actions at an evaluation are a diverged run, not a bug in the env: the error says so, names the metrics
    that went non-finite (their row is in metrics.csv) and the checkpoint kept, and says what to change."""
    _, resolved = prepare("td3bc", "hopper-random", steps=30, sets=TINY)
    dataset = load_dataset("hopper-random", root=data_root)
    with pytest.raises(TrainError) as err:
        train_run(dataset, DivergingTD3BC, resolved, runs=tmp_path)
    message = str(err.value)
    assert message.startswith("training diverged: the policy's actions are NaN or inf at the evaluation of step 20 (")
    assert "actor_loss" in message and "not finite in metrics.csv's last row" in message
    assert message.endswith("; the run keeps its last checkpoint (step 10), and resuming would repeat the same "
                            "updates: change the config (e.g. a smaller learning rate) and train into another "
                            "--runs folder")
    run_dir = tmp_path / "hopper-random-v0" / "td3bc" / "seed0"
    rows = read_metrics(run_dir)
    assert rows[-1]["step"] == "20" and rows[-1]["actor_loss"] == "nan" and not (run_dir / "result.json").exists()
