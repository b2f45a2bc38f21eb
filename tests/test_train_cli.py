"""`offline-bench train`: one-line errors, --show-config, finished runs, and resume after a real SIGKILL."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from offline_bench.algos.td3_bc import TD3BCConfig
from offline_bench.cli import main
from offline_bench.config import field_help
from offline_bench.train import TrainConfig, train

from test_train import tiny_datasets

torch.set_num_threads(1)

TINY_SETS = ["--set", "hidden_sizes=[16,16]", "--set", "batch_size=32", "--set", "eval_episodes=2"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return tiny_datasets(tmp_path_factory)


def run_cli(*args: str):
    return CliRunner().invoke(main, ["train", *args])


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0]


def test_errors_are_one_clear_line(data_root, tmp_path):
    common = ["--root", str(data_root), "--runs", str(tmp_path), *TINY_SETS, "--steps", "5"]
    assert_one_line_error(run_cli("--algo", "sac", "--dataset", "hopper-random", *common),
                          "unknown algorithm 'sac'", "td3bc")
    assert_one_line_error(run_cli("--algo", "td3bc", "--dataset", "hopper-exprt", *common), "unknown dataset")
    assert_one_line_error(run_cli("--algo", "td3bc", "--dataset", "hopper-medium", *common),
                          "hopper-medium-v0 is not collected")
    assert_one_line_error(run_cli("--algo", "TD3_BC", "--dataset", "spread-random", *common),
                          "td3bc is a single-agent algorithm", "3 agents", "ma-td3bc")
    assert_one_line_error(run_cli("--algo", "td3bc", "--dataset", "hopper-random", *common, "--set", "alpah=3"),
                          "unknown config key 'alpah'", "alpha")
    assert_one_line_error(run_cli("--algo", "td3bc", "--dataset", "hopper-random", *common, "--set", "alpha"),
                          "--set expects key=value")
    assert_one_line_error(run_cli("--algo", "td3bc", *common), "--dataset is required")
    missing = tmp_path / "missing.yaml"
    assert_one_line_error(run_cli("--algo", "td3bc", "--dataset", "hopper-random", *common, "--config", str(missing)),
                          "missing.yaml does not exist")
    nested = tmp_path.parent / "nested.yaml"
    nested.write_text("alpha:\n  value: 3\n")
    assert_one_line_error(run_cli("--algo", "td3bc", "--dataset", "hopper-random", *common, "--config", str(nested)),
                          "must be a flat mapping")
    if not torch.cuda.is_available():
        assert_one_line_error(run_cli("--algo", "td3bc", "--dataset", "hopper-random", *common, "--device", "cuda"),
                              "CUDA is not available", "--device cpu")
    assert not any(tmp_path.iterdir())  # no run directory for a refused run


def test_damaged_dataset_is_refused(data_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(data_root, root)
    h5 = root / "hopper-random-v0.hdf5"
    raw = bytearray(h5.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    h5.write_bytes(bytes(raw))
    result = run_cli("--algo", "td3bc", "--dataset", "hopper-random", "--root", str(root), "--runs", str(tmp_path))
    assert_one_line_error(result, "sha256", "does not match")


def test_show_config_lists_every_field_with_help(tmp_path):
    result = run_cli("--algo", "td3+bc", "--dataset", "spread-mixed", "--show-config", "--set", "alpha=1.5",
                     "--runs", str(tmp_path))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for config_cls in (TD3BCConfig, TrainConfig):
        for name, help_text in field_help(config_cls).items():
            assert any(line.split()[0] == name and help_text in line for line in lines[1:] if line.strip()), name
    alpha = next(line for line in lines if line.split()[0] == "alpha")
    assert "1.5" in alpha and "[--set]" in alpha
    steps = next(line for line in lines if line.split()[0] == "steps")
    assert "2000" in steps and "configs/train/spread.yaml" in steps
    assert not any(tmp_path.iterdir())
    defaults = run_cli("--algo", "cql", "--show-config")
    assert defaults.exit_code == 0 and "1000000" in defaults.output


def test_train_command_then_finished_run_is_not_rerun(data_root, tmp_path):
    args = ["--algo", "td3bc", "--dataset", "hopper-random", "--root", str(data_root), "--runs", str(tmp_path),
            "--steps", "8", "--device", "cpu", *TINY_SETS, "--set", "eval_every=4"]
    first = run_cli(*args)
    assert first.exit_code == 0, first.output
    assert "finished" in first.output and "normalized score" in first.output
    result = json.loads((tmp_path / "hopper-random-v0" / "td3bc" / "seed0" / "result.json").read_text())
    assert f"{result['score']:.1f}" in first.output
    again = run_cli(*args)
    assert again.exit_code == 0 and "already finished" in again.output and "not re-running" in again.output


def test_resume_after_sigkill_matches_uninterrupted_run(data_root, tmp_path):
    sets = {"hidden_sizes": "[16,16]", "batch_size": 32, "eval_episodes": 2, "eval_every": 100, "log_every": 50,
            "checkpoint_every": 50}
    steps = 400
    cli_args = ["train", "--algo", "td3bc", "--dataset", "hopper-random", "--root", str(data_root),
                "--steps", str(steps), "--device", "cpu"]
    for key, value in sets.items():
        cli_args += ["--set", f"{key}={value}"]
    killed_runs = tmp_path / "killed"
    run_dir = killed_runs / "hopper-random-v0" / "td3bc" / "seed0"
    env = dict(os.environ, OFFLINE_BENCH_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", "from offline_bench.cli import main; main()", *cli_args,
                             "--runs", str(killed_runs)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not (run_dir / "checkpoint.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert (run_dir / "checkpoint.pt").exists() and not (run_dir / "result.json").exists()

    resumed = CliRunner().invoke(main, [*cli_args, "--runs", str(killed_runs)])
    assert resumed.exit_code == 0 and "resumed" in resumed.output, resumed.output
    whole = train("td3bc", "hopper-random", steps=steps, device="cpu", sets=sets, root=data_root,
                  runs=tmp_path / "whole")

    def metrics(path: Path) -> list[str]:
        lines = (path / "metrics.csv").read_text().splitlines()
        header = lines[0].split(",")
        keep = [i for i, name in enumerate(header) if name != "time_s"]
        return [",".join(line.split(",")[i] for i in keep) for line in lines]

    assert metrics(run_dir) == metrics(whole.run_dir)
    a = json.loads((run_dir / "result.json").read_text())
    b = dict(whole.result)
    for result in (a, b):
        result.pop("wall_time_s")
    assert a == b
