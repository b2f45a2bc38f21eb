"""Whole training updates as CUDA graphs (``--set cuda_graphs=true`` with ``--device cuda``).

At batch 256 an update is a few hundred small kernels, and on a GPU their launches, not the arithmetic, set its
time (``benchmarks/README.md``: 3.8 ms per TD3+BC update on an H200). ``GraphedUpdates`` records each kind of update
once as a CUDA graph and from then on replays it, one launch per update:

- Rows are drawn outside the graph, by the sampler's own generator, into a static index tensor; the gathers, the
  whole ``update`` and the stacking of its metrics are inside.
- ``algo.graph_key()`` names the branch the next update takes (actor step or not, warm-up or not). Each key gets its
  own graph, captured after ``warmup`` eager updates of that key on a side stream: the first steps create optimizer
  state, autograd buffers and library workspaces, which must exist before a capture. Those eager updates are ordinary
  training updates on sampled batches; nothing is repeated or undone.
- A capture runs ``update``'s Python once without running its kernels. The runner compares the algorithm's
  attributes before and after: an int that grew by one (``updates``, ``step``) is a counter, put back after the
  capture and advanced by one after every replay; any other attribute that was rebound (for instance a tensor
  assigned where it should be updated in place, which a replay could not repeat) is a ``GraphCaptureError``.
- Random draws inside ``update`` use torch's default CUDA generator, whose offset a CUDA graph advances on every
  replay, so each replay draws new numbers.
- Optimizers: capture needs ``capturable=True`` param groups. The runner sets it during the capture only: our Adam is
  the fused kernel (``algos.common.make_adam``), which computes the same either way, so checkpoints keep the flag
  they were made with and resume anywhere.
- Metrics: the graph stacks them into one tensor; each step returns views of one copy of it, so metrics the loop
  buffers from earlier steps are not overwritten by later replays.

``capture=False`` runs the same steps (static index, metric stacking, counters) with every update eager; the CPU tests
use it to check that the runner trains exactly like the plain loop. The capture itself needs a GPU:
``benchmarks/cuda_graphs_check.py`` compares graphed with eager training and times both there.
"""
from __future__ import annotations

import collections
import contextlib
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


class GraphCaptureError(RuntimeError):
    """An algorithm's update cannot be replayed as a CUDA graph (the message says what is in the way)."""


@dataclass
class _Graph:
    graph: Any  # torch.cuda.CUDAGraph
    keys: list[str]  # metric names, in the order of ``values``
    values: Tensor  # [M] static output: the metrics of the last replay
    counters: list[str]  # int attributes that advance by one per update


def find_optimizers(algo: object) -> list[torch.optim.Optimizer]:
    """Every optimizer the algorithm holds: its attributes, and one level down (e.g. a Lagrange multiplier's)."""
    found: list[torch.optim.Optimizer] = []
    for value in vars(algo).values():
        candidates = [value, *(vars(value).values() if hasattr(value, "__dict__") and not isinstance(
            value, (torch.nn.Module, torch.optim.Optimizer, Tensor)) else ())]
        for item in candidates:
            if isinstance(item, torch.optim.Optimizer) and all(item is not f for f in found):
                found.append(item)
    return found


class _capturable:
    """Context manager: every param group of ``optimizers`` has ``capturable=True`` inside, its old value after."""

    def __init__(self, optimizers: list[torch.optim.Optimizer]) -> None:
        self.groups = [group for opt in optimizers for group in opt.param_groups]
        self.saved: list[Any] = []

    def __enter__(self) -> None:
        self.saved = [group.get("capturable", False) for group in self.groups]
        for group in self.groups:
            group["capturable"] = True

    def __exit__(self, *exc: object) -> None:
        for group, flag in zip(self.groups, self.saved):
            group["capturable"] = flag


def stack_metrics(metrics: dict[str, Tensor]) -> tuple[list[str], Tensor]:
    """``{name: tensor}`` -> (names, ``[M]`` float32 means), the loop's reduction of each metric."""
    values = [torch.as_tensor(v).detach().float().reshape(-1).mean() for v in metrics.values()]
    return list(metrics), torch.stack(values)


def _unstack(keys: list[str], values: Tensor) -> dict[str, Tensor]:
    return dict(zip(keys, values.unbind()))  # views: no copies, no launches


