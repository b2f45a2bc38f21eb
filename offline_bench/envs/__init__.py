"""All eight tasks behind one multi-agent interface (see ``offline_bench.envs.base`` for the contract).

    from offline_bench.envs import TASKS, make_env, VectorEnv
    env = make_env("hopper")                 # or "spread", "tag", "world", "halfcheetah-2x3", ...
    obs = env.reset(seed=0)                  # [N, O] float32
    result = env.step(action)                # action [N, A] in [-1, 1]

``TASKS`` and ``task_spec`` need no simulator; ``make_env`` imports only the one the task uses.

Every adapter also has ``env_action_bounds``: per learning agent, the simulator's own ``(low, high)`` that the
interface's -1 / +1 map to. Out-of-range finite actions are clipped to [-1, 1]; NaN/inf or a wrong shape raise
ValueError. Adapters of tag and world have ``opponent_spec`` (an ``OpponentSpec``, also in ``OPPONENTS``) and a
settable ``opponent`` attribute (None restores the seeded random opponent).
Adapters: ``bullet.py`` (hopper, halfcheetah, walker2d, ant), ``mpe.py`` (spread, tag, world),
``mamujoco.py`` (halfcheetah-2x3). ``vector.py`` holds ``VectorEnv``.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from offline_bench.envs.base import Env, StepResult, TaskSpec
from offline_bench.envs.tasks import OPPONENTS, TASKS, OpponentSpec, task_spec
from offline_bench.envs.vector import VectorEnv

__all__ = [
    "OPPONENTS",
    "TASKS",
    "Env",
    "OpponentSpec",
    "StepResult",
    "TaskSpec",
    "VectorEnv",
    "make_env",
    "task_spec",
]

BULLET_TASKS = ("hopper", "halfcheetah", "walker2d", "ant")
MPE_TASKS = ("spread", "tag", "world")
MAMUJOCO_TASKS = ("halfcheetah-2x3",)


def make_env(name: str, opponent: Callable[[np.ndarray], np.ndarray] | None = None) -> Env:
    """A fresh env for task ``name``.

    ``opponent`` drives the non-learning agents of ``tag`` and ``world`` (obs ``[M, O_opp]`` -> actions
    ``[M, A_opp]`` in [-1, 1]; see ``OPPONENTS[name]`` for the sizes); None means uniformly random actions seeded
    by each reset's seed. Tasks without opponents refuse one.
    """
    task_spec(name)  # KeyError listing the valid tasks
    if opponent is not None and name not in OPPONENTS:
        raise ValueError(f"task {name!r} has no opponents; only {', '.join(OPPONENTS)} take an opponent policy")
    if name in BULLET_TASKS:
        from offline_bench.envs.bullet import BulletLocomotionEnv

        return BulletLocomotionEnv(name)
    if name in MPE_TASKS:
        from offline_bench.envs.mpe import MPEEnv

        return MPEEnv(name, opponent=opponent)
    if name in MAMUJOCO_TASKS:
        from offline_bench.envs.mamujoco import MaMuJoCoEnv

        return MaMuJoCoEnv(name)
    raise KeyError(f"task {name!r} has a spec but no adapter")  # pragma: no cover - TASKS and adapters agree
