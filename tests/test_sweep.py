"""`sweep` grids and presets, and the whole path on real tiny runs: collect -> sweep (local processes and Ray on a
local 2-CPU instance) -> report in every format -> the HTML page rendered by headless Chromium."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from click.testing import CliRunner, Result

from offline_bench.cli import main
import offline_bench.sweep as sweep_module
from offline_bench.sweep import (LOG_DIR, PRESETS, QUICK_STEPS, RunSpec, SweepError, _check_reachable, _import_ray,
                                 quick_budget_text, resolve_grid, run_status, stop_processes)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Tiny runs: 20 updates of batch 32, an evaluation of 2 episodes every 10 updates.
TINY = ["--steps", "20", "--set", "eval_every=10", "--set", "eval_episodes=2", "--set", "batch_size=32"]
TINY_SETS = ("eval_every=10", "eval_episodes=2", "batch_size=32")  # TINY's --set values


def test_presets_are_the_papers_grids() -> None:
    mpe = resolve_grid(preset="omar-mpe")
    assert len(mpe) == 3 * 4 * 4 * 5
    assert {s.algo for s in mpe} == {"ma-td3bc", "ma-cql", "ma-icq", "omar"}
    assert {s.dataset_id for s in mpe} == {f"{t}-{q}-v1" for t in ("spread", "tag", "world")  # the newest version
                                          for q in ("random", "mixed", "medium", "expert")}
    assert all(s.steps is None and s.sets == () for s in mpe), "paper budget leaves steps to the per-task defaults"
    assert len(resolve_grid(preset="omar-mamujoco")) == 4 * 4 * 5
    dbr = resolve_grid(preset="dbr-pybullet", budget="quick", seeds=2)
    assert len(dbr) == 4 * 3 * 4 * 2 and {s.seed for s in dbr} == {0, 1}
    quick = PRESETS["dbr-pybullet"]
    assert all(s.steps == quick.quick_steps and f"eval_every={quick.quick_eval_every}" in s.sets for s in dbr)
    # --steps keeps the quick budget's number of evaluations (4 here), not its period; a later --set still wins
    longer = resolve_grid(["td3bc"], ["hopper-random"], budget="quick", steps=10_000)
    assert longer[0].sets == ("eval_every=2500",)
    assert resolve_grid(["td3bc"], ["hopper-random"], budget="quick", steps=3)[0].sets == ("eval_every=1",)
    assert resolve_grid(["td3bc"], ["hopper-random"], budget="quick", steps=10_000,
                        sets=["eval_every=100"])[0].sets == ("eval_every=2500", "eval_every=100")


def test_grid_canonicalizes_and_rejects_bad_input() -> None:
    specs = resolve_grid(["MA_CQL", "OMAR"], ["spread-medium-replay"], seeds=2, steps=50, sets=["gamma=0.9"])
    assert [(s.dataset_id, s.algo, s.seed) for s in specs] == [
        ("spread-mixed-v1", "ma-cql", 0), ("spread-mixed-v1", "ma-cql", 1),
        ("spread-mixed-v1", "omar", 0), ("spread-mixed-v1", "omar", 1)]
    assert [s.algo for s in resolve_grid(["td3+bc"], ["hopper-medium-replay"])] == ["td3bc"]
    assert resolve_grid(["omar"], ["spread-mixed-v0"])[0].dataset_id == "spread-mixed-v0"  # an older version by name
    assert specs[0].train_args("d", "r") == ["train", "--algo", "ma-cql", "--dataset", "spread-mixed-v1", "--seed",
                                             "0", "--root", "d", "--runs", "r", "--steps", "50", "--set", "gamma=0.9"]
    with pytest.raises(SweepError, match="unknown algorithm 'sac'"):
        resolve_grid(["sac"], ["spread-random"])
    with pytest.raises(SweepError, match="unknown dataset"):
        resolve_grid(["omar"], ["spread-awful"])
    with pytest.raises(SweepError, match="--seeds must be >= 1"):
        resolve_grid(["omar"], ["spread-random"], seeds=0)
    with pytest.raises(SweepError, match="needs --algos and --datasets"):
        resolve_grid(["omar"], [])


def test_missing_datasets_are_skipped_with_a_message(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["sweep", "--algos", "omar", "--datasets", "spread-expert", "--seeds", "2",
                                       "--root", str(tmp_path / "data"), "--runs", str(tmp_path / "runs")])
    assert result.exit_code == 1
    assert "skipped spread-expert-v1: not collected" in result.output
    assert "0 finished" in result.output and "2 skipped (dataset missing)" in result.output
    assert not (tmp_path / "runs" / "spread-expert-v1").exists()


def test_ray_is_optional_with_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(SweepError, match=r"pip install 'offline-bench\[ray\]'"):
        _import_ray()


def test_unreachable_ray_address_fails_fast() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(SweepError, match=f"no Ray cluster answers at 127.0.0.1:{port}"):
        _check_reachable(f"127.0.0.1:{port}")
    with pytest.raises(SweepError, match="no Ray cluster answers at ray://nohost"):
        _check_reachable("ray://nohost")


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny hopper-random dataset (collected by the sweep's --collect); TD3+BC x 2 seeds as local processes;
    then, after TD3+BC seed 0 lost its result.json (as if killed after its last checkpoint), TD3+BC and OMAR (on the
    N = 1 dataset) seed 0 as Ray tasks into the same runs folder: one resumed, one new."""
    base = tmp_path_factory.mktemp("sweep")
    common = ["--datasets", "hopper-random", "--jobs", "2", "--root", str(base / "data"), "--runs", str(base / "runs"),
              *TINY]
    local = CliRunner().invoke(main, ["sweep", "--algos", "td3bc", "--seeds", "2", "--collect", "--collect-steps",
                                      "300", *common])
    assert local.exit_code == 0, local.output
    assert "2 finished, 0 already finished, 0 failed" in local.output
    interrupted = base / "runs" / "hopper-random-v0" / "td3bc" / "seed0" / "result.json"
    interrupted.rename(base / "seed0-result.json")
    ray = CliRunner().invoke(main, ["sweep", "--algos", "td3bc,omar", "--seeds", "1", "--executor", "ray", *common])
    assert ray.exit_code == 0, ray.output
    assert "2 finished, 0 already finished, 0 failed" in ray.output
    return base


