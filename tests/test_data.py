"""Dataset layer without simulators: catalog, file format, loader refusals, Problem, DeviceSampler.

Datasets here are real files written by ``write_dataset`` into pytest's tmp_path from small synthetic arrays; the
collection tests (real envs) live in ``test_data_collect.py``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from offline_bench.paths import policies_root
from offline_bench.data import (
    CATALOG,
    DatasetError,
    DeviceSampler,
    MissingReferenceError,
    UnknownDatasetError,
    all_dataset_ids,
    catalog_entry,
    dataset_status,
    load_dataset,
    resolve_dataset_id,
    task_references,
    verify_dataset,
    write_dataset,
)
from offline_bench.data.format import D4RL_KEYS, FORMAT_VERSION, sha256_file

torch.set_num_threads(1)


# ----------------------------------------------------------------------------------------------------- catalog
def test_catalog_has_all_32_ids_and_random_is_collectable() -> None:
    """8 tasks x 4 qualities, and the MPE tasks' 12 ids again at v1 (their "force" action layout)."""
    ids = all_dataset_ids()
    assert len(ids) == 32 + 12 == len(CATALOG)
    assert ids[0] == "hopper-random-v0" and "halfcheetah-2x3-expert-v0" in ids
    assert {CATALOG[i].task for i in ids if i.endswith("-v1")} == {"spread", "tag", "world"}
    assert CATALOG["spread-random-v1"].action_layout == "force" and CATALOG["spread-random-v0"].action_layout == "mpe2"
    assert CATALOG["hopper-random-v0"].action_layout is None
    for dataset_id in ids:
        entry = CATALOG[dataset_id]
        if entry.quality == "random":
            assert entry.recipe.collectable and entry.recipe.policy == "random-init-mlp", dataset_id
        if not entry.recipe.collectable:  # until the behaviour-data issue registers a policy for it
            assert entry.recipe.status == "needs behaviour policy" and entry.recipe.policy is None
        assert entry.recipe.default_steps == 1_000_000


@pytest.mark.parametrize(
    "name, expected",
    [
        ("hopper-random", "hopper-random-v0"),
        ("hopper-random-v0", "hopper-random-v0"),
        ("HalfCheetah-2x3-medium-replay", "halfcheetah-2x3-mixed-v0"),
        ("halfcheetah-medium-replay-v0", "halfcheetah-mixed-v0"),
        ("spread-expert", "spread-expert-v1"),
        ("spread-expert-v0", "spread-expert-v0"),
        ("world-mixed.hdf5", "world-mixed-v1"),
    ],
)
def test_resolve_dataset_id(name: str, expected: str) -> None:
    assert resolve_dataset_id(name) == expected


@pytest.mark.parametrize("name", ["hopper-great", "cartpole-random", "hopper-random-v7", "random", ""])
def test_unknown_ids_are_refused_with_the_valid_ones_listed(name: str) -> None:
    with pytest.raises(UnknownDatasetError) as info:
        resolve_dataset_id(name)
    message = str(info.value)
    assert repr(name) in message or "v7" in message
    assert "hopper" in message or "known: v0" in message
    with pytest.raises(UnknownDatasetError):
        load_dataset(name)


def test_references_pybullet_d4rl_and_multi_agent_expert_missing() -> None:
    hopper = task_references("hopper")
    assert (hopper.random, hopper.expert) == (20.058972, 1441.8059623430963)
    assert task_references("ant").expert == 2650.495
    assert hopper.normalize(1441.8059623430963) == pytest.approx(100.0)
    assert hopper.normalize(20.058972) == pytest.approx(0.0)
    # Multi-agent tasks: random and expert from the committed behaviour-policy index when it has an expert.
    index = json.loads((policies_root() / "index.json").read_text())["tasks"]
    for task in ("spread", "tag", "world", "halfcheetah-2x3"):
        refs, expert = task_references(task), index.get(task, {}).get("expert", {}).get("return_mean")
        if expert is None:
            assert refs.expert is None
            with pytest.raises(MissingReferenceError, match=f"{task} has no expert reference"):
                refs.normalize(-20.0)
        else:
            assert refs.expert == expert and refs.random == index[task]["random"]["return_mean"]
            assert refs.normalize(expert) == pytest.approx(100.0)
    with pytest.raises(UnknownDatasetError, match="valid tasks"):
        task_references("cartpole")


