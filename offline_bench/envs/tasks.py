"""The eight tasks' static facts, written down so they are known without creating (or importing) any simulator.

``tests/test_envs.py`` checks every entry against the real env, so a simulator upgrade that changes a size fails
loudly instead of silently producing mis-shaped datasets.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

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
        action_sizes=(2, 2, 2),
        episode_length=MPE_EPISODE_LENGTH,
        source="mpe2:simple_spread_v3",
        description="MPE cooperative navigation: 3 agents cover 3 landmarks without colliding",
        action_layout="force",
    ),
    "tag": TaskSpec(
        name="tag",
        n_agents=3,
        obs_sizes=(16, 16, 16),
        action_sizes=(2, 2, 2),
        episode_length=MPE_EPISODE_LENGTH,
        source="mpe2:simple_tag_v3",
        description="MPE predator-prey: 3 slow predators chase 1 fast prey (a fixed policy) among 2 obstacles",
        action_layout="force",
    ),
    "world": TaskSpec(
        name="world",
        n_agents=4,
        obs_sizes=(34, 34, 34, 34),
        action_sizes=(6, 2, 2, 2),
        episode_length=MPE_EPISODE_LENGTH,
        source="mpe2:simple_world_comm_v3",
        description=(
            "MPE world with communication: a leader (move + 4-way say) and 3 adversaries chase 2 fast agents "
            "(a fixed policy) among food and forests"
        ),
        action_layout="force",
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


# How the MPE learning agents' interface actions reach mpe2, newest first (``task_spec``'s ``action_layout``):
# - "force": the physical action, a force (x, y) in [-1, 1]^2 per agent (world's leader adds its 4 say channels):
#   the continuous interface of the original MPE that MADDPG and the OMAR paper train on. The default; datasets v1.
# - "mpe2": mpe2's own continuous Box(0, 1)^5 (no-op, -x, +x, -y, +y; the leader adds 4 say) mapped linearly. The
#   no-op dimension moves nothing and each force is the difference of two dimensions, so 3 of the 5 dimensions are
#   free: a conservative critic can rank actions on dimensions no transition constrains (MA-CQL's penalty ran away
#   on medium and expert data). Datasets v0, whose manifests predate the field and do not name it.
# Opponents (tag's prey, world's two fast agents) always act in the "mpe2" layout (``OPPONENTS``), so the stored
# opponents serve every dataset version.
MPE_ACTION_LAYOUTS: tuple[str, ...] = ("force", "mpe2")
LEGACY_ACTION_LAYOUT = "mpe2"
_MPE2_ACTION_SIZES: dict[str, tuple[int, ...]] = {"spread": (5, 5, 5), "tag": (5, 5, 5), "world": (9, 5, 5, 5)}


def task_spec(name: str, action_layout: str | None = None) -> TaskSpec:
    """The spec of task ``name`` in ``action_layout`` (None: the task's default); a KeyError lists the valid names,
    a ValueError the task's layouts."""
    try:
        spec = TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; valid tasks: {', '.join(TASKS)}") from None
    if action_layout is None or action_layout == spec.action_layout:
        return spec
    if name in _MPE2_ACTION_SIZES and action_layout == LEGACY_ACTION_LAYOUT:
        return replace(spec, action_sizes=_MPE2_ACTION_SIZES[name], action_layout=LEGACY_ACTION_LAYOUT)
    layouts = ", ".join(MPE_ACTION_LAYOUTS) if name in _MPE2_ACTION_SIZES else "none besides the default"
    raise ValueError(f"task {name!r} has no action layout {action_layout!r}; its layouts: {layouts}")


def recorded_action_layout(task: str, env_facts: dict[str, object]) -> str | None:
    """The action layout a dataset was collected in, from its manifest's ``env`` facts: ``env.action_layout``, or
    for an MPE file without one (v0, which predates the field) "mpe2"; None for tasks with a single layout."""
    layout = env_facts.get("action_layout")
    if layout is None and task in _MPE2_ACTION_SIZES:
        return LEGACY_ACTION_LAYOUT
    return None if layout is None else str(layout)
