"""The eight tasks' static facts, written down so they are known without creating (or importing) any simulator.

``tests/test_envs.py`` checks every entry against the real env, so a simulator upgrade that changes a size fails
loudly instead of silently producing mis-shaped datasets.
"""
from __future__ import annotations

from dataclasses import dataclass

from offline_bench.envs.base import TaskSpec

BULLET_EPISODE_LENGTH = 1000
MPE_EPISODE_LENGTH = 25  # max_cycles of the MPE envs, as in the OMAR / MADDPG papers
MAMUJOCO_EPISODE_LENGTH = 1000


@dataclass(frozen=True)
class OpponentSpec:
    """Sizes of the non-learning agents that act inside an adapter (tag's prey, world's two fast agents).

    An opponent policy maps their observations ``[M, obs_size]`` to actions ``[M, action_size]`` in [-1, 1].
    """

    n_agents: int  # M
    obs_size: int
    action_size: int
    names: tuple[str, ...]  # the simulator's agent names, in the order of the M rows


TASKS: dict[str, TaskSpec] = {
    "hopper": TaskSpec(
        name="hopper",
        n_agents=1,
        obs_sizes=(15,),
        action_sizes=(3,),
        episode_length=BULLET_EPISODE_LENGTH,
        source="pybullet:HopperBulletEnv",
        description="PyBullet Hopper: hop forward without falling; the episode terminates when it falls",
    ),
    "halfcheetah": TaskSpec(
        name="halfcheetah",
        n_agents=1,
        obs_sizes=(26,),
        action_sizes=(6,),
        episode_length=BULLET_EPISODE_LENGTH,
        source="pybullet:HalfCheetahBulletEnv",
        description="PyBullet HalfCheetah: run forward; never terminates early",
    ),
    "walker2d": TaskSpec(
        name="walker2d",
        n_agents=1,
        obs_sizes=(22,),
        action_sizes=(6,),
        episode_length=BULLET_EPISODE_LENGTH,
        source="pybullet:Walker2DBulletEnv",
        description="PyBullet Walker2D: walk forward without falling; the episode terminates when it falls",
    ),
    "ant": TaskSpec(
        name="ant",
        n_agents=1,
        obs_sizes=(28,),
        action_sizes=(8,),
        episode_length=BULLET_EPISODE_LENGTH,
        source="pybullet:AntBulletEnv",
        description="PyBullet Ant: walk forward; the episode terminates when the torso touches the ground",
    ),
    "spread": TaskSpec(
        name="spread",
        n_agents=3,
        obs_sizes=(18, 18, 18),
        action_sizes=(5, 5, 5),
        episode_length=MPE_EPISODE_LENGTH,
        source="mpe2:simple_spread_v3",
        description="MPE cooperative navigation: 3 agents cover 3 landmarks without colliding",
    ),
    "tag": TaskSpec(
        name="tag",
        n_agents=3,
        obs_sizes=(16, 16, 16),
        action_sizes=(5, 5, 5),
        episode_length=MPE_EPISODE_LENGTH,
        source="mpe2:simple_tag_v3",
        description="MPE predator-prey: 3 slow predators chase 1 fast prey (a fixed policy) among 2 obstacles",
    ),
    "world": TaskSpec(
        name="world",
        n_agents=4,
        obs_sizes=(34, 34, 34, 34),
        action_sizes=(9, 5, 5, 5),
        episode_length=MPE_EPISODE_LENGTH,
        source="mpe2:simple_world_comm_v3",
        description=(
            "MPE world with communication: a leader (move + 4-way say) and 3 adversaries chase 2 fast agents "
            "(a fixed policy) among food and forests"
        ),
    ),
    "halfcheetah-2x3": TaskSpec(
        name="halfcheetah-2x3",
        n_agents=2,
        obs_sizes=(12, 12),
        action_sizes=(3, 3),
        episode_length=MAMUJOCO_EPISODE_LENGTH,
        source="gymnasium_robotics:mamujoco_v1 HalfCheetah 2x3",
        description="Multi-agent MuJoCo HalfCheetah: front and back leg (3 joints each), shared team reward",
    ),
}

OPPONENTS: dict[str, OpponentSpec] = {
    "tag": OpponentSpec(n_agents=1, obs_size=14, action_size=5, names=("agent_0",)),
    "world": OpponentSpec(n_agents=2, obs_size=28, action_size=5, names=("agent_0", "agent_1")),
}


def task_spec(name: str) -> TaskSpec:
    """The spec of task ``name``; a KeyError lists the valid names."""
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; valid tasks: {', '.join(TASKS)}") from None
