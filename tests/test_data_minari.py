"""Minari export -> ``minari.load_dataset`` -> import, with Minari's directory under pytest's tmp_path."""
from __future__ import annotations

from pathlib import Path

import minari
import numpy as np
import pytest

from offline_bench.data import load_dataset, write_dataset
from offline_bench.data.minari_io import MinariError, export_minari, import_minari
from tests.test_data import synthetic


@pytest.fixture()
def roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    arrays, manifest = synthetic(1, (15,), (3,), [5, 7, 4, 9])
    write_dataset(tmp_path / "data", "hopper-random-v0", arrays, manifest)
    arrays, manifest = synthetic(3, (18, 18, 18), (2, 2, 2), [4, 6, 3])
    write_dataset(tmp_path / "data", "spread-random-v1", arrays, manifest)
    return tmp_path


def test_single_agent_export_reads_back_in_minari_and_imports_unchanged(roots: Path) -> None:
    ours = load_dataset("hopper-random", root=roots / "data")
    assert export_minari("hopper-random", root=roots / "data") == "offline-bench/hopper-random-v0"
    assert (roots / "minari" / "offline-bench" / "hopper-random-v0").is_dir()
    theirs = minari.load_dataset("offline-bench/hopper-random-v0")
    assert theirs.total_steps == ours.transitions and theirs.total_episodes == ours.episodes
    seeds = [m["seed"] for m in theirs.storage.get_episode_metadata(list(theirs.episode_indices))]
    assert seeds == ours.episode_seeds.tolist()
    for k, episode in enumerate(theirs.iterate_episodes()):
        rows = slice(ours.episode_starts[k], ours.episode_ends()[k] + 1)
        np.testing.assert_array_equal(episode.observations[:-1], ours.observations[rows])
        np.testing.assert_array_equal(episode.observations[1:], ours.next_observations[rows])
        np.testing.assert_array_equal(episode.actions, ours.actions[rows])
        np.testing.assert_array_equal(episode.rewards, ours.rewards[rows])
        np.testing.assert_array_equal(episode.terminations, ours.terminals[rows])
        np.testing.assert_array_equal(episode.truncations, ours.timeouts[rows])

    manifest = import_minari("offline-bench/hopper-random-v0", root=roots / "back")
    back = load_dataset("hopper-random", root=roots / "back")
    for key in ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts",
                "episode_starts", "episode_seeds"):
        np.testing.assert_array_equal(getattr(back, key), getattr(ours, key), err_msg=key)
    assert manifest["recipe"]["source"] == "minari:offline-bench/hopper-random-v0"
    assert manifest["recipe"]["original_recipe"] == {"kind": "synthetic"}

    with pytest.raises(MinariError, match="already exists; pass --force"):
        export_minari("hopper-random", root=roots / "data")
    assert export_minari("hopper-random", root=roots / "data", force=True) == "offline-bench/hopper-random-v0"


def test_multi_agent_export_keeps_agent_axis_and_per_agent_rewards(roots: Path) -> None:
    ours = load_dataset("spread-random", root=roots / "data")
    export_minari("spread-random", root=roots / "data")
    theirs = minari.load_dataset("offline-bench/spread-random-v1")
    assert theirs.observation_space.shape == (3, 18) and theirs.action_space.shape == (3, 2)
    episode = next(theirs.iterate_episodes())
    np.testing.assert_array_equal(episode.observations[:-1], ours.observations[:4])
    np.testing.assert_array_equal(episode.infos["agent_rewards"], ours.rewards[:4])
    np.testing.assert_allclose(episode.rewards, ours.rewards[:4].mean(axis=1))
    with pytest.raises(MinariError, match="single-agent datasets only"):
        import_minari("offline-bench/spread-random-v1", root=roots / "back")


def test_import_refuses_missing_and_mismatched_datasets(roots: Path) -> None:
    with pytest.raises(MinariError, match="no local Minari dataset 'mujoco/hopper/expert-v0'"):
        import_minari("mujoco/hopper/expert-v0", "hopper-expert", root=roots / "back")
    export_minari("hopper-random", root=roots / "data")
    with pytest.raises(MinariError, match=r"task walker2d has \[22\] and \[6\]"):
        import_minari("offline-bench/hopper-random-v0", "walker2d-random", root=roots / "back")


def test_export_refuses_data_minari_cannot_represent(roots: Path) -> None:
    arrays, manifest = synthetic(1, (15,), (3,), [5, 7])
    arrays["next_observations"] = arrays["next_observations"].copy()
    arrays["next_observations"][1, 0] += 1.0  # breaks next_obs[t] == obs[t + 1] inside episode 0
    write_dataset(roots / "broken", "hopper-random-v0", arrays, manifest)
    with pytest.raises(MinariError, match="do not continue into the next row"):
        export_minari("hopper-random", root=roots / "broken")
    assert "offline-bench/hopper-random-v0" not in minari.list_local_datasets()


def test_import_refuses_an_existing_id_unless_forced_and_writes_nothing(roots: Path) -> None:
    """Collected or half-written (a manifest alone): the target is kept, and no temporary file is left."""
    data = roots / "data"
    export_minari("hopper-random", root=data)
    (data / "hopper-expert-v0.json").write_text("{}")  # what a writer killed between its two renames leaves
    before = {p.name: p.read_bytes() for p in data.iterdir()}
    for target in ("hopper-random", "hopper-expert"):
        with pytest.raises(MinariError, match=f"{target}-v0 already exists in {data}; pass --force to replace it"):
            import_minari("offline-bench/hopper-random-v0", target, root=data)
    assert {p.name: p.read_bytes() for p in data.iterdir()} == before
    manifest = import_minari("offline-bench/hopper-random-v0", "hopper-expert", root=data, force=True)
    assert manifest["dataset_id"] == "hopper-expert-v0" and load_dataset("hopper-expert", root=data).episodes == 4


def test_import_keeps_the_statistics_of_a_budget_cut_last_episode(roots: Path) -> None:
    """The export's last episode ends on a timeout row like a time-limited one; the manifest says it was cut, so,
    as in collect, it stays out of the episode-return statistics."""
    from offline_bench.data.collection import return_stats

    arrays, manifest = synthetic(1, (15,), (3,), [5, 7, 4, 9])
    returns = np.add.reduceat(arrays["rewards"].astype(np.float64), arrays["episode_starts"])
    manifest.update(last_episode_cut=True, episode_returns=return_stats(list(returns[:3]), [5, 7, 4]))
    write_dataset(roots / "cut", "hopper-random-v0", arrays, manifest)
    export_minari("hopper-random", root=roots / "cut")
    back = import_minari("offline-bench/hopper-random-v0", root=roots / "back")
    assert back["last_episode_cut"] is True and back["episodes"] == 4
    assert back["episode_returns"] == manifest["episode_returns"]
    assert back["episode_returns"]["episodes"] == 3
