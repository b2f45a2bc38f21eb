"""The environment layer: every task's adapter against its real simulator (no mocks of our own code).

Spies wrap only the third-party simulators' ``step`` to see which actions reached them.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from offline_bench.envs import OPPONENTS, TASKS, Env, VectorEnv, make_env, task_spec

ALL_TASKS = list(TASKS)
BULLET = ["hopper", "halfcheetah", "walker2d", "ant"]
MPE = ["spread", "tag", "world"]


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def random_actions(name: str, steps: int, seed: int = 0, scale: float = 1.0) -> np.ndarray:
    spec = task_spec(name)
    rng = np.random.default_rng(seed)
    return (scale * rng.uniform(-1, 1, (steps, spec.n_agents, spec.action_dim))).astype(np.float32)  # [T, N, A]


def rollout(env: Env, seed: int, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Observations [T+1, N, O] and rewards [T, N] until the episode ends or the actions run out."""
    obs, rewards = [env.reset(seed)], []
    for action in actions:
        result = env.step(action)
        obs.append(result.obs)
        rewards.append(result.reward)
        if result.terminated or result.truncated:
            break
    return np.stack(obs), np.stack(rewards)


def spy_on_simulator(env: Env) -> list[Any]:
    """Record every action the wrapped third-party env receives (the adapter's ``_env``)."""
    calls: list[Any] = []
    inner = env._env  # type: ignore[attr-defined]
    original = inner.step

    def recording_step(action: Any) -> Any:
        calls.append({k: np.array(v) for k, v in action.items()} if isinstance(action, dict) else np.array(action))
        return original(action)

    inner.step = recording_step
    return calls


# --- specs -------------------------------------------------------------------------------------------------------


def true_sizes(env: Env) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Per learning agent (obs size, action size), read from the simulator's own spaces."""
    inner = env._env  # type: ignore[attr-defined]
    if env.spec.name in BULLET:
        return (inner.observation_space.shape[0],), (inner.action_space.shape[0],)
    agents = env.agents  # type: ignore[attr-defined]
    return (
        tuple(inner.observation_space(a).shape[0] for a in agents),
        tuple(inner.action_space(a).shape[0] for a in agents),
    )


@pytest.mark.parametrize("name", ALL_TASKS)
def test_task_spec_matches_the_real_env(name: str) -> None:
    with make_env(name) as env:
        obs_sizes, action_sizes = true_sizes(env)
        assert env.spec == TASKS[name]
        assert obs_sizes == TASKS[name].obs_sizes
        if name in MPE:  # the default "force" layout: 2 force dims per agent (+ the leader's 4 say dims of mpe2's 9)
            assert TASKS[name].action_layout == "force"
            assert TASKS[name].action_sizes == tuple(size - 3 for size in action_sizes)
            assert task_spec(name, "mpe2").action_sizes == action_sizes  # the "mpe2" layout is mpe2's own Box
        else:
            assert action_sizes == TASKS[name].action_sizes
            assert TASKS[name].action_layout is None
        assert len(obs_sizes) == TASKS[name].n_agents
        if name in OPPONENTS:
            opp = OPPONENTS[name]
            inner = env._env  # type: ignore[attr-defined]
            assert env.opponent_spec == opp  # type: ignore[attr-defined]
            assert tuple(env.opponent_names) == opp.names  # type: ignore[attr-defined]
            assert {inner.observation_space(a).shape[0] for a in opp.names} == {opp.obs_size}
            assert {inner.action_space(a).shape[0] for a in opp.names} == {opp.action_size}


def test_task_spec_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(KeyError, match="valid tasks: hopper, halfcheetah"):
        task_spec("hoper")
    with pytest.raises(KeyError, match="valid tasks"):
        make_env("cartpole")


