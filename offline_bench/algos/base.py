"""What the training loop needs from an algorithm, and the facts about a dataset an algorithm is built from.

Every algorithm module (``td3_bc.py``, ``omar.py``, ...) defines a frozen config dataclass whose defaults are its
paper's hyperparameters (each field with help text, see ``offline_bench.config.cfg``) and one class with:

- ``__init__(self, config, problem: Problem, device: torch.device)``: build networks and optimizers on ``device``.
  Randomness comes from torch's global generator, which the loop seeds from the run seed and checkpoints.
- ``update(self, batch: Batch) -> dict[str, Tensor]``: the whole update, top to bottom. Metrics stay 0-dim tensors
  (detached); no ``.item()``, no printing, no host sync.
- ``act(self, obs: Tensor) -> Tensor``: deterministic evaluation actions, ``[E, N, O] -> [E, N, A]`` in [-1, 1],
  from raw (unnormalised) observations. Must work in ``torch.no_grad()`` and put BatchNorm layers in eval mode.
- ``state_dict() -> dict`` / ``load_state_dict(dict)``: everything needed to resume exactly (networks, targets,
  optimizers, step counters, Lagrange multipliers).
- class attributes ``config_cls`` (the config dataclass) and ``multi_agent: bool`` (True if it accepts N > 1).
- ``graph_key() -> tuple`` (for ``cuda_graphs=true``): a hashable name of the branch the next ``update`` takes (actor
  step or not, warm-up or not). ``update`` may then change its Python state only by advancing int counters; tensors
  it keeps across updates are updated in place (``train.graphs`` checks both).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
from torch import Tensor

from offline_bench.batch import Batch


@dataclass(frozen=True)
class Problem:
    """Facts about the dataset an algorithm trains on."""

    n_agents: int
    obs_dim: int  # padded per-agent observation size O
    action_dim: int  # padded per-agent action size A
    obs_sizes: tuple[int, ...]  # true sizes per agent (padding beyond is zero)
    action_sizes: tuple[int, ...]
    obs_mean: np.ndarray  # [N, O] float32: dataset observation mean per agent (0 on padding)
    obs_std: np.ndarray  # [N, O] float32: dataset observation std per agent (1 on padding, never 0)
    dataset_size: int  # transitions


class Algorithm(Protocol):
    config_cls: ClassVar[type]
    multi_agent: ClassVar[bool]

    def __init__(self, config: Any, problem: Problem, device: torch.device) -> None: ...

    def update(self, batch: Batch) -> dict[str, Tensor]: ...

    def act(self, obs: Tensor) -> Tensor: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...
