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
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
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


def test_sigterm_stops_a_run_like_ctrl_c(data_root, tmp_path):
    """SIGTERM (a scheduler, `kill`, a stopped sweep) ends `train` as Ctrl-C does: status 130, the resume hint, no
    `.lock` left behind, and the same command then resumes from the checkpoint."""
    runs = tmp_path / "runs"
    run_dir = runs / "hopper-random-v0" / "td3bc" / "seed0"
    cli_args = ["train", "--algo", "td3bc", "--dataset", "hopper-random", "--root", str(data_root), "--runs",
                str(runs), "--steps", "100000", "--device", "cpu", *TINY_SETS, "--set", "checkpoint_every=50",
                "--set", "eval_every=100000"]
    proc = subprocess.Popen([sys.executable, "-c", "from offline_bench.cli import main; main()", *cli_args],
                            env=dict(os.environ, OFFLINE_BENCH_THREADS="1"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (run_dir / "checkpoint.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted: run the same command to resume" in stderr
    assert (run_dir / "checkpoint.pt").exists() and not (run_dir / ".lock").exists()
    assert not (run_dir / "result.json").exists()


def test_finished_run_with_other_arguments_is_refused(data_root, tmp_path):
    args = ["--algo", "td3bc", "--dataset", "hopper-random", "--root", str(data_root), "--runs", str(tmp_path),
            "--device", "cpu", *TINY_SETS, "--set", "eval_every=4"]
    assert run_cli(*args, "--steps", "8").exit_code == 0
    result_path = tmp_path / "hopper-random-v0" / "td3bc" / "seed0" / "result.json"
    before = result_path.read_text()
    changed = run_cli(*args, "--steps", "12", "--set", "gamma=0.5")
    assert_one_line_error(changed, "holds a finished run with a different config", "gamma 0.99 vs 0.5",
                          "steps 8 vs 12", "another --runs", "delete the run directory")
    assert "normalized score" not in changed.output and result_path.read_text() == before
    same = run_cli(*args, "--steps", "8", "--device", "auto")  # how a run executes is not its config
    assert same.exit_code == 0 and "already finished" in same.output, same.output


BAD_VALUES = [
    (["--set", "hidden_sizes=[64,abc]"], ("hidden_sizes must be a list of positive integers", "[64, 'abc']")),
    (["--set", "hidden_sizes=[64.5]"], ("hidden_sizes must be a list of positive integers", "got [64.5]")),
    (["--set", "hidden_sizes=[64,0]"], ("hidden_sizes must be a list of positive integers", "got [64, 0]")),
    (["--set", "hidden_sizes=abc"], ("hidden_sizes must be a list of positive integers", "got 'abc' (from --set)")),
    (["--set", "n_critics=0"], ("n_critics must be >= 1, got 0 (from --set)")),
    (["--set", "policy_freq=0"], ("policy_freq must be >= 1, got 0")),
    (["--set", "batch_size=0"], ("batch_size must be >= 1, got 0")),
    (["--set", "batch_size=2.5"], ("batch_size must be an integer, got 2.5")),
    (["--set", "gamma=abc"], ("gamma must be a number, got 'abc' (from --set)")),
    (["--set", "bf16=2"], ("bf16 must be true or false, got 2")),
    (["--set", "eval_every=0"], ("eval_every must be >= 1, got 0")),
    (["--set", "device=gpu"], ("device must be auto, cpu or cuda[:i], got 'gpu' (from --set)")),
    (["--seed", "-1"], ("--seed must be >= 0, got -1")),
    (["--set", "seed=-1"], ("seed must be >= 0, got -1 (from --set)")),
    (["--steps", "0"], ("--steps must be >= 1, got 0")),
    (["--steps", "200", "--set", "steps=30"], ("--steps 200 and --set steps=30 disagree; give one")),
    (["--device", "cpu", "--set", "device=auto"], ("--device cpu and --set device=auto disagree")),
    (["--algo", "bear", "--set", "n_actor_q_samples=9"], ("n_actor_q_samples must be in [1, n_mmd_samples=5]")),
    (["--algo", "bear", "--set", "mmd_kernel=cosine"], ("mmd_kernel must be one of", "'cosine'")),
]


@pytest.mark.parametrize("extra, fragments", BAD_VALUES, ids=[" ".join(case[0]) for case in BAD_VALUES])
def test_bad_config_values_are_one_line_before_any_run_directory(data_root, tmp_path, extra, fragments):
    """Each bad value is named with what it should be, and refused before the run directory exists (so the
    corrected command is not blocked by a half-made run); algorithm checks run before it too."""
    algo = extra[1] if extra[0] == "--algo" else "td3bc"
    extra = extra[2:] if extra[0] == "--algo" else extra
    budget = [] if "--steps" in extra else ["--steps", "4"]  # were a value accepted, the run would stay short
    result = run_cli("--algo", algo, "--dataset", "hopper-random", "--root", str(data_root), "--runs",
                     str(tmp_path), *TINY_SETS, *budget, *extra)
    assert_one_line_error(result, *fragments)
    assert not any(tmp_path.iterdir())


def test_bad_value_in_a_config_file_names_the_key_and_the_file(data_root, tmp_path):
    config = tmp_path.parent / f"{tmp_path.name}-bad.yaml"
    config.write_text("gamma: abc\n")
    result = run_cli("--algo", "td3bc", "--dataset", "hopper-random", "--root", str(data_root), "--runs",
                     str(tmp_path), *TINY_SETS, "--steps", "4", "--config", str(config))
    assert_one_line_error(result, "gamma must be a number, got 'abc'", f"(from --config {config})")
    assert not any(tmp_path.iterdir())


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_from_set_is_named_as_set(data_root, tmp_path):
    result = run_cli("--algo", "td3bc", "--dataset", "hopper-random", "--root", str(data_root), "--runs",
                     str(tmp_path), *TINY_SETS, "--steps", "4", "--set", "device=cuda")
    assert_one_line_error(result, "device 'cuda' (from --set device=cuda) was asked for", "CUDA is not available",
                          "--set device=cpu")
    assert "--device cuda" not in result.stderr and not any(tmp_path.iterdir())


def test_damaged_checkpoint_is_one_line_naming_the_file_and_the_fix(data_root, tmp_path):
    sets = {"hidden_sizes": "[16,16]", "batch_size": 32, "eval_episodes": 2, "eval_every": 4, "checkpoint_every": 4}
    stopped = train("td3bc", "hopper-random", steps=8, device="cpu", sets=sets, root=data_root, runs=tmp_path,
                    stop_after=5)
    checkpoint = stopped.run_dir / "checkpoint.pt"
    whole = checkpoint.read_bytes()
    args = ["--algo", "td3bc", "--dataset", "hopper-random", "--root", str(data_root), "--runs", str(tmp_path),
            "--steps", "8", "--device", "cpu", *[a for k, v in sets.items() for a in ("--set", f"{k}={v}")]]
    # As if the disk lost its end: most cuts break the zip directory; one near the end fails as an OSError.
    for size in (1000, len(whole) - 10):
        checkpoint.write_bytes(whole[:size])
        assert_one_line_error(run_cli(*args), f"{checkpoint} is damaged and cannot be read",
                              "delete it to restart this run from scratch", "or delete the run directory")
    checkpoint.unlink()  # the advice works
    restarted = run_cli(*args)
    assert restarted.exit_code == 0 and "finished" in restarted.output, restarted.output
    config = stopped.run_dir / "config.json"
    (stopped.run_dir / "result.json").unlink()  # unfinished again, and its config.json damaged
    config.write_text("{not json")
    assert_one_line_error(run_cli(*args), f"{config} is damaged and cannot be read (not valid JSON",
                          f"delete the run directory {stopped.run_dir} to start this run over")


@pytest.mark.parametrize("threads", ["abc", "0", "-2", "1.5"])
def test_bad_thread_count_is_one_line(tmp_path, threads):
    result = CliRunner().invoke(main, ["datasets", "list", "--no-verify", "--root", str(tmp_path)],
                                env={"OFFLINE_BENCH_THREADS": threads})
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.strip() == (f"Error: OFFLINE_BENCH_THREADS must be a positive integer (torch threads per "
                                     f"process), got {threads!r}; unset it for the default of 1")


@pytest.mark.parametrize("command", [["datasets", "list", "--no-verify"], ["train", "--algo", "cql", "--show-config"]])
def test_closed_stdout_ends_quietly(tmp_path, command):
    """`offline-bench datasets list | head -1`: the reader left, which is no error (status 0, nothing on stderr)."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line: every write fails with EPIPE
    try:
        proc = subprocess.run([sys.executable, "-c", "from offline_bench.cli import main; main()", *command,
                               "--root", str(tmp_path)] if command[0] == "datasets" else
                              [sys.executable, "-c", "from offline_bench.cli import main; main()", *command],
                              stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write_end)
    assert (proc.returncode, proc.stderr) == (0, "")


def test_folders_that_cannot_be_made_are_named_with_what_to_check(data_root, tmp_path):
    """A --runs, --root or --out under a file: the path and the system's reason, not Python's bare [Errno 20]."""
    (tmp_path / "a-file").write_text("")
    blocked = tmp_path / "a-file" / "sub"
    checks = [
        ["train", "--algo", "td3bc", "--dataset", "hopper-random", "--root", str(data_root), "--runs", str(blocked),
         *TINY_SETS, "--steps", "2"],
        ["collect", "hopper-random", "--steps", "50", "--root", str(blocked)],
    ]
    for args in checks:
        result = CliRunner().invoke(main, args)
        assert_one_line_error(result, f"Not a directory: {blocked}", "(check that path: a folder this command can")
        assert "[Errno" not in result.stderr