def test_task_spec_action_layouts() -> None:
    assert task_spec("spread", "force") is TASKS["spread"]
    assert task_spec("world", "mpe2").action_sizes == (9, 5, 5, 5) and task_spec("world", "mpe2").action_layout == "mpe2"
    with pytest.raises(ValueError, match="spread.*no action layout 'polar'.*force, mpe2"):
        task_spec("spread", "polar")
    with pytest.raises(ValueError, match="hopper.*no action layout 'mpe2'"):
        make_env("hopper", action_layout="mpe2")


def test_specs_padded_sizes() -> None:
    assert TASKS["world"].action_dim == 6 and TASKS["world"].obs_dim == 34
    assert task_spec("world", "mpe2").action_dim == 9
    assert TASKS["halfcheetah-2x3"].multi_agent and not TASKS["hopper"].multi_agent


# --- shapes, dtypes, bounds --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_TASKS)
def test_reset_and_step_shapes_and_dtypes(name: str) -> None:
    spec = TASKS[name]
    with make_env(name) as env:
        obs = env.reset(0)
        assert obs.shape == (spec.n_agents, spec.obs_dim) and obs.dtype == np.float32
        for i, size in enumerate(spec.obs_sizes):
            assert not obs[i, size:].any(), "padding must be zeros"
        for action in random_actions(name, 3):
            result = env.step(action)
            assert result.obs.shape == (spec.n_agents, spec.obs_dim) and result.obs.dtype == np.float32
            assert result.reward.shape == (spec.n_agents,) and result.reward.dtype == np.float32
            assert np.isfinite(result.obs).all() and np.isfinite(result.reward).all()
            assert isinstance(result.terminated, bool) and isinstance(result.truncated, bool)


def simulator_actions(calls: list[Any], env: Env) -> list[np.ndarray]:
    """The last recorded simulator action of each learning agent."""
    last = calls[-1]
    if isinstance(last, dict):
        return [last[a] for a in env.agents]  # type: ignore[attr-defined]
    return [last]


@pytest.mark.parametrize("name", [*BULLET, "halfcheetah-2x3", *(f"{t}:mpe2" for t in MPE)])
def test_plus_minus_one_reach_the_env_bounds(name: str) -> None:
    name, _, layout = name.partition(":")
    spec = task_spec(name, layout or None)
    with make_env(name, action_layout=layout or None) as env:
        calls = spy_on_simulator(env)
        env.reset(0)
        inner = env._env  # type: ignore[attr-defined]
        for value, bound in ((-1.0, "low"), (1.0, "high"), (7.5, "high"), (-3.0, "low")):
            env.step(np.full((spec.n_agents, spec.action_dim), value, dtype=np.float32))
            for i, sent in enumerate(simulator_actions(calls, env)):
                space = inner.action_space if name in BULLET else inner.action_space(env.agents[i])  # type: ignore[attr-defined]
                assert sent.shape == (spec.action_sizes[i],)
                # out-of-range actions are clipped to [-1, 1], so they also land exactly on the bound
                np.testing.assert_allclose(sent, getattr(space, bound), atol=1e-6)
                low, high = env.env_action_bounds[i]  # type: ignore[attr-defined]
                np.testing.assert_array_equal((low, high), (space.low, space.high))
        if name in MPE:  # mpe2's continuous actions are Box(0, 1): 0 maps to the middle
            env.step(np.zeros((spec.n_agents, spec.action_dim), dtype=np.float32))
            np.testing.assert_allclose(simulator_actions(calls, env)[0], 0.5)


@pytest.mark.parametrize("name", MPE)
def test_force_layout_sends_mpe2_the_force(name: str) -> None:
    """The "force" layout's (f_x, f_y) reaches mpe2 as (0, max(-f_x, 0), max(f_x, 0), max(-f_y, 0), max(f_y, 0)),
    which mpe2 turns into the force (p[2] - p[1], p[4] - p[3]) = (f_x, f_y); the leader's say values map linearly."""
    spec = TASKS[name]
    action = random_actions(name, 1, seed=3)[0]  # [N, A]
    with make_env(name) as env:
        calls = spy_on_simulator(env)
        env.reset(0)
        env.step(action)
        for i, sent in enumerate(simulator_actions(calls, env)):
            mpe2_size = task_spec(name, "mpe2").action_sizes[i]
            assert sent.shape == (mpe2_size,) and sent[0] == 0.0 and sent.min() >= 0.0 and sent.max() <= 1.0
            force = np.array([sent[2] - sent[1], sent[4] - sent[3]])
            np.testing.assert_allclose(force, action[i, :2], atol=1e-6)
            assert min(sent[1], sent[2]) == 0.0 and min(sent[3], sent[4]) == 0.0
            np.testing.assert_allclose(sent[5:], (action[i, 2 : spec.action_sizes[i]] + 1) / 2, atol=1e-6)