# ------------------------------------------------------------------------------------------- synthetic files
def synthetic(n_agents: int, obs_sizes: tuple[int, ...], action_sizes: tuple[int, ...], lengths: list[int],
              seed: int = 0) -> tuple[dict[str, np.ndarray], dict]:
    """Episodes of the given lengths with continuous observations (next_obs[t] == obs[t+1] inside an episode)."""
    rng = np.random.default_rng(seed)
    o, a, t = max(obs_sizes), max(action_sizes), sum(lengths)
    obs = np.zeros((t, n_agents, o), np.float32)
    nxt = np.zeros((t, n_agents, o), np.float32)
    act = np.zeros((t, n_agents, a), np.float32)
    row = 0
    for length in lengths:
        states = rng.normal(size=(length + 1, n_agents, o)).astype(np.float32)
        for i, size in enumerate(obs_sizes):
            states[:, i, size:] = 0.0
        obs[row : row + length], nxt[row : row + length] = states[:-1], states[1:]
        row += length
    for i, size in enumerate(action_sizes):
        act[:, i, :size] = rng.uniform(-1, 1, size=(t, size))
    rew = rng.normal(size=(t, n_agents)).astype(np.float32)
    starts = np.cumsum([0] + lengths[:-1]).astype(np.int64)
    ends = starts + np.asarray(lengths) - 1
    terminals = np.zeros(t, bool)
    timeouts = np.zeros(t, bool)
    terminals[ends[0::2]] = True
    timeouts[ends[1::2]] = True
    squeeze = (lambda x: x[:, 0]) if n_agents == 1 else (lambda x: x)
    arrays = {
        "observations": squeeze(obs),
        "actions": squeeze(act),
        "rewards": squeeze(rew),
        "next_observations": squeeze(nxt),
        "terminals": terminals,
        "timeouts": timeouts,
        "episode_starts": starts,
        "episode_seeds": np.arange(100, 100 + len(lengths), dtype=np.int64),
    }
    manifest = {
        "task": "hopper" if n_agents == 1 else "spread",
        "quality": "random",
        "version": 0,
        "n_agents": n_agents,
        "obs_sizes": list(obs_sizes),
        "action_sizes": list(action_sizes),
        "recipe": {"kind": "synthetic"},
        "references": task_references("hopper" if n_agents == 1 else "spread").to_dict(),
        "episode_returns": {"mean": None},
    }
    return arrays, manifest


@pytest.fixture()
def single(tmp_path: Path) -> Path:
    arrays, manifest = synthetic(1, (15,), (3,), [5, 7, 4, 9])
    write_dataset(tmp_path, "hopper-random-v0", arrays, manifest)
    return tmp_path


@pytest.fixture()
def multi(tmp_path: Path) -> Path:
    arrays, manifest = synthetic(3, (6, 4, 6), (5, 3, 5), [4, 6, 3])
    write_dataset(tmp_path, "spread-random-v0", arrays, manifest)
    return tmp_path


def test_single_agent_round_trip_and_plain_h5py_sees_d4rl_layout(single: Path) -> None:
    arrays, _ = synthetic(1, (15,), (3,), [5, 7, 4, 9])
    with h5py.File(single / "hopper-random-v0.hdf5", "r") as f:
        assert {k: f[k].shape for k in D4RL_KEYS} == {
            "observations": (25, 15),
            "actions": (25, 3),
            "rewards": (25,),
            "next_observations": (25, 15),
            "terminals": (25,),
            "timeouts": (25,),
        }
        assert f["observations"].dtype == np.float32 and f["terminals"].dtype == np.bool_
        assert f.attrs["format_version"] == FORMAT_VERSION
    dataset = load_dataset("hopper-random", root=single)
    for key, value in arrays.items():
        np.testing.assert_array_equal(getattr(dataset, key), value, err_msg=key)
    assert dataset.n_agents == 1 and dataset.transitions == 25 and dataset.episodes == 4
    assert dataset.agent_axis("observations").shape == (25, 1, 15)
    manifest = json.loads((single / "hopper-random-v0.json").read_text())
    assert manifest["sha256"] == sha256_file(single / "hopper-random-v0.hdf5")
    assert manifest["dataset_id"] == "hopper-random-v0" and manifest["transitions"] == 25
    np.testing.assert_allclose(dataset.episode_returns()[1], arrays["rewards"][5:12].sum(dtype=np.float64))


