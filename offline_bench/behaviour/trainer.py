"""The online loop that trains a task's behaviour policies: act, store, update, evaluate, snapshot, checkpoint.

One run writes a work directory (default ``runs/behaviour/<task>/seed<k>/``):

- ``state.pt``: everything to resume exactly (networks, optimizers, replay buffer, RNG states, history). The env
  itself is not pickled: episode k always starts from ``reset(episode_seed(seed, k))`` and, when a run resumes in
  the middle of an episode, the loop replays that episode's stored actions to bring the env back to the same state
  (the simulators are deterministic; the replayed observations are checked against the stored ones).
- ``snapshots/actor_<step>.pt``: the actor at every evaluation (small policy files, see ``policy.py``).
- ``medium_actor.pt``, ``best_actor.pt``: the frozen medium policy and the best-evaluated (expert) policy.
- ``mixed.npz``: the replay buffer from the first step until the medium policy was frozen, in order (the mixed /
  medium-replay dataset, D4RL keys).
- ``summary.json`` and ``metrics.csv``: evaluations, episodes, medium / expert / random returns, wall time.

Medium: for tasks with an absolute target (PyBullet) the first evaluation whose mean return reaches it freezes the
medium policy during training. For tasks whose target is relative to the expert return (multi-agent: a third of
the way from random to expert), ``finalize`` picks the first snapshot that reached it once the run is done.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from offline_bench.behaviour.policy import actor_payload, atomic_torch_save, atomic_write_text, load_policy_file
from offline_bench.behaviour.replay import ReplayBuffer
from offline_bench.behaviour.tasks import RECIPES, recipe
from offline_bench.config import cfg
from offline_bench.envs.base import Env, TaskSpec
from offline_bench.envs.tasks import TASKS, recorded_action_layout, task_spec
from offline_bench.train.loop import cpu_denormals_flushed

log = logging.getLogger(__name__)

STATE_FORMAT = 1
# Settings that change what a run computes; the others (steps, evaluation, checkpoints) may change on resume.
TRAINING_KEYS = ("start_steps", "batch_size", "update_every", "buffer_capacity", "algo_overrides", "action_layout")
EVAL_SEED_BASE = 1_000_000_000  # evaluation episodes use seeds far from every training episode's
MEASURE_SEED_BASE = 2_000_000_000


@dataclass(frozen=True)
class TrainerConfig:
    task: str = cfg("hopper", "task name (see offline_bench.envs.tasks)")
    seed: int = cfg(0, "run seed: every other seed derives from it")
    steps: int = cfg(1_000_000, "training budget in env steps (one update per step after start_steps)")
    start_steps: int = cfg(5_000, "uniform random actions, and no updates, for this many first steps")
    batch_size: int = cfg(256, "minibatch size of each update")
    update_every: int = cfg(1, "env steps per update after start_steps (1: one update per step, as SAC / TD3)")
    buffer_capacity: int = cfg(1_000_000, "replay capacity; at least the medium step so mixed data is complete")
    eval_every: int = cfg(5_000, "steps between evaluations (and actor snapshots)")
    eval_episodes: int = cfg(10, "deterministic episodes per evaluation")
    measure_episodes: int = cfg(50, "episodes to measure the frozen medium and expert policies' returns")
    checkpoint_every: int = cfg(20_000, "steps between resumable checkpoints (state.pt)")
    checkpoint_minutes: float = cfg(
        10.0, "also checkpoint when this many wall-clock minutes have passed since the last one (a killed run loses "
        "at most that much; on a shared CPU 20k steps can take hours)"
    )
    medium_target: float = cfg(float("nan"), "return that freezes the medium policy; NaN: relative to expert")
    medium_fraction: float = cfg(1.0 / 3.0, "relative medium target: random + fraction * (expert - random)")
    action_layout: str | None = cfg(
        None, "the task's action layout to train in (offline_bench.envs.task_spec; None: its default, MPE: force)"
    )


def default_config(task: str, **overrides: Any) -> TrainerConfig:
    """The task's recipe as a trainer config, with ``overrides`` (e.g. ``steps=...``, ``seed=...``)."""
    r = recipe(task)
    base = TrainerConfig(
        task=task,
        steps=r.steps,
        start_steps=r.start_steps,
        eval_every=r.eval_every,
        update_every=r.update_every,
        batch_size=r.batch_size,
        medium_target=float("nan") if r.medium_target is None else r.medium_target,
        medium_fraction=r.medium_fraction,
        action_layout=task_spec(task).action_layout,  # recorded as a value, so a later default cannot change a run
    )
    from dataclasses import replace

    config = replace(base, **overrides)
    if np.isnan(config.medium_target) and "buffer_capacity" not in overrides:
        # the medium policy is picked after the run, so the replay data up to it must survive the whole run
        config = replace(config, buffer_capacity=max(config.buffer_capacity, config.steps))
    return config