@pytest.mark.parametrize("name", MPE)
def test_mpe2_actions_converted_to_force_move_the_agents_the_same_way(name: str) -> None:
    """``mpe2_to_force`` is exact up to float rounding: an episode stepped in the "mpe2" layout and the same actions
    converted and stepped in the "force" layout give the same observations and rewards (also for the leader's say)."""
    from offline_bench.envs.mpe import mpe2_to_force

    legacy = task_spec(name, "mpe2")
    rng = np.random.default_rng(1)
    actions = rng.uniform(-1, 1, (25, legacy.n_agents, legacy.action_dim)).astype(np.float32) * legacy.action_mask()
    actions[3] = np.sign(actions[3])  # the bounds themselves
    with make_env(name, action_layout="mpe2") as old, make_env(name) as new:
        obs_old, rew_old = rollout(old, 4, actions)
        obs_new, rew_new = rollout(new, 4, mpe2_to_force(actions, TASKS[name].action_dim))
    assert len(rew_old) == 25
    np.testing.assert_allclose(obs_new, obs_old, atol=1e-5)
    np.testing.assert_allclose(rew_new, rew_old, atol=1e-5)


def test_uniform_box_actions_are_the_same_draws_in_every_layout() -> None:
    """The random reference draws uniformly over mpe2's own box in both layouts (the force layout converts)."""
    from offline_bench.envs import uniform_box_actions
    from offline_bench.envs.mpe import mpe2_to_force

    legacy = task_spec("world", "mpe2")
    old = uniform_box_actions(legacy, np.random.default_rng(5), 7)  # [7, 4, 9]
    new = uniform_box_actions(TASKS["world"], np.random.default_rng(5), 7)  # [7, 4, 6]
    assert old.shape == (7, 4, 9) and new.shape == (7, 4, 6)
    assert not old[:, 1:, 5:].any() and not new[:, 1:, 2:].any()  # padding is zero
    np.testing.assert_array_equal(new, mpe2_to_force(old, 6) * TASKS["world"].action_mask())


@pytest.mark.parametrize("name", ["hopper", "spread", "halfcheetah-2x3"])
def test_out_of_range_actions_are_clipped(name: str) -> None:
    actions = random_actions(name, 10)
    with make_env(name) as env:
        obs_clipped, rew_clipped = rollout(env, 1, np.sign(actions))
        obs_big, rew_big = rollout(env, 1, 10.0 * np.sign(actions))
    np.testing.assert_array_equal(obs_clipped, obs_big)
    np.testing.assert_array_equal(rew_clipped, rew_big)


def test_bad_actions_are_rejected_with_a_clear_message() -> None:
    with make_env("spread") as env:
        env.reset(0)
        with pytest.raises(ValueError, match=r"shape \[N, A\] = \[3, 2\]"):
            env.step(np.zeros((3, 5), dtype=np.float32))
        bad = np.zeros((3, 2), dtype=np.float32)
        bad[1, 1] = np.nan
        with pytest.raises(ValueError, match="NaN or inf"):
            env.step(bad)


def test_padded_action_dims_are_ignored() -> None:
    """world's adversaries have 5 action dims padded to the leader's 9: the padding must not matter."""
    actions = random_actions("world", 6)
    noisy = actions.copy()
    noisy[:, 1:, 5:] = np.random.default_rng(5).uniform(-1, 1, noisy[:, 1:, 5:].shape)
    with make_env("world") as env:
        a = rollout(env, 2, actions)
        b = rollout(env, 2, noisy)
    np.testing.assert_array_equal(a[0], b[0])


