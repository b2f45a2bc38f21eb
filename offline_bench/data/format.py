"""The dataset file: one HDF5 file per dataset version plus its manifest, written atomically and reproducibly.

Layout of ``<root>/<id>.hdf5`` (DESIGN.md, "Dataset contract"):

- single-agent (N = 1), exactly D4RL's keys and shapes: ``observations [T, O]``, ``actions [T, A]``,
  ``rewards [T]``, ``next_observations [T, O]`` (float32), ``terminals [T]``, ``timeouts [T]`` (bool);
- multi-agent: the same keys with an agent axis after time: ``observations [T, N, O]``, ``actions [T, N, A]``,
  ``rewards [T, N]``, ``next_observations [T, N, O]``, shared ``terminals [T]``, ``timeouts [T]``; agents with
  smaller observation/action sizes are zero-padded; true sizes are the attributes ``obs_sizes``/``action_sizes``;
- both: ``episode_starts [K]`` (int64 row of each episode's first transition, ascending from 0) and
  ``episode_seeds [K]`` (int64 env seed of each episode; -1 where unknown, e.g. imported data).

Each row is one aligned (s, a, r, s') transition. ``terminals`` marks true terminal states (no bootstrapping);
``timeouts`` marks rows where the episode was cut without terminating (time limit, or the size budget for the last
episode). Every episode ends on a row with ``terminals | timeouts``.

The manifest ``<root>/<id>.json`` is mirrored in the HDF5 attribute ``manifest`` (JSON text) except for ``sha256``
and ``file_bytes``, which describe the HDF5 file itself. Files carry no timestamps (``track_times=False``,
attributes written in sorted order), so the same data and manifest give a byte-identical file.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

FORMAT = "offline-bench-dataset"
FORMAT_VERSION = 1
SUPPORTED_FORMAT_VERSIONS = (1,)

D4RL_KEYS = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")
EPISODE_KEYS = ("episode_starts", "episode_seeds")
FLOAT_KEYS = ("observations", "actions", "rewards", "next_observations")
BOOL_KEYS = ("terminals", "timeouts")
FILE_ONLY_FIELDS = ("sha256", "file_bytes")  # in the JSON manifest, not in the HDF5 attributes

log = logging.getLogger(__name__)


class DatasetError(ValueError):
    """A dataset file or its manifest is missing, damaged or not understood; the message says what to do."""


def hdf5_path(root: Path, dataset_id: str) -> Path:
    return Path(root) / f"{dataset_id}.hdf5"


def manifest_path(root: Path, dataset_id: str) -> Path:
    return Path(root) / f"{dataset_id}.json"


def recollect_hint(dataset_id: str, root: Path | None = None, manifest: Mapping[str, Any] | None = None) -> str:
    """The fix for a bad file, as a command line that makes the same dataset again.

    The id keeps its version (without one, ``collect`` would make the newest version, which may be another
    dataset). From the manifest, when it is readable: a rollout dataset's size and seed (else ``collect`` would make
    the recipe's default 1,000,000 transitions with seed 0), and for an imported dataset the Minari dataset it came
    from. ``--force``: a file of that id is there, and the command must replace it whatever state it is in.
    """
    where = f" --root {shlex.quote(str(root))}" if root is not None else ""
    recipe = (manifest or {}).get("recipe")
    recipe = recipe if isinstance(recipe, Mapping) else {}
    source = recipe.get("source")
    if recipe.get("kind") == "imported" and isinstance(source, str) and source.startswith("minari:"):
        minari_id = source[len("minari:"):]
        as_id = "" if minari_id == f"offline-bench/{dataset_id}" else f" --as {dataset_id}"
        return f"re-import it with `offline-bench datasets import {shlex.quote(minari_id)}{as_id} --force{where}`"
    size = ""
    if recipe.get("kind") == "rollouts":  # replay-buffer (mixed) datasets have a fixed size and the run's seeds
        steps = (manifest or {}).get("requested_steps")
        seeds = (manifest or {}).get("seeds")
        seed = seeds.get("seed") if isinstance(seeds, Mapping) else None
        size += f" --steps {steps}" if isinstance(steps, int) and not isinstance(steps, bool) else ""
        size += f" --seed {seed}" if isinstance(seed, int) and not isinstance(seed, bool) else ""
    return f"re-run `offline-bench collect {dataset_id}{size} --force{where}`"


def _hdf5_manifest(path: Path) -> dict[str, Any] | None:
    """The manifest mirrored in an HDF5 file's attributes, if it can be read; only for building a fix hint."""
    try:
        with h5py.File(path, "r") as f:
            manifest = json.loads(f.attrs["manifest"])
    except Exception:  # noqa: BLE001 - a damaged file: the hint falls back to what the id alone says
        return None
    return manifest if isinstance(manifest, dict) else None


