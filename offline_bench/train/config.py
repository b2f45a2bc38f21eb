"""The training loop's config and how a run's whole config is resolved from its layers.

Precedence, lowest first (each layer is a flat ``key: value`` YAML mapping; a key may belong to the algorithm's
config or to ``TrainConfig``):

1. the dataclass defaults (the algorithm's paper, ``TrainConfig`` below);
2. ``offline_bench/configs/train/<task>.yaml``, then ``configs/train/<task>-<quality>.yaml`` (loop budgets per task);
3. ``offline_bench/configs/<algo-id>/<task>.yaml``, then ``configs/<algo-id>/<task>-<quality>.yaml`` (the algorithm
   engineers' per-dataset hyperparameters, e.g. OMAR's omar_coe);
4. ``--config file.yaml``;
5. ``--set key=value`` (repeatable), and the explicit flags ``--steps``, ``--seed``, ``--device``; a flag and a
   ``--set`` of the same key that disagree are refused (neither silently wins).

Unknown keys raise with the list of valid keys; every value is checked against its field's type (an integer's
minimum, ``offline_bench.config.minimum_of``; a float is finite and inside its meaning's range, ``float_range``: a
learning rate > 0, a discount in [0, 1], ...) with the key and its layer in the message. ``ResolvedConfig.sources``
records which layer set each field.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from offline_bench import config as config_lib
from offline_bench.config import cfg

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
QUALITIES = ("random", "medium", "mixed", "expert")
_QUALITY_ALIASES = {"medium-replay": "mixed", "medium_replay": "mixed"}
_ID_RE = re.compile(
    r"^(?P<task>.+?)-(?P<quality>random|medium-replay|medium_replay|medium|mixed|expert)(?:-v(?P<version>\d+))?$"
)


@dataclass(frozen=True)
class TrainConfig:
    """The loop's budget and bookkeeping; the same fields for every algorithm.

    Defaults are the PyBullet/D4RL protocol (TD3+BC and CQL papers: 1M gradient steps, evaluation every 5,000 steps
    over 10 episodes); ``configs/train/<task>.yaml`` sets the multi-agent tasks' budgets from the OMAR authors' code.
    """

    steps: int = cfg(1_000_000, "gradient updates to run (multi-agent: update rounds, one batch for all agents)",
                     minimum=1)
    eval_every: int = cfg(5_000, "evaluate the policy every this many updates (and after the last one)", minimum=1)
    eval_episodes: int = cfg(10, "episodes per evaluation, run side by side with one batched policy forward",
                             minimum=1)
    log_every: int = cfg(1_000, "write a metrics.csv row (training metrics averaged since the last row) this often",
                         minimum=1)
    checkpoint_every: int = cfg(10_000, "write checkpoint.pt (resume point) every this many updates and at the end",
                                minimum=1)
    last_k: int = cfg(10, "result.json's table statistic is the mean normalized score of the last k evaluations",
                      minimum=1)
    seed: int = cfg(0, "run seed: network init, batch sampling and evaluation episodes all derive from it")
    device: str = cfg("auto", "auto (cuda if available, else cpu), cpu, or cuda[:i]")
    cuda_graphs: bool = cfg(False, "on CUDA, replay each kind of update as a CUDA graph (train.graphs; not on CPU)")

    def __post_init__(self) -> None:
        config_lib.check_minimums(self)
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise ValueError(f"device must be auto, cpu or cuda[:i], got {self.device!r}")


def split_dataset_id(dataset_id: str) -> tuple[str, str, int | None]:
    """``"halfcheetah-2x3-medium-replay-v0"`` -> ``("halfcheetah-2x3", "mixed", 0)``; version None when absent."""
    match = _ID_RE.match(dataset_id.strip())
    if match is None:
        raise ValueError(
            f"cannot read dataset id {dataset_id!r}: expected <task>-<quality>[-v<K>] with quality one of "
            f"{', '.join(QUALITIES)} (e.g. hopper-medium-v0)"
        )
    quality = _QUALITY_ALIASES.get(match["quality"], match["quality"])
    version = int(match["version"]) if match["version"] is not None else None
    return match["task"], quality, version


@dataclass(frozen=True)
class ResolvedConfig:
    """The algorithm's and the loop's config after every layer, with where each value came from."""

    algo_id: str
    algo_config: Any
    train_config: TrainConfig
    sources: dict[str, str]  # field -> "default" | a YAML path | "--config <file>" | "--set" | "--steps" ...

    def to_json(self) -> dict[str, Any]:
        return {
            "algo": self.algo_id,
            "algo_config": config_lib.to_dict(self.algo_config),
            "train_config": config_lib.to_dict(self.train_config),
        }

    def describe(self) -> list[tuple[str, str, Any, str, str]]:
        """Rows ``(section, field, value, source, help)`` for every field, algorithm first."""
        rows = []
        for section, config in (("algorithm", self.algo_config), ("train", self.train_config)):
            helps = config_lib.field_help(type(config))
            for f in dataclasses.fields(config):
                value = getattr(config, f.name)
                rows.append((section, f.name, value, self.sources.get(f.name, "default"), helps[f.name]))
        return rows


def read_yaml_layer(path: Path | str) -> dict[str, Any]:
    """A flat ``key: value`` YAML mapping (an empty file is an empty mapping)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"config file {path} is not valid YAML: {str(err).splitlines()[0]}") from err
    if data is None:
        return {}
    if not isinstance(data, dict) or any(isinstance(v, dict) for v in data.values()):
        raise ValueError(f"config file {path} must be a flat mapping of key: value lines")
    return {str(k): v for k, v in data.items()}


