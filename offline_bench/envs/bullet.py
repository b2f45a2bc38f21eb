"""PyBullet locomotion (hopper, halfcheetah, walker2d, ant) behind the multi-agent contract, as the N = 1 case.

The env classes live in ``pybullet_envs.gym_locomotion_envs`` (pybullet 3.2.7), but ``pybullet_envs/__init__.py``
imports the old ``gym`` package (not installed; it only registers env ids) and ``env_bases.py`` imports
``pkg_resources`` (gone from recent setuptools) for one version check. ``_import_locomotion`` therefore:

- registers ``pybullet_envs`` as a bare package pointing at the installed directory, so its ``__init__`` (the
  gym registrations) never runs; this stays in ``sys.modules`` so the submodules' own absolute imports resolve;
- installs, only while the submodules import, a fake ``gym`` with exactly what they touch (``gym.Env`` as a
  plain base class, ``gym.spaces.Box`` = gymnasium's Box, ``gym.utils.seeding.np_random`` = gymnasium's, and a
  ``__version__``) and a fake ``pkg_resources.parse_version``; both are removed again afterwards, so nothing
  else in the process can mistake them for the real packages;
- restores ``sys.path``, to which the submodules add their own directory and its parent (they then import
  ``robot_bases`` / ``robot_locomotors`` as top-level modules, which stay loaded);
- silences file descriptors 1 and 2, since importing pybullet prints its build time from C.

Episodes: ``terminated`` is the env's own ``done`` (the robot fell; halfcheetah never falls), ``truncated`` is
reaching ``spec.episode_length`` = 1000 steps without having fallen (so at most one of the two flags is set).
Seeding: ``reset(seed)`` reseeds the env's generator, which draws the initial joint perturbation; the physics is
deterministic, so the same seed and actions give the same trajectory on a fresh or a reused env.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import sys
import types
from typing import Any

import numpy as np

from offline_bench.envs._common import BoxMap, EpisodeClock, check_action, silence_output
from offline_bench.envs.base import Env, StepResult
from offline_bench.envs.tasks import task_spec

log = logging.getLogger(__name__)

class _Discard:
    """A write-only text sink, cheaper per step than a StringIO that grows."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


_DISCARD = _Discard()

BULLET_CLASSES = {
    "hopper": "HopperBulletEnv",
    "halfcheetah": "HalfCheetahBulletEnv",
    "walker2d": "Walker2DBulletEnv",
    "ant": "AntBulletEnv",
}


def _fake_gym() -> dict[str, types.ModuleType]:
    """The part of the old ``gym`` API that the locomotion modules use, built on gymnasium."""
    import gymnasium.spaces
    import gymnasium.utils.seeding

    gym = types.ModuleType("gym")
    spaces = types.ModuleType("gym.spaces")
    utils = types.ModuleType("gym.utils")
    seeding = types.ModuleType("gym.utils.seeding")

    class Env:  # the locomotion envs only inherit it for the name; all behaviour is their own
        pass

    gym.Env = Env  # type: ignore[attr-defined]
    gym.__version__ = "0.21.0"  # type: ignore[attr-defined]  # env_bases compares it with 0.9.6
    spaces.Box = gymnasium.spaces.Box  # type: ignore[attr-defined]
    seeding.np_random = gymnasium.utils.seeding.np_random  # type: ignore[attr-defined]
    gym.spaces, gym.utils, utils.seeding = spaces, utils, seeding  # type: ignore[attr-defined]

    pkg_resources = types.ModuleType("pkg_resources")

    def parse_version(version: str) -> tuple[int, ...]:
        return tuple(int(part) for part in version.split(".") if part.isdigit())

    pkg_resources.parse_version = parse_version  # type: ignore[attr-defined]
    return {"gym": gym, "gym.spaces": spaces, "gym.utils": utils, "gym.utils.seeding": seeding,
            "pkg_resources": pkg_resources}


@functools.cache
def _import_locomotion() -> types.ModuleType:
    """Import ``pybullet_envs.gym_locomotion_envs`` without old gym; see the module docstring."""
    with silence_output():
        import pybullet  # noqa: F401 - prints its build time from C on first import

        import pybullet_data

    if "pybullet_envs" not in sys.modules:
        import importlib.util

        found = importlib.util.find_spec("pybullet_envs")
        if found is None or not found.submodule_search_locations:
            raise ImportError("pybullet_envs is missing: install pybullet==3.2.7 (pip install pybullet)")
        package = types.ModuleType("pybullet_envs")
        package.__path__ = list(found.submodule_search_locations)
        package.__file__ = found.origin
        sys.modules["pybullet_envs"] = package

    fakes = {name: module for name, module in _fake_gym().items() if name not in sys.modules}
    saved_path = list(sys.path)
    sys.modules.update(fakes)
    try:
        with silence_output():
            module = importlib.import_module("pybullet_envs.gym_locomotion_envs")
    finally:
        for name in fakes:
            sys.modules.pop(name, None)
        sys.path[:] = saved_path
    log.debug("loaded pybullet locomotion envs from %s (data %s)", module.__file__, pybullet_data.getDataPath())
    return module


class BulletLocomotionEnv(Env):
    """One PyBullet locomotion robot, as a 1-agent env: obs ``[1, O]``, action ``[1, A]`` in [-1, 1]."""

    def __init__(self, name: str) -> None:
        if name not in BULLET_CLASSES:
            raise KeyError(f"{name!r} is not a PyBullet task; PyBullet tasks: {', '.join(BULLET_CLASSES)}")
        self.spec = task_spec(name)
        env_class = getattr(_import_locomotion(), BULLET_CLASSES[name])
        with silence_output():
            self._env = env_class(render=False)
            # The first reset loads the robot and saves the physics state; every later reset restores that state
            # first. The two paths differ in the last float bit (ant), so run the first one here: then every
            # reset(seed) takes the same path, and a fresh env and a reused one give identical trajectories.
            self._env.seed(0)
            self._env.reset()
        # The robot's own bounds ([-1, 1]: torques are action * power); kept general in case a robot differs.
        self.env_action_bounds = [(self._env.action_space.low, self._env.action_space.high)]
        self._to_env = BoxMap(*zip(*self.env_action_bounds), width=self.spec.action_dim)  # type: ignore[arg-type]
        self._clock = EpisodeClock(name, self.spec.episode_length)

    def reset(self, seed: int) -> np.ndarray:
        self._env.seed(int(seed))
        state = self._env.reset()
        self._clock.start()
        return np.asarray(state, dtype=np.float32)[None]  # [1, O]

    def step(self, action: np.ndarray) -> StepResult:
        action = check_action(action, self.spec)  # [1, A]
        self._clock.tick()
        env_action = self._to_env(action)[0]  # [A]
        with contextlib.redirect_stdout(_DISCARD):  # the env prints "~INF~" from Python if the physics blows up
            state, reward, done, _ = self._env.step(env_action)
        terminated = bool(done)
        truncated = not terminated and self._clock.t >= self.spec.episode_length
        if terminated or truncated:
            self._clock.stop()
        info: dict[str, Any] = {"t": self._clock.t}
        return StepResult(
            obs=np.asarray(state, dtype=np.float32)[None],  # [1, O]
            reward=np.asarray([reward], dtype=np.float32),  # [1]
            terminated=terminated,
            truncated=truncated,
            info=info,
        )

    def close(self) -> None:
        self._env.close()
