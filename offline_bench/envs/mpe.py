"""Multi-agent particle envs (mpe2, continuous actions): spread, tag and world, behind the multi-agent contract.

- Actions: mpe2's continuous actions are ``Box(0, 1, [5])`` (no-op, +x, -x, +y, -y forces; world's leader has 9,
  the last 4 being its communication channel). The interface's [-1, 1] maps linearly: -1 -> 0, +1 -> 1.
- Learning agents and opponents: spread has 3 learning agents; in tag the 3 adversaries (predators) learn and the
  good agent (prey) is an opponent; in world the leader and 3 adversaries learn and the 2 fast good agents are
  opponents. mpe2's ``step`` needs an action for every live agent, so the adapter asks the opponent policy for the
  opponents' actions: ``opponent(obs [M, O_opp]) -> actions [M, A_opp]`` in [-1, 1]. Without one, opponents act
  uniformly at random from a generator reseeded by every ``reset(seed)`` (so episodes stay deterministic).
  An opponent with a ``reset(seed: int)`` method is called on every reset too. Replace it any time with
  ``env.opponent = policy`` (``None`` restores the random one); ``env.opponent_spec`` gives the sizes.
- Episodes: 25 steps (``max_cycles``); they end by truncation only (``terminated`` is always False).
- Rewards: each learning agent's own mpe2 reward; opponents' rewards are in ``info["opponent_reward"]``.
"""
from __future__ import annotations

import contextlib
import functools
import io
import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from offline_bench.envs._common import BoxMap, EpisodeClock, check_action, pad_rows
from offline_bench.envs.base import Env, StepResult
from offline_bench.envs.tasks import MPE_EPISODE_LENGTH, OPPONENTS, OpponentSpec, task_spec

log = logging.getLogger(__name__)

Opponent = Callable[[np.ndarray], np.ndarray]

# The learning agents come first in each env's possible_agents; opponents after them.
_MPE_ENVS: dict[str, tuple[str, dict[str, Any]]] = {
    "spread": ("simple_spread_v3", {"N": 3, "local_ratio": 0.5}),
    "tag": ("simple_tag_v3", {"num_good": 1, "num_adversaries": 3, "num_obstacles": 2}),
    "world": (
        "simple_world_comm_v3",
        {"num_good": 2, "num_adversaries": 4, "num_obstacles": 1, "num_food": 2, "num_forests": 2},
    ),
}


class RandomOpponent:
    """Uniformly random actions in [-1, 1], from a generator reseeded by the env's reset seed."""

    def __init__(self, action_size: int) -> None:
        self.action_size = action_size
        self.rng = np.random.default_rng(0)

    def reset(self, seed: int) -> None:
        # A stream of its own, so it is not the same stream as anything else seeded with the same integer.
        self.rng = np.random.default_rng([int(seed), 0x0B0])

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return self.rng.uniform(-1.0, 1.0, size=(obs.shape[0], self.action_size)).astype(np.float32)  # [M, A_opp]


@functools.cache
def _mpe_module(module_name: str) -> Any:
    import importlib

    return importlib.import_module(f"mpe2.{module_name}")


def _is_collision(agent1: Any, agent2: Any) -> bool:
    """mpe2's ``Scenario.is_collision`` (the same code in spread, tag and world): ``sqrt(sum((p1 - p2)^2)) < size1 +
    size2``, on the same float64 numbers in the same order, without numpy's reduction machinery for two elements
    (it was about half of a world step, which checks every agent against every forest in every observation)."""
    dx, dy = (agent1.state.p_pos - agent2.state.p_pos).tolist()
    return math.sqrt(dx * dx + dy * dy) < agent1.size + agent2.size


def _raw_env(module_name: str, **kwargs: Any) -> Any:
    """mpe2's unwrapped env for ``_ParallelStepper``, with ``_is_collision`` in place of its scenario's own."""
    raw = _mpe_module(module_name).raw_env(continuous_actions=True, max_cycles=MPE_EPISODE_LENGTH, **kwargs)
    if raw.world.dim_p == 2 and hasattr(raw.scenario, "is_collision"):
        raw.scenario.is_collision = _is_collision  # this instance only
    return raw


class _ParallelStepper:
    """mpe2's raw AEC env stepped a whole joint action at a time: what pettingzoo's ``parallel_env`` does (its
    ``aec_to_parallel`` over ``OrderEnforcingWrapper(ClipOutOfBoundsWrapper(raw_env))``), minus two costs.

    - ``aec_to_parallel.step`` calls ``last()`` before every agent's sub-step: an observation of that agent that it
      throws away, which doubles the observation work (a third of a world step).
    - Every attribute access goes through two wrappers' ``__getattr__`` (a third of a spread step).

    Otherwise the same calls in the same order: actions clipped to each agent's Box as ``ClipOutOfBoundsWrapper``
    does, the agents stepped in ``agent_selection`` order, the joint reward read after the last sub-step (mpe2 clears
    the rewards on the others), every agent observed after the world step. So episodes are the same, bit for bit
    (``tests/test_envs.py`` compares them with ``parallel_env``).
    """

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.possible_agents: list[str] = list(raw.possible_agents)
        self._bounds = {a: (raw.action_space(a).low, raw.action_space(a).high) for a in self.possible_agents}

    def action_space(self, agent: str) -> Any:
        return self.raw.action_space(agent)

    def observation_space(self, agent: str) -> Any:
        return self.raw.observation_space(agent)

    def reset(self, seed: int) -> dict[str, np.ndarray]:
        raw = self.raw
        raw.reset(seed=seed)
        return {a: raw.observe(a) for a in raw.agents}

    def step(
        self, actions: dict[str, np.ndarray]
    ) -> tuple[dict[str, np.ndarray], dict[str, float], dict[str, bool], dict[str, bool]]:
        raw = self.raw
        for _ in range(len(raw.agents)):
            agent = raw.agent_selection
            low, high = self._bounds[agent]
            raw.step(np.clip(actions[agent], low, high))
        observations = {a: raw.observe(a) for a in raw.agents}
        return observations, dict(raw.rewards), dict(raw.terminations), dict(raw.truncations)

    def close(self) -> None:
        self.raw.close()


