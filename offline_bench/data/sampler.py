"""Uniform minibatches from a dataset held whole on the training device (CORL-style: copy once, index forever)."""
from __future__ import annotations

import hashlib
import logging
from typing import Any

import numpy as np
import torch
from torch import Tensor

from offline_bench.batch import Batch
from offline_bench.data.dataset import Dataset

log = logging.getLogger(__name__)


class DeviceSampler:
    """The whole dataset as tensors on ``device``; ``sample`` draws rows uniformly with a seeded generator.

    Every tensor carries the agent axis (single-agent data gets ``N = 1``). ``next_action`` is the dataset's action
    on the next row of the same episode; ``next_action_valid`` is 0 on an episode's last row (where
    ``next_action`` is zeros). The generator lives on ``device`` and its state is part of ``state_dict`` so a
    resumed run draws the same batches.
    """

    def __init__(self, dataset: Dataset, device: torch.device | str = "cpu", seed: int = 0) -> None:
        self.device = torch.device(device)
        self.size = dataset.transitions
        if self.size == 0:
            raise ValueError(f"{dataset.dataset_id} has no transitions; collect it with --steps > 0")

        def put(array: np.ndarray) -> Tensor:
            return torch.from_numpy(np.ascontiguousarray(array)).to(self.device)

        self.obs = put(dataset.agent_axis("observations"))  # [T, N, O]
        self.action = put(dataset.agent_axis("actions"))  # [T, N, A]
        self.reward = put(dataset.agent_axis("rewards")).unsqueeze(-1)  # [T, N, 1]
        self.next_obs = put(dataset.agent_axis("next_observations"))  # [T, N, O]
        self.done = put(dataset.terminals).to(torch.float32).unsqueeze(-1)  # [T, 1]
        last_row = np.zeros(self.size, dtype=bool)
        last_row[dataset.episode_ends()] = True
        self.next_valid = put(~last_row).to(torch.float32).unsqueeze(-1)  # [T, 1]
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(int(seed))

    def sample(self, batch_size: int) -> Batch:
        """``batch_size`` rows drawn uniformly with replacement from the sampler's generator."""
        return self.batch_at(self.sample_indices(batch_size))

    def sample_indices(self, batch_size: int, out: Tensor | None = None) -> Tensor:
        """``[B]`` int64 row indices on the device, from the sampler's generator (written into ``out`` if given, as
        the CUDA-graph runner's static index)."""
        return torch.randint(self.size, (batch_size,), device=self.device, generator=self.generator, out=out)  # [B]

    def batch_at(self, idx: Tensor) -> Batch:
        """The batch of rows ``idx`` (``[B]`` int64 on the device)."""
        # index_select, not tensor[idx]: the same gather, several times faster on CPU.
        next_idx = (idx + 1).clamp_max(self.size - 1)  # [B]
        valid = self.next_valid.index_select(0, idx)  # [B, 1]
        return Batch(
            obs=self.obs.index_select(0, idx),  # [B, N, O]
            action=self.action.index_select(0, idx),  # [B, N, A]
            reward=self.reward.index_select(0, idx),  # [B, N, 1]
            next_obs=self.next_obs.index_select(0, idx),  # [B, N, O]
            done=self.done.index_select(0, idx),  # [B, 1]
            next_action=self.action.index_select(0, next_idx) * valid.unsqueeze(-1),  # [B, N, A]
            next_action_valid=valid,
        )

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "size": self.size, "device": self.device.type}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the draws. A state saved on another kind of device (a run moved between GPU and CPU) cannot be
        restored, as CPU and CUDA generators differ: the generator is then seeded from that state (so resuming the
        same checkpoint twice draws the same batches), and a warning says the batches differ from the other device's."""
        if state.get("size") != self.size:
            raise ValueError(
                f"sampler state is for a dataset of {state.get('size')} transitions, this one has {self.size}; "
                "resume with the dataset the run started on"
            )
        saved, kind = state["generator"], state.get("device")
        if kind in (None, self.device.type):
            try:
                self.generator.set_state(saved)
                return
            except RuntimeError:
                if kind is not None:
                    raise  # our own kind of device, yet unreadable: damage, not a move
        digest = hashlib.sha256(saved.cpu().numpy().tobytes()).digest()
        self.generator.manual_seed(int.from_bytes(digest[:8], "little") >> 1)
        log.warning(
            "the batch sampler's state was saved on %s and cannot be restored on %s: the run continues with batches "
            "drawn from a generator seeded from that state, not the ones it would have drawn on %s",
            kind or "another kind of device", self.device.type, kind or "that device",
        )