def default_workdir(task: str, seed: int) -> Path:
    from offline_bench.paths import runs_root

    return runs_root() / "behaviour" / task / f"seed{seed}"


def episode_seed(run_seed: int, episode: int) -> int:
    """Env seed of training episode ``episode``: distinct per run seed, stable across resumes."""
    return (run_seed * 10_000_019 + episode) % (2**31 - 1)


def episode_return(rewards: np.ndarray) -> float:
    """Return of one episode from its rewards ``[T, N]``: the mean over agents of per-agent sums over time
    (``offline_bench.data.catalog.RETURN_STATISTIC``; the plain sum for N = 1)."""
    return float(np.asarray(rewards, np.float64).sum(0).mean())


def make_learner(algo: str, spec: TaskSpec, device: torch.device, algo_overrides: dict[str, Any] | None = None) -> Any:
    from offline_bench.config import replace as replace_config

    if algo == "sac":
        from offline_bench.behaviour.sac import SAC, SACConfig

        return SAC(replace_config(SACConfig(), algo_overrides or {}), spec, device)
    if algo == "matd3":
        from offline_bench.behaviour.matd3 import MATD3, MATD3Config

        return MATD3(replace_config(MATD3Config(), algo_overrides or {}), spec, device)
    raise ValueError(f"unknown behaviour learner {algo!r}; choose sac or matd3")


def task_env(
    task: str, opponent: Callable[[np.ndarray], np.ndarray] | None = None, action_layout: str | None = None
) -> Env:
    """The task's env (``offline_bench.envs.make_env``) in ``action_layout``, its opponents driven by ``opponent``
    where it has any."""
    from offline_bench.envs import make_env

    return make_env(task, opponent=opponent, action_layout=action_layout)