def config_layers(algo_id: str, task: str | None, quality: str | None, config_dir: Path = CONFIG_DIR) -> list[Path]:
    """The shipped per-task YAML files that apply, lowest precedence first (only those that exist)."""
    if task is None:
        return []
    names = [f"{task}.yaml"] + ([f"{task}-{quality}.yaml"] if quality else [])
    paths = [config_dir / "train" / name for name in names] + [config_dir / algo_id / name for name in names]
    return [p for p in paths if p.exists()]


def _label(path: Path, config_dir: Path) -> str:
    try:
        return str(Path(config_dir.name) / path.relative_to(config_dir))
    except ValueError:
        return str(path)


def resolve_config(
    algo_id: str,
    algo_config_cls: type,
    dataset_id: str | None = None,
    config_file: str | Path | None = None,
    sets: dict[str, Any] | None = None,
    flags: dict[str, Any] | None = None,
    config_dir: Path = CONFIG_DIR,
) -> ResolvedConfig:
    """Apply every config layer (see the module docstring) and return the resolved configs with their sources.

    ``flags`` are the explicit CLI options (``steps``, ``seed``, ``device``), applied last; ``None`` values are skipped.
    """
    task, quality = (None, None)
    if dataset_id is not None:
        task, quality, _ = split_dataset_id(dataset_id)
    layers: list[tuple[str, dict[str, Any]]] = [
        (_label(p, config_dir), read_yaml_layer(p)) for p in config_layers(algo_id, task, quality, config_dir)
    ]
    if config_file is not None:
        layers.append((f"--config {config_file}", read_yaml_layer(config_file)))
    if sets:
        layers.append(("--set", dict(sets)))
    if flags:
        layers.extend((f"--{k}", {k: v}) for k, v in flags.items() if v is not None)

    algo_keys = {f.name for f in dataclasses.fields(algo_config_cls)}
    train_keys = {f.name for f in dataclasses.fields(TrainConfig)}
    algo_over: dict[str, Any] = {}
    train_over: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for source, values in layers:
        for key, value in values.items():
            if key in train_keys:
                train_over[key] = _checked(TrainConfig, key, value, source)
            elif key in algo_keys:
                algo_over[key] = _checked(algo_config_cls, key, value, source)
            else:
                raise ValueError(
                    f"unknown config key {key!r} (from {source}); valid keys for {algo_id}: "
                    f"{', '.join(sorted(algo_keys))}; loop keys: {', '.join(sorted(train_keys))}"
                )
            if source.startswith("--") and source[2:] == key and key in (sets or {}):
                set_value = _checked(TrainConfig if key in train_keys else algo_config_cls, key, sets[key], "--set")
                if set_value != train_over.get(key, algo_over.get(key)):
                    raise ValueError(f"{source} {value} and --set {key}={sets[key]} disagree; give one")
            sources[key] = source
    algo_config = config_lib.replace(algo_config_cls(), algo_over)
    train_config = config_lib.replace(TrainConfig(), train_over)
    return ResolvedConfig(algo_id=algo_id, algo_config=algo_config, train_config=train_config, sources=sources)


def _checked(config_cls: type, key: str, value: Any, source: str) -> Any:
    """``value`` converted to field ``key``'s type; ValueError naming the key, the value and the layer it came from.

    The config class is also built with this one value, so its own checks (``TrainConfig``'s device pattern) are
    reported against the layer that set it.
    """
    flag = source == f"--{key}"  # an explicit option: the message names the option itself
    try:
        value = config_lib.coerce_field(config_cls, key, value, name=source if flag else key)
        config_cls(**{key: value})
        return value
    except ValueError as err:
        raise ValueError(str(err) if flag else f"{err} (from {source})") from None


__all__ = [
    "CONFIG_DIR",
    "QUALITIES",
    "ResolvedConfig",
    "TrainConfig",
    "config_layers",
    "resolve_config",
    "split_dataset_id",
]