def test_sweep_writes_run_directories_both_ways(swept: Path) -> None:
    runs = swept / "runs"
    for algo, seeds in (("td3bc", (0, 1)), ("omar", (0,))):
        for seed in seeds:
            run = runs / "hopper-random-v0" / algo / f"seed{seed}"
            assert {"config.json", "metrics.csv", "checkpoint.pt", "result.json"} <= {p.name for p in run.iterdir()}
            spec = RunSpec("hopper-random-v0", algo, seed, 20, TINY_SETS)
            assert run_status(spec, runs) == "finished"
            assert "finished" in (runs / ".logs" / "hopper-random-v0" / algo / f"seed{seed}.log").read_text()
    assert (swept / "data" / "hopper-random-v0.hdf5").is_file()


def test_sweep_resumed_the_unfinished_run(swept: Path) -> None:
    run_log = (swept / "runs" / ".logs" / "hopper-random-v0" / "td3bc" / "seed0.log").read_text()
    assert run_log.count("$ offline-bench train --algo td3bc") == 2, "started once locally, once more on Ray"
    before = json.loads((swept / "seed0-result.json").read_text())
    after = json.loads((swept / "runs" / "hopper-random-v0" / "td3bc" / "seed0" / "result.json").read_text())
    assert after["last_k_score"] == before["last_k_score"] and after["evaluations"] == before["evaluations"]


