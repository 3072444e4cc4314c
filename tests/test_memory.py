"""Freed heap memory given back to the operating system."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest

from samtasks.utils.memory import release_freed_memory


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc" or not Path("/proc/self/status").is_file(), reason="glibc and /proc"
)
def test_freed_heap_pages_are_returned():
    # 64 KiB blocks stay below the mmap threshold, so they come from the heap; the last one, kept,
    # stops glibc from trimming the freed ones on its own.
    blocks = [b"x" * (64 << 10) for _ in range(2000)]  # 125 MiB, every page written
    last = blocks[-1]
    del blocks
    before = _rss_bytes()
    release_freed_memory()
    assert before - _rss_bytes() > 100 << 20
    assert len(last) == 64 << 10
