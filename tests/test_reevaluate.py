"""`offline-bench evaluate`: a trained run's policy rolled out again, matching the run's own evaluations."""
import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from offline_bench.cli import main
from offline_bench.data import catalog, collect
from offline_bench.data.catalog import task_references
from offline_bench.evaluate import eval_seed
from offline_bench.train import TrainError, train
from offline_bench.train.reevaluate import evaluate_run

from test_train import TINY, read_metrics, tiny_datasets

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return tiny_datasets(tmp_path_factory)


@pytest.fixture(scope="module")
def run_dir(data_root, tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    train("td3bc", "hopper-random", steps=20, seed=3, sets=TINY, root=data_root, runs=runs)
    return runs / "hopper-random-v0" / "td3bc" / "seed3"


def test_the_runs_own_final_evaluation_is_reproduced(run_dir, data_root):
    final = [row for row in read_metrics(run_dir) if row["eval_return"]][-1]
    assert int(final["step"]) == 20
    # TD3+BC acts deterministically: the loop's episodes and seed give the loop's numbers exactly
    ev = evaluate_run(run_dir, episodes=TINY["eval_episodes"], seed=eval_seed(3, 20), device="cpu", root=data_root)
    assert (ev.algo, ev.dataset_id, ev.run_seed, ev.step, ev.steps, ev.finished) == (
        "td3bc", "hopper-random-v0", 3, 20, 20, True)
    assert ev.mean_return == pytest.approx(float(final["eval_return"]), rel=1e-12)
    assert ev.mean_score == pytest.approx(float(final["normalized_score"]), rel=1e-12)
    assert ev.mean_length == pytest.approx(float(final["eval_length"]))

    more = evaluate_run(run_dir, episodes=7, seed=5, device="cpu", root=data_root)
    assert len(more.returns) == len(more.lengths) == len(more.scores) == len(set(more.episode_seeds)) == 7
    again = evaluate_run(run_dir, episodes=7, seed=5, device="cpu", root=data_root)
    assert again.returns == more.returns and again.episode_seeds == more.episode_seeds
    refs = more.references
    assert more.scores[0] == pytest.approx(100 * (more.returns[0] - refs["random"]) / (refs["expert"] - refs["random"]))


def test_the_command_prints_each_run_and_writes_json(run_dir, data_root, tmp_path):
    other = tmp_path / "seed4"
    shutil.copytree(run_dir, other)  # a second run directory (the same policy) to show the mean over runs
    out = tmp_path / "evaluations" / "ev.json"  # its folder is made (before the rollouts, so it cannot cost them)
    result = CliRunner().invoke(main, ["evaluate", str(run_dir), str(other), "--episodes", "3", "--seed", "1",
                                       "--root", str(data_root), "--json", str(out)])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].startswith(f"{run_dir} (td3bc on hopper-random-v0, step 20 of 20): 3 episodes, return ")
    assert "normalized" in lines[0] and "steps per episode" in lines[0]
    assert lines[2].startswith("2 runs: normalized ") and lines[3] == f"wrote {out}"
    records = json.loads(out.read_text())
    assert [r["run_dir"] for r in records] == [str(run_dir), str(other)]
    assert records[0]["returns"] == records[1]["returns"] and len(records[0]["scores"]) == 3
    assert records[0]["mean_return"] == pytest.approx(sum(records[0]["returns"]) / 3)
    assert sorted(p.name for p in run_dir.iterdir()) == ["checkpoint.pt", "config.json", "metrics.csv", "result.json"]
    (tmp_path / "a-file").write_text("")
    blocked = CliRunner().invoke(main, ["evaluate", str(run_dir), "--episodes", "3", "--root", str(data_root),
                                        "--json", str(tmp_path / "a-file" / "ev.json")])
    assert blocked.exit_code == 1 and blocked.output.startswith("Error: cannot create the folder of --json ")
    assert len(blocked.output.strip().splitlines()) == 1  # refused before any run was evaluated


