"""`report` on run directories written here in the run-contract format (the report's only input).

The end-to-end path (real `collect` + `train` runs through `sweep`, then `report`) is in test_sweep.py.
"""
from __future__ import annotations

import json
import logging
import shlex
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from offline_bench.cli import main
from offline_bench.data.catalog import catalog_entry
from offline_bench.data.collection import ensure_behaviour_recipes
from offline_bench.report import make_report
from offline_bench.report.runs import load_curves, load_runs
from offline_bench.report.table import build_leaderboard, to_markdown

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def write_run(runs: Path, dataset_id: str, algo: str, seed: int, scores: list[float] | None,
              finished: bool = True, normalized: bool = True, eval_every: int = 10,
              algo_config: dict | None = None, dataset: dict | None = None) -> Path:
    """A run directory as offline_bench.train.loop writes it: config.json, metrics.csv, result.json when finished."""
    path = runs / dataset_id / algo / f"seed{seed}"
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({
        "algo": algo, "train_config": {"steps": eval_every * len(scores or [0]), "last_k": 2, "device": "auto"},
        "device": "cpu", "device_name": "x86_64", "versions": {"offline-bench": "0.1.0"},
        **({"algo_config": algo_config} if algo_config is not None else {}),
        **({"dataset": dataset} if dataset is not None else {}),
    }))
    rows = []
    for i, score in enumerate(scores or []):
        rows.append({"step": (i + 1) * eval_every - 5, "time_s": 0.1, "eval_return": None, "normalized_score": None,
                     "critic_loss": 1.0})
        rows.append({"step": (i + 1) * eval_every, "time_s": 0.2, "eval_return": score * 2 - 50,
                     "normalized_score": score if normalized else None, "critic_loss": 0.5})
    pd.DataFrame(rows, columns=["step", "time_s", "eval_return", "normalized_score", "critic_loss"]).to_csv(
        path / "metrics.csv", index=False)
    if finished and scores:
        returns = [s * 2 - 50 for s in scores]
        result = {
            "dataset_id": dataset_id, "algo": algo, "seed": seed, "steps": eval_every * len(scores),
            "statistic": "last_k_mean" if normalized else None, "last_k": 2, "normalized": normalized,
            "final_return": returns[-1], "last_k_return": sum(returns[-2:]) / 2, "best_return": max(returns),
            "steps_done": eval_every * len(scores), "device": "cpu", "package_version": "0.1.0", "wall_time_s": 60.0,
        }
        if normalized:
            result |= {"final_score": scores[-1], "last_k_score": sum(scores[-2:]) / 2, "best_score": max(scores)}
        (path / "result.json").write_text(json.dumps(result))
    return path


@pytest.fixture()
def runs(tmp_path: Path) -> Path:
    """spread-random: omar 3/3 seeds, ma-cql 3/3; spread-mixed: omar 2 of 3 finished, ma-cql 1 started and
    unfinished; tag-random: omar 1 seed only (ma-cql not run)."""
    runs = tmp_path / "runs"
    for seed, (a, b) in enumerate([(30.0, 40.0), (34.0, 38.0), (38.0, 42.0)]):  # omar last-2 means 35, 36, 40
        write_run(runs, "spread-random-v0", "omar", seed, [10.0, a, b])
        write_run(runs, "spread-random-v0", "ma-cql", seed, [5.0, a - 20, b - 20])  # 15, 16, 20
    write_run(runs, "spread-mixed-v0", "omar", 0, [50.0, 60.0])
    write_run(runs, "spread-mixed-v0", "omar", 1, [52.0, 60.0])
    write_run(runs, "spread-mixed-v0", "omar", 2, [40.0], finished=False)
    write_run(runs, "spread-mixed-v0", "ma-cql", 0, [20.0], finished=False)
    write_run(runs, "tag-random-v0", "omar", 0, [7.0, 9.0])
    (runs / ".logs" / "spread-random-v0").mkdir(parents=True)  # the sweep's logs: not runs
    return runs