# --- determinism ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_TASKS)
def test_seeded_determinism(name: str) -> None:
    actions = random_actions(name, 30, seed=4)
    with make_env(name) as env:
        first = rollout(env, 7, actions)
        rollout(env, 8, actions)  # another episode in between must not leak into the next one
        again = rollout(env, 7, actions)
        other = env.reset(8)
    with make_env(name) as fresh:
        fresh_run = rollout(fresh, 7, actions)
    for run in (again, fresh_run):
        np.testing.assert_array_equal(first[0], run[0])
        np.testing.assert_array_equal(first[1], run[1])
    assert not np.array_equal(first[0][0], other), "different seeds should give different first observations"


# --- episode ends --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["spread", "tag", "world", "halfcheetah", "halfcheetah-2x3"])
def test_episodes_end_by_truncation_at_the_time_limit(name: str) -> None:
    spec = TASKS[name]
    with make_env(name) as env:
        env.reset(0)
        zero = np.zeros((spec.n_agents, spec.action_dim), dtype=np.float32)
        for t in range(1, spec.episode_length + 1):
            result = env.step(zero)
            assert not result.terminated
            assert result.truncated == (t == spec.episode_length), f"truncated at step {t}"
        assert result.info["t"] == spec.episode_length
        with pytest.raises(RuntimeError, match="call reset"):
            env.step(zero)
        env.reset(1)  # and a reset starts a new episode
        assert not env.step(zero).truncated


@pytest.mark.parametrize("name", ["hopper", "walker2d"])
def test_falling_terminates_without_truncation(name: str) -> None:
    with make_env(name) as env:
        obs, rewards = rollout(env, 0, random_actions(name, 1000))
        assert len(rewards) < 1000, "random actions should make the robot fall long before the time limit"
        assert rewards[-1, 0] < 0  # the alive bonus turns to -1 when it falls
    with make_env(name) as env:
        env.reset(0)
        for action in random_actions(name, 1000):
            result = env.step(action)
            if result.terminated or result.truncated:
                break
        assert result.terminated and not result.truncated


def test_step_before_reset_is_refused() -> None:
    with make_env("hopper") as env, pytest.raises(RuntimeError, match="call reset"):
        env.step(np.zeros((1, 3), dtype=np.float32))


# --- opponents -----------------------------------------------------------------------------------------------------


class RecordingOpponent:
    """A fixed policy that always pushes in +x, and remembers what it saw."""

    def __init__(self, action_size: int) -> None:
        self.action_size = action_size
        self.seen: list[np.ndarray] = []
        self.reset_seeds: list[int] = []

    def reset(self, seed: int) -> None:
        self.reset_seeds.append(seed)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        self.seen.append(obs.copy())
        action = -np.ones((obs.shape[0], self.action_size), dtype=np.float32)
        action[:, 1] = 1.0  # +x force
        return action


@pytest.mark.parametrize("name", ["tag", "world"])
def test_opponent_hook_is_used_when_given(name: str) -> None:
    opp = OPPONENTS[name]
    policy = RecordingOpponent(opp.action_size)
    with make_env(name, opponent=policy) as env:
        calls = spy_on_simulator(env)
        env.reset(3)
        for action in random_actions(name, 5):
            env.step(action)
        assert policy.reset_seeds == [3]
        assert len(policy.seen) == 5
        assert all(o.shape == (opp.n_agents, opp.obs_size) and o.dtype == np.float32 for o in policy.seen)
        for name_ in opp.names:  # its [-1, 1] actions reached the simulator mapped to Box(0, 1)
            np.testing.assert_allclose(calls[-1][name_], [0.0, 1.0, 0.0, 0.0, 0.0])
        # what the opponent sees is the simulator's own observation of those agents at that step
        raw = [np.asarray(env._env.raw.observe(a)) for a in opp.names]  # type: ignore[attr-defined]
        env.step(random_actions(name, 1)[0])
        np.testing.assert_allclose(policy.seen[-1], np.stack(raw), rtol=1e-6)


