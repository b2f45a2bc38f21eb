"""Behaviour policies: SAC learns a toy task, resume is exact, MATD3 updates have the right shapes, policy files."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from offline_bench.batch import Batch
from offline_bench.behaviour.matd3 import MATD3, MATD3Config
from offline_bench.behaviour.policy import load_policy_file
from offline_bench.behaviour.replay import ReplayBuffer
from offline_bench.behaviour.trainer import BehaviourTrainer, TrainerConfig
from offline_bench.cli import main  # registers the repository's behaviour recipes now, before any test replaces them
from offline_bench.envs import make_env
from offline_bench.envs.base import Env, StepResult, TaskSpec

torch.set_num_threads(1)


class ReachEnv(Env):
    """A point on a line steered towards a target drawn at reset: obs ``[x, target]``, reward ``-|x - target|``.

    Small but real: the state carries over between steps, so replaying an interrupted episode matters.
    """

    spec = TaskSpec("reach", 1, (2,), (1,), 10, "test:reach")

    def reset(self, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        self.x, self.target, self.t = 0.0, float(rng.uniform(-1, 1)), 0
        return self._obs()

    def _obs(self) -> np.ndarray:
        return np.asarray([[self.x, self.target]], np.float32)  # [1, 2]

    def step(self, action: np.ndarray) -> StepResult:
        self.x = float(np.clip(self.x + 0.3 * float(action[0, 0]), -2.0, 2.0))
        self.t += 1
        reward = np.asarray([-abs(self.x - self.target)], np.float32)
        return StepResult(self._obs(), reward, False, self.t >= self.spec.episode_length, {})


def tiny_config(**overrides: object) -> TrainerConfig:
    base = dict(task="reach", seed=3, steps=400, start_steps=100, batch_size=32, buffer_capacity=10_000,
                eval_every=100, eval_episodes=3, measure_episodes=4, checkpoint_every=135, medium_target=-1.5)
    base.update(overrides)
    return TrainerConfig(**base)  # type: ignore[arg-type]


def tiny_trainer(tmp_path, name: str, **overrides: object) -> BehaviourTrainer:
    return BehaviourTrainer(tiny_config(**overrides), tmp_path / name, algo="sac",
                            algo_overrides={"hidden_sizes": (16, 16)}, env_factory=ReachEnv)


@pytest.mark.slow  # about 5 s on an idle core, much more on the shared machine
def test_sac_learns_reach(tmp_path):
    trainer = BehaviourTrainer(tiny_config(steps=1500, eval_every=500, eval_episodes=5, checkpoint_every=10_000),
                               tmp_path / "run", algo="sac", algo_overrides={"hidden_sizes": (32, 32)},
                               env_factory=ReachEnv)
    summary = trainer.run()
    summary = trainer.finalize()
    random_return = summary["random"]["return_mean"]
    expert = summary["expert"]["return_mean"]
    # Uniform actions score about -2.6; steering straight to the target scores about -0.7.
    assert expert > random_return + 1.2, (random_return, expert)
    assert expert > -1.2
    # The medium policy froze at the first evaluation reaching the target, with its own 4-episode measurement.
    medium = summary["medium"]
    assert medium is not None and medium["step"] == min(e["step"] for e in summary["evals"] if e["return_mean"] >= -1.5)
    assert medium["episodes"] == 4
    # The mixed data is exactly the buffer's first `medium step` transitions, in order.
    mixed = np.load(tmp_path / "run" / "mixed.npz")
    assert mixed["observations"].shape == (medium["step"], 1, 2)
    np.testing.assert_array_equal(mixed["actions"], trainer.buffer.action[: medium["step"]])
    np.testing.assert_array_equal(mixed["next_observations"][:-1][~(mixed["timeouts"][:-1])],
                                  mixed["observations"][1:][~(mixed["timeouts"][:-1])])
    assert mixed["timeouts"].sum() == medium["step"] // 10


def test_resume_after_interruption_matches_uninterrupted_run(tmp_path):
    straight = tiny_trainer(tmp_path, "straight")
    straight.run()

    class Interrupted(Exception):
        pass

    def crash(info: dict) -> None:
        if info["step"] >= 200:  # after the checkpoint at step 135, which is in the middle of an episode
            raise Interrupted

    first = tiny_trainer(tmp_path, "resumed")
    with pytest.raises(Interrupted):
        first.run(crash)
    resumed = tiny_trainer(tmp_path, "resumed")
    assert (resumed.step, resumed.episode_start) == (135, 130)
    resumed.run()

    a, b = straight.learner.state_dict(), resumed.learner.state_dict()
    for key in ("actor", "critic", "critic_target"):
        for name, tensor in a[key].items():
            torch.testing.assert_close(tensor, b[key][name], rtol=0, atol=0)
    np.testing.assert_array_equal(straight.buffer.obs[:400], resumed.buffer.obs[:400])
    assert [e["return_mean"] for e in straight.history["evals"]] == [e["return_mean"] for e in resumed.history["evals"]]
    best_a = load_policy_file(tmp_path / "straight" / "best_actor.pt")
    best_b = load_policy_file(tmp_path / "resumed" / "best_actor.pt")
    obs = np.random.default_rng(0).normal(size=(5, 1, 2)).astype(np.float32)
    np.testing.assert_array_equal(best_a.act(obs), best_b.act(obs))


def test_behaviour_training_flushes_subnormals_and_restores_the_default(tmp_path):
    """As offline training: updates see subnormals as zero (long runs slowed down on them), and run() leaves
    torch's default behind."""
    if not torch.set_flush_denormal(True):
        pytest.skip("this CPU cannot flush subnormals")
    torch.set_flush_denormal(False)
    subnormal = torch.tensor([1e-39])
    trainer = tiny_trainer(tmp_path, "flushed")
    seen = []
    update = trainer.learner.update

    def recording_update(batch):
        seen.append((subnormal * 1.0).item())
        return update(batch)

    trainer.learner.update = recording_update
    trainer.run()
    assert seen and set(seen) == {0.0}
    assert (subnormal * 1.0).item() != 0.0