class GraphedUpdates:
    """``step()`` = sample a batch and run one ``algo.update`` on it, replayed from a CUDA graph once captured.

    ``algo`` must define ``graph_key()`` (see ``algos.base``); ``sampler`` is a ``DeviceSampler`` on ``device``.
    ``capture`` defaults to True on CUDA; ``capture=True`` elsewhere is a ValueError.
    """

    def __init__(self, algo: Any, sampler: Any, batch_size: int, device: torch.device | str,
                 capture: bool | None = None, warmup: int = 3) -> None:
        device = torch.device(device)
        if not callable(getattr(algo, "graph_key", None)):
            raise GraphCaptureError(
                f"{type(algo).__name__} defines no graph_key(), so its updates cannot be captured; "
                "train it without cuda_graphs"
            )
        capture = device.type == "cuda" if capture is None else capture
        if capture and device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA device, got {device}")
        self.algo, self.sampler, self.batch_size, self.device = algo, sampler, batch_size, device
        self.capture, self.warmup = capture, warmup
        self.index = torch.zeros(batch_size, dtype=torch.long, device=device)  # [B] static row indices
        self.graphs: dict[Hashable, _Graph] = {}
        self.eager_updates: collections.Counter[Hashable] = collections.Counter()
        self.side_stream = torch.cuda.Stream(device) if capture else None

    def _body(self) -> tuple[list[str], Tensor]:
        return stack_metrics(self.algo.update(self.sampler.batch_at(self.index)))

    def step(self) -> dict[str, Tensor]:
        self.sampler.sample_indices(self.batch_size, out=self.index)
        key = self.algo.graph_key()
        graph = self.graphs.get(key)
        if graph is None and (not self.capture or self.eager_updates[key] < self.warmup):
            self.eager_updates[key] += 1
            before = dict(vars(self.algo))
            with self._side_stream():
                keys, values = self._body()
            counter_attributes(self.algo, before, key)  # what a capture of this key would refuse, found early
            return _unstack(keys, values)
        if graph is None:
            graph = self.graphs[key] = self._capture(key)
        graph.graph.replay()
        for name in graph.counters:
            setattr(self.algo, name, getattr(self.algo, name) + 1)
        return _unstack(graph.keys, graph.values.clone())

    def _side_stream(self) -> contextlib.AbstractContextManager[None]:
        """Eager updates before a capture run on a side stream (CUDA's rule for warming up graphed work)."""
        return contextlib.nullcontext() if self.side_stream is None else _on_stream(self.side_stream)

    def _capture(self, key: Hashable) -> _Graph:
        algo = self.algo
        before = dict(vars(algo))
        graph = torch.cuda.CUDAGraph()
        torch.cuda.synchronize(self.device)
        with _capturable(find_optimizers(algo)):
            with torch.cuda.graph(graph):
                keys, values = self._body()
        counters = counter_attributes(algo, before, key)
        for name in counters:
            setattr(algo, name, before[name])  # the capture ran no update: put the counter back
        return _Graph(graph, keys, values, counters)


_MISSING = object()


def counter_attributes(algo: object, before: dict[str, Any], key: Hashable = None) -> list[str]:
    """The attributes one ``update`` advanced by one (int counters), comparing ``vars(algo)`` with ``before``
    (a copy taken before it). Any other rebound or new attribute is a ``GraphCaptureError``: a replay runs no Python,
    so it could not repeat the rebinding."""
    counters = []
    for name, value in vars(algo).items():
        old = before.get(name, _MISSING)
        if value is old:
            continue
        if type(value) is int and type(old) is int and value in (old, old + 1):
            if value == old + 1:
                counters.append(name)
            continue
        raise GraphCaptureError(
            f"{type(algo).__name__}.update rebinds self.{name} (graph key {key!r}); a CUDA graph replay cannot "
            "repeat that: update the tensor in place, or train without cuda_graphs"
        )
    return counters


@contextlib.contextmanager
def _on_stream(stream: Any) -> Iterator[None]:
    """Run on ``stream``, after the current stream's queued work; the current stream then waits for it."""
    outer = torch.cuda.current_stream(stream.device)
    stream.wait_stream(outer)
    with torch.cuda.stream(stream):
        yield
    outer.wait_stream(stream)


__all__ = ["GraphCaptureError", "GraphedUpdates", "counter_attributes", "find_optimizers", "stack_metrics"]
