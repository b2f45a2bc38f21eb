"""Normalized score and side-by-side evaluation in real envs."""
import math

import numpy as np
import pytest
import torch

from offline_bench.data import MissingReferenceError
from offline_bench.envs import VectorEnv, task_spec
from offline_bench.evaluate import (
    Evaluator,
    episode_seeds,
    eval_seed,
    evaluate,
    normalized_score,
    reference_returns,
)

torch.set_num_threads(1)


def test_normalized_score_scale():
    assert normalized_score(20.0, 20.0, 1420.0) == 0.0
    assert normalized_score(1420.0, 20.0, 1420.0) == 100.0
    assert normalized_score(720.0, 20.0, 1420.0) == pytest.approx(50.0)
    assert normalized_score(-50.0, -100.0, 100.0) == pytest.approx(25.0)


@pytest.mark.parametrize("ref_random, ref_expert, missing", [(None, 10.0, "random"), (0.0, None, "expert"),
                                                             (math.nan, 1.0, "random")])
def test_normalized_score_refuses_missing_reference(ref_random, ref_expert, missing):
    with pytest.raises(MissingReferenceError, match=f"needs the {missing} reference"):
        normalized_score(5.0, ref_random, ref_expert)
    with pytest.raises(ValueError, match="equal"):
        normalized_score(5.0, 3.0, 3.0)


def test_reference_returns_from_manifest_layouts():
    assert reference_returns({"references": {"random": -1.5, "expert": 9.0, "source": "x"}}) == (-1.5, 9.0)
    assert reference_returns({"ref_random": 2, "ref_expert": 4}) == (2.0, 4.0)
    assert reference_returns({"references": {"random": 1.0, "expert": None}}) == (1.0, None)
    assert reference_returns({}) == (None, None)


def test_episode_seeds_are_deterministic_and_distinct():
    assert episode_seeds(3, 10) == episode_seeds(3, 10)
    assert len(set(episode_seeds(3, 10))) == 10
    assert episode_seeds(3, 10) != episode_seeds(4, 10)
    assert eval_seed(0, 500) == eval_seed(0, 500) != eval_seed(0, 1000) != eval_seed(1, 500)


def _linear_policy(task: str, scale: float = 0.3):
    spec = task_spec(task)
    weight = torch.linspace(-1.0, 1.0, spec.obs_dim * spec.action_dim).reshape(spec.obs_dim, spec.action_dim)
    calls = []

    def act(obs: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(obs.shape))
        return torch.tanh(scale * obs @ weight)  # [E, N, A]

    return act, calls


def test_evaluate_is_deterministic_and_batches_all_episodes_per_step():
    act, calls = _linear_policy("hopper")
    first = evaluate(act, "hopper", episodes=4, seed=7, device="cpu")
    assert first.returns.shape == (4,) and first.agent_returns.shape == (4, 1)
    # One batched forward per env step, for all 4 episodes at once, until the longest episode ends.
    assert calls and all(shape == (4, 1, 15) for shape in calls)
    assert len(calls) == first.lengths.max()
    second = evaluate(act, "hopper", episodes=4, seed=7, device="cpu")
    np.testing.assert_array_equal(first.returns, second.returns)
    other = evaluate(act, "hopper", episodes=4, seed=8, device="cpu")
    assert not np.array_equal(first.returns, other.returns)


def test_side_by_side_equals_one_episode_at_a_time():
    act, _ = _linear_policy("hopper")
    batched = evaluate(act, "hopper", episodes=3, seed=11, device="cpu")
    with VectorEnv("hopper", 1) as env:
        for i, seed in enumerate(batched.seeds):
            obs, total, steps = env.reset([seed]), 0.0, 0
            while not env.done.all():
                obs, reward, _, _ = env.step(act(torch.as_tensor(obs)).numpy())
                total += float(reward.sum())
                steps += 1
            assert total == pytest.approx(batched.returns[i], rel=1e-6)
            assert steps == batched.lengths[i]


def test_multi_agent_return_is_team_mean_and_evaluator_reuses_envs():
    act, calls = _linear_policy("spread")
    with Evaluator("spread", 3, "cpu") as evaluator:
        a = evaluator(act, seed=1)
        b = evaluator(act, seed=1)
    assert a.agent_returns.shape == (3, 3)
    np.testing.assert_allclose(a.returns, a.agent_returns.mean(axis=1))
    np.testing.assert_array_equal(a.returns, b.returns)
    assert (a.lengths == task_spec("spread").episode_length).all()  # MPE episodes end by truncation at 25 steps
    assert all(shape == (3, 3, 18) for shape in calls)


def test_evaluation_opponent_follows_the_manifest():
    from types import SimpleNamespace

    from offline_bench.train.loop import TrainError, _opponent

    def dataset(opponents):
        return SimpleNamespace(dataset_id="tag-medium-v0", manifest={"env": {"opponents": opponents}})

    assert _opponent(dataset("1 non-learning agents act uniformly at random, seeded by ..."), "tag")[0] is None
    assert _opponent(SimpleNamespace(dataset_id="tag-random-v0", manifest={}), "tag")[0] is None
    assert _opponent(dataset("anything"), "hopper") == (None, "none")
    from offline_bench.behaviour.policy import load_policy

    fixed = dataset("1 non-learning agents follow the behaviour policy's fixed opponent policy")
    if load_policy("tag", "opponent") is None:  # collected against a policy that is not committed: refuse
        with pytest.raises(TrainError, match="collected against a fixed tag opponent policy"):
            _opponent(fixed, "tag")
    else:
        opponent, text = _opponent(fixed, "tag")
        assert callable(opponent) and "sha256" in text
