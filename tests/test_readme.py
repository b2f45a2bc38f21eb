"""The README's commands work: every `offline-bench` line parses against the real CLI, and the ones that fit a test
budget run, in order, in a fresh directory (the long ones, full-size behaviour training and writing into the
repository's policies, are parsed only)."""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
from click.testing import CliRunner

from offline_bench.cli import main

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()

# Commands shown in the README that take hours or write into the repository: parsed, not run.
PARSE_ONLY = ("behaviour train", "behaviour export")


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def readme_commands() -> list[list[str]]:
    commands = []
    for block in code_blocks("bash"):
        for line in block.splitlines():
            line = line.split("  #", 1)[0].strip()
            if line.startswith("offline-bench "):
                commands.append(shlex.split(line)[1:])
    return commands


def parse(args: list[str]) -> None:
    """Resolve the subcommand chain and parse every option and argument, as click would before running it."""
    ctx = main.make_context("offline-bench", list(args), resilient_parsing=False)
    command: click.Command = main
    rest = ctx.protected_args + ctx.args if hasattr(ctx, "protected_args") else ctx.args
    while isinstance(command, click.Group) and rest:
        name, sub, rest = command.resolve_command(ctx, rest)
        ctx = sub.make_context(name, list(rest), parent=ctx)
        command = sub
        rest = (getattr(ctx, "protected_args", []) or []) + ctx.args if isinstance(sub, click.Group) else []


def test_readme_has_the_two_commands_and_ci_runs_the_test_one():
    setup_block = code_blocks("bash")[0]
    assert "make run" in setup_block and "make test" in setup_block
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^run: setup", makefile, re.M) and re.search(r"^test: setup", makefile, re.M)
    assert "make test" in (REPO / ".ci" / "run").read_text()


def test_every_readme_command_parses():
    commands = readme_commands()
    assert len(commands) >= 10
    for args in commands:
        parse(args)


def test_cli_py_shim_runs_from_the_repo_root():
    out = subprocess.run([sys.executable, "cli.py", "--help"], cwd=REPO, capture_output=True, text=True, check=True)
    assert "collect" in out.stdout and "train" in out.stdout


def test_readme_commands_run_in_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = {
        "OFFLINE_BENCH_DATA": str(tmp_path / "datasets"),
        "OFFLINE_BENCH_RUNS": str(tmp_path / "runs"),
        "MINARI_DATASETS_PATH": str(tmp_path / "minari"),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    runner = CliRunner()
    ran = 0
    for args in readme_commands():
        line = " ".join(args)
        if any(line.startswith(prefix) for prefix in PARSE_ONLY):
            continue
        result = runner.invoke(main, args, catch_exceptions=False)
        assert result.exit_code == 0, f"`offline-bench {line}` failed:\n{result.output}"
        ran += 1
    assert ran >= 10
    assert (tmp_path / "datasets" / "hopper-random-v0.hdf5").exists()
    assert list((tmp_path / "leaderboards").glob("*.html"))

    # The Python example runs against what the commands collected.
    for block in code_blocks("python"):
        exec(compile(block, "README.md", "exec"), {})  # noqa: S102 - the README's own example
