"""Typed, frozen configs whose fields carry their own help text, and `--set key=value` overrides."""
from __future__ import annotations

import dataclasses
import typing
from typing import Any, TypeVar

import yaml

C = TypeVar("C")


def cfg(default: Any, help: str) -> Any:  # noqa: A002 - `help` reads best at the call site
    """A config field with a help string: ``gamma: float = cfg(0.99, "discount factor")``."""
    if isinstance(default, (list, dict, set)):
        raise TypeError("use tuples for sequence defaults so configs stay frozen and hashable")
    return dataclasses.field(default=default, metadata={"help": help})


def field_help(config_cls: type) -> dict[str, str]:
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(config_cls)}


def _coerce(value: Any, annotation: Any, name: str) -> Any:
    """Turn a YAML/CLI value into the field's declared type, or raise a clear error."""
    origin = typing.get_origin(annotation)
    if annotation in (float, "float"):
        return float(value)
    if annotation in (int, "int"):
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(f"{name} must be an integer, got {value!r}")
        return int(value)
    if annotation in (bool, "bool"):
        if isinstance(value, str):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"{name} must be true or false, got {value!r}")
        return bool(value)
    if annotation in (str, "str"):
        return str(value)
    if origin is tuple or (isinstance(annotation, str) and annotation.startswith("tuple")):
        if isinstance(value, str):
            value = yaml.safe_load(value if value.startswith("[") else f"[{value}]")
        return tuple(value)
    return value


def replace(config: C, overrides: dict[str, Any]) -> C:
    """Return a copy of ``config`` with ``overrides`` applied; unknown keys raise with the valid ones listed."""
    fields = {f.name: f for f in dataclasses.fields(config)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(type(config))
    clean: dict[str, Any] = {}
    for key, value in overrides.items():
        if key not in fields:
            raise KeyError(f"unknown config key {key!r}; valid keys: {', '.join(sorted(fields))}")
        if isinstance(value, str) and hints[key] is not str:
            value = yaml.safe_load(value)
        clean[key] = _coerce(value, hints[key], key)
    return dataclasses.replace(config, **clean)  # type: ignore[type-var]


def parse_sets(pairs: tuple[str, ...] | list[str]) -> dict[str, str]:
    """Parse ``key=value`` strings from ``--set``."""
    out: dict[str, str] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"--set expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def to_dict(config: Any) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}
