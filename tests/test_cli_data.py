"""The dataset commands through click's CliRunner: help texts, a tiny collect, list/show/verify, export/import."""
from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner

from offline_bench.cli import main
from offline_bench.data import CATALOG

DATA_COMMANDS = [
    ["collect"],
    ["datasets"],
    ["datasets", "list"],
    ["datasets", "show"],
    ["datasets", "verify"],
    ["datasets", "export"],
    ["datasets", "import"],
    ["datasets", "measure-random"],
    ["behaviour", "collect-mixed"],
]


def run(*args: str, env: dict[str, str] | None = None) -> "click.testing.Result":
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


@pytest.mark.parametrize("command", DATA_COMMANDS, ids=" ".join)
def test_help_explains_every_option(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.exit_code == 0, result.output
    group: click.Command = main
    for name in command:
        assert isinstance(group, click.Group)
        group = group.commands[name]
    for param in group.params:
        if isinstance(param, click.Option):
            assert param.help, f"{' '.join(command)} {param.opts} has no help text"
            assert param.opts[0] in result.output
    if command != ["datasets"]:
        assert ("--root" in result.output) == (command != ["datasets", "measure-random"])


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli-data")
    result = run("collect", "hopper-random", "--steps", "120", "--seed", "0", "--root", str(path))
    assert result.exit_code == 0, result.output
    assert "hopper-random-v0: 120 transitions" in result.output
    return path


def test_collect_writes_the_file_and_list_shows_it(root: Path) -> None:
    assert sorted(p.name for p in root.iterdir()) == ["hopper-random-v0.hdf5", "hopper-random-v0.json"]
    result = run("datasets", "list", "--root", str(root), env={"OFFLINE_BENCH_RUNS": str(root / "runs")})
    assert result.exit_code == 0
    *rows, note = result.output.splitlines()[2:]
    lines = {line.split()[0]: line.split() for line in rows}
    assert len(lines) == 32 + 12  # the MPE tasks' ids also at v1 (their force action layout)
    assert lines["hopper-random-v0"][1:] == ["collectable", "yes", "yes", "120"]
    assert lines["spread-random-v1"][1:] == ["collectable", "no", "-"]
    # No saved behaviour run in these --runs: collecting mixed data re-runs the training, which the list says.
    assert lines["spread-mixed-v1"][1:] == ["collectable,", "--retrain", "no", "-"]
    assert note.startswith("--retrain: no saved behaviour run of that task is on this machine")
    for dataset_id, entry in CATALOG.items():
        mixed = entry.quality == "mixed" and entry.recipe.collectable
        expected = "collectable," if mixed else "collectable" if entry.recipe.collectable else "needs"
        assert lines[dataset_id][1] == expected, dataset_id


def test_collecting_again_keeps_an_identical_dataset(root: Path) -> None:
    before = (root / "hopper-random-v0.hdf5").stat().st_mtime_ns
    result = run("collect", "hopper-random", "--steps", "120", "--root", str(root))
    assert result.exit_code == 0 and "already collected identically and verified, kept" in result.output
    assert (root / "hopper-random-v0.hdf5").stat().st_mtime_ns == before
    result = CliRunner().invoke(main, ["collect", "hopper-random", "--steps", "100", "--root", str(root)])
    assert result.exit_code == 1 and "already exists" in result.output and "--force" in result.output


def test_root_from_environment_variable(root: Path) -> None:
    result = run("datasets", "verify", "hopper-random", env={"OFFLINE_BENCH_DATA": str(root)})
    assert result.exit_code == 0 and "hopper-random-v0: ok (120 transitions" in result.output


def test_show_prints_manifest_sizes_returns_and_score(root: Path) -> None:
    result = run("datasets", "show", "hopper-random", "--root", str(root))
    assert result.exit_code == 0, result.output
    for text in ("hopper-random-v0", "120 transitions", "episode return:", "random-init-mlp", "pybullet 3.2.7",
                 "normalized score:", "20.058972"):
        assert text in result.output, text
    manifest = json.loads(run("datasets", "show", "hopper-random", "--root", str(root), "--json").output)
    assert manifest["transitions"] == 120 and len(manifest["sha256"]) == 64


def test_verify_fails_with_one_line_naming_the_fix(root: Path, tmp_path: Path) -> None:
    for name in ("hopper-random-v0.hdf5", "hopper-random-v0.json"):
        (tmp_path / name).write_bytes((root / name).read_bytes())
    data = bytearray((tmp_path / "hopper-random-v0.hdf5").read_bytes())
    data[-10] ^= 0xFF
    (tmp_path / "hopper-random-v0.hdf5").write_bytes(bytes(data))
    result = CliRunner().invoke(main, ["datasets", "verify", "hopper-random", "--root", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and result.output.startswith("Error: ")
    assert "sha256" in result.output and "re-run `offline-bench collect hopper-random" in result.output
    # the same dataset again (its size and seed, not the 1,000,000-step default), replacing the damaged file
    assert result.output.endswith(
        f"; re-run `offline-bench collect hopper-random-v0 --steps 120 --seed 0 --force --root {tmp_path}`\n")
    listed = run("datasets", "list", "--root", str(tmp_path)).output
    assert "FAILED" in next(line for line in listed.splitlines() if line.startswith("hopper-random-v0"))


@pytest.mark.parametrize(
    "args, message",
    [
        (["collect", "hopper-great"], "unknown dataset 'hopper-great'"),
        (["collect", "PENDING"], "cannot be collected yet"),
        (["datasets", "show", "spread-random"], "not collected"),
        (["datasets", "verify", "nope-random"], "unknown dataset"),
        (["datasets", "measure-random", "cartpole"], "unknown task 'cartpole'"),
        (["datasets", "import", "offline-bench/ant-random-v0"], "no local Minari dataset"),
        (["collect", "hopper-random", "--retrain"], "--retrain applies to mixed datasets only"),
        (["collect", "hopper-random", "--workdir", "."], "--workdir applies to mixed datasets only"),
        (["collect", "hopper-mixed", "--steps", "1000"], "has a fixed size"),
        (["collect", "spread-mixed"], "add --retrain to re-run that training deterministically"),
        (["behaviour", "collect-mixed", "tag"], "add --retrain"),
    ],
)
def test_errors_are_one_line_without_traceback(args: list[str], message: str, tmp_path: Path,
                                              pending_dataset_id: str) -> None:
    # PENDING: an id whose behaviour policy does not exist (yet, or taken away for the test)
    args = [pending_dataset_id if a == "PENDING" else a for a in args]
    result = CliRunner().invoke(main, [*args, *(["--root", str(tmp_path)] if "measure-random" not in args else [])],
                                env={"MINARI_DATASETS_PATH": str(tmp_path / "minari"),
                                     "OFFLINE_BENCH_RUNS": str(tmp_path / "runs")})  # no saved behaviour run there
    assert result.exit_code == 1, result.output
    assert message in result.output and result.output.count("\n") == 1 and "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)


def test_a_damaged_saved_replay_buffer_names_the_file_and_the_fix(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    damaged = [b"not a zip file", None]  # None: an archive that needs pickles, which a run never saves
    for content in damaged:
        if content is None:
            np.savez(work / "mixed.npz", terminals=np.array([object()], dtype=object))
        else:
            (work / "mixed.npz").write_bytes(content)
        result = CliRunner().invoke(main, ["collect", "spread-mixed", "--workdir", str(work), "--root",
                                           str(tmp_path / "data")])
        assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
        assert result.output.startswith(f"Error: {work / 'mixed.npz'} is damaged and cannot be read (")
        assert "move it away and add --retrain" in result.output and "unsafe" not in result.output.lower()
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").iterdir())


def test_show_scores_the_data_with_the_pair_its_manifest_records(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The normalized score `datasets show` prints is the one training and reports use for this file: its manifest's
    references, even after the task's catalog pair changed (e.g. a re-exported expert policy)."""
    from dataclasses import replace

    from offline_bench.data import catalog
    from offline_bench.evaluate import normalized_score

    manifest = json.loads((root / "hopper-random-v0.json").read_text())
    refs, mean = manifest["references"], manifest["episode_returns"]["mean"]
    monkeypatch.setitem(catalog.REFERENCES, "hopper", replace(catalog.REFERENCES["hopper"], random=0.0, expert=1.0))
    shown = run("datasets", "show", "hopper-random", "--root", str(root)).output.splitlines()
    expected = normalized_score(mean, refs["random"], refs["expert"])
    assert f"normalized score: {expected:.1f}  (behaviour policy's mean return)" in shown


def test_export_and_import_through_the_cli(root: Path, tmp_path: Path) -> None:
    env = {"MINARI_DATASETS_PATH": str(tmp_path / "minari")}
    result = run("datasets", "export", "hopper-random", "--minari", "--root", str(root), env=env)
    assert result.exit_code == 0 and "offline-bench/hopper-random-v0" in result.output
    result = run("datasets", "import", "offline-bench/hopper-random-v0", "--root", str(tmp_path / "back"), env=env)
    assert result.exit_code == 0, result.output
    assert "imported offline-bench/hopper-random-v0 as hopper-random-v0: 120 transitions" in result.output
    assert run("datasets", "verify", "hopper-random", "--root", str(tmp_path / "back")).exit_code == 0


def test_collect_help_says_what_retrain_costs() -> None:
    from offline_bench.data.catalog import retrain_estimates

    text = " ".join(run("collect", "--help").output.split())
    for task, (steps, _minutes) in retrain_estimates().items():
        assert f"{task} {steps} steps" in text, task


def test_show_names_the_opponent(tmp_path: Path) -> None:
    assert run("collect", "tag-random", "--steps", "30", "--root", str(tmp_path)).exit_code == 0
    result = run("datasets", "show", "tag-random", "--root", str(tmp_path))
    sha = json.loads((tmp_path / "tag-random-v1.json").read_text())["env"]["opponents"]["sha256"]
    assert result.exit_code == 0 and "opponents:" in result.output and f"sha256 {sha}" in result.output


def test_measure_random_prints_statistics() -> None:
    result = run("datasets", "measure-random", "spread", "--episodes", "2", "--json")
    stats = json.loads(result.output)
    assert stats["episodes"] == 2 and stats["task"] == "spread" and stats["mean"] < 0


def test_collect_refuses_a_negative_seed_naming_the_option(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["collect", "spread-random", "--seed", "-1", "--steps", "100",
                                       "--root", str(tmp_path / "data")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.splitlines()[-1] == "Error: Invalid value for '--seed': -1 is not in the range x>=0."
    assert not (tmp_path / "data").exists()


def test_import_refuses_an_existing_dataset_and_keeps_the_collected_statistics(root: Path, tmp_path: Path) -> None:
    """collect -> export -> import: refused onto the collected id without --force (nothing written); with --as or
    --force, the imported manifest's episode statistics are the collected ones (the budget-cut last episode stays
    out of them)."""
    data = tmp_path / "data"
    data.mkdir()
    for name in ("hopper-random-v0.hdf5", "hopper-random-v0.json"):
        (data / name).write_bytes((root / name).read_bytes())
    collected = json.loads((data / "hopper-random-v0.json").read_text())
    assert collected["last_episode_cut"] is True  # else this test would not exercise the cut episode
    env = {"MINARI_DATASETS_PATH": str(tmp_path / "minari")}
    assert run("datasets", "export", "hopper-random", "--minari", "--root", str(data), env=env).exit_code == 0
    before = {p.name: p.read_bytes() for p in data.iterdir()}

    refused = CliRunner().invoke(main, ["datasets", "import", "offline-bench/hopper-random-v0", "--root", str(data)],
                                 env=env)
    assert refused.exit_code == 1 and refused.output == (
        f"Error: hopper-random-v0 already exists in {data}; pass --force to replace it, import it --as another id, "
        "or use another --root\n")
    assert {p.name: p.read_bytes() for p in data.iterdir()} == before  # nothing replaced, no temporary files

    result = run("datasets", "import", "offline-bench/hopper-random-v0", "--as", "hopper-expert", "--root", str(data),
                 env=env)
    assert result.exit_code == 0 and "as hopper-expert-v0" in result.output
    refused = CliRunner().invoke(main, ["datasets", "import", "offline-bench/hopper-random-v0", "--as",
                                        "hopper-expert", "--root", str(data)], env=env)
    assert refused.exit_code == 1 and "hopper-expert-v0 already exists" in refused.output
    result = run("datasets", "import", "offline-bench/hopper-random-v0", "--force", "--root", str(data), env=env)
    assert result.exit_code == 0, result.output
    for dataset_id in ("hopper-expert-v0", "hopper-random-v0"):
        imported = json.loads((data / f"{dataset_id}.json").read_text())
        assert imported["recipe"]["kind"] == "imported"
        assert imported["episode_returns"] == collected["episode_returns"]
        assert imported["last_episode_cut"] is True and imported["episodes"] == collected["episodes"]
    shown = run("datasets", "show", "hopper-random", "--root", str(data)).output
    assert f"{collected['episode_returns']['episodes']} complete episodes" in shown
    assert sorted(p.name for p in data.iterdir()) == sorted(
        [*before, "hopper-expert-v0.hdf5", "hopper-expert-v0.json"])