def test_wall_clock_checkpoints_between_step_checkpoints(tmp_path, monkeypatch):
    """With a huge checkpoint_every, a checkpoint still lands once checkpoint_minutes of wall time have passed."""
    import offline_bench.behaviour.trainer as trainer_module

    clock = {"now": 0.0}

    def fake_monotonic() -> float:  # every call advances the clock by 1 s
        clock["now"] += 1.0
        return clock["now"]

    monkeypatch.setattr(trainer_module.time, "monotonic", fake_monotonic)
    saved_at: list[int] = []
    trainer = tiny_trainer(tmp_path, "run", steps=300, checkpoint_every=10**9, checkpoint_minutes=1.0)
    original_save = trainer.save

    def recording_save() -> None:
        saved_at.append(trainer.step)
        original_save()

    monkeypatch.setattr(trainer, "save", recording_save)
    trainer.run()
    assert len(saved_at) >= 3 and saved_at[-1] == 300  # wall-clock ones, then the final one
    assert all(0 < step < 300 for step in saved_at[:-1])
    resumed = tiny_trainer(tmp_path, "run", steps=300, checkpoint_every=10**9, checkpoint_minutes=1.0)
    assert resumed.step == 300


def test_resume_refuses_another_runs_workdir(tmp_path):
    tiny_trainer(tmp_path, "run", steps=150).run()
    with pytest.raises(ValueError, match="pick another --workdir"):
        tiny_trainer(tmp_path, "run", seed=4)
    with pytest.raises(ValueError, match="batch_size=32"):
        tiny_trainer(tmp_path, "run", steps=300, batch_size=64)
    assert tiny_trainer(tmp_path, "run", steps=300).step == 150  # a larger budget continues the same run


