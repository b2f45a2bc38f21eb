"""Actor-only behaviour checkpoints: the small files under ``datasets/policies/`` and the policies they load into.

File format (``torch.save`` of a dict, float32, version ``POLICY_FORMAT``): ``format``, ``kind`` (``gaussian`` for
SAC actors, ``deterministic`` for MATD3 actors; both act with ``tanh`` of the network's mean), ``n_agents``,
``obs_dim``, ``action_dim``, ``action_sizes``, ``hidden_sizes``, ``state_dict`` (the actor's ``StackedMLP``) and
``meta`` (task, role, step). ``datasets/policies/index.json`` lists every committed file with its sha256, the
training budget behind it and the returns it reaches.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from offline_bench.algos.common import DeterministicActor, GaussianActor
from offline_bench.envs.base import TaskSpec
from offline_bench.envs.tasks import LEGACY_ACTION_LAYOUT, recorded_action_layout
from offline_bench.paths import policies_root

POLICY_FORMAT = 1
INDEX_NAME = "index.json"
QUALITIES = ("medium", "expert", "opponent")


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save`` to a temporary name in the same folder, then rename, so a crash never leaves a half file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _actor_kind(actor: nn.Module) -> str:
    if isinstance(actor, GaussianActor):
        return "gaussian"
    if isinstance(actor, DeterministicActor):
        return "deterministic"
    raise TypeError(f"cannot export an actor of type {type(actor).__name__}")


def actor_payload(
    actor: nn.Module, action_sizes: tuple[int, ...], hidden_sizes: tuple[int, ...], meta: dict[str, Any]
) -> dict[str, Any]:
    """The dict stored in a policy file (weights copied to CPU float32)."""
    return {
        "format": POLICY_FORMAT,
        "kind": _actor_kind(actor),
        "n_agents": actor.n_agents,
        "obs_dim": actor.obs_dim,
        "action_dim": actor.action_dim,
        "action_sizes": tuple(action_sizes),
        "hidden_sizes": tuple(hidden_sizes),
        "state_dict": {k: v.detach().to("cpu", torch.float32).clone() for k, v in actor.state_dict().items()},
        "meta": dict(meta),
    }


@dataclass
class CheckpointPolicy:
    """A frozen actor: ``act(obs [E, N, O]) -> [E, N, A]`` in [-1, 1], plus Gaussian noise of std ``noise``.

    Noise is drawn from ``generator`` (seed it for reproducible collection); padded action dimensions stay 0.
    ``action_layout`` is the layout the actor was trained in (``meta["action_layout"]``; MPE checkpoints without
    one are "mpe2"); ``in_layout`` makes it act in another (the committed MPE policies were trained in "mpe2", the
    v1 datasets are in "force").
    """

    actor: nn.Module
    action_sizes: tuple[int, ...]
    meta: dict[str, Any] = field(default_factory=dict)
    noise: float = 0.0
    generator: torch.Generator | None = None
    sha256: str = ""

    def __post_init__(self) -> None:
        self.actor.eval()
        self.action_layout = recorded_action_layout(str(self.meta.get("task")), self.meta)
        self.convert: Any = None  # actions in the actor's layout [E, N, A'] -> this policy's [E, N, A] (in_layout)
        self.action_mask = torch.zeros(self.actor.n_agents, self.actor.action_dim)  # [N, A]
        for i, size in enumerate(self.action_sizes):
            self.action_mask[i, :size] = 1.0

    def in_layout(self, spec: TaskSpec) -> "CheckpointPolicy":
        """Act in ``spec``'s action layout: an "mpe2" actor's actions become the "force" actions that move the
        agents the same way (``offline_bench.envs.mpe.mpe2_to_force``), before the noise is added. In place."""
        from offline_bench.envs.mpe import layout_converter

        convert = layout_converter(self.action_layout, spec.action_layout, spec.action_dim)  # ValueError if none
        if convert is None:
            return self
        self.convert = lambda action: torch.from_numpy(convert(action.numpy()))  # noqa: E731
        self.action_sizes, self.action_layout = tuple(spec.action_sizes), spec.action_layout
        self.action_mask = torch.from_numpy(spec.action_mask())  # [N, A]
        return self

    @property
    def n_agents(self) -> int:
        return self.actor.n_agents

    @property
    def obs_dim(self) -> int:
        return self.actor.obs_dim

    @property
    def action_dim(self) -> int:
        return int(self.action_mask.shape[1])

    def seed(self, seed: int) -> None:
        self.noise_seed = int(seed)
        self.generator = torch.Generator().manual_seed(seed)

    def describe(self) -> dict[str, Any]:
        """What a dataset manifest records about this policy (``offline_bench.data.policy.BehaviourPolicy``)."""
        return {
            "name": "checkpoint",
            "kind": type(self.actor).__name__,
            "network": f"per-agent MLP obs({self.obs_dim}) -> {list(self.meta.get('hidden_sizes', []))} relu -> "
            f"action({self.action_dim}), tanh",
            "task": self.meta.get("task"),
            "quality": self.meta.get("quality"),
            "train_step": self.meta.get("step"),
            "sha256": self.sha256,
            "noise": f"actions = clip(tanh(mean) + {self.noise} * N(0, 1), -1, 1)" if self.noise else "none",
            **({"action_layout": f"trained in the {self.meta.get('action_layout', LEGACY_ACTION_LAYOUT)} layout, "
                                 f"its actions converted to the {self.action_layout} layout before the noise"}
               if self.convert is not None else {}),
            "noise_seed": getattr(self, "noise_seed", None),
            "trained": True,
        }

    @torch.no_grad()
    def act(self, obs: np.ndarray | torch.Tensor) -> np.ndarray:
        x = torch.as_tensor(np.asarray(obs, dtype=np.float32))
        if x.dim() != 3 or x.shape[1:] != (self.n_agents, self.obs_dim):
            raise ValueError(
                f"policy expects obs [E, {self.n_agents}, {self.obs_dim}], got {tuple(x.shape)}; "
                "is this the policy of another task?"
            )
        action = self.actor(x)  # [E, N, A']
        if self.convert is not None:
            action = self.convert(action)  # [E, N, A]
        if self.noise > 0:
            if self.generator is None:
                self.generator = torch.Generator().manual_seed(0)
            action = action + self.noise * torch.randn(action.shape, generator=self.generator)  # [E, N, A]
            action = action.clamp(-1.0, 1.0)
        return (action * self.action_mask).numpy()

    __call__ = act

    def as_opponent(self) -> Any:
        """The env adapters' opponent callable: ``obs [M, O_opp] -> actions [M, A_opp]`` (M opponents = N here)."""

        def opponent(obs: np.ndarray) -> np.ndarray:
            return self.act(np.asarray(obs, np.float32)[None])[0]  # [M, A]

        return opponent


