"""The click group every command module attaches to. Commands parse arguments and call the library."""
from __future__ import annotations

import logging
import os

import click

from offline_bench import __version__


def configure_threads() -> None:
    """One torch thread unless told otherwise: on small machines two threads collapse when anything else runs."""
    import torch

    threads = int(os.environ.get("OFFLINE_BENCH_THREADS", "1"))
    torch.set_num_threads(threads)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="offline-bench")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def main(verbose: int) -> None:
    """offline-bench: make offline RL datasets, train algorithms on them, and report paper-style tables.

    \b
    offline-bench collect hopper-random --steps 10000      # env -> datasets/hopper-random-v0.hdf5
    offline-bench train --algo td3bc --dataset hopper-random  # dataset -> runs/.../
    offline-bench report                                   # runs/ -> leaderboards/

    Torch uses one thread unless OFFLINE_BENCH_THREADS says otherwise.
    """
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    configure_threads()