def test_multi_agent_round_trip_with_padding_and_true_sizes(multi: Path) -> None:
    arrays, _ = synthetic(3, (6, 4, 6), (5, 3, 5), [4, 6, 3])
    dataset = load_dataset("spread-random-v0", root=multi)
    assert dataset.observations.shape == (13, 3, 6) and dataset.rewards.shape == (13, 3)
    for key, value in arrays.items():
        np.testing.assert_array_equal(getattr(dataset, key), value, err_msg=key)
    with h5py.File(multi / "spread-random-v0.hdf5", "r") as f:
        assert list(f.attrs["obs_sizes"]) == [6, 4, 6] and list(f.attrs["action_sizes"]) == [5, 3, 5]
    returns = dataset.episode_returns()
    np.testing.assert_allclose(returns[0], arrays["rewards"][:4].astype(np.float64).sum(axis=0).mean())
    problem = dataset.problem()
    assert problem.obs_mean.shape == (3, 6) and problem.obs_std.shape == (3, 6)
    assert (problem.obs_mean[1, 4:] == 0).all() and (problem.obs_std[1, 4:] == 1).all()
    np.testing.assert_allclose(problem.obs_mean[0], arrays["observations"][:, 0].mean(0), rtol=1e-5, atol=1e-6)
    assert problem.obs_sizes == (6, 4, 6) and problem.dataset_size == 13 and (problem.obs_std > 0).all()


def test_write_is_byte_identical_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    arrays, manifest = synthetic(3, (6, 4, 6), (5, 3, 5), [4, 6, 3])
    a = write_dataset(tmp_path / "a", "spread-random-v0", arrays, manifest)
    b = write_dataset(tmp_path / "b", "spread-random-v0", arrays, manifest)
    assert a["sha256"] == b["sha256"]
    assert (tmp_path / "a/spread-random-v0.hdf5").read_bytes() == (tmp_path / "b/spread-random-v0.hdf5").read_bytes()
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["spread-random-v0.hdf5", "spread-random-v0.json"]


def test_writer_removes_temporaries_of_killed_writers(tmp_path: Path) -> None:
    arrays, manifest = synthetic(1, (15,), (3,), [5, 7])
    tmp_path.mkdir(exist_ok=True)
    dead = tmp_path / ".hopper-random-v0.hdf5.tmp-999999999"  # no such process
    alive = tmp_path / f".hopper-random-v0.json.tmp-{os.getppid()}"  # a live process may still be writing
    dead.write_bytes(b"partial")
    alive.write_bytes(b"partial")
    write_dataset(tmp_path, "hopper-random-v0", arrays, manifest)
    assert not dead.exists() and alive.exists()
    assert load_dataset("hopper-random", root=tmp_path).episodes == 2


