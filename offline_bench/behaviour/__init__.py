"""Behaviour policies: online SAC (single-agent) and MATD3 (multi-agent) trainers, and the committed checkpoints
under ``datasets/policies/`` that the medium, mixed and expert datasets are made from.

    from offline_bench.behaviour import load_policy
    policy = load_policy("hopper", "medium", noise=0.1)   # None until that policy is committed
    actions = policy.act(obs)                            # [E, N, O] -> [E, N, A] in [-1, 1]

Train with ``offline-bench behaviour train <task>``; export into ``datasets/policies`` with
``offline-bench behaviour export <task>``.
"""
from __future__ import annotations

from typing import Any

from offline_bench.behaviour.policy import CheckpointPolicy, load_policy, load_policy_file, policy_entry, read_index

__all__ = [
    "BehaviourTrainer",
    "CheckpointPolicy",
    "TrainerConfig",
    "collect_mixed",
    "default_config",
    "load_policy",
    "load_policy_file",
    "policy_entry",
    "read_index",
    "register_behaviour_recipes",
]


def __getattr__(name: str) -> Any:  # the trainer and the data-layer glue import the simulators: load them lazily
    if name in ("BehaviourTrainer", "TrainerConfig", "default_config"):
        from offline_bench.behaviour import trainer

        return getattr(trainer, name)
    if name in ("collect_mixed", "register_behaviour_recipes"):
        from offline_bench.behaviour import recipes

        return getattr(recipes, name)
    raise AttributeError(f"module 'offline_bench.behaviour' has no attribute {name!r}")