@pytest.mark.parametrize("name", ["spread", "tag", "world"])
def test_mpe_parallel_stepper_gives_pettingzoo_parallel_env_episodes(name: str) -> None:
    """The adapter's lean stepping of mpe2's raw env (and its collision test) equals mpe2's own ``parallel_env``,
    bit for bit."""
    from offline_bench.envs import mpe

    module_name, kwargs = mpe._MPE_ENVS[name]
    module = mpe._mpe_module(module_name)
    ours = mpe._ParallelStepper(mpe._raw_env(module_name, **kwargs))
    stock = module.parallel_env(continuous_actions=True, max_cycles=25, **kwargs)
    rng = np.random.default_rng(0)
    assert ours.raw.scenario.is_collision is mpe._is_collision
    for seed in (0, 11, 12, 13):
        obs = ours.reset(seed)
        stock_obs, _ = stock.reset(seed=seed)
        assert obs.keys() == stock_obs.keys()
        for t in range(25):
            actions = {a: rng.uniform(0.0, 1.0, stock.action_space(a).shape).astype(np.float32) for a in stock.agents}
            if t == 3:  # the Box bounds themselves
                actions = {a: np.ones_like(v) if i % 2 else np.zeros_like(v) for i, (a, v) in enumerate(actions.items())}
            obs, rewards, terminations, truncations = ours.step(actions)
            stock_obs, stock_rewards, stock_terminations, stock_truncations, _ = stock.step(actions)
            for a in stock_obs:
                np.testing.assert_array_equal(obs[a], stock_obs[a])
            assert rewards == dict(stock_rewards)
            assert terminations == stock_terminations and truncations == stock_truncations
        assert all(truncations.values())
    ours.close()
    stock.close()


def test_opponent_is_replaceable_and_changes_the_episode() -> None:
    actions = random_actions("tag", 10)
    with make_env("tag") as env:
        random_run = rollout(env, 0, actions)
        env.opponent = RecordingOpponent(5)
        pushed = rollout(env, 0, actions)
        assert len(env.opponent.seen) == 10  # type: ignore[union-attr]
        env.opponent = None  # back to the seeded random prey
        random_again = rollout(env, 0, actions)
    assert not np.array_equal(random_run[0], pushed[0])
    np.testing.assert_array_equal(random_run[0], random_again[0])


def test_opponent_errors() -> None:
    with pytest.raises(ValueError, match="no opponents"):
        make_env("spread", opponent=lambda obs: obs)
    with make_env("tag", opponent=lambda obs: np.zeros((1, 3), dtype=np.float32)) as env:
        env.reset(0)
        with pytest.raises(ValueError, match=r"shape \[1, 5\]"):  # opponents act in mpe2's own 5 dims
            env.step(np.zeros((3, 2), dtype=np.float32))


# --- no stray output, no MUJOCO_LOG.TXT ----------------------------------------------------------------------------


