"""Rollouts of a policy in its env, and the one normalized-score function.

- ``normalized_score(ret, ref_random, ref_expert)``: ``100 * (R - R_random) / (R_expert - R_random)``, the D4RL
  scale (random = 0, expert = 100). It is the only place in the codebase that computes a normalized score, and it
  raises when a reference is missing rather than inventing one.
- ``evaluate(policy_act, task, episodes, seed, device)``: ``episodes`` episodes run side by side, one env copy per
  episode in a ``VectorEnv``, and ONE batched policy forward per env step for all of them (``[E, N, O] -> [E, N, A]``).
  Episode ``i`` starts from ``episode_seeds(seed, episodes)[i]``, so the same ``seed`` gives the same episodes.
- Multi-agent return: the team-mean return, i.e. the mean over learning agents of each agent's summed reward in the
  episode. halfcheetah-2x3 shares one team reward, so this equals either agent's return; spread mixes a shared
  reward with each agent's own collision penalty (mpe2's ``local_ratio`` 0.5), so its agents' returns differ (e.g.
  -52.5, -53.0 and -54.0 in one episode) and the mean is taken; for tag/world it averages the learning team (the
  OMAR authors' code reports the first predator's return instead).
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

log = logging.getLogger(__name__)

PolicyAct = Callable[[Tensor], Tensor]  # [E, N, O] float32 -> [E, N, A] in [-1, 1]


def normalized_score(ret: float, ref_random: float | None, ref_expert: float | None) -> float:
    """``100 * (ret - ref_random) / (ref_expert - ref_random)``: 0 = random policy, 100 = expert policy.

    Raises ``MissingReferenceError`` (a ``ValueError``) when a reference is missing (None or NaN), and
    ``ValueError`` when both references are equal.
    """
    from offline_bench.data.catalog import MissingReferenceError  # a ValueError, shared with the data layer

    for name, ref in (("random", ref_random), ("expert", ref_expert)):
        if ref is None or not math.isfinite(float(ref)):
            raise MissingReferenceError(
                f"normalized score needs the {name} reference return, but it is missing ({ref!r}); "
                "the dataset manifest must carry the task's reference returns (re-collect the dataset with a "
                "version of offline-bench that records them)"
            )
    if float(ref_expert) == float(ref_random):  # type: ignore[arg-type]
        raise ValueError(f"random and expert reference returns are equal ({ref_random}); cannot normalize")
    return 100.0 * (float(ret) - float(ref_random)) / (float(ref_expert) - float(ref_random))  # type: ignore[arg-type]


def has_references(ref_random: float | None, ref_expert: float | None) -> bool:
    """Whether a score can be normalized with this pair: both references present and different."""
    return ref_random is not None and ref_expert is not None and float(ref_random) != float(ref_expert)


def reference_returns(manifest: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """The (random, expert) reference returns recorded in a dataset manifest; None where absent.

    Accepts the manifest layouts the data layer writes: ``reference_returns: {random, expert}`` (also spelled
    ``references`` / ``ref_returns``) or flat ``ref_random`` / ``ref_expert`` keys.
    """
    refs: Mapping[str, Any] = {}
    for key in ("reference_returns", "references", "ref_returns", "reference"):
        value = manifest.get(key)
        if isinstance(value, Mapping):
            refs = value
            break
    random_ref = _first(refs, manifest, ("random", "ref_random", "min", "ref_min"))
    expert_ref = _first(refs, manifest, ("expert", "ref_expert", "max", "ref_max"))
    return random_ref, expert_ref


def _first(refs: Mapping[str, Any], manifest: Mapping[str, Any], keys: Sequence[str]) -> float | None:
    for source in (refs, manifest):
        for key in keys:
            value = source.get(key)
            if isinstance(value, Mapping):  # e.g. {"random": {"return": ..., "source": ...}}
                value = value.get("return", value.get("value"))
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                return float(value)
    return None


def episode_seeds(seed: int, episodes: int) -> list[int]:
    """Env seeds of ``episodes`` evaluation episodes, derived from one ``seed`` (distinct, in [0, 2**31))."""
    state = np.random.SeedSequence(int(seed)).generate_state(episodes, dtype=np.uint32)
    return [int(s) & 0x7FFFFFFF for s in state]


def eval_seed(run_seed: int, step: int) -> int:
    """The evaluation seed at training step ``step`` of the run with seed ``run_seed`` (same for every algorithm)."""
    return int(np.random.SeedSequence([int(run_seed), int(step), 0xE7A1]).generate_state(1, dtype=np.uint32)[0])


@dataclass(frozen=True)
class EvalResult:
    """Returns of ``E`` evaluation episodes. ``returns`` is the team-mean return per episode."""

    returns: np.ndarray  # [E] float64: team-mean return (mean over agents of each agent's summed reward)
    agent_returns: np.ndarray  # [E, N] float64: each learning agent's summed reward
    lengths: np.ndarray  # [E] int64: steps until terminated or truncated
    seeds: tuple[int, ...]  # env seed of each episode

    @property
    def mean_return(self) -> float:
        return float(self.returns.mean())

    @property
    def std_return(self) -> float:
        return float(self.returns.std())

    @property
    def mean_length(self) -> float:
        """Mean steps per episode: below the time limit where episodes end early (a walker that falls)."""
        return float(self.lengths.mean())


class Evaluator:
    """Keeps ``episodes`` env copies open so a training run evaluates many times without rebuilding them."""

    def __init__(self, task: str, episodes: int, device: torch.device | str, opponent: Any = None,
                 action_layout: str | None = None) -> None:
        from offline_bench.envs import VectorEnv

        if episodes < 1:
            raise ValueError(f"eval episodes must be >= 1, got {episodes}")
        self.task, self.episodes, self.device = task, episodes, torch.device(device)
        self.env = VectorEnv(task, episodes, opponent=opponent, action_layout=action_layout)

    def __call__(self, policy_act: PolicyAct, seed: int) -> EvalResult:
        seeds = episode_seeds(seed, self.episodes)
        obs = np.asarray(self.env.reset(seeds), dtype=np.float32)  # [E, N, O]
        e, n, _ = obs.shape
        agent_returns = np.zeros((e, n), dtype=np.float64)  # [E, N]
        lengths = np.zeros(e, dtype=np.int64)  # [E]
        alive = np.ones(e, dtype=bool)  # [E]: episodes still running; finished ones keep stepping, ignored
        with torch.no_grad():
            while alive.any():
                action = policy_act(torch.as_tensor(obs, device=self.device))  # [E, N, A]
                action_np = action.to("cpu", torch.float32).numpy()
                obs, reward, terminated, truncated = self.env.step(action_np)
                obs = np.asarray(obs, dtype=np.float32)  # [E, N, O]
                agent_returns += np.asarray(reward, dtype=np.float64) * alive[:, None]  # [E, N]
                lengths += alive
                alive &= ~(np.asarray(terminated, dtype=bool) | np.asarray(truncated, dtype=bool))
        returns = agent_returns.mean(axis=1)  # [E]: team mean over learning agents
        return EvalResult(returns=returns, agent_returns=agent_returns, lengths=lengths, seeds=tuple(seeds))

    def close(self) -> None:
        close = getattr(self.env, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> "Evaluator":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def evaluate(
    policy_act: PolicyAct,
    task: str,
    episodes: int,
    seed: int,
    device: torch.device | str,
    opponent: Any = None,
    action_layout: str | None = None,
) -> EvalResult:
    """Run ``episodes`` episodes of ``task`` side by side with one batched ``policy_act`` call per step.

    ``policy_act`` maps raw observations ``[E, N, O]`` (on ``device``) to actions ``[E, N, A]`` in [-1, 1]; it is
    called under ``torch.no_grad()``. Episode seeds come from ``episode_seeds(seed, episodes)``. ``action_layout``:
    the task's action layout the policy acts in (None: the default; a dataset's is ``Dataset.action_layout``).
    """
    with Evaluator(task, episodes, device, opponent=opponent, action_layout=action_layout) as evaluator:
        return evaluator(policy_act, seed)


__all__ = [
    "EvalResult",
    "Evaluator",
    "episode_seeds",
    "eval_seed",
    "evaluate",
    "has_references",
    "normalized_score",
    "reference_returns",
]