def test_sweep_skips_finished_runs(swept: Path) -> None:
    log = swept / "runs" / ".logs" / "hopper-random-v0" / "td3bc" / "seed0.log"
    before = log.read_text()
    again = CliRunner().invoke(main, ["sweep", "--algos", "td3bc,omar", "--datasets", "hopper-random", "--seeds", "1",
                                      "--root", str(swept / "data"), "--runs", str(swept / "runs"), *TINY])
    assert again.exit_code == 0, again.output
    assert "0 finished, 2 already finished" in again.output
    assert log.read_text() == before, "a finished run must not be started again"
    dry = CliRunner().invoke(main, ["sweep", "--algos", "td3bc", "--datasets", "hopper-random", "--seeds", "3",
                                    "--root", str(swept / "data"), "--runs", str(swept / "runs"), "--dry-run", *TINY])
    assert [line.split()[0] for line in dry.output.strip().splitlines()] == ["finished", "finished", "new"]


def test_runs_trained_with_another_config_are_a_conflict_and_the_sweep_refuses(swept: Path) -> None:
    """The same grid with another budget or value: the dry run marks the runs 'conflict', the sweep starts nothing
    (it would otherwise skip the finished runs and the table would show the old settings' scores)."""
    log = swept / "runs" / ".logs" / "hopper-random-v0" / "td3bc" / "seed0.log"
    before = log.read_text()
    common = ["--algos", "td3bc", "--datasets", "hopper-random", "--seeds", "2", "--root", str(swept / "data"),
              "--runs", str(swept / "runs"), "--set", "eval_every=10", "--set", "eval_episodes=2",
              "--set", "batch_size=32"]
    for extra in (["--steps", "30"], ["--steps", "20", "--set", "gamma=0.5"]):
        dry = CliRunner().invoke(main, ["sweep", *common, *extra, "--dry-run"])
        assert dry.exit_code == 0, dry.output
        assert [line.split()[0] for line in dry.output.strip().splitlines()] == ["conflict", "conflict"]
        run = CliRunner().invoke(main, ["sweep", *common, *extra])
        assert run.exit_code == 1, run.output
        assert "2 run folder(s) of this grid" in run.output and "hold runs trained with another config" in run.output
        assert ("steps 20 vs 30" if extra[1] == "30" else "gamma 0.99 vs 0.5") in run.output
        assert "nothing was started" in run.output
    assert log.read_text() == before, "no train may start"


def test_report_on_swept_runs_all_formats_and_partial_cells(swept: Path, tmp_path: Path) -> None:
    out = tmp_path / "leaderboards"
    result = CliRunner().invoke(main, ["report", "--runs", str(swept / "runs"), "--out", str(out), "--format", "all",
                                       "--datasets", "hopper-random,hopper-medium", "--seeds", "3"])
    assert result.exit_code == 0, result.output
    cells = pd.read_csv(out / "leaderboard.csv").set_index(["dataset_id", "algo"])
    assert cells.loc[("hopper-random-v0", "td3bc"), "seeds_finished"] == 2
    assert cells.loc[("hopper-random-v0", "td3bc"), "status"] == "partial"  # 2 of the 3 seeds asked for
    assert cells.loc[("hopper-random-v0", "omar"), "seeds_finished"] == 1
    assert cells.loc[("hopper-medium", "omar"), "status"] == "not run"
    md = (out / "leaderboard.md").read_text()
    assert "(2/3 seeds)" in md and "not run" in md and "last 10 evaluations" in md
    assert (out / "leaderboard-curves" / "hopper-random-v0.png").stat().st_size > 1000
    assert r"\begin{tabular}" in (out / "leaderboard.tex").read_text()
    if CHROMIUM is None:
        pytest.skip("needs Debian's chromium (apt-get install -y chromium) to check the HTML renders")
    dom = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
         f"--user-data-dir={tmp_path / 'chromium'}", "--dump-dom", (out / "leaderboard.html").as_uri()],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    body = dom[dom.index("<tbody>"):dom.index("</tbody>")]
    assert body.count("<tr") == 2 and "hopper" in body and "(2/3 seeds)" in body and "not run" in body
    assert '<img alt="learning curves hopper-random-v0"' in dom