def test_an_unfinished_run_is_evaluated_at_its_last_checkpoint(data_root, tmp_path, caplog):
    train("td3bc", "hopper-random", steps=40, sets=TINY, root=data_root, runs=tmp_path, stop_after=25)
    run = tmp_path / "hopper-random-v0" / "td3bc" / "seed0"
    assert not (run / "result.json").exists()
    ev = evaluate_run(run, episodes=2, device="cpu", root=data_root)
    assert (ev.step, ev.steps, ev.finished) == (20, 40, False)  # checkpoints every 10 updates
    assert "unfinished: evaluating its last checkpoint, step 20 of 40" in caplog.text


def error_of(*args: str) -> str:
    result = CliRunner().invoke(main, ["evaluate", *args])
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in result.output, result.output
    return lines[0]


def test_bad_input_is_one_clear_line(run_dir, data_root, tmp_path):
    assert "does not exist" in error_of(str(tmp_path / "nope"))
    assert "is not a run directory (it has no config.json)" in error_of(str(tmp_path))

    no_ckpt = tmp_path / "no-ckpt"
    no_ckpt.mkdir()
    shutil.copy(run_dir / "config.json", no_ckpt / "config.json")
    assert "has no checkpoint.pt yet" in error_of(str(no_ckpt), "--root", str(data_root))

    other_file = tmp_path / "other-file"
    shutil.copytree(run_dir, other_file)
    config = json.loads((other_file / "config.json").read_text())
    config["dataset"]["sha256"] = "0" * 64
    (other_file / "config.json").write_text(json.dumps(config))
    message = error_of(str(other_file), "--root", str(data_root))
    assert "is not the file" in message and "trained on" in message and "--root" in message

    message = error_of(str(run_dir), "--root", str(tmp_path / "empty"))
    assert "needs the dataset it trained on (hopper-random-v0)" in message and "is not collected" in message
    refused = CliRunner().invoke(main, ["evaluate", str(run_dir), "--episodes", "0"])
    assert refused.exit_code == 2 and "'--episodes': 0 is not in the range x>=1" in refused.output
    with pytest.raises(TrainError, match="--episodes must be >= 1, got 0"):
        evaluate_run(run_dir, episodes=0)



def test_a_multi_agent_run_is_reproduced(data_root, tmp_path):
    train("ma-td3bc", "spread-random", steps=10, sets=TINY, root=data_root, runs=tmp_path)
    run = tmp_path / "spread-random-v1" / "ma-td3bc" / "seed0"
    final = [row for row in read_metrics(run) if row["eval_return"]][-1]
    ev = evaluate_run(run, episodes=TINY["eval_episodes"], seed=eval_seed(0, 10), device="cpu", root=data_root)
    assert ev.mean_return == pytest.approx(float(final["eval_return"]), rel=1e-12)
    assert ev.mean_score == pytest.approx(float(final["normalized_score"]), rel=1e-12)


def test_scores_use_the_runs_references_and_none_without_them(tmp_path, monkeypatch):
    full = task_references("world")  # world: a multi-agent task with fixed opponents
    monkeypatch.setitem(catalog.REFERENCES, "world", dataclasses.replace(full, expert=None))
    collect("world-random", steps=60, root=tmp_path / "data")
    outcome = train("ma-td3bc", "world-random", steps=10, sets={**TINY, "hidden_sizes": "[8]"},
                    root=tmp_path / "data", runs=tmp_path / "runs")
    monkeypatch.setitem(catalog.REFERENCES, "world", full)  # an expert reference known since: not the run's
    final = [row for row in read_metrics(outcome.run_dir) if row["eval_return"]][-1]
    ev = evaluate_run(outcome.run_dir, episodes=TINY["eval_episodes"], seed=eval_seed(0, 10), device="cpu")
    assert ev.mean_return == pytest.approx(float(final["eval_return"]), rel=1e-12)
    assert ev.references["expert"] is None and ev.scores is None and ev.mean_score is None
    result = CliRunner().invoke(main, ["evaluate", str(outcome.run_dir), "--episodes", "2"])
    assert result.exit_code == 0 and "normalized" not in result.output, result.output
