"""Progress bars for loops over images."""

from __future__ import annotations


def progress_bar(items, enabled: bool, name: str, total: int | None = None):
    """`items` (a list, or any iterable of `total` items) wrapped in a tqdm bar (images/s, ETA) when
    enabled and there is more than one."""
    total = len(items) if total is None else total
    if not enabled or total < 2:
        return items
    from tqdm import tqdm

    return tqdm(items, total=total, desc=name, unit="img", dynamic_ncols=True)