class MPEEnv(Env):
    """One mpe2 env, stepped in parallel, with its learning agents at the interface and its opponents inside."""

    def __init__(self, name: str, opponent: Opponent | None = None) -> None:
        if name not in _MPE_ENVS:
            raise KeyError(f"{name!r} is not an MPE task; MPE tasks: {', '.join(_MPE_ENVS)}")
        self.spec = task_spec(name)
        module_name, kwargs = _MPE_ENVS[name]
        self._env = _ParallelStepper(_raw_env(module_name, **kwargs))
        agents = list(self._env.possible_agents)
        self.agents = agents[: self.spec.n_agents]  # learning agents, in interface row order
        self.opponent_names = agents[self.spec.n_agents :]
        self.opponent_spec: OpponentSpec | None = OPPONENTS.get(name)
        if (self.opponent_spec is None) != (not self.opponent_names):
            raise RuntimeError(f"{name}: mpe2 agents {agents} do not match the task's opponent spec")
        if self.opponent_spec is not None and tuple(self.opponent_names) != self.opponent_spec.names:
            raise RuntimeError(f"{name}: mpe2 opponents {self.opponent_names} != {self.opponent_spec.names}")
        spaces = {a: self._env.action_space(a) for a in agents}
        self.env_action_bounds = [(spaces[a].low, spaces[a].high) for a in self.agents]
        self._to_env = BoxMap(*zip(*self.env_action_bounds), width=self.spec.action_dim)  # type: ignore[arg-type]
        self._opp_to_env: BoxMap | None = None
        if self.opponent_spec is not None:
            self._opp_to_env = BoxMap(
                [spaces[a].low for a in self.opponent_names],
                [spaces[a].high for a in self.opponent_names],
                width=self.opponent_spec.action_size,
            )
        self._opponent: Opponent | None = None
        self.opponent = opponent
        self._clock = EpisodeClock(name, self.spec.episode_length)
        self._opp_obs: np.ndarray | None = None

    @property
    def opponent(self) -> Opponent | None:
        """The policy driving the opponents (None for spread, which has none)."""
        return self._opponent

    @opponent.setter
    def opponent(self, policy: Opponent | None) -> None:
        if self.opponent_spec is None:
            if policy is not None:
                raise ValueError(f"{self.spec.name} has no opponents; pass opponent=None")
            return
        if policy is not None and not callable(policy):
            raise TypeError(f"opponent must be callable obs [M, O] -> actions [M, A], got {type(policy).__name__}")
        self._opponent = policy if policy is not None else RandomOpponent(self.opponent_spec.action_size)

    def reset(self, seed: int) -> np.ndarray:
        observations = self._env.reset(seed=int(seed))
        if self._opponent is not None and hasattr(self._opponent, "reset"):
            self._opponent.reset(int(seed))
        self._clock.start()
        return self._split(observations)

    def _split(self, observations: dict[str, np.ndarray]) -> np.ndarray:
        """Learning agents' rows ``[N, O]`` (zero-padded); keeps the opponents' ``[M, O_opp]`` for their policy."""
        if self.opponent_names:
            self._opp_obs = np.stack(
                [np.asarray(observations[a], dtype=np.float32) for a in self.opponent_names]
            )  # [M, O_opp]
        return pad_rows([np.asarray(observations[a], dtype=np.float32) for a in self.agents], self.spec.obs_dim)

    def step(self, action: np.ndarray) -> StepResult:
        action = check_action(action, self.spec)  # [N, A]
        self._clock.tick()
        actions = dict(zip(self.agents, self._to_env(action)))
        if self.opponent_names:
            assert self._opponent is not None and self._opp_obs is not None and self.opponent_spec is not None
            assert self._opp_to_env is not None
            opp_action = np.asarray(self._opponent(self._opp_obs), dtype=np.float32)  # [M, A_opp]
            expected = (self.opponent_spec.n_agents, self.opponent_spec.action_size)
            if opp_action.shape != expected or not np.isfinite(opp_action).all():
                raise ValueError(
                    f"{self.spec.name}: the opponent policy must return finite actions of shape {list(expected)}, "
                    f"got shape {list(opp_action.shape)}"
                )
            actions.update(zip(self.opponent_names, self._opp_to_env(np.clip(opp_action, -1.0, 1.0))))
        observations, rewards, terminations, truncations = self._env.step(actions)
        obs = self._split(observations)  # [N, O]
        reward = np.asarray([rewards[a] for a in self.agents], dtype=np.float32)  # [N]
        terminated = any(bool(terminations[a]) for a in self.agents)
        truncated = not terminated and (
            self._clock.t >= self.spec.episode_length or any(bool(truncations[a]) for a in self.agents)
        )
        if terminated or truncated:
            self._clock.stop()
        info: dict[str, Any] = {"t": self._clock.t}
        if self.opponent_names:
            info["opponent_reward"] = np.asarray([rewards[a] for a in self.opponent_names], dtype=np.float32)
        return StepResult(obs=obs, reward=reward, terminated=terminated, truncated=truncated, info=info)

    def close(self) -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            self._env.close()