def test_writer_refuses_nan_bad_shapes_and_dirty_padding(tmp_path: Path) -> None:
    arrays, manifest = synthetic(3, (6, 4, 6), (5, 3, 5), [4, 6, 3])
    bad = dict(arrays, rewards=arrays["rewards"].copy())
    bad["rewards"][2, 1] = np.nan
    with pytest.raises(DatasetError, match="rewards contains 1 NaN/inf"):
        write_dataset(tmp_path, "spread-random-v0", bad, manifest)
    with pytest.raises(DatasetError, match=r"actions has shape \[13, 3, 4\], expected \[13, 3, 5\]"):
        write_dataset(tmp_path, "spread-random-v0", dict(arrays, actions=arrays["actions"][..., :4]), manifest)
    dirty = dict(arrays, observations=arrays["observations"].copy())
    dirty["observations"][0, 1, 5] = 1.0
    with pytest.raises(DatasetError, match="agent 1 is not zero beyond its size 4"):
        write_dataset(tmp_path, "spread-random-v0", dirty, manifest)
    unended = dict(arrays, timeouts=np.zeros(13, bool))
    with pytest.raises(DatasetError, match="does not end on a terminal or timeout"):
        write_dataset(tmp_path, "spread-random-v0", unended, manifest)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------------- refusals
def _rehash(root: Path, dataset_id: str) -> None:
    """Make the JSON manifest vouch for the current HDF5 bytes (so the next check down the line is reached)."""
    path = root / f"{dataset_id}.json"
    manifest = json.loads(path.read_text())
    manifest["sha256"] = sha256_file(root / f"{dataset_id}.hdf5")
    manifest["file_bytes"] = (root / f"{dataset_id}.hdf5").stat().st_size
    path.write_text(json.dumps(manifest))


def test_refuses_truncated_file(single: Path) -> None:
    path = single / "hopper-random-v0.hdf5"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DatasetError, match=r"truncated or replaced.*re-run `offline-bench collect hopper-random"):
        load_dataset("hopper-random", root=single)


def test_refuses_flipped_byte(single: Path) -> None:
    path = single / "hopper-random-v0.hdf5"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=r"sha256 .* does not match .*re-run `offline-bench collect hopper-random"):
        load_dataset("hopper-random", root=single)
    ok, message = verify_dataset("hopper-random", root=single)
    assert not ok and "sha256" in message and "\n" not in message


def test_refuses_unknown_format_version(single: Path) -> None:
    path = single / "hopper-random-v0.json"
    manifest = json.loads(path.read_text())
    manifest["format_version"] = 99
    path.write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match="format version 99 is not supported .*upgrade offline-bench or re-run"):
        load_dataset("hopper-random", root=single)


def test_refuses_nan_values(single: Path) -> None:
    with h5py.File(single / "hopper-random-v0.hdf5", "r+") as f:
        f["next_observations"][3, 2] = np.inf
    _rehash(single, "hopper-random-v0")
    with pytest.raises(DatasetError, match=r"next_observations contains 1 NaN/inf values; re-run"):
        load_dataset("hopper-random", root=single)


def test_refuses_wrong_shapes(multi: Path) -> None:
    with h5py.File(multi / "spread-random-v0.hdf5", "r+") as f:
        rewards = f["rewards"][()]
        del f["rewards"]
        f.create_dataset("rewards", data=rewards[:, :2])
    _rehash(multi, "spread-random-v0")
    with pytest.raises(DatasetError, match=r"rewards has shape \[13, 2\], expected \[13, 3\]; re-run"):
        load_dataset("spread-random-v0", root=multi)


def test_refuses_manifest_that_disagrees_with_the_file(single: Path) -> None:
    path = single / "hopper-random-v0.json"
    manifest = json.loads(path.read_text())
    manifest["transitions"] = 24
    path.write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match="does not match the one inside"):
        load_dataset("hopper-random", root=single)
    # Text that is not JSON, and bytes that are not text: the parser's whole position, and the fix.
    for damaged, why in [(b'{"format": "\x01"}', r"Invalid control character at: line 1 column 13"),
                         (b"\xff\xfe\x00", r"'utf-8' codec can't decode byte 0xff")]:
        path.write_bytes(damaged)
        with pytest.raises(DatasetError, match=rf"manifest hopper-random-v0.json is not valid JSON \({why}.*\); "):
            load_dataset("hopper-random", root=single)


