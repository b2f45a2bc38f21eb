"""Typed, frozen configs whose fields carry their own help text, and `--set key=value` overrides."""
from __future__ import annotations

import dataclasses
import math
import re
import typing
from typing import Any, TypeVar

import yaml

C = TypeVar("C")
MAX_INT = 2**63 - 1  # the largest integer torch takes (a seed beyond it overflows inside torch.manual_seed)


def cfg(default: Any, help: str, minimum: int | None = None) -> Any:  # noqa: A002 - `help` reads best at the call site
    """A config field with a help string: ``gamma: float = cfg(0.99, "discount factor")``.

    ``minimum`` is the smallest value an integer field accepts; without it the count rule applies (``minimum_of``).
    """
    if isinstance(default, (list, dict, set)):
        raise TypeError("use tuples for sequence defaults so configs stay frozen and hashable")
    metadata: dict[str, Any] = {"help": help}
    if minimum is not None:
        metadata["minimum"] = minimum
    return dataclasses.field(default=default, metadata=metadata)


def field_help(config_cls: type) -> dict[str, str]:
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(config_cls)}


# Integer fields count things, so none may be negative. A count that every update sizes a tensor with or divides by
# (n_critics, cql_n_actions, omar_n_samples, policy_freq, omar_iters, latent_factor, batch_size) must also be >= 1:
# zero crashes deep inside torch (an empty ensemble, a modulo by zero) instead of saying what is wrong. Counts where
# 0 is meaningful are not named like that (warmup_steps, bc_steps: no warm-up phase), or say what 0 means at the
# start of their help text (omar_n_elites, "0: softmax-weighted refinement"); a field may also declare its bound
# with ``cfg(..., minimum=k)``.
_AT_LEAST_ONE = re.compile(r"(^|_)n_|_freq$|_iters$|_factor$|^batch_size$")


def minimum_of(field: dataclasses.Field, annotation: Any) -> int | None:
    """The smallest value an integer field accepts (None for other types): declared, or the count rule above."""
    if "minimum" in field.metadata:
        return int(field.metadata["minimum"])
    if annotation not in (int, "int"):
        return None
    zero_documented = str(field.metadata.get("help", "")).startswith("0:")
    return 1 if _AT_LEAST_ONE.search(field.name) and not zero_documented else 0


# Float fields are finite, and those whose meaning has a range are checked against it, by name as above: a value
# outside it would train to a finished run and a table cell (a discount of 2 makes Q grow without bound) or fail
# deep inside torch naming no key (a negative learning rate). (low, high, low_open, high_open); None = unbounded.
_FLOAT_RANGES: tuple[tuple[re.Pattern[str], tuple[float | None, float | None, bool, bool]], ...] = (
    (re.compile(r"(^|_)lr$"), (0.0, None, True, False)),  # learning rates: > 0
    (re.compile(r"^gamma$|^target_lambda$"), (0.0, 1.0, False, False)),  # discount, soft clipped double-Q weight
    (re.compile(r"^polyak$|^tau$"), (0.0, 1.0, True, False)),  # target rates; 0 would freeze the targets
    (re.compile(r"sigma$|temperature$|^icq_alpha$|^icq_beta$|^initial_lagrange$|^(entropy|init)_alpha$"),
     (0.0, None, True, False)),  # divided by, or a logarithm taken
    (re.compile(r"noise|weight|decay$|^action_l2$|^cql_alpha$|^mmd_threshold$|^alpha$|^omar_beta$"),
     (0.0, None, False, False)),  # standard deviations, clips and weights of loss terms: >= 0
)


def float_range(field: dataclasses.Field) -> tuple[float | None, float | None, bool, bool] | None:
    """The range a float field accepts beyond being finite (``_FLOAT_RANGES``), or None."""
    for pattern, bounds in _FLOAT_RANGES:
        if pattern.search(field.name):
            return bounds
    return None


def _range_text(bounds: tuple[float | None, float | None, bool, bool]) -> str:
    low, high, low_open, high_open = bounds
    if high is None:
        return f"{'>' if low_open else '>='} {low:g}"
    return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


def _in_range(x: float, bounds: tuple[float | None, float | None, bool, bool]) -> bool:
    low, high, low_open, high_open = bounds
    above = low is None or (x > low if low_open else x >= low)
    below = high is None or (x < high if high_open else x <= high)
    return above and below


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _as_int(value: Any) -> int | None:
    """``value`` as an int when it is one (also ``64.0`` and ``"1e6"``), else None; booleans are not integers."""
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            try:
                value = float(value)
            except ValueError:
                return None
    if _is_int(value):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _parse_sequence(value: str) -> Any:
    """``"[64, 64]"``, ``"(64, 64)"`` (as --show-config prints tuples) and ``"64,64"`` -> a YAML list."""
    text = value.strip()
    if text.startswith("(") and text.endswith(")"):
        text = text[1:-1]
    try:
        return yaml.safe_load(text if text.startswith("[") else f"[{text}]")
    except yaml.YAMLError:
        return value


