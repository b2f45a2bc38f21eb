"""Opponents of ``tag`` (the prey) and ``world`` (the two fast agents), trained in the behaviour run and frozen.

Stage 1 of a ``tag`` / ``world`` behaviour run trains every agent, learners and opponents, with one MATD3 in a
``CoTrainingEnv``; its opponents' actors are then cut out of the stacked actor and frozen as ``opponent.pt``.
Stage 2 trains fresh learners against that frozen opponent with the task's ordinary env, so every dataset of the
task (random, medium, mixed, expert) is collected against the same opponent.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from offline_bench.algos.common import DeterministicActor
from offline_bench.behaviour.policy import actor_payload, atomic_torch_save
from offline_bench.envs.base import Env, StepResult, TaskSpec


class CoTrainingEnv(Env):
    """A tag / world env whose opponents are extra agents at the interface: rows ``N..N+M-1`` of obs and action.

    Opponents' rewards come from the adapter's ``info["opponent_reward"]``; their observations from the
    observations the adapter hands its opponent policy.
    """

    def __init__(self, task: str, action_layout: str | None = None) -> None:
        from offline_bench.envs import OPPONENTS, make_env

        if task not in OPPONENTS:
            raise ValueError(f"{task!r} has no opponents to co-train; only {', '.join(OPPONENTS)} have")
        self.opp = OPPONENTS[task]
        self._pending = np.zeros((self.opp.n_agents, self.opp.action_size), np.float32)
        self._opp_obs: np.ndarray | None = None
        self.env = make_env(task, opponent=self._opponent, action_layout=action_layout)
        base = self.env.spec  # the learners in ``action_layout``; opponents always act in the "mpe2" layout
        self.n_learners = base.n_agents
        self.spec = TaskSpec(
            name=f"{task}+opponents",
            n_agents=base.n_agents + self.opp.n_agents,
            obs_sizes=base.obs_sizes + (self.opp.obs_size,) * self.opp.n_agents,
            action_sizes=base.action_sizes + (self.opp.action_size,) * self.opp.n_agents,
            episode_length=base.episode_length,
            source=base.source,
            description=f"{base.description} (opponents learning too)",
        )

    def _opponent(self, obs: np.ndarray) -> np.ndarray:
        self._opp_obs = np.asarray(obs, np.float32)  # [M, O_opp]
        return self._pending  # [M, A_opp]

    def _observe(self, learner_obs: np.ndarray) -> np.ndarray:
        out = np.zeros((self.spec.n_agents, self.spec.obs_dim), np.float32)  # [N + M, O']
        out[: self.n_learners, : learner_obs.shape[1]] = learner_obs
        opp_obs = getattr(self.env, "_opp_obs", None)  # the adapter's current opponent observations [M, O_opp]
        if opp_obs is None:
            raise RuntimeError("the tag/world adapter no longer exposes its opponents' observations (_opp_obs)")
        out[self.n_learners :, : self.opp.obs_size] = opp_obs
        return out

    def reset(self, seed: int) -> np.ndarray:
        return self._observe(self.env.reset(seed))

    def step(self, action: np.ndarray) -> StepResult:
        n, base = self.n_learners, self.env.spec
        self._pending = np.ascontiguousarray(action[n:, : self.opp.action_size], np.float32)  # [M, A_opp]
        result = self.env.step(np.ascontiguousarray(action[:n, : base.action_dim]))
        reward = np.concatenate([result.reward, result.info["opponent_reward"]]).astype(np.float32)  # [N + M]
        return StepResult(self._observe(result.obs), reward, result.terminated, result.truncated, result.info)

    def close(self) -> None:
        self.env.close()


def opponent_actor(actor: DeterministicActor, n_learners: int, obs_size: int, action_size: int) -> DeterministicActor:
    """Cut the opponents' groups (rows ``n_learners..``) out of a co-trained stacked actor, at their true sizes."""
    groups = actor.n_agents - n_learners
    hidden = tuple(layer.out_dim for layer in actor.net.hidden)
    out = DeterministicActor(groups, obs_size, action_size, hidden)
    with torch.no_grad():
        src, dst = actor.net, out.net
        first, last = src.hidden[0], src.out
        dst.hidden[0].weight.copy_(first.weight[n_learners:, :obs_size])  # padded inputs are always 0
        dst.hidden[0].bias.copy_(first.bias[n_learners:])
        for s, d in zip(list(src.hidden)[1:], list(dst.hidden)[1:]):
            d.weight.copy_(s.weight[n_learners:])
            d.bias.copy_(s.bias[n_learners:])
        dst.out.weight.copy_(last.weight[n_learners:, :, :action_size])
        dst.out.bias.copy_(last.bias[n_learners:, :, :action_size])
    return out


def save_opponent(trainer: Any, path: str | os.PathLike[str]) -> Path:
    """Freeze a co-training run's opponents as a policy file (obs ``[M, O_opp]`` -> actions ``[M, A_opp]``)."""
    env: CoTrainingEnv = trainer.env
    actor = opponent_actor(trainer.learner.actor, env.n_learners, env.opp.obs_size, env.opp.action_size)
    meta = {"task": trainer.config.task, "role": "opponent", "step": trainer.step, "seed": trainer.config.seed,
            "agents": list(env.opp.names)}
    payload = actor_payload(actor, (env.opp.action_size,) * env.opp.n_agents, trainer.learner.config.hidden_sizes, meta)
    atomic_torch_save(payload, path)
    return Path(path)