def sha256_file(path: Path, chunk: int = 1 << 24) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def expected_shapes(n_agents: int, obs_dim: int, action_dim: int, transitions: int) -> dict[str, tuple[int, ...]]:
    """Shapes of the D4RL keys: no agent axis when N = 1 (D4RL's own layout)."""
    t = transitions
    agent = () if n_agents == 1 else (n_agents,)
    return {
        "observations": (t, *agent, obs_dim),
        "actions": (t, *agent, action_dim),
        "rewards": (t, *agent),
        "next_observations": (t, *agent, obs_dim),
        "terminals": (t,),
        "timeouts": (t,),
    }


def check_arrays(
    arrays: Mapping[str, np.ndarray],
    n_agents: int,
    obs_sizes: tuple[int, ...],
    action_sizes: tuple[int, ...],
    where: str,
    fix: str,
) -> int:
    """Check keys, shapes, dtypes, finiteness, padding and episode index; return T. Raises DatasetError."""
    missing = [k for k in (*D4RL_KEYS, *EPISODE_KEYS) if k not in arrays]
    if missing:
        raise DatasetError(f"{where}: missing arrays {missing}; {fix}")
    if len(obs_sizes) != n_agents or len(action_sizes) != n_agents:
        raise DatasetError(f"{where}: obs_sizes/action_sizes must have one entry per agent (N={n_agents}); {fix}")
    t = int(arrays["terminals"].shape[0]) if arrays["terminals"].ndim == 1 else -1
    shapes = expected_shapes(n_agents, max(obs_sizes), max(action_sizes), t)
    for key, shape in shapes.items():
        got = tuple(arrays[key].shape)
        if got != shape:
            raise DatasetError(f"{where}: {key} has shape {list(got)}, expected {list(shape)}; {fix}")
    for key in FLOAT_KEYS:
        if arrays[key].dtype != np.float32:
            raise DatasetError(f"{where}: {key} is {arrays[key].dtype}, expected float32; {fix}")
        if not np.isfinite(arrays[key]).all():
            bad = int(np.count_nonzero(~np.isfinite(arrays[key])))
            raise DatasetError(f"{where}: {key} contains {bad} NaN/inf values; {fix}")
    for key in BOOL_KEYS:
        if arrays[key].dtype != np.bool_:
            raise DatasetError(f"{where}: {key} is {arrays[key].dtype}, expected bool; {fix}")
    starts, seeds = arrays["episode_starts"], arrays["episode_seeds"]
    if starts.ndim != 1 or seeds.shape != starts.shape or starts.dtype != np.int64 or seeds.dtype != np.int64:
        raise DatasetError(f"{where}: episode_starts/episode_seeds must be int64 [K] of equal length; {fix}")
    if t > 0:
        if len(starts) == 0 or starts[0] != 0 or (np.diff(starts) <= 0).any() or starts[-1] >= t:
            raise DatasetError(f"{where}: episode_starts must ascend strictly from 0 and stay below T={t}; {fix}")
        ends = np.append(starts[1:], t) - 1  # last row of each episode
        if not (arrays["terminals"][ends] | arrays["timeouts"][ends]).all():
            raise DatasetError(f"{where}: an episode does not end on a terminal or timeout row; {fix}")
    if n_agents > 1:  # padding beyond each agent's true size must be zero
        for i, (o, a) in enumerate(zip(obs_sizes, action_sizes)):
            for key, size in (("observations", o), ("next_observations", o), ("actions", a)):
                if size < arrays[key].shape[-1] and np.any(arrays[key][:, i, size:]):
                    raise DatasetError(f"{where}: {key} of agent {i} is not zero beyond its size {size}; {fix}")
    return t


