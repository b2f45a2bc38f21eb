"""`sweep` grids and presets, and the whole path on real tiny runs: collect -> sweep (local processes and Ray on a
local 2-CPU instance) -> report in every format -> the HTML page rendered by headless Chromium."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from offline_bench.cli import main
from offline_bench.sweep import PRESETS, RunSpec, SweepError, _check_reachable, _import_ray, resolve_grid, run_status

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Tiny runs: 20 updates of batch 32, an evaluation of 2 episodes every 10 updates.
TINY = ["--steps", "20", "--set", "eval_every=10", "--set", "eval_episodes=2", "--set", "batch_size=32"]


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


def test_grid_canonicalizes_and_rejects_bad_input() -> None:
    specs = resolve_grid(["MA_CQL", "td3+bc"], ["spread-medium-replay"], seeds=2, steps=50, sets=["gamma=0.9"])
    assert [(s.dataset_id, s.algo, s.seed) for s in specs] == [
        ("spread-mixed-v1", "ma-cql", 0), ("spread-mixed-v1", "ma-cql", 1),
        ("spread-mixed-v1", "td3bc", 0), ("spread-mixed-v1", "td3bc", 1)]
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
            assert run_status(RunSpec("hopper-random-v0", algo, seed), runs) == "finished"
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
    result = CliRunner().invoke(main, ["sweep", "--algos", "td3bc", "--datasets", "hopper-random", "--seeds", "3",
                                       "--root", str(swept / "data"), "--runs", str(swept / "runs"), *TINY,
                                       "--set", "no_such_key=1"])
    assert result.exit_code == 1
    assert "FAILED hopper-random-v0/td3bc/seed2: exit code" in result.output
    assert "unknown config key 'no_such_key'" in result.output  # the log's tail says why
    assert "0 finished, 2 already finished, 1 failed" in result.output