def test_failed_runs_are_reported_with_their_log(swept: Path) -> None:
    seed2 = swept / "runs" / "hopper-random-v0" / "td3bc" / "seed2"
    seed2.mkdir(parents=True)
    (seed2 / ".lock").write_text(str(os.getpid()))  # as if a live process (this one) were training the run
    log_path = swept / "runs" / LOG_DIR / "hopper-random-v0" / "td3bc" / "seed2.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_text("$ offline-bench train ...\nError: an earlier attempt's cause\n")  # the log keeps attempts
    try:
        result = CliRunner().invoke(main, ["sweep", "--algos", "td3bc", "--datasets", "hopper-random", "--seeds", "3",
                                           "--root", str(swept / "data"), "--runs", str(swept / "runs"), *TINY])
    finally:
        shutil.rmtree(seed2)
    assert result.exit_code == 1
    assert "FAILED hopper-random-v0/td3bc/seed2: exit code" in result.output
    assert f"is being trained by process {os.getpid()}" in result.output  # this attempt's error line says why
    assert "an earlier attempt's cause" not in result.output and "an earlier attempt's cause" in log_path.read_text()
    assert "0 finished, 2 already finished, 1 failed" in result.output


def _sweep_cli(*args: str, root: Path, runs: Path) -> Result:
    return CliRunner().invoke(main, ["sweep", *args, "--root", str(root / "data"), "--runs", str(runs)])