def coerce_value(value: Any, annotation: Any, name: str, minimum: int | None = None,
                 bounds: tuple[float | None, float | None, bool, bool] | None = None, finite: bool = True) -> Any:
    """Turn a YAML/CLI value into the field's declared type, or raise ValueError naming ``name`` and what it takes.

    ``name`` is how the message calls the field (``gamma``, or ``--seed`` for a value from that option). Integers
    are checked against ``minimum`` and at most ``MAX_INT`` (a seed torch can take); floats must be finite (unless
    ``finite=False``: a field whose default is NaN, meaning "not set") and, with ``bounds`` (``float_range``), inside
    them.
    """
    origin = typing.get_origin(annotation)
    if annotation in (float, "float"):
        number: Any = value
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                pass
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise ValueError(f"{name} must be a number, got {value!r}")
        number = float(number)
        if finite and not math.isfinite(number):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
        if bounds is not None and not _in_range(number, bounds):
            raise ValueError(f"{name} must be {_range_text(bounds)}, got {number:g}")
        return number
    if annotation in (int, "int"):
        integer = _as_int(value)
        if integer is None:
            raise ValueError(f"{name} must be an integer, got {value!r}")
        if minimum is not None and integer < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {integer}")
        if integer > MAX_INT:
            raise ValueError(f"{name} must be at most 2**63 - 1, got {integer}")
        return integer
    if annotation in (bool, "bool"):
        if isinstance(value, str):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
        elif isinstance(value, bool) or (_is_int(value) and value in (0, 1)):
            return bool(value)
        raise ValueError(f"{name} must be true or false, got {value!r}")
    if annotation in (str, "str"):
        if isinstance(value, (list, tuple, dict, set)):
            raise ValueError(f"{name} must be a single value, got {value!r}")
        return str(value)
    if origin is tuple or (isinstance(annotation, str) and annotation.startswith("tuple")):
        # Every sequence field is tuple[int, ...] (layer sizes); a bare number is a one-element tuple.
        items = _parse_sequence(value) if isinstance(value, str) else value
        if _is_int(items):
            items = [items]
        if not isinstance(items, (list, tuple)):
            raise ValueError(f"{name} must be a list of positive integers like [64, 64], got {value!r}")
        sizes = [_as_int(v) if not isinstance(v, str) else None for v in items]
        if any(size is None or size < 1 for size in sizes):
            shown = value if isinstance(value, str) else list(items)
            raise ValueError(f"{name} must be a list of positive integers like [64, 64], got {shown!r}")
        return tuple(sizes)
    return value


def coerce_field(config_cls: type, key: str, value: Any, name: str | None = None) -> Any:
    """``value`` (a YAML value, or a ``--set`` string) checked and converted for field ``key`` of ``config_cls``."""
    field = {f.name: f for f in dataclasses.fields(config_cls)}[key]
    annotation = typing.get_type_hints(config_cls)[key]
    if isinstance(value, str) and annotation is not str:
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            pass  # left a string: the type check below says what was expected
    bounds = float_range(field) if annotation in (float, "float") else None
    finite = not (isinstance(field.default, float) and not math.isfinite(field.default))
    return coerce_value(value, annotation, name or key, minimum_of(field, annotation), bounds, finite)


def check_minimums(config: Any) -> None:
    """Raise ValueError for an integer field below its minimum (``minimum_of``); for ``__post_init__``."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        lowest = minimum_of(f, hints[f.name])
        value = getattr(config, f.name)
        if lowest is not None and _is_int(value) and value < lowest:
            raise ValueError(f"{f.name} must be >= {lowest}, got {value}")


def replace(config: C, overrides: dict[str, Any]) -> C:
    """Return a copy of ``config`` with ``overrides`` applied; unknown keys raise with the valid ones listed."""
    fields = {f.name for f in dataclasses.fields(config)}  # type: ignore[arg-type]
    clean: dict[str, Any] = {}
    for key, value in overrides.items():
        if key not in fields:
            raise KeyError(f"unknown config key {key!r}; valid keys: {', '.join(sorted(fields))}")
        clean[key] = coerce_field(type(config), key, value)
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
