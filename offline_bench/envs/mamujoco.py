"""Multi-agent MuJoCo (gymnasium-robotics ``mamujoco_v1``): halfcheetah-2x3, behind the multi-agent contract.

- ``mamujoco_v1.parallel_env("HalfCheetah", "2x3")`` with its defaults (``agent_obsk=1``): agent 0 drives the
  back leg's 3 joints, agent 1 the front leg's; each sees 12 local features. Observations come as float64 and
  are returned as float32.
- Reward: the shared team reward (HalfCheetah-v5's forward reward minus control cost), the same for both agents.
- Episodes: 1000 steps; HalfCheetah never terminates early, so episodes end by truncation.
- MuJoCo's default warning handler prints and appends to ``MUJOCO_LOG.TXT`` in the working directory (loading
  the model triggers a deprecation warning). ``_route_mujoco_warnings`` installs, once per process and only if no
  handler is set yet, a handler that sends warnings to this module's logger instead, so no file is written.
- Importing gymnasium-robotics prints a notice to stderr; the import is silenced.
"""
from __future__ import annotations

import functools
import logging
from typing import Any

import numpy as np

from offline_bench.envs._common import BoxMap, EpisodeClock, check_action, pad_rows, silence_output
from offline_bench.envs.base import Env, StepResult
from offline_bench.envs.tasks import task_spec

log = logging.getLogger(__name__)

_MAMUJOCO_ENVS: dict[str, tuple[str, str]] = {"halfcheetah-2x3": ("HalfCheetah", "2x3")}


def _log_mujoco_warning(message: str) -> None:
    # The HalfCheetah model's 'settotalmass' deprecation fires on every load: not worth a user's attention.
    level = logging.DEBUG if "deprecated" in message else logging.WARNING
    log.log(level, "mujoco: %s", message.strip())


@functools.cache
def _route_mujoco_warnings() -> None:
    import mujoco

    if mujoco.get_mju_user_warning() is None:
        mujoco.set_mju_user_warning(_log_mujoco_warning)


@functools.cache
def _mamujoco() -> Any:
    _route_mujoco_warnings()
    with silence_output():
        from gymnasium_robotics import mamujoco_v1
    return mamujoco_v1


class MaMuJoCoEnv(Env):
    """A mamujoco parallel env: obs ``[N, O]``, action ``[N, A]`` in [-1, 1], team reward repeated per agent."""

    def __init__(self, name: str) -> None:
        if name not in _MAMUJOCO_ENVS:
            raise KeyError(f"{name!r} is not a MaMuJoCo task; MaMuJoCo tasks: {', '.join(_MAMUJOCO_ENVS)}")
        self.spec = task_spec(name)
        scenario, conf = _MAMUJOCO_ENVS[name]
        self._env = _mamujoco().parallel_env(scenario, conf)
        self.agents = list(self._env.possible_agents)
        if len(self.agents) != self.spec.n_agents:
            raise RuntimeError(f"{name}: mamujoco has agents {self.agents}, the task expects {self.spec.n_agents}")
        self.env_action_bounds = [(self._env.action_space(a).low, self._env.action_space(a).high) for a in self.agents]
        self._to_env = BoxMap(*zip(*self.env_action_bounds), width=self.spec.action_dim)  # type: ignore[arg-type]
        self._clock = EpisodeClock(name, self.spec.episode_length)

    def reset(self, seed: int) -> np.ndarray:
        observations, _ = self._env.reset(seed=int(seed))
        self._clock.start()
        return pad_rows([np.asarray(observations[a], dtype=np.float32) for a in self.agents], self.spec.obs_dim)

    def step(self, action: np.ndarray) -> StepResult:
        action = check_action(action, self.spec)  # [N, A]
        self._clock.tick()
        actions = dict(zip(self.agents, self._to_env(action)))
        observations, rewards, terminations, truncations, _ = self._env.step(actions)
        obs = pad_rows([np.asarray(observations[a], dtype=np.float32) for a in self.agents], self.spec.obs_dim)
        reward = np.asarray([rewards[a] for a in self.agents], dtype=np.float32)  # [N]
        terminated = any(bool(terminations[a]) for a in self.agents)
        truncated = not terminated and (
            self._clock.t >= self.spec.episode_length or any(bool(truncations[a]) for a in self.agents)
        )
        if terminated or truncated:
            self._clock.stop()
        return StepResult(obs=obs, reward=reward, terminated=terminated, truncated=truncated, info={"t": self._clock.t})

    def close(self) -> None:
        self._env.close()