def _attr_value(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return np.asarray(value, dtype=np.int64)
    return value


def _remove_stale_temporaries(root: Path, dataset_id: str) -> None:
    """Delete temporary files of ``dataset_id`` left by writers that were killed (SIGKILL, power loss)."""
    for path in root.glob(f".{dataset_id}.*.tmp-*"):
        pid = path.name.rsplit("-", 1)[-1]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:  # its writer is gone
            path.unlink(missing_ok=True)
            log.info("removed %s, left by an interrupted writer", path)
        except PermissionError:  # a live process of another user
            continue


def write_dataset(
    root: Path | str,
    dataset_id: str,
    arrays: Mapping[str, np.ndarray],
    manifest: Mapping[str, Any],
) -> dict[str, Any]:
    """Write ``<root>/<id>.hdf5`` and ``<root>/<id>.json`` atomically; return the manifest with sha256 added.

    ``manifest`` must hold ``n_agents``, ``obs_sizes`` and ``action_sizes``; ``format``, ``format_version``,
    ``dataset_id``, ``transitions``, ``episodes`` and ``arrays`` (keys, shapes, dtypes) are filled in here. Both files
    are written under temporary names in ``root`` and renamed when complete: the HDF5 file first, the manifest
    last, so a file without a manifest is never taken as complete. On any exception (including KeyboardInterrupt)
    the temporary files are removed.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(root, dataset_id)
    n_agents = int(manifest["n_agents"])
    obs_sizes = tuple(int(s) for s in manifest["obs_sizes"])
    action_sizes = tuple(int(s) for s in manifest["action_sizes"])
    t = check_arrays(arrays, n_agents, obs_sizes, action_sizes, f"cannot write {dataset_id}", "fix the caller")
    body: dict[str, Any] = {k: v for k, v in manifest.items() if k not in FILE_ONLY_FIELDS}
    body.update(
        format=FORMAT,
        format_version=FORMAT_VERSION,
        dataset_id=dataset_id,
        n_agents=n_agents,
        obs_sizes=list(obs_sizes),
        action_sizes=list(action_sizes),
        transitions=t,
        episodes=int(len(arrays["episode_starts"])),
        arrays={k: {"shape": list(arrays[k].shape), "dtype": str(arrays[k].dtype)} for k in (*D4RL_KEYS, *EPISODE_KEYS)},
    )
    body = json.loads(json.dumps(body, sort_keys=True))  # normalise (tuples -> lists) and fail early if not JSON
    final_h5, final_json = hdf5_path(root, dataset_id), manifest_path(root, dataset_id)
    tmp_h5 = root / f".{dataset_id}.hdf5.tmp-{os.getpid()}"
    tmp_json = root / f".{dataset_id}.json.tmp-{os.getpid()}"
    try:
        # libver "earliest" and no timestamps: the bytes depend only on the data and the attributes.
        with h5py.File(tmp_h5, "w", libver="earliest", track_order=False) as f:
            for key in (*D4RL_KEYS, *EPISODE_KEYS):
                f.create_dataset(key, data=np.ascontiguousarray(arrays[key]), track_times=False)
            flat = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "dataset_id": dataset_id,
                "n_agents": n_agents,
                "obs_sizes": list(obs_sizes),
                "action_sizes": list(action_sizes),
                "manifest": json.dumps(body, sort_keys=True),
            }
            for name in sorted(flat):
                f.attrs[name] = _attr_value(flat[name])
        full = dict(body, sha256=sha256_file(tmp_h5), file_bytes=tmp_h5.stat().st_size)
        tmp_json.write_text(json.dumps(full, indent=2, sort_keys=True) + "\n")
        # A stale manifest must not vouch for the new HDF5 file while they are swapped in one by one.
        final_json.unlink(missing_ok=True)
        os.replace(tmp_h5, final_h5)
        os.replace(tmp_json, final_json)
    except BaseException:
        tmp_h5.unlink(missing_ok=True)
        tmp_json.unlink(missing_ok=True)
        raise
    return full


def read_manifest(root: Path | str, dataset_id: str) -> dict[str, Any]:
    """The JSON manifest of a collected dataset; raises DatasetError if missing, incomplete or not understood."""
    root = Path(root)
    path, h5 = manifest_path(root, dataset_id), hdf5_path(root, dataset_id)
    if not h5.exists() and not path.exists():
        raise DatasetError(f"dataset {dataset_id} is not collected in {root}: run `offline-bench collect "
                           f"{dataset_id} --root {shlex.quote(str(root))}`")
    if not h5.exists():
        raise DatasetError(f"{dataset_id}: manifest {path} exists but the data file {h5.name} is missing; "
                           f"{recollect_hint(dataset_id, root, _json_manifest(path))}")

    def fix() -> str:  # the JSON manifest is missing or not understood: the copy inside the HDF5 file may say more
        return recollect_hint(dataset_id, root, _hdf5_manifest(h5))

    if not path.exists():
        raise DatasetError(f"{dataset_id}: {h5.name} has no manifest {path.name} (collection did not finish); {fix()}")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{dataset_id}: manifest {path.name} is not valid JSON ({exc}); {fix()}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DatasetError(f"{dataset_id}: {path.name} is not an offline-bench dataset manifest; {fix()}")
    version = manifest.get("format_version")
    if version not in SUPPORTED_FORMAT_VERSIONS:
        raise DatasetError(
            f"{dataset_id}: format version {version!r} is not supported (this offline-bench reads "
            f"{', '.join(map(str, SUPPORTED_FORMAT_VERSIONS))}); upgrade offline-bench or "
            f"{recollect_hint(dataset_id, root, manifest)}"
        )
    return manifest


def _json_manifest(path: Path) -> dict[str, Any] | None:
    """A JSON manifest, if it can be read; only for building a fix hint."""
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def read_arrays(
    root: Path | str, dataset_id: str, manifest: Mapping[str, Any], check_hash: bool = True
) -> dict[str, np.ndarray]:
    """Read and check the HDF5 file against its manifest: size, sha256, attributes, keys, shapes, NaN/inf."""
    root = Path(root)
    h5 = hdf5_path(root, dataset_id)
    fix = recollect_hint(dataset_id, root, manifest)  # the manifest is intact here: it says how the data was made
    size = h5.stat().st_size
    if size != manifest.get("file_bytes"):
        raise DatasetError(
            f"{dataset_id}: {h5.name} is {size} bytes but its manifest says {manifest.get('file_bytes')} "
            f"(truncated or replaced); {fix}"
        )
    if check_hash:
        digest = sha256_file(h5)
        if digest != manifest.get("sha256"):
            raise DatasetError(f"{dataset_id}: {h5.name} sha256 {digest[:12]}... does not match the manifest's "
                               f"{str(manifest.get('sha256'))[:12]}... (file damaged or modified); {fix}")
    try:
        with h5py.File(h5, "r") as f:
            attrs_manifest = json.loads(f.attrs["manifest"]) if "manifest" in f.attrs else None
            arrays = {k: f[k][()] for k in (*D4RL_KEYS, *EPISODE_KEYS) if k in f}
    except OSError as exc:
        raise DatasetError(f"{dataset_id}: {h5.name} cannot be read as HDF5 ({exc}); {fix}") from None
    body = {k: v for k, v in manifest.items() if k not in FILE_ONLY_FIELDS}
    if attrs_manifest != body:
        raise DatasetError(f"{dataset_id}: the manifest {dataset_id}.json does not match the one inside "
                           f"{h5.name} (files from different collections); {fix}")
    t = check_arrays(
        arrays,
        int(manifest["n_agents"]),
        tuple(manifest["obs_sizes"]),
        tuple(manifest["action_sizes"]),
        f"{dataset_id}",
        fix,
    )
    if t != manifest["transitions"] or len(arrays["episode_starts"]) != manifest["episodes"]:
        raise DatasetError(f"{dataset_id}: file holds {t} transitions / {len(arrays['episode_starts'])} episodes, "
                           f"manifest says {manifest['transitions']} / {manifest['episodes']}; {fix}")
    return arrays
