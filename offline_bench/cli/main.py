"""The click group every command module attaches to. Commands parse arguments and call the library."""
from __future__ import annotations

import logging
import os
import sys
from typing import Any

import click

from offline_bench import __version__


def configure_threads() -> None:
    """One torch thread unless told otherwise: on small machines two threads collapse when anything else runs."""
    import torch

    raw = os.environ.get("OFFLINE_BENCH_THREADS", "").strip()  # empty reads as unset
    threads = int(raw) if raw.isdecimal() else 0
    if raw and threads < 1:
        raise click.ClickException(
            f"OFFLINE_BENCH_THREADS must be a positive integer (torch threads per process), got {raw!r}; "
            "unset it for the default of 1"
        )
    torch.set_num_threads(threads or 1)


def system_error_line(err: BaseException) -> str | None:
    """A system OSError (an errno and a path, e.g. a --root or --runs that cannot be created) as what failed on which
    path and what to check, instead of Python's bare ``[Errno 17] File exists: '/dev/null'``; None for other errors
    (our own messages, which already say what to do)."""
    if not (isinstance(err, OSError) and err.errno is not None and err.filename is not None):
        return None
    where = err.filename if err.filename2 is None else f"{err.filename} -> {err.filename2}"
    return f"{err.strerror}: {where} (check that path: a folder this command can read, or create and write to)"


def error_line(err: BaseException) -> str:
    """The one line a command prints for an expected error: a system error as ``system_error_line`` says it,
    KeyError's quotes removed, the first line of a long message."""
    system = system_error_line(err)
    if system is not None:
        return system
    text = str(err.args[0] if type(err) is KeyError and err.args else err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _caused_by_broken_pipe(err: BaseException | None) -> bool:
    """Whether ``err`` is, or was raised while handling, a BrokenPipeError (commands may wrap OSErrors)."""
    while err is not None:
        if isinstance(err, BrokenPipeError):
            return True
        err = err.__cause__ or err.__context__
    return False


class _MainGroup(click.Group):
    """The root group. A reader that stops early (``offline-bench datasets list | head -1``) closes stdout; that is
    not an error, so the command ends quietly with status 0 (Python's documented SIGPIPE idiom)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (BrokenPipeError, click.ClickException) as err:
            if not _caused_by_broken_pipe(err):
                raise
            try:  # the interpreter flushes stdout at exit: point it at devnull so that flush cannot fail again
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            except (OSError, ValueError):
                pass
            sys.exit(0)


@click.group(cls=_MainGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
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
