"""Optional heavy dependencies, imported where used."""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingDependencyError(ImportError):
    """An optional package is not installed; the message names the extra that installs it."""


def import_optional(module: str, extra: str, purpose: str) -> ModuleType:
    """Imports `module`, or raises `MissingDependencyError` saying `pip install 'samtasks[extra]'`."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingDependencyError(
            f"{purpose} needs the package {module.split('.')[0]!r}: pip install 'samtasks[{extra}]'"
        ) from err