def test_missing_and_incomplete_files(single: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    empty = tmp_path_factory.mktemp("empty")
    assert dataset_status("hopper-random", empty) == "missing"
    with pytest.raises(DatasetError, match=r"not collected in .*run `offline-bench collect hopper-random-v0 --root"):
        load_dataset("hopper-random", root=empty)
    # The hint keeps the version: `collect spread-random` would make spread-random-v1, another dataset.
    with pytest.raises(DatasetError, match=r"run `offline-bench collect spread-random-v0 --root"):
        load_dataset("spread-random-v0", root=empty)
    (single / "hopper-random-v0.json").unlink()  # the state a kill between the two renames would leave
    assert dataset_status("hopper-random", single) == "incomplete"
    with pytest.raises(DatasetError, match="has no manifest .*collection did not finish"):
        load_dataset("hopper-random", root=single)


def test_root_from_environment_variable(single: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OFFLINE_BENCH_DATA", str(single))
    assert load_dataset("hopper-random").transitions == 25
    import offline_bench

    assert offline_bench.load_dataset("hopper-random-v0").episodes == 4


def test_missing_dataset_that_needs_a_behaviour_policy_says_so(tmp_path: Path, pending_dataset_id: str) -> None:
    with pytest.raises(DatasetError, match="needs a behaviour policy first"):
        load_dataset(pending_dataset_id, root=tmp_path)


# ---------------------------------------------------------------------------------------------------- sampler
def test_sampler_shapes_single_and_multi(single: Path, multi: Path) -> None:
    for root, dataset_id, n, o, a in ((single, "hopper-random", 1, 15, 3), (multi, "spread-random-v0", 3, 6, 5)):
        batch = DeviceSampler(load_dataset(dataset_id, root=root), "cpu", seed=0).sample(32)
        assert batch.obs.shape == (32, n, o) and batch.action.shape == (32, n, a)
        assert batch.reward.shape == (32, n, 1) and batch.done.shape == (32, 1)
        assert batch.next_action.shape == (32, n, a) and batch.next_action_valid.shape == (32, 1)
        assert batch.obs.dtype == torch.float32 and batch.done.dtype == torch.float32


def test_sampler_rows_match_the_dataset_and_next_action(multi: Path) -> None:
    dataset = load_dataset("spread-random-v0", root=multi)
    sampler = DeviceSampler(dataset, "cpu", seed=0)
    idx = torch.arange(dataset.transitions)
    batch = sampler.batch_at(idx)
    ends = set(dataset.episode_ends().tolist())
    for t in range(dataset.transitions):
        np.testing.assert_array_equal(batch.obs[t].numpy(), dataset.observations[t])
        np.testing.assert_array_equal(batch.reward[t, :, 0].numpy(), dataset.rewards[t])
        assert batch.done[t, 0] == float(dataset.terminals[t])
        if t in ends:
            assert batch.next_action_valid[t, 0] == 0 and not batch.next_action[t].any()
        else:
            assert batch.next_action_valid[t, 0] == 1
            np.testing.assert_array_equal(batch.next_action[t].numpy(), dataset.actions[t + 1])
    assert batch.next_action_valid.sum() == dataset.transitions - dataset.episodes


def test_sampler_is_seeded_and_resumes_exactly(single: Path) -> None:
    dataset = load_dataset("hopper-random", root=single)
    a, b, c = (DeviceSampler(dataset, "cpu", seed=s) for s in (3, 3, 4))
    first = a.sample(64)
    assert torch.equal(first.obs, b.sample(64).obs)
    assert not torch.equal(first.obs, c.sample(64).obs)
    state = a.state_dict()
    expected = [a.sample(16).action for _ in range(3)]
    resumed = DeviceSampler(dataset, "cpu", seed=999)
    resumed.load_state_dict(state)
    assert all(torch.equal(x, resumed.sample(16).action) for x in expected)
    other = DeviceSampler(load_dataset("hopper-random", root=single), "cpu", seed=0)
    other.size = 5
    with pytest.raises(ValueError, match="resume with the dataset the run started on"):
        other.load_state_dict(state)


def test_sampler_state_from_another_kind_of_device_reseeds_with_a_warning(single: Path, caplog) -> None:
    """A run moved between GPU and CPU: a CUDA generator's state (16 bytes) cannot be set on a CPU generator, so the
    sampler is seeded from it (the same batches on every resume of that checkpoint) and says so; damage on its own
    kind of device still fails."""
    dataset = load_dataset("hopper-random", root=single)
    cuda_state = {"generator": torch.arange(16, dtype=torch.uint8), "size": dataset.transitions, "device": "cuda"}
    draws = []
    for _ in range(2):
        sampler = DeviceSampler(dataset, "cpu", seed=0)
        with caplog.at_level("WARNING", logger="offline_bench.data.sampler"):
            sampler.load_state_dict(cuda_state)
        draws.append(sampler.sample(16).action)
    assert torch.equal(draws[0], draws[1])
    assert not torch.equal(draws[0], DeviceSampler(dataset, "cpu", seed=0).sample(16).action)
    assert "saved on cuda and cannot be restored on cpu" in caplog.text
    with pytest.raises(RuntimeError):
        DeviceSampler(dataset, "cpu", seed=0).load_state_dict({**cuda_state, "device": "cpu"})


def test_entry_of_alias() -> None:
    entry = catalog_entry("walker2d-medium-replay")
    assert entry.dataset_id == "walker2d-mixed-v0" and entry.recipe.kind == "replay-buffer"


# ------------------------------------------------------------------------------------------- fix hints
def _rollout_manifest(steps: int = 25, seed: int = 7) -> tuple[dict[str, np.ndarray], dict]:
    """The synthetic single-agent dataset with the fields a rollout collection records (size and seed)."""
    arrays, manifest = synthetic(1, (15,), (3,), [5, 7, 4, 9])
    manifest.update(recipe={"kind": "rollouts"}, requested_steps=steps, seeds={"seed": seed})
    return arrays, manifest


def test_fix_hint_repeats_the_size_and_seed_of_the_damaged_collection(tmp_path: Path) -> None:
    """A damaged file's hint re-collects the same dataset (size, seed, version), not the 1,000,000-step default,
    with --force since a file of that id is there; also when only the copy of the manifest inside the HDF5 survives."""
    arrays, manifest = _rollout_manifest(steps=25, seed=7)
    write_dataset(tmp_path, "hopper-random-v0", arrays, manifest)
    with h5py.File(tmp_path / "hopper-random-v0.hdf5", "r+") as f:
        f["rewards"][3] += 1.0
    fix = f"re-run `offline-bench collect hopper-random-v0 --steps 25 --seed 7 --force --root {tmp_path}`"
    ok, message = verify_dataset("hopper-random", root=tmp_path)
    assert not ok and "does not match the manifest's" in message and message.endswith(fix)
    (tmp_path / "hopper-random-v0.json").unlink()
    with pytest.raises(DatasetError, match="collection did not finish") as info:
        load_dataset("hopper-random", root=tmp_path)
    assert str(info.value).endswith(fix)


def test_fix_hint_of_mixed_and_imported_datasets(tmp_path: Path) -> None:
    """Mixed data takes neither --steps nor --seed; imported data is re-imported from its Minari source."""
    from offline_bench.data.format import recollect_hint

    mixed = {"recipe": {"kind": "replay-buffer"}, "requested_steps": 5000, "seeds": {"seed": 0}}
    assert recollect_hint("hopper-mixed-v0", tmp_path, mixed) == (
        f"re-run `offline-bench collect hopper-mixed-v0 --force --root {tmp_path}`")
    imported = {"recipe": {"kind": "imported", "source": "minari:offline-bench/hopper-random-v0"},
                "requested_steps": 25, "seeds": {"seed": 0}}
    assert recollect_hint("hopper-random-v0", tmp_path, imported) == (
        f"re-import it with `offline-bench datasets import offline-bench/hopper-random-v0 --force --root {tmp_path}`")
    assert recollect_hint("hopper-expert-v0", tmp_path, imported) == (
        "re-import it with `offline-bench datasets import offline-bench/hopper-random-v0 --as hopper-expert-v0 "
        f"--force --root {tmp_path}`")
