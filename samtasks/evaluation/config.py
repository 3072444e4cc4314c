"""Run configs: YAML files loaded into frozen dataclasses, with `--set a.b=c` overrides.

Unknown keys, wrong types and values a dataclass rejects are a `ConfigError` that names the file
and the key. Field types come from the dataclass annotations: nested dataclasses, `int`, `float`,
`str`, `bool`, `X | None`, `tuple[...]` (a YAML list) and `dict` (free-form, checked by the dataclass).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import torch
import yaml

from samtasks.utils.device import resolve_device

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the file (or `--set`) and the key."""


def load_config(defaults: T, path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> T:
    """A config dataclass: `defaults` (an instance), updated by the YAML file at `path`, then by
    `overrides` ("a.b=value", the value parsed as YAML). Mappings merge key by key."""
    data: dict = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text()
        except OSError as err:
            raise ConfigError(f"cannot read config {path}: {err}") from err
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from err
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
    for item in overrides:
        key, parsed = parse_assignment(item)
        _assign(data, key.split("."), parsed)
        source = f"{source} with --set" if "--set" not in source else source
    return _build(type(defaults), _merge(to_dict(defaults), data), source, "")


def parse_assignment(item: str) -> tuple[str, Any]:
    """A `--set key=value` string -> (key, value parsed as YAML)."""
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set expects key=value, got {item!r}")
    try:
        return key, yaml.safe_load(value)
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {key}: cannot parse {value!r}: {err}") from err


def to_dict(config: Any) -> dict:
    """A config dataclass as plain data (tuples as lists), for JSON and YAML."""
    return _plain(dataclasses.asdict(config))


def dump_yaml(config: Any) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        out[key] = _merge(out[key], value) if isinstance(out.get(key), dict) and isinstance(value, dict) else value
    return out


def _assign(data: dict, keys: list[str], value: Any) -> None:
    for key in keys[:-1]:
        child = data.setdefault(key, {})
        if not isinstance(child, dict):
            child = data[key] = {}
        data = child
    data[keys[-1]] = value


def build_dataclass(cls: type[T], data: Any, source: str, prefix: str = "") -> T:
    """`cls` from a mapping, with the checks and messages of `load_config` (`prefix` names the key path)."""
    return _build(cls, data, source, prefix)


def _build(cls: type, data: Any, source: str, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {prefix.rstrip('.') or 'config'} must be a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{source}: unknown key '{prefix}{unknown[0]}' (known: {', '.join(fields)})"
            if len(unknown) == 1
            else f"{source}: unknown keys {', '.join(prefix + k for k in unknown)} (known: {', '.join(fields)})"
        )
    values = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = _build(hint, value, source, f"{prefix}{name}.")
        else:
            values[name] = _coerce(value, hint, source, prefix + name)
    try:
        return cls(**values)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{source}: {prefix.rstrip('.') or cls.__name__}: {err}") from err


def _coerce(value: Any, hint: Any, source: str, key: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, source, key)
            except ConfigError as err:
                errors.append(err)
        raise errors[0]
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{source}: {key} must be a list, got {value!r}")
        args = typing.get_args(hint)
        item = args[0] if args else Any
        return tuple(_coerce(v, item, source, f"{key}[{i}]") for i, v in enumerate(value))
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key} must be a mapping, got {value!r}")
        return value
    if hint is Any:
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: {key} must be true or false, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{source}: {key} must be a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: {key} must be an integer, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: {key} must be a string, got {value!r}")
        return value
    raise ConfigError(f"{source}: {key}: unsupported field type {hint!r}")


DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The SAM model of a run."""

    name: str = "vit_h"  # a key of samtasks.MODEL_SPECS
    checkpoint: str | None = None  # local file or URL; None: the official checkpoint (downloaded once)
    device: str = "auto"  # "auto" (best available; the local GPU under torchrun), "cpu", "cuda:1", ...
    dtype: str = "float32"  # or "bfloat16" / "float16" (autocast)
    compile: bool = False  # torch.compile the image encoder
    prompt_batch_size: int = 64  # prompts per decoder call

    def __post_init__(self) -> None:
        from samtasks.build import MODEL_SPECS

        if self.name not in MODEL_SPECS:
            raise ValueError(f"name must be one of {', '.join(MODEL_SPECS)}, got {self.name!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.prompt_batch_size < 1:
            raise ValueError(f"prompt_batch_size must be >= 1, got {self.prompt_batch_size}")

    def torch_device(self, device: str | torch.device | None = None) -> torch.device:
        """The device `predictor(device)` puts the model on; `device` (from the runner) overrides "auto"."""
        return resolve_device(device if device is not None else (None if self.device == "auto" else self.device))

    def predictor(self, device: str | torch.device | None = None):
        """A `SamPredictor` for this model on `torch_device(device)`."""
        from samtasks.build import build_sam
        from samtasks.predictor import SamPredictor

        model = build_sam(self.name, self.checkpoint)
        return SamPredictor(
            model,
            device=self.torch_device(device),
            dtype=self.dtype,
            prompt_batch_size=self.prompt_batch_size,
            compile=self.compile,
        )


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where a dataset's files are, relative to the `--data` root unless absolute."""

    annotations: str = ""
    images: str = "."

    def resolve(self, root: str | Path) -> tuple[Path, Path]:
        root = Path(root)
        return root / self.annotations, root / self.images


# Config fields that change how fast or where a run goes, never its results: free to change on resume.
RESOURCE_FIELDS = frozenset({"device", "compile", "prompt_batch_size", "points_per_batch", "mask_chunk", "workers"})


def flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    """Nested mappings -> `{"a.b": value}`."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def changed_keys(old: dict, new: dict) -> list[str]:
    """Dotted keys whose values differ between two nested settings mappings, leaving out
    `RESOURCE_FIELDS` (a key on one side only counts as changed)."""
    a, b = flatten(old), flatten(new)
    keys = [k for k in sorted(set(a) | set(b)) if a.get(k, KeyError) != b.get(k, KeyError)]
    return [k for k in keys if k.rsplit(".", 1)[-1] not in RESOURCE_FIELDS]


def describe_changes(old: dict, new: dict, keys: list[str]) -> str:
    """`key (now X, recorded Y)` for each of `keys`, for a refusal message."""
    a, b = flatten(old), flatten(new)
    return "; ".join(f"{k} (now {b.get(k, '-')!r}, recorded {a.get(k, '-')!r})" for k in keys)
