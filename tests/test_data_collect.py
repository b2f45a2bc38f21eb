"""Collection with the real envs: file layout, manifest, reproducibility, interruption, Minari round trip."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from offline_bench.data import (
    DatasetError,
    DatasetExistsError,
    DeviceSampler,
    NotCollectableError,
    collect,
    collection,
    dataset_status,
    load_dataset,
    measure_random_return,
)
from offline_bench.data.catalog import CATALOG, task_references
from offline_bench.data.collection import derive_seeds
from offline_bench.paths import policies_root

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def collected(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("datasets")
    collect("hopper-random", steps=300, seed=0, root=root)
    collect("spread-random", steps=160, seed=0, root=root)
    return root


def test_hopper_file_has_d4rl_layout_and_full_manifest(collected: Path) -> None:
    with h5py.File(collected / "hopper-random-v0.hdf5", "r") as f:
        assert f["observations"].shape == (300, 15) and f["actions"].shape == (300, 3)
        assert f["rewards"].shape == (300,) and f["next_observations"].shape == (300, 15)
        assert f["terminals"].dtype == np.bool_ and f["timeouts"].shape == (300,)
    manifest = json.loads((collected / "hopper-random-v0.json").read_text())
    for key in ("dataset_id", "format_version", "package_version", "env", "recipe", "behaviour_policy", "seeds",
                "transitions", "episodes", "episode_returns", "references", "sha256"):
        assert key in manifest, key
    assert manifest["env"]["packages"]["pybullet"] == "3.2.7"
    assert manifest["behaviour_policy"]["name"] == "random-init-mlp"
    assert manifest["behaviour_policy"]["init_seed"] == derive_seeds(0)["policy_init_seed"]
    assert manifest["references"]["random"] == 20.058972 and manifest["references"]["expert"] == 1441.8059623430963
    assert manifest["recipe"]["quality"] == "random" and manifest["transitions"] == 300
    with h5py.File(collected / "hopper-random-v0.hdf5", "r") as f:  # the manifest is mirrored inside the file
        inside = json.loads(f.attrs["manifest"])
    assert inside == {k: v for k, v in manifest.items() if k not in ("sha256", "file_bytes")}


def test_hopper_transitions_are_consistent(collected: Path) -> None:
    d = load_dataset("hopper-random", root=collected)
    assert d.terminals.any(), "untrained hopper falls: some episodes must terminate"
    assert not (d.terminals & d.timeouts).any()
    ends = d.episode_ends()
    assert (d.terminals | d.timeouts)[ends].all()
    inner = np.setdiff1d(np.arange(d.transitions - 1), ends)
    np.testing.assert_array_equal(d.next_observations[inner], d.observations[inner + 1])  # (s, a, r, s') aligned
    assert np.abs(d.actions).max() <= 1.0
    first = derive_seeds(0)["first_env_seed"]
    assert set(d.episode_seeds.tolist()) <= set(range(first, first + 10 * d.episodes))
    assert len(set(d.episode_seeds.tolist())) == d.episodes
    # Episode k's first observation is what a fresh env gives for its recorded seed.
    from offline_bench.envs import make_env

    with make_env("hopper") as env:
        for k in (0, d.episodes - 1):
            np.testing.assert_array_equal(env.reset(int(d.episode_seeds[k]))[0], d.observations[d.episode_starts[k]])


def test_spread_file_has_agent_axis_and_timeouts(collected: Path) -> None:
    d = load_dataset("spread-random", root=collected)
    assert d.dataset_id == "spread-random-v1" and d.action_layout == "force" and d.manifest["env"]["action_layout"] == "force"
    assert d.observations.shape == (160, 3, 18) and d.actions.shape == (160, 3, 2) and d.rewards.shape == (160, 3)
    assert not d.terminals.any() and d.timeouts.sum() == d.episodes == 7  # 6 x 25 steps, then one cut at 10
    assert d.manifest["last_episode_cut"] is True
    assert d.manifest["episode_returns"]["episodes"] == 6
    assert d.manifest["references"]["expert"] == task_references("spread").expert
    np.testing.assert_allclose(d.manifest["episode_returns"]["mean"], d.episode_returns()[:6].mean())
    assert len(d.episode_returns()) == 7 and len(d.episode_returns(complete=True)) == 6  # as the manifest counts
    np.testing.assert_allclose(d.manifest["episode_returns"]["mean"], d.episode_returns(complete=True).mean())
    batch = DeviceSampler(d, "cpu", seed=0).sample(8)
    assert batch.obs.shape == (8, 3, 18)


def test_same_id_and_seed_give_byte_identical_files(collected: Path, tmp_path: Path) -> None:
    manifest = collect("hopper-random", steps=300, seed=0, root=tmp_path)
    assert (tmp_path / "hopper-random-v0.hdf5").read_bytes() == (collected / "hopper-random-v0.hdf5").read_bytes()
    assert manifest["sha256"] == json.loads((collected / "hopper-random-v0.json").read_text())["sha256"]
    other = collect("hopper-random", steps=300, seed=1, root=tmp_path / "seed1")
    assert other["sha256"] != manifest["sha256"]
    collect("spread-random", steps=160, seed=0, root=tmp_path)
    assert (tmp_path / "spread-random-v1.hdf5").read_bytes() == (collected / "spread-random-v1.hdf5").read_bytes()


def test_existing_collections_are_kept_refused_or_replaced(tmp_path: Path) -> None:
    first = collect("spread-random", steps=50, seed=0, root=tmp_path)
    path = tmp_path / "spread-random-v1.hdf5"
    stamp = path.stat().st_mtime_ns
    assert collect("spread-random", steps=50, seed=0, root=tmp_path) == first  # identical: kept, not rewritten
    assert path.stat().st_mtime_ns == stamp
    with pytest.raises(DatasetExistsError, match="made differently .requested_steps, seeds.*pass --force"):
        collect("spread-random", steps=60, seed=1, root=tmp_path)
    assert collect("spread-random", steps=60, seed=1, root=tmp_path, force=True)["transitions"] == 60
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # damaged: collecting again repairs it
    path.write_bytes(bytes(data))
    repaired = collect("spread-random", steps=60, seed=1, root=tmp_path)
    assert load_dataset("spread-random", root=tmp_path).manifest["sha256"] == repaired["sha256"]


def test_v0_mpe_data_keeps_mpe2_layout_and_v1_moves_the_agents_the_same_way(tmp_path: Path) -> None:
    """spread-expert-v0 (mpe2 layout, manifest without the field, as before v1 existed) and -v1 (force layout) come
    from the same committed policy: v1's noise-free actions are v0's converted, so the episodes' first step is the
    same move; a v0 file trains and evaluates in its own layout."""
    from offline_bench.envs.mpe import mpe2_to_force

    collection._hook("mixed")
    old = collect("spread-expert-v0", steps=25, root=tmp_path)
    new = collect("spread-expert-v1", steps=25, root=tmp_path)
    assert "action_layout" not in old["env"] and new["env"]["action_layout"] == "force"
    assert old["action_sizes"] == [5, 5, 5] and new["action_sizes"] == [2, 2, 2]
    assert "written as the force-layout actions" in new["recipe"]["description"]
    v0, v1 = load_dataset("spread-expert-v0", root=tmp_path), load_dataset("spread-expert-v1", root=tmp_path)
    assert v0.action_layout == "mpe2" and v1.action_layout == "force"
    np.testing.assert_array_equal(v0.observations[0], v1.observations[0])  # same seeds, same first state
    # the noise differs (it is drawn in each layout's own action space), so compare the noise-free policy
    from offline_bench.behaviour import load_policy
    from offline_bench.envs import task_spec

    policy = load_policy("spread", "expert")
    assert policy is not None and policy.action_layout == "mpe2"
    obs = v0.observations[:4]  # [4, N, O]
    trained = policy.act(obs)  # [4, N, 5]
    np.testing.assert_allclose(policy.in_layout(task_spec("spread")).act(obs), mpe2_to_force(trained, 2), atol=1e-6)


@pytest.mark.parametrize("kind", ["rollouts", "replay-buffer"])
def test_datasets_without_a_behaviour_policy_are_not_collectable(kind: str, tmp_path: Path, pending_entry) -> None:
    entry = pending_entry(kind)  # the committed policies' recipes are registered first, as the CLI does
    policy = "medium" if entry.quality == "mixed" else entry.quality
    with pytest.raises(NotCollectableError, match=f"cannot be collected yet: {entry.task} has no {policy} behaviour "
                       f"policy.*offline-bench behaviour train {entry.task}`.*collect {entry.task}-random"):
        collect(entry.dataset_id, root=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_retrain_and_steps_are_refused_where_they_do_not_apply(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--retrain applies to mixed datasets only"):
        collect("spread-random", steps=10, root=tmp_path, retrain=True)
    collection._hook("mixed")
    mixed = [e for e in CATALOG.values() if e.recipe.kind == "replay-buffer" and e.recipe.collectable]
    if not mixed:
        pytest.skip("no task has a medium policy yet")
    size = mixed[0].recipe.steps
    with pytest.raises(ValueError, match=f"has a fixed size: the {size} transitions .*leave out --steps"):
        collect(mixed[0].dataset_id, steps=size - 1, root=tmp_path)
    with pytest.raises(ValueError, match="--seed does not apply"):
        collect(mixed[0].dataset_id, seed=1, root=tmp_path)
    assert list(tmp_path.iterdir()) == []


def _stored_opponent_sha(task: str) -> str | None:
    index = json.loads((policies_root() / "index.json").read_text())["tasks"]
    return index.get(task, {}).get("opponent", {}).get("sha256")


def test_tag_random_runs_against_the_stored_frozen_opponent(tmp_path: Path) -> None:
    """Every tag dataset, random included, is collected against datasets/policies/tag/opponent.pt: the recorded
    transitions replay exactly with that prey, and not with the adapter's uniform-random one."""
    from offline_bench.behaviour.policy import load_policy
    from offline_bench.envs import make_env
    from offline_bench.train.loop import _opponent

    sha = _stored_opponent_sha("tag")
    assert sha is not None, "the repository ships a frozen tag opponent"
    collect("tag-random", steps=25, root=tmp_path)
    d = load_dataset("tag-random", root=tmp_path)
    opponents = d.manifest["env"]["opponents"]
    assert opponents["kind"] == "fixed opponent policy" and opponents["sha256"] == sha
    assert opponents["file"] == "tag/opponent.pt"
    prey = load_policy("tag", "opponent")
    assert prey is not None

    def replay(env: object) -> np.ndarray:
        env.reset(int(d.episode_seeds[0]))  # type: ignore[attr-defined]
        return np.stack([env.step(d.actions[t]).obs for t in range(25)])  # type: ignore[attr-defined]  # [25, N, O]

    with make_env("tag", opponent=prey.as_opponent()) as env:
        np.testing.assert_array_equal(replay(env), d.next_observations)
    with make_env("tag") as env:  # a uniform-random prey moves differently
        assert not np.allclose(replay(env), d.next_observations)
    # The train loop evaluates against the same opponent, checking its sha256.
    act, text = _opponent(d, "tag")
    assert act is not None and sha in text


