"""Multi-agent particle envs (mpe2, continuous actions): spread, tag and world, behind the multi-agent contract.

- Actions, in one of two layouts (``offline_bench.envs.tasks.MPE_ACTION_LAYOUTS``, ``MPEEnv(action_layout=...)``).
  mpe2's continuous action is ``Box(0, 1, [5])``: (no-op, -x, +x, -y, +y), and mpe2 moves an agent by the force
  ``(p[2] - p[1], p[4] - p[3])`` (times its sensitivity); world's leader has 4 more, its say channel.
  - "force" (default): the interface action is the force itself, ``(f_x, f_y)`` in [-1, 1]^2 (the leader adds its
    4 say values), as in the original MPE's continuous mode; ``ForceMap`` writes it as ``p = (0, max(-f_x, 0),
    max(f_x, 0), max(-f_y, 0), max(f_y, 0))`` and the say values linearly (-1 -> 0, +1 -> 1).
  - "mpe2": the interface's [-1, 1] maps linearly onto all of mpe2's Box (-1 -> 0, +1 -> 1), as datasets v0 did.
  ``mpe2_to_force`` turns an "mpe2" action into the "force" action that moves the agent the same way.
  Opponents always act in the "mpe2" layout.
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
from offline_bench.envs.tasks import LEGACY_ACTION_LAYOUT, MPE_EPISODE_LENGTH, OPPONENTS, OpponentSpec, task_spec

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


_MOVE = 5  # mpe2's movement dimensions per agent: no-op, -x, +x, -y, +y
_FORCE = 2  # the "force" layout's movement dimensions: f_x, f_y


class ForceMap:
    """The "force" layout: interface actions ``[K, width]`` (f_x, f_y, then any say values) -> one mpe2 action per
    row (``[5]``, or ``[5 + say]`` for a leader), all rows at once. ``mpe2_sizes`` are the rows' mpe2 action sizes."""

    def __init__(self, mpe2_sizes: list[int]) -> None:
        self.sizes = list(mpe2_sizes)
        self.say = max(self.sizes) - _MOVE  # say dimensions of the widest row (0 without a leader)

    def __call__(self, action: np.ndarray) -> list[np.ndarray]:
        k = action.shape[0]
        out = np.zeros((k, _MOVE + self.say), dtype=np.float32)  # [K, 5 + say]
        force = action[:, :_FORCE]  # [K, 2]
        out[:, 1:_MOVE:2] = np.maximum(-force, 0.0)  # -x, -y
        out[:, 2:_MOVE:2] = np.maximum(force, 0.0)  # +x, +y
        if self.say:
            out[:, _MOVE:] = (action[:, _FORCE : _FORCE + self.say] + 1.0) * 0.5  # [-1, 1] -> [0, 1]
        return [out[i, :size] for i, size in enumerate(self.sizes)]


def mpe2_to_force(action: np.ndarray, force_width: int) -> np.ndarray:
    """Actions in the "mpe2" layout ``[..., 5 + say]`` -> the "force" actions that move the agents the same way,
    ``[..., force_width]`` (f = ((a[2] - a[1]) / 2, (a[4] - a[3]) / 2), say values as they are, zero padding).

    Exact up to float rounding: mpe2 sees ``p = (a + 1) / 2`` and moves by ``p[2] - p[1] = (a[2] - a[1]) / 2``.
    """
    action = np.asarray(action, dtype=np.float32)
    out = np.zeros((*action.shape[:-1], force_width), dtype=np.float32)  # [..., force_width]
    out[..., 0] = (action[..., 2] - action[..., 1]) * 0.5
    out[..., 1] = (action[..., 4] - action[..., 3]) * 0.5
    say = min(action.shape[-1] - _MOVE, force_width - _FORCE)
    if say > 0:
        out[..., _FORCE : _FORCE + say] = action[..., _MOVE : _MOVE + say]
    return out


def layout_converter(source: str | None, target: str | None, width: int) -> Callable[[np.ndarray], np.ndarray] | None:
    """What writes actions of layout ``source`` in layout ``target`` (``[..., A'] -> [..., width]``): None when the
    two are the same; ValueError when no exact conversion exists (only "mpe2" -> "force" does)."""
    if source == target:
        return None
    if (source, target) != (LEGACY_ACTION_LAYOUT, "force"):
        raise ValueError(f"actions in the {source!r} layout cannot be written in the {target!r} layout")
    return functools.partial(mpe2_to_force, force_width=width)


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

    def __init__(self, name: str, opponent: Opponent | None = None, action_layout: str | None = None) -> None:
        if name not in _MPE_ENVS:
            raise KeyError(f"{name!r} is not an MPE task; MPE tasks: {', '.join(_MPE_ENVS)}")
        self.spec = task_spec(name, action_layout)
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
        self._to_env: BoxMap | ForceMap
        if self.spec.action_layout == LEGACY_ACTION_LAYOUT:
            self._to_env = BoxMap(*zip(*self.env_action_bounds), width=self.spec.action_dim)  # type: ignore[arg-type]
        else:
            self._to_env = ForceMap([spaces[a].shape[0] for a in self.agents])
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