def _atomic_copy(src: Path, dst: Path) -> None:
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def arrays_sha256(arrays: dict[str, np.ndarray]) -> str:
    """A hash of a set of arrays (keys, shapes, dtypes and bytes, in key order): pins the mixed data's content."""
    import hashlib

    digest = hashlib.sha256()
    for key in sorted(arrays):
        value = np.ascontiguousarray(arrays[key])
        digest.update(f"{key}:{value.dtype.str}:{value.shape};".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def rollout_returns(
    env: Env, policy: Callable[[np.ndarray], np.ndarray], seeds: list[int]
) -> np.ndarray:
    """Returns of one episode per seed, acting with ``policy(obs [1, N, O]) -> [1, N, A]``: ``[len(seeds)]``."""
    returns = []
    for seed in seeds:
        obs = env.reset(seed)
        rewards = []
        while True:
            action = np.asarray(policy(obs[None]), np.float32)[0]  # [N, A]
            result = env.step(action)
            rewards.append(result.reward)
            if result.terminated or result.truncated:
                break
            obs = result.obs
        returns.append(episode_return(np.stack(rewards)))
    return np.asarray(returns)


class BehaviourTrainer:
    """Trains the behaviour policies of one task in ``workdir``; resumes from ``workdir/state.pt`` if present.

    ``env_factory`` makes the task's env (default ``offline_bench.envs.make_env(task)``); tests pass small envs.
    """

    def __init__(
        self,
        config: TrainerConfig,
        workdir: str | os.PathLike[str],
        algo: str | None = None,
        algo_overrides: dict[str, Any] | None = None,
        env_factory: Callable[[], Env] | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        if np.isnan(config.medium_target) and config.buffer_capacity < config.steps:
            raise ValueError(
                f"{config.task}'s medium policy is picked after the run, so its mixed data needs every transition up to "
                f"then: buffer_capacity ({config.buffer_capacity}) must be at least steps ({config.steps}); "
                f"pass --set buffer_capacity={config.steps}"
            )
        if config.action_layout is None and config.task in TASKS:  # record the layout itself, not "the default"
            config = replace_config(config, action_layout=TASKS[config.task].action_layout)
        self.config = config
        self.workdir = Path(workdir)
        self.algo = algo or recipe(config.task).algo
        defaults = dict(RECIPES[config.task].algo_defaults) if config.task in RECIPES else {}
        self.algo_overrides = {**defaults, **(algo_overrides or {})}
        if env_factory is None:
            env_factory = lambda: task_env(config.task, action_layout=config.action_layout)  # noqa: E731
        self.env_factory = env_factory
        self.env = env_factory()
        self.eval_env = env_factory()
        self.spec: TaskSpec = self.env.spec
        self.device = torch.device(device)
        torch.manual_seed(config.seed)  # network initialisation; a resumed run then restores the saved RNG state
        self.learner = make_learner(self.algo, self.spec, self.device, self.algo_overrides)
        self.buffer = ReplayBuffer(config.buffer_capacity, self.spec.n_agents, self.spec.obs_dim, self.spec.action_dim)
        self.sample_generator = torch.Generator().manual_seed(config.seed)
        self.mask = self.spec.action_mask()  # [N, A]
        self.step = 0
        self.episode = 0
        self.episode_start = 0  # buffer position where the current episode began
        self.wall_time_s = 0.0
        self.history: dict[str, Any] = {"evals": [], "episodes": [], "random": None, "medium": None, "best": None,
                                        "expert": None}
        if (self.workdir / "state.pt").exists():
            self._load()

    # ------------------------------------------------------------------ persistence
    def _state(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "task": self.config.task,
            "seed": self.config.seed,
            "algo": self.algo,
            "algo_overrides": self.algo_overrides,
            "config": asdict(self.config),
            "learner": self.learner.state_dict(),
            "buffer": self.buffer.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "sample_rng": self.sample_generator.get_state(),
            "step": self.step,
            "episode": self.episode,
            "episode_start": self.episode_start,
            "wall_time_s": self.wall_time_s,
            "history": self.history,
        }

    def save(self) -> None:
        atomic_torch_save(self._state(), self.workdir / "state.pt")
        self._write_reports()
        log.info("checkpoint at step %d in %s", self.step, self.workdir)

    def _load(self) -> None:
        state = torch.load(self.workdir / "state.pt", map_location="cpu", weights_only=False)
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"{self.workdir}/state.pt has format {state.get('format')}, expected {STATE_FORMAT}")
        if (state["task"], state["seed"], state["algo"]) != (self.config.task, self.config.seed, self.algo):
            raise ValueError(
                f"{self.workdir} holds a {state['algo']} run of {state['task']} seed {state['seed']}, not "
                f"{self.algo} {self.config.task} seed {self.config.seed}; pick another --workdir"
            )
        saved = dict(state["config"], algo_overrides=state["algo_overrides"])
        saved.setdefault("action_layout", recorded_action_layout(self.config.task, {}))  # older runs: their layout
        now = dict(asdict(self.config), algo_overrides=self.algo_overrides)
        changed = [k for k in TRAINING_KEYS if k in saved and saved[k] != now[k]]
        if changed:
            raise ValueError(
                f"{self.workdir} was trained with " + ", ".join(f"{k}={saved[k]!r}" for k in changed)
                + "; resuming with other values would not continue the same run: pass the same settings or pick "
                "another --workdir"
            )
        self.learner.load_state_dict(state["learner"])
        self.buffer.load_state_dict(state["buffer"])
        torch.set_rng_state(state["torch_rng"])
        self.sample_generator.set_state(state["sample_rng"])
        self.step, self.episode = int(state["step"]), int(state["episode"])
        self.episode_start = int(state["episode_start"])
        self.wall_time_s = float(state["wall_time_s"])
        self.history = state["history"]
        log.info("resumed %s seed %d at step %d", self.config.task, self.config.seed, self.step)

    def _write_reports(self) -> None:
        atomic_write_text(self.workdir / "summary.json", json.dumps(self.summary(), indent=2) + "\n")
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["step", "kind", "return", "return_std", "length"])
        for e in self.history["episodes"]:
            writer.writerow([e["step"], "episode", f"{e['return']:.3f}", "", e["length"]])
        for e in self.history["evals"]:
            writer.writerow([e["step"], "eval", f"{e['return_mean']:.3f}", f"{e['return_std']:.3f}", ""])
        atomic_write_text(self.workdir / "metrics.csv", out.getvalue())

    def summary(self) -> dict[str, Any]:
        h = self.history
        return {
            "task": self.config.task,
            "seed": self.config.seed,
            "algo": self.algo,
            "config": asdict(self.config),
            "algo_overrides": self.algo_overrides,
            "step": self.step,
            "episodes": self.episode,
            "wall_time_s": round(self.wall_time_s, 1),
            "random": h["random"],
            "medium": h["medium"],
            "best": h["best"],
            "expert": h["expert"],
            "evals": h["evals"],
        }

    # ------------------------------------------------------------------ evaluation
    def _policy(self, actor_act: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[np.ndarray], np.ndarray]:
        def policy(obs: np.ndarray) -> np.ndarray:
            return actor_act(torch.as_tensor(obs, device=self.device)).cpu().numpy()

        return policy

    def _snapshot_path(self, step: int) -> Path:
        return self.workdir / "snapshots" / f"actor_{step:08d}.pt"

    def _save_snapshot(self, step: int) -> Path:
        path = self._snapshot_path(step)
        meta = {"task": self.config.task, "seed": self.config.seed, "step": step, "algo": self.algo,
                "action_layout": self.spec.action_layout}
        actor = self.learner.exported_actor()
        atomic_torch_save(actor_payload(actor, self.spec.action_sizes, self.learner.config.hidden_sizes, meta), path)
        return path

    def measure(self, policy_path: str | os.PathLike[str], episodes: int | None = None) -> dict[str, float]:
        """Mean and std of the deterministic return of a policy file over ``episodes`` fixed-seed episodes."""
        episodes = episodes or self.config.measure_episodes
        policy = load_policy_file(policy_path)
        seeds = [MEASURE_SEED_BASE + i for i in range(episodes)]
        returns = rollout_returns(self.eval_env, policy.act, seeds)
        return {"return_mean": float(returns.mean()), "return_std": float(returns.std()), "episodes": episodes}

    def measure_random(self) -> dict[str, float]:
        """Return of uniformly random actions (a generator of its own, so training randomness is untouched)."""
        from offline_bench.envs import uniform_box_actions

        gen = np.random.default_rng(self.config.seed + 7)

        def random_policy(obs: np.ndarray) -> np.ndarray:  # uniform over the simulator's box, in any layout
            return uniform_box_actions(self.spec, gen, obs.shape[0])

        seeds = [MEASURE_SEED_BASE + i for i in range(self.config.measure_episodes)]
        returns = rollout_returns(self.eval_env, random_policy, seeds)
        return {"return_mean": float(returns.mean()), "return_std": float(returns.std()),
                "episodes": len(seeds), "policy": "uniform random actions"}

    def _evaluate(self) -> dict[str, Any]:
        seeds = [EVAL_SEED_BASE + i for i in range(self.config.eval_episodes)]
        returns = rollout_returns(self.eval_env, self._policy(self.learner.act), seeds)
        row = {"step": self.step, "return_mean": float(returns.mean()), "return_std": float(returns.std()),
               "wall_time_s": round(self.wall_time_s, 1)}
        self.history["evals"].append(row)
        snapshot = self._save_snapshot(self.step)
        best = self.history["best"]
        if best is None or row["return_mean"] > best["eval_return"]:
            _atomic_copy(snapshot, self.workdir / "best_actor.pt")
            self.history["best"] = {"step": self.step, "eval_return": row["return_mean"]}
        target = self.config.medium_target
        if self.history["medium"] is None and not np.isnan(target) and row["return_mean"] >= target:
            self._freeze_medium(self.step, row["return_mean"])
        self._write_reports()  # so `behaviour status` sees every evaluation, not only checkpoints
        return row

    def _freeze_medium(self, step: int, eval_return: float) -> None:
        _atomic_copy(self._snapshot_path(step), self.workdir / "medium_actor.pt")
        medium = {"step": step, "eval_return": eval_return, "target": self._medium_target()}
        medium.update(self.measure(self.workdir / "medium_actor.pt"))
        self.history["medium"] = medium
        self.write_mixed(step)
        log.info("medium policy frozen at step %d (measured return %.1f)", step, medium["return_mean"])

    def _medium_target(self) -> float:
        if not np.isnan(self.config.medium_target):
            return float(self.config.medium_target)
        # The best evaluation stands for the expert here: the target must be on the evaluations' own scale
        # (same seeds, same episode count) for "the first evaluation that reached it" to be well defined.
        random_return = self.history["random"]["return_mean"]
        expert_return = self.history["best"]["eval_return"]
        return random_return + self.config.medium_fraction * (expert_return - random_return)

    def write_mixed(self, step: int) -> Path:
        """Save the buffer's first ``step`` transitions, in order, as ``mixed.npz`` (D4RL keys); records their hash."""
        path = self.workdir / "mixed.npz"
        tmp = path.with_name("mixed.tmp.npz")
        arrays = self.buffer.prefix(step)
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
        if self.history["medium"] is not None:
            self.history["medium"]["mixed_sha256"] = arrays_sha256(arrays)
        return path

    # ------------------------------------------------------------------ the loop
    def _replay_current_episode(self) -> np.ndarray:
        """Bring a fresh env to where the interrupted episode was: reset with its seed, re-apply stored actions."""
        obs = self.env.reset(episode_seed(self.config.seed, self.episode))
        for i in range(self.episode_start, self.buffer.added):
            j = i % self.buffer.capacity
            if not np.allclose(obs, self.buffer.obs[j], atol=1e-5):
                raise RuntimeError(
                    f"replaying episode {self.episode} diverged at buffer row {i}: the simulator is not deterministic "
                    "here; resume from a checkpoint taken at an episode boundary or start a new --workdir"
                )
            obs = self.env.step(self.buffer.action[j]).obs
        return obs

    def run(self, progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Train until ``config.steps``; checkpoints every ``checkpoint_every`` steps or ``checkpoint_minutes`` of
        wall time, whichever comes first, and at the end (a checkpoint never changes the run: resuming is exact).

        ``progress`` (if given) receives ``{"step", "episode_return" | "eval_return", ...}`` after each episode and
        evaluation; the CLI draws its progress bar from it.

        Like offline training, it runs with CPU subnormals flushed to zero (``train.loop.cpu_denormals_flushed``):
        the SAC halfcheetah run's state at 238k steps updated in 11.2 ms with them kept, 7.8 ms flushed (as fresh).
        """
        with cpu_denormals_flushed():
            return self._run(progress)

    def _run(self, progress: Callable[[dict[str, Any]], None] | None) -> dict[str, Any]:
        c = self.config
        self.workdir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        if self.history["random"] is None:
            self.history["random"] = self.measure_random()
        if self.step > self.episode_start:
            obs = self._replay_current_episode()
        else:
            obs = self.env.reset(episode_seed(c.seed, self.episode))
        last_save, last_save_time = self.step, time.monotonic()
        ep_rewards: list[np.ndarray] = [self.buffer.reward[i % self.buffer.capacity]
                                        for i in range(self.episode_start, self.buffer.added)]
        while self.step < c.steps:
            if self.step < c.start_steps:
                action = (torch.rand(1, *self.mask.shape) * 2 - 1).numpy()[0] * self.mask  # [N, A]
            else:
                obs_t = torch.as_tensor(obs, device=self.device).unsqueeze(0)  # [1, N, O]
                action = self.learner.explore(obs_t)[0].cpu().numpy()  # [N, A]
            result = self.env.step(action)
            self.buffer.add(obs, action, result.reward, result.obs, result.terminated, result.truncated)
            ep_rewards.append(result.reward)
            self.step += 1
            if self.step >= c.start_steps and self.step % c.update_every == 0:
                batch = self.buffer.sample(c.batch_size, self.sample_generator, self.device)
                self.learner.update(batch)
            if result.terminated or result.truncated:
                ret = episode_return(np.stack(ep_rewards))
                self.history["episodes"].append({"step": self.step, "return": ret, "length": len(ep_rewards)})
                self.episode += 1
                self.episode_start = self.buffer.added
                ep_rewards = []
                obs = self.env.reset(episode_seed(c.seed, self.episode))
                if progress is not None:
                    progress({"step": self.step, "episode_return": ret})
            else:
                obs = result.obs
            if self.step % c.eval_every == 0:
                self.wall_time_s += time.monotonic() - started
                started = time.monotonic()
                row = self._evaluate()
                if progress is not None:
                    progress({"step": self.step, "eval_return": row["return_mean"]})
            if (self.step - last_save >= c.checkpoint_every
                    or time.monotonic() - last_save_time >= 60.0 * c.checkpoint_minutes):
                self.wall_time_s += time.monotonic() - started
                started = time.monotonic()
                self.save()
                last_save, last_save_time = self.step, time.monotonic()
        self.wall_time_s += time.monotonic() - started
        self.save()
        return self.summary()

    # ------------------------------------------------------------------ after training
    def finalize(self) -> dict[str, Any]:
        """Measure the expert (best) policy and, for relative medium targets, freeze the medium policy now."""
        if self.history["best"] is None:
            raise RuntimeError(f"{self.workdir} has no evaluation yet; train past eval_every={self.config.eval_every} steps")
        best = self.history["best"]
        expert = {"step": best["step"], "eval_return": best["eval_return"]}
        expert.update(self.measure(self.workdir / "best_actor.pt"))
        self.history["expert"] = expert
        if self.history["medium"] is None and np.isnan(self.config.medium_target):
            target = self._medium_target()
            reached = [e for e in self.history["evals"] if e["return_mean"] >= target]
            if reached:
                self._freeze_medium(reached[0]["step"], reached[0]["return_mean"])
        self.save()
        return self.summary()


def train_behaviour(
    config: TrainerConfig,
    workdir: str | os.PathLike[str],
    algo_overrides: dict[str, Any] | None = None,
    device: str | torch.device = "cpu",
    progress: Callable[[dict[str, Any]], None] | None = None,
    opponent_steps: int | None = None,
) -> dict[str, Any]:
    """Train (or resume) a task's behaviour policies in ``workdir``; measure the expert when the budget is done.

    ``tag`` / ``world`` first co-train learners and opponents for ``opponent_steps`` steps in
    ``workdir/opponent/`` and freeze the opponents as ``workdir/opponent.pt``; the learners whose policies make
    the datasets then train from scratch against that frozen opponent. ``progress`` also gets ``"stage"``.
    """
    from offline_bench.behaviour.opponents import CoTrainingEnv, save_opponent
    from offline_bench.behaviour.policy import load_policy_file
    from offline_bench.envs import OPPONENTS

    workdir = Path(workdir)
    env_factory = None
    if config.task in OPPONENTS:
        opponent_file = workdir / "opponent.pt"
        if not opponent_file.exists():
            steps = recipe(config.task).opponent_steps if opponent_steps is None else opponent_steps
            stage = replace_config(config, steps=steps, medium_target=float("nan"))
            co = BehaviourTrainer(stage, workdir / "opponent", algo="matd3", algo_overrides=algo_overrides,
                                  env_factory=lambda: CoTrainingEnv(config.task, config.action_layout), device=device)
            co.run((lambda info: progress(dict(info, stage="opponents"))) if progress else None)
            save_opponent(co, opponent_file)
            log.info("%s opponents frozen after %d co-training steps", config.task, co.step)
        opponent = load_policy_file(opponent_file).as_opponent()
        env_factory = lambda: task_env(config.task, opponent, config.action_layout)  # noqa: E731
    trainer = BehaviourTrainer(config, workdir, algo_overrides=algo_overrides, env_factory=env_factory, device=device)
    summary = trainer.run((lambda info: progress(dict(info, stage="learners"))) if progress else None)
    if trainer.step >= config.steps:
        summary = trainer.finalize()
    return summary


def replace_config(config: TrainerConfig, **changes: Any) -> TrainerConfig:
    from dataclasses import replace

    return replace(config, **changes)
