"""Behaviour policies that generate datasets, and the factory registry recipes name them by.

A behaviour policy maps a batch of observations from E envs in lock-step to actions:
``act(obs [E, N, O]) -> [E, N, A]`` float32 in [-1, 1], drawing any randomness from its own seeded generator, and
``describe()`` returns what the manifest records about it (network, seeds, noise, checkpoint hash...).

A recipe names its policy (``Recipe.policy``) and parameters; ``make_policy`` looks the name up in
``POLICY_FACTORIES``. A checkpoint-backed policy (behaviour-data issue) plugs in with
``register_policy("checkpoint", factory)`` where ``factory(spec, params, init_seed, noise_seed)`` returns an object
with ``act`` and ``describe``.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import torch

from offline_bench.envs.base import TaskSpec
from offline_bench.nn import StackedMLP


class BehaviourPolicy(Protocol):
    def act(self, obs: np.ndarray) -> np.ndarray:
        """``[E, N, O]`` float32 -> ``[E, N, A]`` float32 in [-1, 1]."""
        ...

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable facts for the manifest."""
        ...


PolicyFactory = Callable[[TaskSpec, dict[str, Any], int, int], BehaviourPolicy]


class RandomInitPolicy:
    """An untrained SAC-style tanh-Gaussian actor, one network per agent, sampled stochastically.

    Weights get PyTorch's default ``nn.Linear`` initialisation drawn from ``init_seed`` (the global torch generator
    is left untouched); sampling noise comes from a generator seeded with ``noise_seed``. Observations past an
    agent's true size are zero padding, so they contribute nothing beyond a constant.
    """

    def __init__(
        self,
        spec: TaskSpec,
        init_seed: int,
        noise_seed: int,
        hidden_sizes: tuple[int, ...] = (256, 256),
        log_std_range: tuple[float, float] = (-20.0, 2.0),
        activation: str = "relu",
    ) -> None:
        if activation != "relu":
            raise ValueError(f"random-init-mlp supports activation 'relu' only, got {activation!r}")
        self.spec = spec
        self.init_seed, self.noise_seed = int(init_seed), int(noise_seed)
        self.hidden_sizes = tuple(int(h) for h in hidden_sizes)
        self.log_std_range = (float(log_std_range[0]), float(log_std_range[1]))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.init_seed)
            self.net = StackedMLP(spec.n_agents, spec.obs_dim, self.hidden_sizes, 2 * spec.action_dim)
        self.net.requires_grad_(False)
        self.generator = torch.Generator().manual_seed(self.noise_seed)

    def act(self, obs: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(obs, dtype=torch.float32).transpose(0, 1)  # [N, E, O]
        out = self.net(x)  # [N, E, 2A]
        mean, log_std = out.chunk(2, dim=-1)  # [N, E, A] each
        log_std = log_std.clamp(*self.log_std_range)
        noise = torch.randn(mean.shape, generator=self.generator)  # [N, E, A]
        action = torch.tanh(mean + log_std.exp() * noise)  # [N, E, A]
        return action.transpose(0, 1).contiguous().numpy()  # [E, N, A]

    def describe(self) -> dict[str, Any]:
        return {
            "name": "random-init-mlp",
            "network": f"per-agent MLP obs({self.spec.obs_dim}) -> {list(self.hidden_sizes)} relu -> "
            f"mean({self.spec.action_dim}), log_std({self.spec.action_dim}); torch nn.Linear default init",
            "init_seed": self.init_seed,
            "noise": f"tanh(mean + exp(clamp(log_std, {self.log_std_range[0]}, {self.log_std_range[1]})) * N(0, 1))",
            "noise_seed": self.noise_seed,
            "trained": False,
        }


class UniformPolicy:
    """Uniform actions over the simulator's own action box (``offline_bench.envs.uniform_box_actions``): the
    reference random policy of the measured random returns, the same in every action layout. Padding is zero."""

    def __init__(self, spec: TaskSpec, seed: int) -> None:
        self.spec = spec
        self.seed = int(seed)
        self.rng = np.random.default_rng(self.seed)

    def act(self, obs: np.ndarray) -> np.ndarray:
        from offline_bench.envs import uniform_box_actions

        return uniform_box_actions(self.spec, self.rng, obs.shape[0])  # [E, N, A]

    def describe(self) -> dict[str, Any]:
        noise = "uniform in [-1, 1] per action dim"
        if self.spec.action_layout == "force":
            noise = "uniform over mpe2's own action box (the mpe2 layout), as the force-layout action that equals it"
        return {"name": "uniform", "noise": noise, "seed": self.seed, "trained": False}


def _random_init_factory(spec: TaskSpec, params: dict[str, Any], init_seed: int, noise_seed: int) -> BehaviourPolicy:
    return RandomInitPolicy(
        spec,
        init_seed,
        noise_seed,
        hidden_sizes=tuple(params.get("hidden_sizes", (256, 256))),
        log_std_range=tuple(params.get("log_std_range", (-20.0, 2.0))),
        activation=params.get("activation", "relu"),
    )


def _uniform_factory(spec: TaskSpec, params: dict[str, Any], init_seed: int, noise_seed: int) -> BehaviourPolicy:
    return UniformPolicy(spec, noise_seed)


POLICY_FACTORIES: dict[str, PolicyFactory] = {
    "random-init-mlp": _random_init_factory,
    "uniform": _uniform_factory,
}


def register_policy(name: str, factory: PolicyFactory) -> None:
    """Make ``name`` usable as ``Recipe.policy``."""
    POLICY_FACTORIES[name] = factory


def make_policy(name: str, spec: TaskSpec, params: dict[str, Any], init_seed: int, noise_seed: int) -> BehaviourPolicy:
    """Build the behaviour policy a recipe names; raises listing the known names."""
    if name not in POLICY_FACTORIES:
        raise KeyError(f"unknown behaviour policy {name!r}; registered: {', '.join(sorted(POLICY_FACTORIES))}")
    return POLICY_FACTORIES[name](spec, params, init_seed, noise_seed)
