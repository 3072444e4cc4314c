"""What every adapter's frozen `<Task>Settings` shares: type and range checks, so that a value given
as text or YAML (`--set points_per_side=2.5`) is an error naming the field instead of a failure deep
inside a run, and `preset_with_overrides`, on which every `from_preset` is built."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def check_field_types(settings: Any) -> None:
    """Raises `ValueError` naming the first field of the dataclass instance `settings` whose value
    does not fit its annotation (`int`, `float`, `bool`, `str`, `dict`, `X | None`); floats must be
    finite."""
    hints = typing.get_type_hints(type(settings))
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        if not _fits(value, hints[field.name]):
            raise ValueError(f"{field.name} must be {_describe(hints[field.name])}, got {value!r}")


def _fits(value: Any, hint: Any) -> bool:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_fits(value, option) for option in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if hint is dict or typing.get_origin(hint) is dict:
        return isinstance(value, dict)
    if hint is str:
        return isinstance(value, str)
    return True


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(option) for option in typing.get_args(hint))
    names = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string", dict: "a mapping"}
    return "null" if hint is type(None) else names.get(typing.get_origin(hint) or hint, str(hint))


def check_range(name: str, value: float | None, low: float, high: float, *, open_low: bool = False) -> None:
    """Raises `ValueError` unless `low <= value <= high` (`low < value` with `open_low`); None passes."""
    if value is None:
        return
    ok = (value > low if open_low else value >= low) and value <= high
    if not ok:
        bracket = "(" if open_low else "["
        raise ValueError(f"{name} must be in {bracket}{low}, {high}], got {value!r}")


def preset_with_overrides(presets: Mapping[str, T], name: str, overrides: Mapping[str, Any]) -> T:
    """`presets[name]` (a frozen settings dataclass) with `overrides` replacing its fields; a mapping
    given for a `dict` field (an adapter's `amg` knobs) is merged into the preset's.

    Raises:
        ValueError: an unknown preset name or field (the message names it and the known ones), or a
            value the settings reject.
    """
    kind = type(next(iter(presets.values()))).__name__
    if name not in presets:
        raise ValueError(f"unknown {kind} preset {name!r}; choose one of {', '.join(presets)}")
    base = presets[name]
    fields = [f.name for f in dataclasses.fields(base)]
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ValueError(f"unknown {kind} field(s) {', '.join(unknown)} (known: {', '.join(fields)})")
    merged = dict(overrides)
    for key, value in overrides.items():
        if isinstance(getattr(base, key), dict) and isinstance(value, dict):
            merged[key] = {**getattr(base, key), **value}
    return dataclasses.replace(base, **merged)
