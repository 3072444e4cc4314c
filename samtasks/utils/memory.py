"""Giving memory the C heap keeps after a free back to the operating system."""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's `malloc_trim`, or None where the C library has none (macOS, musl, Windows)."""
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, TypeError, AttributeError):
        return None


def release_freed_memory() -> None:
    """Returns the free pages of every C heap to the operating system (a no-op without glibc).

    Tensors below glibc's mmap threshold (up to 32 MiB once it adapts) are freed into the heap of the
    thread that made them, which keeps the pages: about 0.2 GB after a ViT-B encoding on CPU. Larger
    tensors, such as the decoder's, are mapped afresh and cannot reuse those pages, so without this
    they add to the process's peak memory.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