def test_first_use_prints_nothing_and_writes_no_files(tmp_path: Path) -> None:
    """In a fresh process (so imports happen for the first time): build, reset and step all 8 tasks; nothing is
    printed to stdout or stderr, nothing is written to the working directory, and the pybullet shim cleans up."""
    script = textwrap.dedent(
        """
        import sys
        import numpy as np
        from offline_bench.envs import TASKS, make_env
        path_before = list(sys.path)
        for name, spec in TASKS.items():
            env = make_env(name)
            env.reset(0)
            for _ in range(3):
                env.step(np.zeros((spec.n_agents, spec.action_dim), dtype=np.float32))
            env.close()
        # the pybullet shim leaves no fake gym / pkg_resources behind, and sys.path as it was
        assert sys.path == path_before, set(sys.path) ^ set(path_before)
        assert "gym" not in sys.modules and "pkg_resources" not in sys.modules
        """
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert done.stderr == ""
    assert list(tmp_path.iterdir()) == [], "no MUJOCO_LOG.TXT (or anything else) in the working directory"


@pytest.mark.parametrize("name", ALL_TASKS)
def test_no_stdout_in_process(name: str, capfd: pytest.CaptureFixture[str], tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    spec = TASKS[name]
    with make_env(name) as env:
        env.reset(0)
        env.step(np.zeros((spec.n_agents, spec.action_dim), dtype=np.float32))
    out, _ = capfd.readouterr()
    assert out == ""
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()


# --- VectorEnv -----------------------------------------------------------------------------------------------------


def test_vector_env_matches_single_envs_and_freezes_finished_copies() -> None:
    seeds = [0, 1, 2]
    actions = random_actions("hopper", 200, seed=9)  # [T, 1, A]; random hopping falls within a few dozen steps
    singles = []
    for seed in seeds:
        with make_env("hopper") as env:
            singles.append(rollout(env, seed, actions))
    lengths = [len(r) for _, r in singles]
    assert len(set(lengths)) > 1, "need copies that end at different steps"
    with VectorEnv("hopper", 3) as venv:
        obs = venv.reset(seeds)
        assert obs.shape == (3, 1, 15)
        for e in range(3):
            np.testing.assert_array_equal(obs[e], singles[e][0][0])
        for t in range(max(lengths) + 2):
            obs, reward, terminated, truncated = venv.step(np.repeat(actions[t][None], 3, axis=0))
            assert obs.shape == (3, 1, 15) and reward.shape == (3, 1)
            assert terminated.dtype == bool and truncated.shape == (3,)
            for e in range(3):
                if t < lengths[e]:
                    np.testing.assert_array_equal(obs[e], singles[e][0][t + 1])
                    np.testing.assert_array_equal(reward[e], singles[e][1][t])
                    assert terminated[e] == (t == lengths[e] - 1)
                else:  # frozen: zeros, flags stay as they ended
                    assert not obs[e].any() and not reward[e].any()
                    assert terminated[e] and not truncated[e]
        assert venv.done.all()
        obs = venv.reset([5, 6, 7])
        assert not venv.done.any() and obs.any()


def test_vector_env_multi_agent_shapes_and_errors() -> None:
    with VectorEnv("world", 2) as venv:
        assert venv.spec == TASKS["world"]
        obs = venv.reset([0, 1])
        assert obs.shape == (2, 4, 34)
        obs, reward, terminated, truncated = venv.step(np.zeros((2, 4, 6), dtype=np.float32))
        assert obs.shape == (2, 4, 34) and reward.shape == (2, 4) and not terminated.any()
        with pytest.raises(ValueError, match=r"\[E, N, A\] = \[2, 4, 6\]"):
            venv.step(np.zeros((2, 4, 9), dtype=np.float32))
        with pytest.raises(ValueError, match="one seed per env"):
            venv.reset([0])


def test_vector_env_passes_the_opponent_to_every_copy() -> None:
    policy: Callable[[np.ndarray], np.ndarray] = RecordingOpponent(5)
    with VectorEnv("tag", 2, opponent=policy) as venv:
        venv.reset([0, 1])
        venv.step(np.zeros((2, 3, 2), dtype=np.float32))
    assert len(policy.seen) == 2  # type: ignore[attr-defined]


def test_vector_env_set_opponent() -> None:
    with VectorEnv("world", 2) as venv:
        policy = RecordingOpponent(5)
        venv.set_opponent(policy)
        venv.reset([0, 1])
        venv.step(np.zeros((2, 4, 6), dtype=np.float32))
        assert policy.reset_seeds == [0, 1] and len(policy.seen) == 2
        assert policy.seen[0].shape == (2, 28)
    with VectorEnv("spread", 1) as venv, pytest.raises(ValueError, match="no opponents"):
        venv.set_opponent(policy)