def test_load_runs_reads_the_run_contract(runs: Path) -> None:
    table = load_runs(runs)
    assert len(table) == 11
    omar = table[(table.dataset_id == "spread-random-v0") & (table.algo == "omar")].sort_values("seed")
    assert omar["last-k"].tolist() == [35.0, 36.0, 40.0]
    assert omar["final"].tolist() == [40.0, 38.0, 42.0]
    assert omar["best"].tolist() == [40.0, 38.0, 42.0]
    assert set(omar["declared_statistic"]) == {"last-k"}
    assert omar["quality"].iloc[0] == "random" and omar["task"].iloc[0] == "spread"
    unfinished = table[(table.dataset_id == "spread-mixed-v0") & (table.seed == 2) & (table.algo == "omar")]
    assert not unfinished["finished"].iloc[0]
    curves = load_curves(table)
    assert set(curves.columns) >= {"dataset_id", "algo", "seed", "step", "score"}
    assert (curves["step"] % 10 == 0).all(), "training-only rows (no score) must not be curve points"


def test_leaderboard_cells_mean_std_partial_and_not_run(runs: Path) -> None:
    board = build_leaderboard(load_runs(runs))
    assert board.statistic == "last-k"
    cells = board.cells.set_index(["dataset_id", "algo"])
    omar = cells.loc[("spread-random-v0", "omar")]
    assert omar["mean"] == pytest.approx(37.0)
    assert omar["std"] == pytest.approx(pd.Series([35.0, 36.0, 40.0]).std(ddof=0))
    assert omar["status"] == "complete" and omar["best"]
    assert not cells.loc[("spread-random-v0", "ma-cql"), "best"]
    assert cells.loc[("spread-mixed-v0", "omar"), "status"] == "partial"
    assert cells.loc[("spread-mixed-v0", "omar"), "seeds_finished"] == 2
    assert cells.loc[("spread-mixed-v0", "ma-cql"), "status"] == "unfinished"
    assert cells.loc[("tag-random-v0", "ma-cql"), "status"] == "not run"

    text = board.cell_text("markdown")
    assert text.loc[("random", "spread"), "omar"] == "**37.0 ± 2.2**"
    assert text.loc[("random", "spread"), "ma-cql"] == "17.0 ± 2.2"
    assert text.loc[("mixed", "spread"), "omar"] == "55.5 ± 0.5 (2/3 seeds)"  # stated, never bold
    assert text.loc[("mixed", "spread"), "ma-cql"] == "0/3 seeds"
    assert text.loc[("random", "tag"), "ma-cql"] == "not run"
    assert text.loc[("random", "tag"), "omar"] == "8.0 (1/3 seeds)"
    assert list(text.index) == [("random", "spread"), ("random", "tag"), ("mixed", "spread")]  # quality, then task


def test_statistic_is_selectable(runs: Path) -> None:
    final = build_leaderboard(load_runs(runs), statistic="final").cells.set_index(["dataset_id", "algo"])
    assert final.loc[("spread-random-v0", "omar"), "mean"] == pytest.approx(40.0)
    best = build_leaderboard(load_runs(runs), statistic="best")
    assert "best normalized score over all evaluations" in best.notes[0]
    with pytest.raises(ValueError, match="choose one of: final, last-k, best"):
        build_leaderboard(load_runs(runs), statistic="median")