@pytest.mark.parametrize("task", ["spread", "world"])
def test_matd3_update_shapes(task):
    torch.manual_seed(0)
    env = make_env(task)
    spec = env.spec
    learner = MATD3(MATD3Config(hidden_sizes=(16, 16)), spec, torch.device("cpu"))
    buffer = ReplayBuffer(100, spec.n_agents, spec.obs_dim, spec.action_dim)
    obs = env.reset(0)
    while buffer.added < 60:
        action = learner.explore(torch.as_tensor(obs)[None])[0].numpy()  # [N, A]
        assert action.shape == (spec.n_agents, spec.action_dim)
        for i, size in enumerate(spec.action_sizes):
            assert not action[i, size:].any(), "padded action dims must stay zero"
        result = env.step(action)
        buffer.add(obs, action, result.reward, result.obs, result.terminated, result.truncated)
        obs = env.reset(buffer.added) if result.truncated or result.terminated else result.obs
    batch = buffer.sample(8, torch.Generator().manual_seed(0))
    assert isinstance(batch, Batch) and batch.obs.shape == (8, spec.n_agents, spec.obs_dim)
    assert batch.reward.shape == (8, spec.n_agents, 1)
    before = [p.detach().clone() for p in learner.actor.parameters()]
    first = learner.update(batch)
    second = learner.update(batch)  # the delayed actor update happens on every second update
    assert "actor_loss" not in first and "actor_loss" in second
    assert all(v.dim() == 0 and torch.isfinite(v) for v in second.values())
    assert any(not torch.equal(p, q) for p, q in zip(before, learner.actor.parameters()))
    assert learner.critic(batch.obs, batch.action).shape == (8, spec.n_agents, 2)


