"""All eight tasks behind one multi-agent interface (see ``offline_bench.envs.base`` for the contract).

    from offline_bench.envs import TASKS, make_env, VectorEnv
    env = make_env("hopper")                 # or "spread", "tag", "world", "halfcheetah-2x3", ...
    obs = env.reset(seed=0)                  # [N, O] float32
    result = env.step(action)                # action [N, A] in [-1, 1]

``TASKS`` and ``task_spec`` need no simulator; ``make_env`` imports only the one the task uses.

Every adapter also has ``env_action_bounds``: per learning agent, the simulator's own ``(low, high)``, which the
interface's -1 / +1 map to except in the MPE tasks' default "force" layout (``mpe.py``; ``action_layout="mpe2"``
maps linearly as every other adapter does). Out-of-range finite actions are clipped to [-1, 1]; NaN/inf or a wrong shape raise
ValueError. Adapters of tag and world have ``opponent_spec`` (an ``OpponentSpec``, also in ``OPPONENTS``) and a
settable ``opponent`` attribute (None restores the seeded random opponent).
Adapters: ``bullet.py`` (hopper, halfcheetah, walker2d, ant), ``mpe.py`` (spread, tag, world),
``mamujoco.py`` (halfcheetah-2x3). ``vector.py`` holds ``VectorEnv``.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from offline_bench.envs.base import Env, StepResult, TaskSpec
from offline_bench.envs.tasks import MPE_ACTION_LAYOUTS, OPPONENTS, TASKS, OpponentSpec, task_spec
from offline_bench.envs.vector import VectorEnv

__all__ = [
    "MPE_ACTION_LAYOUTS",
    "OPPONENTS",
    "TASKS",
    "Env",
    "OpponentSpec",
    "StepResult",
    "TaskSpec",
    "VectorEnv",
    "make_env",
    "task_spec",
    "uniform_box_actions",
]

BULLET_TASKS = ("hopper", "halfcheetah", "walker2d", "ant")
MPE_TASKS = ("spread", "tag", "world")
MAMUJOCO_TASKS = ("halfcheetah-2x3",)


def make_env(
    name: str, opponent: Callable[[np.ndarray], np.ndarray] | None = None, action_layout: str | None = None
) -> Env:
    """A fresh env for task ``name``.

    ``opponent`` drives the non-learning agents of ``tag`` and ``world`` (obs ``[M, O_opp]`` -> actions
    ``[M, A_opp]`` in [-1, 1]; see ``OPPONENTS[name]`` for the sizes); None means uniformly random actions seeded
    by each reset's seed. Tasks without opponents refuse one. ``action_layout`` picks one of the task's action
    layouts (``task_spec``; None: its default); only the MPE tasks have more than one.
    """
    task_spec(name, action_layout)  # KeyError listing the valid tasks, ValueError listing the task's layouts
    if opponent is not None and name not in OPPONENTS:
        raise ValueError(f"task {name!r} has no opponents; only {', '.join(OPPONENTS)} take an opponent policy")
    if name in BULLET_TASKS:
        from offline_bench.envs.bullet import BulletLocomotionEnv

        return BulletLocomotionEnv(name)
    if name in MPE_TASKS:
        from offline_bench.envs.mpe import MPEEnv

        return MPEEnv(name, opponent=opponent, action_layout=action_layout)
    if name in MAMUJOCO_TASKS:
        from offline_bench.envs.mamujoco import MaMuJoCoEnv

        return MaMuJoCoEnv(name)
    raise KeyError(f"task {name!r} has a spec but no adapter")  # pragma: no cover - TASKS and adapters agree


def uniform_box_actions(spec: TaskSpec, rng: np.random.Generator, count: int) -> np.ndarray:
    """``count`` joint actions ``[count, N, A]`` in ``spec``'s layout, uniform over the simulator's own action box:
    uniform in [-1, 1] per dimension, except in the MPE "force" layout, which is not mpe2's box: there uniform
    "mpe2"-layout actions (the same draws from ``rng``) are converted (``mpe.mpe2_to_force``). Padding is zero.
    The random reference returns are measured with these, so they are the same in every layout."""
    from offline_bench.envs.tasks import LEGACY_ACTION_LAYOUT

    box = task_spec(spec.name, LEGACY_ACTION_LAYOUT) if spec.action_layout == "force" else spec
    action = rng.uniform(-1.0, 1.0, size=(count, box.n_agents, box.action_dim)).astype(np.float32)  # [count, N, A']
    if box is not spec:
        from offline_bench.envs.mpe import mpe2_to_force

        action = mpe2_to_force(action, spec.action_dim)  # [count, N, A]
    return action * spec.action_mask()