def test_runs_without_references_say_no_score_and_report_returns(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for seed in range(2):
        write_run(runs, "world-random-v0", "omar", seed, [10.0, 20.0 + seed], normalized=False)
    cells = build_leaderboard(load_runs(runs)).cells
    assert cells["status"].tolist() == ["no score"]
    raw = build_leaderboard(load_runs(runs, score="return"), score="return")
    assert raw.cells["mean"].iloc[0] == pytest.approx(((20 + 40) / 2 - 50 + (20 + 42) / 2 - 50) / 2)
    assert "raw episode return" in raw.notes[0]


def test_make_report_writes_every_format(runs: Path, tmp_path: Path) -> None:
    out = tmp_path / "leaderboards"
    report = make_report(runs, out, formats=("md", "csv", "latex", "html"), seeds=3)
    assert {p.name for p in out.iterdir()} == {"leaderboard.md", "leaderboard.csv", "leaderboard.tex",
                                               "leaderboard.html", "leaderboard-curves"}
    md = (out / "leaderboard.md").read_text()
    assert md == report.markdown
    assert "| **37.0 ± 2.2** |" in md.replace("  ", " ") or "**37.0 ± 2.2**" in md
    assert "mean normalized score of the last 2 evaluations" in md
    assert "![spread-random-v0](leaderboard-curves/spread-random-v0.png)" in md
    csv = pd.read_csv(out / "leaderboard.csv")
    assert len(csv) == 6 and set(csv["status"]) == {"complete", "partial", "unfinished", "not run"}
    tex = (out / "leaderboard.tex").read_text()
    assert r"\begin{table}" in tex and r"\bfseries 37.0 $\pm$ 2.2" in tex and r"\multirow" in tex
    assert r"\label{tab:leaderboard}" in tex
    # The label comes from the file's name (two tables of one paper never share it) and a title of any characters
    # leaves the LaTeX valid: escaped in the caption, kept out of the label.
    titled = make_report(runs, out, formats=("latex",), seeds=3, name="omar-mpe-v1",
                         title="50% of D4RL_x & #1 ~ a^2 <b>")
    tex = (out / "omar-mpe-v1.tex").read_text()
    assert r"\label{tab:omar-mpe-v1}" in tex and titled.files
    assert (r"\caption{50\% of D4RL\_x \& \#1 \textasciitilde{} a\textasciicircum{}2 \textless{}b\textgreater{}. "
            in tex)
    pngs = sorted(p.name for p in (out / "leaderboard-curves").iterdir())
    assert pngs == ["spread-mixed-v0.png", "spread-random-v0.png", "tag-random-v0.png"]
    assert all((out / "leaderboard-curves" / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    html = (out / "leaderboard.html").read_text()
    assert html.count("data:image/png;base64,") == 3 and "<script>" in html
    table_tag = next(line for line in html.splitlines() if line.startswith("<table"))
    assert table_tag.count(" id=") == 1 and 'class="leaderboard"' in table_tag  # valid HTML: one id per element


def test_filters_and_grid_rows(runs: Path) -> None:
    report = make_report(runs, None, datasets=["spread-random", "world-expert"], algos=["omar", "ma-icq"])
    text = report.leaderboard.cell_text("plain")
    assert list(text.columns) == ["omar", "ma-icq"]
    assert list(text.index) == [("random", "spread"), ("expert", "world")]
    ensure_behaviour_recipes()
    world_expert = "not run" if catalog_entry("world-expert").recipe.collectable else "no dataset"
    assert text.loc[("expert", "world"), "omar"] == world_expert
    assert text.loc[("random", "spread"), "ma-icq"] == "not run"
    empty = make_report(runs, None, datasets=["world-expert"], algos=["omar"]).leaderboard  # nothing ran at all
    assert empty.cells[["dataset_id", "status"]].values.tolist() == [["world-expert", world_expert]]


def test_cells_of_datasets_that_cannot_be_made_yet_say_so(runs: Path, pending_dataset_id: str) -> None:
    """A grid cell whose dataset has no behaviour policy says 'no dataset', not 'not run'."""
    board = make_report(runs, None, datasets=[pending_dataset_id, "spread-random"], algos=["omar"]).leaderboard
    status = board.cells.set_index("dataset_id")["status"]
    assert status[pending_dataset_id] == "no dataset" and status["spread-random-v0"] != "no dataset"
    assert any("'no dataset' means the dataset cannot be collected yet" in note for note in board.notes)
    with pytest.raises(ValueError, match="name the columns with --algos"):
        make_report(runs, None, datasets=["world-expert"])


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install -y chromium)")
def test_html_renders_in_headless_chromium(runs: Path, tmp_path: Path) -> None:
    out = tmp_path / "leaderboards"
    make_report(runs, out, formats=("html",), seeds=3)
    dom = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--no-first-run", f"--user-data-dir={tmp_path / 'chromium'}", "--dump-dom",
         (out / "leaderboard.html").as_uri() + "#sort=omar:desc"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    body = dom[dom.index("<tbody>"):dom.index("</tbody>")]
    assert body.count("<tr") == 3
    assert "37.0 ± 2.2" in body and "55.5 ± 0.5 (2/3 seeds)" in body and "not run" in body
    assert dom.count('<img alt="learning curves') == 3
    # the page's script ran: rows sorted by the omar column, best first (55.5, 37.0, 8.0)
    assert body.index("55.5 ± 0.5") < body.index("37.0 ± 2.2") < body.index("8.0 (1/3 seeds)")
    assert 'aria-sort="descending"' in dom


def test_cli_report_prints_and_writes(runs: Path, tmp_path: Path) -> None:
    out = tmp_path / "lb"
    result = CliRunner().invoke(main, ["report", "--runs", str(runs), "--out", str(out), "--format", "all",
                                       "--statistic", "final"])
    assert result.exit_code == 0, result.output
    assert "40.0 ± 1.6" in result.output  # omar spread-random final: 40, 38, 42
    assert {"leaderboard.md", "leaderboard.csv", "leaderboard.tex", "leaderboard.html"} <= {p.name for p in out.iterdir()}
    bad = CliRunner().invoke(main, ["report", "--runs", str(tmp_path / "nope"), "--out", str(out)])
    assert bad.exit_code != 0 and "does not exist" in bad.output


def test_preset_grid_shows_every_cell(runs: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["report", "--runs", str(runs), "--out", str(tmp_path / "lb"), "--preset",
                                       "omar-mpe", "--format", "csv", "--no-plots"])
    assert result.exit_code == 0, result.output
    assert "OMAR paper (Pan et al., ICML 2022), Table 3" in result.output
    cells = pd.read_csv(tmp_path / "lb" / "omar-mpe.csv")
    assert len(cells) == 3 * 4 * 4  # tasks x qualities x algorithms, whatever ran
    assert list(cells["algo"].unique()) == ["ma-td3bc", "ma-cql", "ma-icq", "omar"]
    assert cells["quality"].unique().tolist() == ["random", "mixed", "medium", "expert"]
    assert (cells["seeds_expected"] == 5).all()
    done = cells.set_index(["dataset_id", "algo"])
    assert done.loc[("spread-random-v0", "omar"), "status"] == "partial"  # 3 of the paper's 5 seeds
    ensure_behaviour_recipes()
    world_expert = "not run" if catalog_entry("world-expert").recipe.collectable else "no dataset"
    assert done.loc[("world-expert", "omar"), "status"] == world_expert
    assert cells["status"].isin(["not run", "no dataset"]).sum() == 48 - 5


def test_preset_narrowed_by_datasets_and_algos(runs: Path, tmp_path: Path) -> None:
    """--datasets / --algos narrow a preset's grid to what they match, as they do for `sweep --preset`."""
    result = CliRunner().invoke(main, ["report", "--runs", str(runs), "--out", str(tmp_path / "lb"), "--preset",
                                       "omar-mpe", "--datasets", "spread", "--algos", "omar,ma-cql", "--format",
                                       "csv", "--no-plots"])
    assert result.exit_code == 0, result.output
    cells = pd.read_csv(tmp_path / "lb" / "omar-mpe.csv")
    assert sorted(cells["dataset_id"].str.split("-").str[0].unique()) == ["spread"]
    assert len(cells) == 4 * 2 and list(cells["algo"].unique()) == ["ma-cql", "omar"]  # the preset's column order
    assert "| tag " not in result.output and "| world " not in result.output
    one = CliRunner().invoke(main, ["report", "--runs", str(runs), "--out", str(tmp_path / "lb"), "--preset",
                                    "omar-mpe", "--datasets", "spread-random", "--format", "csv", "--no-plots"])
    assert one.exit_code == 0, one.output
    cells = pd.read_csv(tmp_path / "lb" / "omar-mpe.csv")
    assert cells["dataset_id"].unique().tolist() == ["spread-random-v0"] and len(cells) == 4


def test_leaderboards_readme_commands_run(runs: Path, tmp_path: Path) -> None:
    """Every `offline-bench` line in leaderboards/README.md runs: sweeps as --dry-run, reports on test runs."""
    readme = Path(__file__).resolve().parent.parent / "leaderboards" / "README.md"
    lines = [shlex.split(line.split("  #")[0]) for line in readme.read_text().splitlines()
             if line.startswith("offline-bench ")]
    commands = {args[1] for args in lines}
    assert {"collect", "sweep", "report"} <= commands <= {"collect", "sweep", "report", "train", "behaviour", "evaluate"}
    for args in lines:
        args = args[1:]
        if args[0] == "collect":
            args = [args[0], "--help"]  # collecting 1M transitions is not a unit test
        elif args[0] == "behaviour":
            args = args[:2] + ["--help"]  # needs a behaviour run's replay buffer
        elif args[0] == "evaluate":
            args = args + ["--help"]  # needs trained runs' checkpoints: the options are parsed, nothing runs
        elif args[0] == "train":
            args += ["--show-config"]  # resolves every option and --set key against the real configs
        elif args[0] == "sweep":
            args += ["--dry-run", "--root", str(tmp_path / "data"), "--runs", str(runs)]
        else:
            args += ["--runs", str(runs), "--out", str(tmp_path / "lb"), "--no-plots"]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, f"{' '.join(args)}: {result.output}"


def test_dataset_versions_get_their_own_rows_and_algo_aliases_work(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    write_run(runs, "hopper-medium-v0", "td3bc", 0, [10.0, 20.0])
    write_run(runs, "hopper-medium-v1", "td3bc", 0, [30.0, 40.0])
    write_run(runs, "hopper-medium-v1", "cql", 0, [50.0, 60.0])
    text = make_report(runs, None, algos=["TD3+BC"]).leaderboard.cell_text("plain")
    assert list(text.columns) == ["td3bc"]
    assert text.to_dict()["td3bc"] == {("medium", "hopper (v0)"): "15.0", ("medium", "hopper (v1)"): "35.0"}


@pytest.mark.parametrize("option, value, message", [
    ("--algos", "omar,foo", "Error: unknown algorithm 'foo'; choose one of: td3bc, cql, bear, dbr, ma-td3bc, ma-cql, "
                            "ma-icq, omar (and no 'foo' runs in the runs folder)"),
    ("--datasets", "foo-random", "Error: unknown dataset 'foo-random'; valid ids are <task>-<quality>[-v<K>]"),
    ("--datasets", "spread-random-v5", "Error: unknown version v5 of spread-random; known: v0, v1"),
    ("--datasets", "spread,foo", "Error: unknown dataset 'foo';"),
])
def test_unknown_algorithms_and_datasets_are_refused(runs: Path, tmp_path: Path, option: str, value: str,
                                                     message: str) -> None:
    out = tmp_path / "lb"
    result = CliRunner().invoke(main, ["report", "--runs", str(runs), "--out", str(out), option, value])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), result.output
    assert not out.exists(), "nothing is written for a refused report"


def test_names_of_run_folders_outside_the_registry_are_accepted(runs: Path) -> None:
    write_run(runs, "spread-random-v0", "my-algo", 0, [1.0, 2.0])  # an outside algorithm's runs
    board = make_report(runs, None, algos=["my-algo", "omar"], datasets=["spread-random-v0", "tag"]).leaderboard
    assert list(board.algos) == ["my-algo", "omar"]
    assert set(board.cells["dataset_id"]) == {"spread-random-v0", "tag-random-v0"}


def test_cells_whose_seeds_differ_in_settings_say_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    runs = tmp_path / "runs"
    write_run(runs, "hopper-random-v0", "td3bc", 0, [1.0, 2.0], algo_config={"gamma": 0.99, "alpha": 2.5})
    write_run(runs, "hopper-random-v0", "td3bc", 1, [1.0, 2.0, 3.0], algo_config={"gamma": 0.5, "alpha": 2.5})
    write_run(runs, "hopper-random-v0", "td3bc", 2, [1.0, 2.0], algo_config={"gamma": 0.99, "alpha": 2.5})
    write_run(runs, "hopper-random-v0", "cql", 0, [1.0, 2.0], algo_config={"gamma": 0.99})
    write_run(runs, "hopper-random-v0", "cql", 1, [3.0, 4.0], algo_config={"gamma": 0.99})
    with caplog.at_level(logging.WARNING):
        board = make_report(runs, None).leaderboard
    note = ("hopper-random-v0 / td3bc: seeds differ in gamma (0.99, 0.5) and steps (20, 30); the cell averages them "
            "anyway.")
    assert board.notes[-1] == note and sum("seeds differ" in n for n in board.notes) == 1  # cql's seeds agree
    assert board.cells.set_index("algo").loc["td3bc", "status"] == "complete"  # averaged, not failed
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["hopper-random-v0 / td3bc averages seeds trained with different settings: gamma (0.99, 0.5) "
                        "and steps (20, 30) (see the notes under the table)"]
    assert f"- {note}" in to_markdown(board)


def test_notes_name_each_dataset_file_and_the_datas_own_score(tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    """A mixed dataset rebuilt with `collect --retrain` on another machine is another file: the notes name every file
    a cell's runs trained on, with the data's own mean score, and warn where one dataset id had several."""
    runs = tmp_path / "runs"
    refs = {"random": -300.0, "expert": 7100.0, "source": "manifest"}
    first = {"sha256": "a" * 64, "transitions": 135000, "episode_return_mean": 2660.0, "references": refs}
    rebuilt = {**first, "sha256": "b" * 64, "episode_return_mean": 1180.0, "transitions": 120000}
    write_run(runs, "halfcheetah-2x3-mixed-v0", "ma-icq", 0, [3.0, 4.0], dataset=first)
    write_run(runs, "halfcheetah-2x3-mixed-v0", "ma-icq", 1, [5.0, 6.0], dataset=rebuilt)
    write_run(runs, "halfcheetah-2x3-mixed-v0", "ma-td3bc", 0, [20.0, 30.0], dataset=rebuilt)
    write_run(runs, "halfcheetah-2x3-medium-v0", "ma-icq", 0, [30.0, 32.0],
              dataset={"sha256": "c" * 64, "transitions": 1000000, "references": refs})  # no episode_return_mean
    with caplog.at_level(logging.WARNING):
        notes = make_report(runs, None).leaderboard.notes
    datasets = next(n for n in notes if n.startswith("Datasets"))
    assert ("halfcheetah-2x3-medium-v0 1,000,000 (sha256 cccccccccccc); halfcheetah-2x3-mixed-v0 (135,000 "
            "transitions, sha256 aaaaaaaaaaaa, the data 40.0; 120,000 transitions, sha256 bbbbbbbbbbbb, the data "
            "20.0).") in datasets  # 100 (R + 300) / 7400; each file with its own size
    warning = ("halfcheetah-2x3-mixed-v0: the runs trained on 2 different files (aaaaaaaaaaaa: ma-icq seed 0; "
               "bbbbbbbbbbbb: ma-icq seed 1, ma-td3bc seed 0)")
    assert any(n.startswith(warning) for n in notes)
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [warning]


def test_runs_scored_against_different_references_are_named(tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    """A resumed run keeps the reference pair it started with: where a task's runs used more than one pair, their
    normalized scores are on different scales, and the notes list every pair with its runs and warn."""
    runs = tmp_path / "runs"
    d4rl = {"random": 20.06, "expert": 1441.81, "source": "catalog"}
    other = {"random": -500.0, "expert": 3000.0, "source": "catalog"}
    write_run(runs, "hopper-random-v0", "td3bc", 0, [10.0, 10.0], dataset={"references": d4rl})
    write_run(runs, "hopper-random-v0", "td3bc", 1, [20.0, 20.0], dataset={"references": other})
    write_run(runs, "hopper-medium-v0", "td3bc", 0, [30.0, 30.0], dataset={"references": d4rl})
    write_run(runs, "spread-random-v0", "omar", 0, [1.0, 2.0], dataset={"references": other})
    with caplog.at_level(logging.WARNING):
        notes = make_report(runs, None).leaderboard.notes
    assert ("Reference returns (random / expert): spread -500.00 / 3000.00; hopper 20.06 / 1441.81, -500.00 / "
            "3000.00.") in notes
    warning = ("hopper: the runs were scored against 2 different reference pairs (20.06 / 1441.81: hopper-medium-v0 "
               "td3bc seed 0, hopper-random-v0 td3bc seed 0; -500.00 / 3000.00: hopper-random-v0 td3bc seed 1)")
    assert [n for n in notes if n.startswith(warning)][0].endswith("their normalized scores are on different "
                                                                   "scales, and a cell may average them (train the "
                                                                   "out-of-date runs again in a new --runs folder; "
                                                                   "`--score return` shows raw returns).")
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [warning]


def test_a_cell_of_n_seeds_uses_seeds_0_to_n_minus_1(tmp_path: Path) -> None:
    """--seeds N (or a preset's count) is what `sweep --seeds N` trains: runs of other seeds are left out of the
    cells, and a note counts them, instead of a 3-seed mean shown as a complete 2-seed cell."""
    runs = tmp_path / "runs"
    for seed, score in enumerate([10.0, 20.0, 90.0]):
        write_run(runs, "hopper-random-v0", "td3bc", seed, [score, score])
    write_run(runs, "hopper-random-v0", "cql", 0, [5.0, 5.0])
    write_run(runs, "hopper-medium-v0", "cql", 4, [7.0, 7.0])  # only a seed beyond: its row stays, 0/2 seeds
    board = make_report(runs, None, seeds=2).leaderboard
    cells = board.cells.set_index(["dataset_id", "algo"])
    td3bc = cells.loc[("hopper-random-v0", "td3bc")]
    assert (td3bc["mean"], td3bc["std"], td3bc["seeds_finished"], td3bc["status"]) == (15.0, 5.0, 2, "complete")
    assert cells.loc[("hopper-medium-v0", "cql"), "status"] == "not run"
    assert board.notes[-1] == ("Left out: 2 run folder(s) of seeds beyond the 2 asked for (cells use seeds 0-1): "
                               "hopper-medium-v0 cql seed 4, hopper-random-v0 td3bc seed 2.")
    everything = make_report(runs, None).leaderboard  # without --seeds: every seed, as before
    assert everything.cells.set_index(["dataset_id", "algo"]).loc[("hopper-random-v0", "td3bc"), "mean"] == 40.0
    assert not any(n.startswith("Left out") for n in everything.notes)


def test_seeds_with_equal_settings_add_no_note(runs: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        board = make_report(runs, None, seeds=3).leaderboard
    assert not any("differ" in note for note in board.notes)
    assert not any("different settings" in r.getMessage() for r in caplog.records)


def test_unreadable_config_json_of_a_finished_run(runs: Path, caplog: pytest.LogCaptureFixture) -> None:
    """result.json intact, config.json garbage: the run is finished, and the warning says so (it used to say
    'treating the run as unfinished' while the table counted it)."""
    (runs / "spread-random-v0" / "omar" / "seed0" / "config.json").write_text("garbage")
    (runs / "spread-mixed-v0" / "omar" / "seed0" / "result.json").write_text("garbage")
    with caplog.at_level(logging.WARNING):
        cells = make_report(runs, None, seeds=3).leaderboard.cells.set_index(["dataset_id", "algo"])
    assert cells.loc[("spread-random-v0", "omar"), "seeds_finished"] == 3
    assert cells.loc[("spread-random-v0", "omar"), "status"] == "complete"
    assert cells.loc[("spread-mixed-v0", "omar"), "seeds_finished"] == 1  # an unreadable result.json: unfinished
    messages = {Path(r.args[0]).parent.parent.parent.name: r.getMessage() for r in caplog.records
                if r.getMessage().startswith("cannot read")}
    assert "the run counts as finished (its result.json is intact)" in messages["spread-random-v0"]
    assert "treating the run as unfinished" not in messages["spread-random-v0"]
    assert "treating the run as unfinished" in messages["spread-mixed-v0"]


def test_cli_report_says_which_files_it_replaced(runs: Path, tmp_path: Path) -> None:
    out = tmp_path / "lb"
    args = ["report", "--runs", str(runs), "--out", str(out), "--format", "md", "--format", "csv"]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    assert f"wrote {out / 'leaderboard.md'}" in first.output and "replaced" not in first.output
    (out / "leaderboard.csv").unlink()
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0, again.output
    assert f"replaced {out / 'leaderboard.md'}" in again.output and f"wrote {out / 'leaderboard.csv'}" in again.output
    assert "learning-curve PNGs to" in again.output and "3 of them replaced existing files" in again.output
