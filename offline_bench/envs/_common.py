"""Small helpers every adapter shares: silencing C-level output, checking actions, padding observations."""
from __future__ import annotations

import contextlib
import ctypes
import io
import os
import sys
from collections.abc import Iterator

import numpy as np

from offline_bench.envs.base import TaskSpec


def _libc_fflush() -> None:
    try:
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):  # no C library to flush (unusual platforms); nothing was buffered there
        pass


@contextlib.contextmanager
def silence_output() -> Iterator[None]:
    """Send file descriptors 1 and 2 (C-level ``printf`` as well as Python's ``print``) to /dev/null for the block.

    PyBullet writes its build time to the process's stderr from C on import, and simulators print diagnostics
    from C that ``contextlib.redirect_stdout`` cannot catch, so the descriptors themselves are swapped and
    restored. Use it around imports, construction and resets, not around every step (two syscalls each way).
    """
    sys.stdout.flush()
    sys.stderr.flush()
    _libc_fflush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        _libc_fflush()  # C stdio buffers what it printed; flush it into /dev/null before the descriptors return
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


def check_action(action: np.ndarray, spec: TaskSpec) -> np.ndarray:
    """Validate an interface action ``[N, A]`` and clip it to [-1, 1].

    Out-of-range but finite values are clipped (policies with Gaussian noise routinely step past the bounds);
    a wrong shape or a NaN/inf is rejected with a ValueError, because it always means a bug upstream.
    """
    action = np.asarray(action, dtype=np.float32)
    expected = (spec.n_agents, spec.action_dim)
    if action.shape != expected:
        raise ValueError(
            f"{spec.name}: action must have shape [N, A] = {list(expected)} (padded per agent), got {list(action.shape)}"
        )
    if not np.isfinite(action).all():
        raise NonFiniteActionError(f"{spec.name}: action contains NaN or inf; check the policy's output before "
                                   "stepping")
    return np.clip(action, -1.0, 1.0)


class NonFiniteActionError(ValueError):
    """A policy's action holds NaN or inf (training uses it to report a diverged run)."""


class BoxMap:
    """Maps actions in [-1, 1] linearly onto per-agent boxes [low, high] (-1 -> low, +1 -> high), all rows at once.

    Offsets and scales are precomputed as ``[K, width]`` arrays (zero past each row's own size), so a step costs
    one fused multiply-add instead of a chain of temporaries per agent.
    """

    def __init__(self, lows: list[np.ndarray], highs: list[np.ndarray], width: int) -> None:
        self.offset = np.zeros((len(lows), width), dtype=np.float32)  # [K, width]
        self.scale = np.zeros((len(lows), width), dtype=np.float32)  # [K, width]
        self.sizes = [low.shape[0] for low in lows]
        for i, (low, high) in enumerate(zip(lows, highs)):
            low, high = np.asarray(low, dtype=np.float32), np.asarray(high, dtype=np.float32)
            self.offset[i, : low.shape[0]] = (high + low) * 0.5
            self.scale[i, : low.shape[0]] = (high - low) * 0.5

    def __call__(self, action: np.ndarray) -> list[np.ndarray]:
        """``action [K, width]`` in [-1, 1] -> one float32 vector per row, cut to the row's own size."""
        mapped = self.offset + self.scale * action  # [K, width]
        return [mapped[i, :size] for i, size in enumerate(self.sizes)]


def pad_rows(rows: list[np.ndarray], width: int) -> np.ndarray:
    """Stack per-agent vectors of possibly different lengths into ``[N, width]`` float32, zero-padded at the end."""
    out = np.zeros((len(rows), width), dtype=np.float32)  # [N, width]
    for i, row in enumerate(rows):
        out[i, : row.shape[0]] = row
    return out


class EpisodeClock:
    """Counts steps and refuses to step before ``reset`` or after the episode ended."""

    def __init__(self, name: str, limit: int) -> None:
        self.name = name
        self.limit = limit
        self.t = 0
        self.running = False

    def start(self) -> None:
        self.t = 0
        self.running = True

    def tick(self) -> None:
        if not self.running:
            raise RuntimeError(f"{self.name}: the episode has ended (or never started); call reset(seed) first")
        self.t += 1

    def stop(self) -> None:
        self.running = False