def test_grid_with_unknown_set_keys_is_refused_before_anything_starts(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for extra in ([], ["--dry-run"]):
        result = _sweep_cli("--algos", "td3bc,omar", "--datasets", "hopper-random", "--seeds", "2", "--set", "foo=1",
                            "--set", "omar_coe=0.5", *extra, root=tmp_path, runs=runs)
        assert result.exit_code == 1, result.output
        assert result.output.strip().splitlines() == [
            "Error: unknown config keys in --set: 'foo' (not a key of td3bc, omar); 'omar_coe' (not a key of td3bc); "
            "nothing was started (`offline-bench train --algo td3bc --show-config` lists the valid keys); set a key "
            "for one algorithm's runs as --set omar:omar_coe=..."]
    bad_value = _sweep_cli("--algos", "td3bc", "--datasets", "hopper-random", "--set", "eval_every=0", "--dry-run",
                           root=tmp_path, runs=runs)
    assert bad_value.exit_code == 1
    assert bad_value.output.startswith("Error: td3bc on hopper-random-v0: eval_every must be >= 1, got 0")
    assert not runs.exists() and not (tmp_path / "data").exists()
    assert len(resolve_grid(["omar"], ["hopper-random"], sets=["omar_coe=0.5"])) == 1  # a key of the algorithm


def test_a_key_of_one_algorithm_is_set_for_its_runs_only() -> None:
    """`--set omar:omar_coe=0.5` in a grid with td3bc: OMAR's runs get it (after the overrides for every run, so it
    wins over them), td3bc's do not; a scope outside the grid, or a key its algorithm lacks, is refused."""
    specs = resolve_grid(["td3bc", "OMAR"], ["hopper-random"], seeds=2,
                         sets=["polyak=0.01", "omar:omar_coe=0.5", "omar:polyak=0.02"])
    sets = {(s.algo, s.seed): s.sets for s in specs}
    assert sets[("td3bc", 0)] == sets[("td3bc", 1)] == ("polyak=0.01",)
    assert sets[("omar", 1)] == ("polyak=0.01", "omar_coe=0.5", "polyak=0.02")
    args = next(s for s in specs if s.algo == "omar").train_args("data", "runs")
    assert args[-6:] == ["--set", "polyak=0.01", "--set", "omar_coe=0.5", "--set", "polyak=0.02"]
    with pytest.raises(SweepError, match=r"^--set cql:cql_alpha=1: cql is not one of this sweep's algorithms "
                                         r"\(td3bc, omar\)$"):
        resolve_grid(["td3bc", "omar"], ["hopper-random"], sets=["cql:cql_alpha=1"])
    with pytest.raises(SweepError, match=r"^unknown config key in --set: 'omar_coe' \(not a key of td3bc\)"):
        resolve_grid(["td3bc", "omar"], ["hopper-random"], sets=["td3bc:omar_coe=1"])
    with pytest.raises(SweepError, match=r"^td3bc on hopper-random-v0: polyak must be in \(0, 1\], got 2"):
        resolve_grid(["td3bc", "omar"], ["hopper-random"], sets=["td3bc:polyak=2"])


def test_grids_every_run_would_refuse_and_unwritable_runs_folders_are_refused_up_front(tmp_path: Path) -> None:
    """A seed in --set (each run's --seed disagrees), CUDA where there is none, a --runs folder that cannot be made:
    one line before anything starts, not one failure per run in its log."""
    grid = ("--algos", "td3bc", "--datasets", "hopper-random", "--steps", "5")
    seed = _sweep_cli(*grid, "--set", "seed=3", root=tmp_path, runs=tmp_path / "runs")
    assert seed.exit_code == 1 and seed.output.strip().splitlines() == [
        "Error: --set seed=3: a sweep's seeds are 0..N-1 from --seeds N (one run each); leave seed out of --set; "
        "nothing was started"]
    if not torch.cuda.is_available():
        cuda = _sweep_cli(*grid, "--set", "device=cuda", root=tmp_path, runs=tmp_path / "runs")
        assert cuda.exit_code == 1 and cuda.output.startswith(
            "Error: td3bc on hopper-random-v0: device 'cuda' (from --set device=cuda) was asked for but CUDA is not "
            "available here")
    (tmp_path / "a-file").write_text("")
    blocked = _sweep_cli(*grid, root=tmp_path, runs=tmp_path / "a-file" / "runs")
    assert blocked.exit_code == 1 and blocked.output.strip().splitlines()[-1].startswith(
        f"Error: cannot write to the --runs folder {tmp_path / 'a-file' / 'runs'} (")
    assert "Traceback" not in blocked.output
    assert not (tmp_path / "runs").exists()


def test_single_agent_algorithms_on_multi_agent_datasets_are_refused(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for extra in ([], ["--dry-run"]):
        result = _sweep_cli("--algos", "td3bc,cql,omar", "--datasets", "hopper-random,spread-random,tag-mixed-v0",
                            *extra, root=tmp_path, runs=runs)
        assert result.exit_code == 1, result.output
        assert result.output.strip().splitlines() == [
            "Error: single-agent algorithms cannot train on multi-agent datasets: td3bc on spread-random-v1 "
            "(3 agents), td3bc on tag-mixed-v0 (3 agents), cql on spread-random-v1 (3 agents), cql on tag-mixed-v0 "
            "(3 agents); use a multi-agent algorithm there (ma-td3bc, ma-cql, ma-icq, omar) or leave those "
            "datasets out; nothing was started"]
    assert not runs.exists()
    with pytest.raises(SweepError, match="td3bc on world-random-v1 \\(4 agents\\)"):
        resolve_grid(["td3bc"], ["world-random"])


def test_a_failed_collect_is_reported_once_with_its_cause(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`collect` failing (here a stand-in that fails as collect does without a behaviour run): the summary gives its
    error line once, also when the log holds an earlier attempt, and does not advise the --collect just passed."""
    cause = "hopper-mixed needs the behaviour run; add --retrain to re-run that training"
    monkeypatch.setattr(sweep_module, "CLI_PREFIX", ("-c", f"import sys; print('Error: {cause}'); sys.exit(1)"))
    for attempt in range(2):
        result = _sweep_cli("--algos", "td3bc", "--datasets", "hopper-mixed", "--steps", "10", "--collect",
                            root=tmp_path, runs=tmp_path / "runs")
        assert result.exit_code == 1
        assert result.output.count(cause) == 1, result.output
        assert f"skipped hopper-mixed-v0: `offline-bench collect hopper-mixed-v0 --root {tmp_path / 'data'}` " \
               f"failed: {cause} (log: " in result.output
        assert "--collect)" not in result.output and "pass --collect" not in result.output
    assert (tmp_path / "runs" / ".logs" / "collect-hopper-mixed-v0.log").read_text().count(cause) == 2


def test_collect_steps_size_rollout_datasets_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A mixed dataset is a behaviour run's whole replay buffer: `collect` refuses --steps for it, so --collect-steps
    is passed to rollout datasets only."""
    commands = []

    def fake_cli(args, log_path, children=None):
        commands.append(list(args))
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        Path(log_path).write_text("Error: stand-in\n")
        return 1, 0.0

    monkeypatch.setattr(sweep_module, "run_cli_process", fake_cli)
    missing = sweep_module.collect_missing(["hopper-mixed-v0", "hopper-random-v0"], tmp_path / "data",
                                           tmp_path / "runs", steps=500)
    assert set(missing) == {"hopper-mixed-v0", "hopper-random-v0"}
    assert commands == [["collect", "hopper-mixed-v0", "--root", str(tmp_path / "data")],
                        ["collect", "hopper-random-v0", "--root", str(tmp_path / "data"), "--steps", "500"]]


def test_stop_processes_terminates_then_kills(tmp_path: Path) -> None:
    polite = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    stubborn = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, "
                                 "signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"],
                                stdout=subprocess.PIPE, text=True)
    assert stubborn.stdout is not None and stubborn.stdout.readline() == "ready\n"  # its SIGTERM is ignored now
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    start = time.monotonic()
    assert sorted(stop_processes([polite, stubborn, done], grace=0.5)) == sorted([polite.pid, stubborn.pid])
    assert polite.returncode == -signal.SIGTERM and stubborn.returncode == -signal.SIGKILL
    assert time.monotonic() - start < 5


# A sweep whose "trains" are sleepers that print their pid: the real CLI, run_sweep and signal handling, in seconds.
_SLEEPER_SWEEP = """
import sys
import offline_bench.sweep as sweep
sweep.CLI_PREFIX = ("-c", "import os, time; print('pid', os.getpid(), flush=True); time.sleep(120)")
sweep.is_collected = lambda dataset_id, root: True
from offline_bench.cli import main
main(sys.argv[1:])
"""


def test_sigterm_stops_the_sweeps_trains_and_says_how_to_resume(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.Popen([sys.executable, "-c", _SLEEPER_SWEEP, "sweep", "--algos", "cql", "--datasets",
                             "hopper-random", "--seeds", "2", "--jobs", "2", "--root", str(tmp_path / "data"),
                             "--runs", str(runs)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    logs = [runs / ".logs" / "hopper-random-v0" / "cql" / f"seed{k}.log" for k in (0, 1)]
    pids: list[int] = []
    deadline = time.monotonic() + 60
    while len(pids) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
        pids = [int(m[1]) for log in logs if log.is_file() and (m := re.search(r"^pid (\d+)$", log.read_text(), re.M))]
    try:
        assert len(pids) == 2, f"the sweep did not start both runs: {proc.poll()}"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
        for pid in pids:  # never leave a sleeper behind, whatever failed
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert proc.returncode == 130, err
    assert "interrupted: run the same command to resume" in err
    assert "stopped 2 running process(es)" in err
    for pid in pids:
        with pytest.raises(ProcessLookupError):  # stopped and reaped by the sweep, not re-parented and running on
            os.kill(pid, 0)


def test_quick_budget_texts_state_the_presets_numbers() -> None:
    text = quick_budget_text()
    for name, preset in PRESETS.items():
        assert f"{preset.quick_steps:,} " in text and name in text
    assert f"{QUICK_STEPS:,} without a preset" in text
    help_text = re.sub(r"-\s+", "-", " ".join(CliRunner().invoke(main, ["sweep", "--help"]).output.split()))
    assert text in help_text  # (click may wrap a line after a hyphen)
    readme = Path(__file__).resolve().parent.parent / "leaderboards" / "README.md"
    assert text in " ".join(readme.read_text().split())
    dry = CliRunner().invoke(main, ["sweep", "--preset", "dbr-pybullet", "--budget", "quick", "--dry-run"])
    assert f"--steps {PRESETS['dbr-pybullet'].quick_steps} " in dry.output
