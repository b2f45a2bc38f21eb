"""Command-line interface: ``offline-bench`` (or ``python cli.py``)."""
from offline_bench.cli.main import main

# Each module attaches its commands to `main` when imported.
from offline_bench.cli import data_cmds, train_cmds, report_cmds, behaviour_cmds  # noqa: E402,F401

__all__ = ["main"]