def build_actor(payload: dict[str, Any]) -> nn.Module:
    args = (payload["n_agents"], payload["obs_dim"], payload["action_dim"], tuple(payload["hidden_sizes"]))
    # Building the network draws initial weights; fork the generator so loading a policy (e.g. to measure it in
    # the middle of a training run) never changes the caller's random stream.
    with torch.random.fork_rng(devices=[]):
        actor: nn.Module = GaussianActor(*args) if payload["kind"] == "gaussian" else DeterministicActor(*args)
    actor.load_state_dict(payload["state_dict"])
    return actor


def load_policy_file(path: str | os.PathLike[str], noise: float = 0.0, expected_sha256: str | None = None) -> CheckpointPolicy:
    """Load a policy file; with ``expected_sha256`` refuse a file whose hash differs."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no behaviour policy file at {path}; re-run `offline-bench behaviour train` or restore it")
    sha = file_sha256(path)
    if expected_sha256 and sha != expected_sha256:
        raise ValueError(
            f"{path} has sha256 {sha[:12]}..., the index expects {expected_sha256[:12]}...; "
            "restore the committed file (git checkout) or retrain with `offline-bench behaviour train`"
        )
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("format") != POLICY_FORMAT:
        raise ValueError(f"{path} has policy format {payload.get('format')}, this version reads {POLICY_FORMAT}")
    meta = dict(payload["meta"], hidden_sizes=list(payload["hidden_sizes"]))
    return CheckpointPolicy(build_actor(payload), tuple(payload["action_sizes"]), meta, noise=noise, sha256=sha)


def read_index(root: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    path = Path(root or policies_root()) / INDEX_NAME
    if not path.exists():
        return {"format": POLICY_FORMAT, "tasks": {}}
    return json.loads(path.read_text())


def write_index(index: dict[str, Any], root: str | os.PathLike[str] | None = None) -> None:
    atomic_write_text(Path(root or policies_root()) / INDEX_NAME, json.dumps(index, indent=2, sort_keys=True) + "\n")


def policy_entry(task: str, quality: str, root: str | os.PathLike[str] | None = None) -> dict[str, Any] | None:
    """The index entry of a committed policy (file, sha256, steps, returns, ...) or None."""
    return read_index(root).get("tasks", {}).get(task, {}).get(quality)


def load_policy(
    task: str, quality: str, noise: float = 0.0, root: str | os.PathLike[str] | None = None
) -> CheckpointPolicy | None:
    """The committed behaviour policy of ``task`` for ``quality`` (medium, expert, opponent), or None if none is
    committed yet. Checks the file's sha256 against the index."""
    if quality not in QUALITIES:
        raise ValueError(f"unknown policy quality {quality!r}; choose one of: {', '.join(QUALITIES)}")
    entry = policy_entry(task, quality, root)
    if entry is None:
        return None
    path = Path(root or policies_root()) / entry["file"]
    policy = load_policy_file(path, noise=noise, expected_sha256=entry["sha256"])
    policy.meta.update(task=task, quality=quality)
    return policy