def test_measured_random_references_used_each_tasks_stored_opponent() -> None:
    """The catalog's measured random return of tag / world was measured against the opponent the datasets use."""
    for task in ("tag", "world"):
        sha = _stored_opponent_sha(task)
        assert task_references(task).measured_random_opponent == sha, (
            f"{task}'s stored opponent changed: re-run `offline-bench datasets measure-random {task} --episodes 100 "
            "--seed 0` and update _MEASURED_RANDOM / _MEASURED_OPPONENT in offline_bench/data/catalog.py"
        )
        stats = measure_random_return(task, episodes=1, seed=0, num_envs=1)
        assert stats["opponent"] == sha


def test_progress_callback_reaches_total(tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    manifest = collect("tag-random", steps=60, root=tmp_path, progress=lambda done, total: seen.append((done, total)))
    assert manifest["env"]["opponents"]["sha256"] == _stored_opponent_sha("tag")
    assert seen[-1] == (60, 60) and all(b == 60 for _, b in seen)
    assert [a for a, _ in seen] == sorted(a for a, _ in seen)


def test_measure_random_return_runs_exactly_the_requested_episodes() -> None:
    stats = measure_random_return("spread", episodes=5, seed=0, num_envs=2)
    assert stats["episodes"] == 5 and stats["mean_length"] == 25.0
    assert stats["mean"] < 0  # spread rewards are negative distances
    assert stats == measure_random_return("spread", episodes=5, seed=0, num_envs=2)


def _default_sigint() -> None:
    """In the child before exec: Ctrl-C's default action. A shell without job control starts background commands
    (``make test &``, ``nohup ... &``) with SIGINT ignored, children inherit that, and Python then installs no
    KeyboardInterrupt handler: the SIGINT below would be ignored and the collection would run on."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_interrupted_collection_leaves_nothing_complete(tmp_path: Path) -> None:
    """SIGTERM, SIGINT (Ctrl-C) and SIGKILL during `collect`, in three real processes run side by side."""
    env = dict(os.environ, OFFLINE_BENCH_THREADS="1", PYTHONUNBUFFERED="1")
    roots = {sig: tmp_path / sig.name for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGKILL)}
    procs = {}
    for sig, root in roots.items():
        root.mkdir()
        procs[sig] = subprocess.Popen(
            [sys.executable, str(REPO / "cli.py"), "-v", "collect", "hopper-random", "--steps", "1000000",
             "--root", str(root)],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env, cwd=root,
            preexec_fn=_default_sigint,
        )
    try:
        for sig, proc in procs.items():
            assert proc.stderr is not None
            for line in proc.stderr:  # wait until collection is under way
                if "collecting hopper-random-v0" in line:
                    break
        time.sleep(1.0)
        for sig, proc in procs.items():
            assert proc.poll() is None, "collection ended before it could be interrupted"
            proc.send_signal(sig)
        errors = {sig: proc.communicate(timeout=60)[1] for sig, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for sig, root in roots.items():
        if sig == signal.SIGKILL:  # no clean-up possible; but nothing is written before collection completes
            assert procs[sig].returncode == -signal.SIGKILL
        else:
            assert procs[sig].returncode == 130, errors[sig]
            assert "interrupted; nothing was written" in errors[sig]
        assert list(root.iterdir()) == [], (sig, list(root.iterdir()))
        assert dataset_status("hopper-random", root) == "missing"
        with pytest.raises(DatasetError, match="not collected"):
            load_dataset("hopper-random", root=root)


@pytest.mark.slow
@pytest.mark.parametrize("task", ["hopper", "walker2d", "spread", "tag", "world"])
def test_recorded_random_references_reproduce(task: str) -> None:
    """The catalog's measured uniform-random returns come out of `measure_random_return` again (fast tasks)."""
    from offline_bench.data import task_references

    refs = task_references(task)
    stats = measure_random_return(task, episodes=refs.measured_random_episodes, seed=refs.measured_random_seed)
    assert stats["mean"] == pytest.approx(refs.measured_random, abs=1e-5)
    assert stats["std"] == pytest.approx(refs.measured_random_std, abs=1e-5)


def _check_tiny_collection(task: str, root: Path) -> None:
    from offline_bench.envs import task_spec

    spec = task_spec(task)
    manifest = collect(f"{task}-random", steps=40, root=root)
    d = load_dataset(f"{task}-random", root=root)
    agent = () if spec.n_agents == 1 else (spec.n_agents,)
    assert d.observations.shape == (40, *agent, spec.obs_dim) and d.actions.shape == (40, *agent, spec.action_dim)
    assert manifest["env"]["source"] == spec.source and manifest["references"] == d.references.to_dict()
    if task in ("tag", "world"):  # the stored frozen opponent when there is one, else uniform random, said so
        opponents, sha = manifest["env"]["opponents"], _stored_opponent_sha(task)
        assert opponents["sha256"] == sha
        assert opponents["kind"] == ("uniform random" if sha is None else "fixed opponent policy")
    actions = d.agent_axis("actions")  # [T, N, A]
    for i, size in enumerate(spec.action_sizes):
        assert not actions[:, i, size:].any(), "padded action dims are stored as zeros"
        assert np.abs(actions[:, i, :size]).max() > 0.05


@pytest.mark.parametrize("task", ["walker2d", "tag", "world"])
def test_every_short_episode_task_collects(task: str, tmp_path: Path) -> None:
    _check_tiny_collection(task, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("task", ["halfcheetah", "ant", "halfcheetah-2x3"])
def test_every_long_episode_task_collects(task: str, tmp_path: Path) -> None:
    """1000-step episodes: 8 envs in lock-step run 8000 env steps before the first episode is stored."""
    _check_tiny_collection(task, tmp_path)