def test_spread_run_exports_policies_and_mixed_data_equals_the_buffer(tmp_path):
    from offline_bench.behaviour.export import export_policies
    from offline_bench.behaviour.policy import load_policy, read_index, write_index
    from offline_bench.behaviour.recipes import collect_mixed
    from offline_bench.data import load_dataset

    config = TrainerConfig(task="spread", seed=1, steps=200, start_steps=100, batch_size=32, buffer_capacity=1000,
                           eval_every=50, eval_episodes=1, measure_episodes=3, checkpoint_every=1000,
                           medium_target=-1e9)  # an absolute target any policy reaches: medium = first evaluation
    run_dir = tmp_path / "run"
    trainer = BehaviourTrainer(config, run_dir, algo_overrides={"hidden_sizes": (16, 16)})
    trainer.run()
    summary = trainer.finalize()
    medium = summary["medium"]
    assert summary["expert"]["episodes"] == 3 and medium is not None
    assert medium["step"] == 50 and medium["episodes"] == 3

    policies = tmp_path / "policies"
    entry = export_policies("spread", run_dir, episodes=3, root=policies)
    assert entry["run"]["finished"] and "expert" in entry
    assert read_index(policies)["tasks"]["spread"]["expert"]["sha256"] == entry["expert"]["sha256"]
    policy = load_policy("spread", "expert", noise=0.1, root=policies)
    assert policy is not None and load_policy("spread", "opponent", root=policies) is None
    obs = np.zeros((4, 3, 18), np.float32)
    actions = policy.act(obs)
    assert actions.shape == (4, 3, 2) and np.abs(actions).max() <= 1.0  # trained in the default "force" layout
    assert policy.action_layout == "force" and entry["run"]["trainer_config"]["action_layout"] == "force"
    (policies / "spread" / "expert.pt").write_bytes(b"corrupt")
    with pytest.raises(ValueError, match="sha256"):
        load_policy("spread", "expert", root=policies)

    data = tmp_path / "data"
    manifest = collect_mixed("spread", root=data, run_dir=run_dir, policies=policies)
    assert manifest["transitions"] == medium["step"]
    made = manifest["behaviour_policy"]
    assert made["bit_identical_to_index"] is True
    assert made["buffer_sha256"] == made["indexed_buffer_sha256"] == entry["mixed"]["sha256"]
    dataset = load_dataset("spread-mixed", root=data)
    prefix = trainer.buffer.prefix(medium["step"])
    for key in ("observations", "actions", "rewards", "next_observations", "terminals"):
        np.testing.assert_array_equal(dataset.agent_axis(key) if key != "terminals" else dataset.terminals, prefix[key])
    assert dataset.episodes == -(-medium["step"] // 25)  # 25-step episodes, the last one possibly cut

    # A buffer that is not the indexed run's (a re-run on another CPU or code) is recorded as what it is.
    index = read_index(policies)
    index["tasks"]["spread"]["mixed"]["sha256"] = "0" * 64
    write_index(index, policies)
    other = collect_mixed("spread", root=tmp_path / "data2", run_dir=run_dir, policies=policies)["behaviour_policy"]
    assert other["bit_identical_to_index"] is False and other["indexed_buffer_sha256"] == "0" * 64
    assert other["buffer_sha256"] == made["buffer_sha256"]


def test_tag_freezes_a_co_trained_opponent_then_trains_against_it(tmp_path):
    from offline_bench.behaviour.trainer import train_behaviour

    config = TrainerConfig(task="tag", seed=0, steps=50, start_steps=25, batch_size=16, buffer_capacity=500,
                           eval_every=25, eval_episodes=1, measure_episodes=1, checkpoint_every=1000)
    summary = train_behaviour(config, tmp_path / "tag", {"hidden_sizes": (8, 8)}, opponent_steps=50)
    assert summary["step"] == 50 and summary["expert"] is not None
    opponent = load_policy_file(tmp_path / "tag" / "opponent.pt")
    assert (opponent.n_agents, opponent.obs_dim, opponent.action_dim) == (1, 14, 5)  # the prey, at its true sizes
    assert opponent.meta["step"] == 50
    prey = opponent.as_opponent()(np.zeros((1, 14), np.float32))
    assert prey.shape == (1, 5) and np.abs(prey).max() <= 1.0
    # The opponent's co-training run kept all four agents; the learners' run only the three predators.
    assert torch.load(tmp_path / "tag" / "opponent" / "state.pt", weights_only=False)["buffer"]["arrays"]["obs"].shape[1:] == (4, 16)
    assert BehaviourTrainer(config, tmp_path / "tag", algo_overrides={"hidden_sizes": (8, 8)}).buffer.obs.shape[1:] == (3, 16)


def test_cli_train_status_export(tmp_path):
    from click.testing import CliRunner

    run_dir, policies = tmp_path / "run", tmp_path / "policies"
    args = ["behaviour", "train", "spread", "--steps", "40", "--workdir", str(run_dir), "--set", "start_steps=20",
            "--set", "eval_every=20", "--set", "eval_episodes=1", "--set", "measure_episodes=2",
            "--set", "hidden_sizes=[8, 8]", "--set", "batch_size=8"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert '"step": 40' in result.output
    result = CliRunner().invoke(main, ["behaviour", "status", "spread", "--workdir", str(run_dir)])
    assert result.exit_code == 0 and '"last_evals"' in result.output
    result = CliRunner().invoke(main, ["behaviour", "export", "spread", "--workdir", str(run_dir), "--episodes", "2",
                                       "--policies", str(policies)])
    assert result.exit_code == 0, result.output
    assert (policies / "spread" / "expert.pt").exists() and (policies / "index.json").exists()
    bad = CliRunner().invoke(main, ["behaviour", "train", "nosuchtask"])
    assert bad.exit_code != 0 and "valid tasks" in bad.output


@pytest.mark.parametrize("command", ["status", "export"])
def test_cli_status_and_export_refuse_an_unknown_task_first(command, tmp_path):
    """Not "no behaviour run ...; start one with `behaviour train foo`", whose advice fails the same way."""
    from click.testing import CliRunner

    result = CliRunner().invoke(main, ["behaviour", command, "foo"], env={"OFFLINE_BENCH_RUNS": str(tmp_path)})
    trained = CliRunner().invoke(main, ["behaviour", "train", "foo"], env={"OFFLINE_BENCH_RUNS": str(tmp_path)})
    error = "Error: no behaviour recipe for task 'foo'; valid tasks: hopper, halfcheetah, ant, walker2d, spread"
    assert result.exit_code == trained.exit_code == 2 and "Traceback" not in result.output
    assert error in result.output and result.output.splitlines()[-1] == trained.output.splitlines()[-1]
    assert list(tmp_path.iterdir()) == []


def test_cli_export_without_a_run_says_how_to_start_one(tmp_path):
    """No run directory: there is no run (start one); a run directory without summary.json: not checkpointed yet."""
    from click.testing import CliRunner

    env = {"OFFLINE_BENCH_RUNS": str(tmp_path / "runs")}
    result = CliRunner().invoke(main, ["behaviour", "export", "hopper", "--policies", str(tmp_path / "p")], env=env)
    run_dir = tmp_path / "runs" / "behaviour" / "hopper" / "seed0"
    assert result.exit_code == 1 and result.output == (
        f"Error: no behaviour run in {run_dir}; start one with `offline-bench behaviour train hopper`\n")
    assert list(tmp_path.iterdir()) == []
    run_dir.mkdir(parents=True)
    result = CliRunner().invoke(main, ["behaviour", "export", "hopper", "--policies", str(tmp_path / "p")], env=env)
    assert result.exit_code == 1 and "no summary.json in" in result.output and "first checkpoint" in result.output


def test_cli_collect_mixed_help_names_the_newest_version():
    """It collects `<task>-mixed`, the newest version: spread-mixed-v1, not the -v0 the help used to promise."""
    from click.testing import CliRunner

    from offline_bench.data import resolve_dataset_id

    result = CliRunner().invoke(main, ["behaviour", "collect-mixed", "--help"])
    text = " ".join(result.output.split())
    assert result.exit_code == 0 and "TASK-mixed-v0" not in text and "newest version" in text
    assert resolve_dataset_id("spread-mixed") == "spread-mixed-v1" and "spread-mixed-v1" in text


@pytest.fixture(scope="module")
def registered_spread_policies(tmp_path_factory):
    """A tiny spread behaviour run exported into a temporary policies folder whose recipes are registered (in place
    of the repository's own spread recipes) for the test; yields (policies folder, run dir, trainer)."""
    from offline_bench.behaviour import recipes
    from offline_bench.behaviour.export import export_policies
    from offline_bench.behaviour.recipes import register_behaviour_recipes
    from offline_bench.data import catalog, collection
    from offline_bench.data import policy as data_policy

    tmp = tmp_path_factory.mktemp("spread-policies")
    # Updates start at step 20 and the medium policy freezes at the first evaluation (step 40): the mixed data
    # holds both uniform-random and learned-policy transitions.
    config = TrainerConfig(task="spread", seed=2, steps=60, start_steps=20, batch_size=8, buffer_capacity=500,
                           eval_every=40, eval_episodes=1, measure_episodes=2, checkpoint_every=1000,
                           medium_target=-1e9)
    trainer = BehaviourTrainer(config, tmp / "run", algo_overrides={"hidden_sizes": (8, 8)})
    trainer.run()
    trainer.finalize()
    policies = tmp / "policies"
    export_policies("spread", tmp / "run", episodes=2, root=policies)

    saved_catalog, saved_factories = dict(catalog.CATALOG), dict(data_policy.POLICY_FACTORIES)
    saved_root, saved_hooks = recipes._policies_root, dict(collection._HOOKS)
    try:
        for quality in ("medium", "mixed", "expert"):  # the repository's own spread policies may be registered
            for version in (0, 1):
                dataset_id = f"spread-{quality}-v{version}"
                catalog.CATALOG[dataset_id] = catalog._initial_catalog()[dataset_id]
        registered = register_behaviour_recipes(policies)
        # only `policies`; a run in the force layout makes the v1 ids, not v0's mpe2 layout
        assert sorted(registered) == ["spread-expert-v1", "spread-medium-v1", "spread-mixed-v1"]
        yield policies, tmp / "run", trainer
    finally:
        catalog.CATALOG.clear()
        catalog.CATALOG.update(saved_catalog)
        data_policy.POLICY_FACTORIES.clear()
        data_policy.POLICY_FACTORIES.update(saved_factories)
        recipes._policies_root = saved_root
        collection._HOOKS.clear()
        collection._HOOKS.update(saved_hooks)


def test_committed_policy_makes_medium_and_expert_collectable(registered_spread_policies, tmp_path):
    from offline_bench.data import collection, load_dataset

    manifest = collection.collect("spread-medium", steps=100, seed=0, root=tmp_path / "data")
    assert manifest["behaviour_policy"]["name"] == "checkpoint"
    assert manifest["behaviour_policy"]["sha256"] == manifest["recipe"]["policy_params"]["sha256"]
    dataset = load_dataset("spread-medium", root=tmp_path / "data")
    assert dataset.transitions == 100 and np.abs(dataset.actions).max() <= 1.0


def test_collect_of_a_mixed_id_is_the_replay_buffer_prefix(registered_spread_policies, tmp_path, monkeypatch):
    """`offline-bench collect spread-mixed`: refused without a saved run, rebuilt exactly with --retrain, taken from
    a saved run byte-identically, and its size is fixed."""
    import dataclasses

    from click.testing import CliRunner

    from offline_bench.behaviour import tasks
    from offline_bench.data import load_dataset

    policies, run_dir, trainer = registered_spread_policies
    env = {"OFFLINE_BENCH_RUNS": str(tmp_path / "runs")}  # no saved run there
    data = tmp_path / "data"
    refused = CliRunner().invoke(main, ["collect", "spread-mixed", "--root", str(data)], env=env)
    assert refused.exit_code == 1 and refused.output.count("\n") == 1, refused.output
    assert "add --retrain" in refused.output and "40 training steps" in refused.output
    assert not data.exists() or list(data.iterdir()) == []

    # A learner default added to the task's recipe after the run must not change the re-run.
    changed = dataclasses.replace(tasks.RECIPES["spread"], algo_defaults=(*tasks.RECIPES["spread"].algo_defaults,
                                                                           ("tau", 0.5)))
    monkeypatch.setitem(tasks.RECIPES, "spread", changed)
    result = CliRunner().invoke(main, ["collect", "spread-mixed", "--retrain", "--root", str(data)], env=env)
    assert result.exit_code == 0, result.output
    assert "spread-mixed-v1: 40 transitions, 2 episodes" in result.output
    dataset = load_dataset("spread-mixed", root=data)
    prefix = trainer.buffer.prefix(40)
    for key in ("observations", "actions", "rewards", "next_observations"):
        np.testing.assert_array_equal(dataset.agent_axis(key), prefix[key])
    np.testing.assert_array_equal(dataset.terminals, prefix["terminals"])
    assert not np.array_equal(prefix["actions"][:20], prefix["actions"][20:40])  # random, then the learner acting
    manifest = dataset.manifest
    assert manifest["behaviour_policy"]["bit_identical_to_index"] is True
    assert manifest["recipe"]["kind"] == "replay-buffer" and manifest["recipe"]["fixed_steps"] == 40
    assert manifest["last_episode_cut"] is True and dataset.timeouts[-1]  # step 40 falls inside episode 2

    again = CliRunner().invoke(main, ["collect", "spread-mixed", "--root", str(data)], env=env)
    assert again.exit_code == 0 and "already collected identically" in again.output
    saved = CliRunner().invoke(main, ["behaviour", "collect-mixed", "spread", "--workdir", str(run_dir),
                                      "--root", str(tmp_path / "from-run")], env=env)
    assert saved.exit_code == 0, saved.output
    assert (tmp_path / "from-run" / "spread-mixed-v1.hdf5").read_bytes() == (data / "spread-mixed-v1.hdf5").read_bytes()
    wrong = CliRunner().invoke(main, ["collect", "spread-mixed", "--steps", "30", "--root", str(data)], env=env)
    assert wrong.exit_code == 1 and "fixed size" in wrong.output and "40 transitions" in wrong.output


@pytest.mark.slow  # real PyBullet hopper with the real 256x256 SAC: a few hundred updates
def test_hopper_resume_mid_episode_is_exact(tmp_path):
    config = TrainerConfig(task="hopper", seed=5, steps=320, start_steps=200, eval_every=160, eval_episodes=1,
                           measure_episodes=1, checkpoint_every=250, buffer_capacity=1000)
    straight = BehaviourTrainer(config, tmp_path / "straight")
    straight.run()

    class Interrupted(Exception):
        pass

    def crash(info: dict) -> None:
        if info["step"] > 290:
            raise Interrupted

    with pytest.raises(Interrupted):
        BehaviourTrainer(config, tmp_path / "resumed").run(crash)
    resumed = BehaviourTrainer(config, tmp_path / "resumed")
    assert resumed.step == 250
    resumed.run()
    for name, tensor in straight.learner.actor.state_dict().items():
        torch.testing.assert_close(tensor, resumed.learner.actor.state_dict()[name], rtol=0, atol=0)
    np.testing.assert_array_equal(straight.buffer.next_obs[:320], resumed.buffer.next_obs[:320])


class TwoAgentReachEnv(Env):
    """Two points, each steered by its own agent towards its own target; both get the team reward."""

    spec = TaskSpec("reach2", 2, (2, 2), (1, 1), 10, "test:reach2")

    def reset(self, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        self.x, self.target, self.t = np.zeros(2), rng.uniform(-1, 1, 2), 0
        return self._obs()

    def _obs(self) -> np.ndarray:
        return np.stack([self.x, self.target], axis=1).astype(np.float32)  # [2, 2]

    def step(self, action: np.ndarray) -> StepResult:
        self.x = np.clip(self.x + 0.3 * action[:, 0], -2.0, 2.0)
        self.t += 1
        team = -float(np.abs(self.x - self.target).sum())
        return StepResult(self._obs(), np.full(2, team, np.float32), False, self.t >= self.spec.episode_length, {})


@pytest.mark.slow
def test_matd3_learns_two_agent_reach(tmp_path):
    config = TrainerConfig(task="reach2", seed=0, steps=2000, start_steps=200, batch_size=64, buffer_capacity=10_000,
                           eval_every=500, eval_episodes=5, measure_episodes=5, checkpoint_every=10_000)
    trainer = BehaviourTrainer(config, tmp_path / "run", algo="matd3",
                               algo_overrides={"hidden_sizes": (32, 32), "gamma": 0.9}, env_factory=TwoAgentReachEnv)
    trainer.run()
    summary = trainer.finalize()
    # Uniform actions score about -10.7; steering both points straight to their targets about -0.9.
    assert summary["expert"]["return_mean"] > summary["random"]["return_mean"] + 6.0, summary["expert"]
    assert summary["expert"]["return_mean"] > -2.0


def test_loading_a_policy_leaves_the_random_stream_alone(tmp_path):
    trainer = tiny_trainer(tmp_path, "run", steps=120)
    trainer.run()
    state = torch.get_rng_state()
    load_policy_file(tmp_path / "run" / "best_actor.pt")
    assert torch.equal(state, torch.get_rng_state())  # measuring a frozen policy mid-run must not change training


def test_a_wrapped_buffer_refuses_to_give_its_lost_prefix(tmp_path):
    """The mixed data is the buffer from step 0: once the ring has overwritten it, asking for it is an error."""
    buffer = ReplayBuffer(4, 1, 2, 1)
    for k in range(6):
        buffer.add(np.full((1, 2), k, np.float32), np.zeros((1, 1), np.float32), np.zeros(1, np.float32),
                   np.zeros((1, 2), np.float32), False, False)
    with pytest.raises(ValueError, match="first 3 are gone"):
        buffer.prefix(3)
    # a multi-agent medium is chosen after the run, so the whole run must fit in the buffer
    from offline_bench.behaviour.trainer import default_config

    assert default_config("spread", steps=2_000_000).buffer_capacity == 2_000_000
    with pytest.raises(ValueError, match="buffer_capacity=300"):
        BehaviourTrainer(TrainerConfig(task="spread", steps=300, buffer_capacity=200), tmp_path / "run")


def test_committed_mpe2_layout_policy_is_measured_in_its_own_layout():
    """The committed MPE policies were trained in mpe2's 5-dim layout; measuring one (as a re-export does) steps an
    env of that layout, and its return equals the force-layout conversion's (the same moves)."""
    from offline_bench.behaviour.export import measure_policy_file
    from offline_bench.behaviour.policy import load_policy, policy_entry
    from offline_bench.behaviour.trainer import MEASURE_SEED_BASE, rollout_returns, task_env
    from offline_bench.envs import task_spec
    from offline_bench.paths import policies_root

    entry = policy_entry("spread", "expert")
    measured = measure_policy_file("spread", policies_root() / entry["file"], episodes=3)
    converted = load_policy("spread", "expert").in_layout(task_spec("spread"))
    env = task_env("spread")  # the default "force" layout
    returns = rollout_returns(env, converted.act, [MEASURE_SEED_BASE + i for i in range(3)])
    env.close()
    np.testing.assert_allclose(measured["return_mean"], returns.mean(), rtol=1e-4)


def test_expert_of_a_second_run_keeps_the_medium_run_for_retrain(tmp_path):
    """Exporting only the expert of another run (``--keep-medium``) keeps the medium policy, its mixed data and the
    run that made them (``run``, what ``--retrain`` re-runs); the second run is recorded as ``expert_run``."""
    from offline_bench.behaviour.export import export_policies
    from offline_bench.behaviour.policy import read_index

    def train(seed: int, workdir: str, medium_target: float = -1e9) -> None:
        config = TrainerConfig(task="spread", seed=seed, steps=60, start_steps=20, batch_size=8, buffer_capacity=500,
                               eval_every=30, eval_episodes=1, measure_episodes=2, checkpoint_every=1000,
                               medium_target=medium_target)
        trainer = BehaviourTrainer(config, tmp_path / workdir, algo_overrides={"hidden_sizes": (8, 8)})
        trainer.run()
        trainer.finalize()

    train(3, "a")
    train(4, "b")
    policies = tmp_path / "policies"
    first = export_policies("spread", tmp_path / "a", episodes=2, root=policies)
    export_policies("spread", tmp_path / "a", episodes=2, root=policies, include_medium=False)  # same run again
    assert "expert_run" not in read_index(policies)["tasks"]["spread"]
    entry = export_policies("spread", tmp_path / "b", episodes=2, root=policies, include_medium=False)
    assert entry["run"] == first["run"] and entry["run"]["seed"] == 3 and entry["expert_run"]["seed"] == 4
    assert entry["medium"] == first["medium"] and entry["mixed"] == first["mixed"] and entry["random"] == first["random"]
    assert entry["expert"]["sha256"] != first["expert"]["sha256"]
    assert read_index(policies)["tasks"]["spread"] == entry
    # A run without a medium policy, exported without its expert: the medium, mixed data, expert and run records
    # stay (they were deleted from the index, their datasets no longer collectable); with its expert, only that moves.
    train(5, "c", medium_target=1e9)
    kept = export_policies("spread", tmp_path / "c", episodes=2, root=policies, include_expert=False)
    for key in ("run", "random", "medium", "mixed", "expert", "expert_run"):
        assert kept[key] == entry[key], key
    assert read_index(policies)["tasks"]["spread"] == kept
    moved = export_policies("spread", tmp_path / "c", episodes=2, root=policies, include_expert=True)
    assert moved["run"] == first["run"] and moved["medium"] == first["medium"] and moved["expert_run"]["seed"] == 5
    assert moved["expert"]["sha256"] != entry["expert"]["sha256"] or moved["expert"]["step"] != entry["expert"]["step"]
