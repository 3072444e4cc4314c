"""The folder runner: one per-image job (proposals, edges, instance masks, text queries) over the
images of a file, folder or glob, into an output folder that a rerun resumes.

Output folder layout (beside the job's own files; each command keeps its own records, so that
several commands may share one folder):
    records/<command>/settings.json    the settings that change results; a rerun with others is refused
    records/<command>/rank<R>.jsonl    one JSON line per finished or failed image (see `ResultsStore`)
    .lock, .lock.rank<R>               held by the running process (rank R under torchrun)

Each image is known by its id: its path relative to the input root, extension included
(`x.jpg`, `sub/x.png`), so two files never share an id and an output name (`<id>.json`). Under
`torchrun` rank r takes every world_size-th image, as the benchmark runner does; rank 0 writes the
folder-wide outputs once every rank is done.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Protocol

import torch

from samtasks.evaluation.config import ConfigError, changed_keys, describe_changes
from samtasks.evaluation.runner import (
    DistInfo,
    ResultsStore,
    RunInterrupted,
    barrier,
    device_for,
    init_distributed,
    rank_lock,
)
from samtasks.utils.files import prepare_folder, write_text
from samtasks.utils.image import list_images
from samtasks.utils.progress import progress_bar

logger = logging.getLogger(__name__)

# Per-image errors that leave the other images worth doing (unreadable file, bad prompt, memory).
IMAGE_ERRORS = (ValueError, MemoryError, torch.OutOfMemoryError)


@dataclasses.dataclass(frozen=True)
class FolderImage:
    id: str  # path relative to the input root, "/"-separated, extension included
    path: Path


@dataclasses.dataclass
class FolderReport:
    """What a run did: `total` images in the source, `done` now finished (this run or before)."""

    out: Path
    total: int
    done: int
    failed: dict[str, str]  # image id -> error, every rank's


class FolderJob(Protocol):
    """What the folder runner needs from a command."""

    name: str  # the command, e.g. "proposals"
    settings: dict  # JSON-ready settings that change results (resources such as the device left out)

    def setup(self, device: str | None) -> None:
        """Builds the models (called only when an image is left to do)."""

    def process(self, image: FolderImage, out: Path) -> dict:
        """Writes the image's files under `out` (atomically); returns its JSON-ready record. Raising
        one of `IMAGE_ERRORS` marks the image failed."""

    def finish(self, records: dict[str, dict], out: Path) -> None:
        """Writes folder-wide outputs from every image's latest successful record (rank 0)."""


def folder_images(source: str | Path) -> list[FolderImage]:
    """The images of a file, folder or glob with their ids (relative to the file's folder, the
    folder, or the glob's fixed leading directories)."""
    paths = list_images(source)
    text = str(source)
    if Path(source).is_dir():
        root = Path(source)
    elif Path(source).is_file():
        root = Path(source).parent
    else:
        fixed = text[: min(text.index(c) for c in "*?[" if c in text)]
        root = Path(fixed if fixed.endswith(("/", "\\")) else Path(fixed).parent)
    return [FolderImage(p.relative_to(root).as_posix(), p) for p in paths]


def output_path(out: Path, image_id: str, suffix: str) -> Path:
    """`out/<id><suffix>`, e.g. `out/sub/x.jpg.json`."""
    return out / f"{image_id}{suffix}"


def run_folder(
    job: FolderJob,
    source: str | Path,
    out: str | Path,
    *,
    overwrite: bool = False,
    device: str | None = None,
    progress: bool = True,
    dist: DistInfo | None = None,
) -> FolderReport:
    """Runs `job` on every image of `source` not yet done in `out`.

    Args:
        overwrite: redo every image, with these settings, whatever `out` holds.
        device: the device for the models (None: the best available; under torchrun with CUDA, the
            rank's local GPU).

    Raises:
        ImageReadError: `source` names no image.
        OutputError: `out` cannot be written, or another process holds it.
        ConfigError: `out` holds results of other settings (the message names the keys).
        RunInterrupted: Ctrl-C (finished images are kept).
    """
    dist = dist or DistInfo.from_env()
    images = folder_images(source)
    out = prepare_folder(out)
    init_distributed(dist)
    with rank_lock(out, dist):
        if dist.rank == 0:
            _check_settings(out, job, overwrite)
        barrier(dist)
        return _run_locked(job, images, out, device, progress, dist)


def _run_locked(
    job: FolderJob, images: list[FolderImage], out: Path, device: str | None, progress: bool, dist: DistInfo
) -> FolderReport:
    store = ResultsStore(out / "records" / job.name, dist.rank)
    done = {k for k, r in store.latest().items() if "error" not in r}
    mine = [im for i, im in enumerate(images) if i % dist.world_size == dist.rank and im.id not in done]
    if len(done):
        logger.info("%d of %d images already done in %s (--overwrite redoes them)", len(done), len(images), out)
    processed = 0
    try:
        if mine:
            job.setup(device_for(dist, device))
            if dist.rank == 0:
                write_text(store.folder / "settings.json", json.dumps(job.settings, indent=2))
        for image in progress_bar(mine, progress and dist.rank == 0, job.name):
            t0 = time.perf_counter()
            try:
                record = job.process(image, out)
            except IMAGE_ERRORS as err:
                logger.warning("%s: skipped %s: %s", job.name, image.path, err)
                record = {"error": str(err) or err.__class__.__name__}
            store.append({"image_id": image.id, **record, "seconds": round(time.perf_counter() - t0, 3)})
            processed += 1
    except KeyboardInterrupt:
        raise RunInterrupted(
            f"interrupted after {processed} of {len(mine)} images; finished ones are kept in {out}, "
            "the same command resumes"
        ) from None
    finally:
        store.close()
    barrier(dist)
    wanted = {im.id for im in images}
    latest = {k: r for k, r in store.latest().items() if k in wanted}
    records = {k: r for k, r in latest.items() if "error" not in r}
    failed = {k: r["error"] for k, r in latest.items() if "error" in r}
    if dist.rank == 0:
        job.finish(records, out)
    return FolderReport(out, len(images), len(records), failed)


def _check_settings(out: Path, job: FolderJob, overwrite: bool) -> None:
    """Refuses `out` if it holds results of other settings (`overwrite`: clears them instead)."""
    path = out / "records" / job.name / "settings.json"
    if overwrite:
        shutil.rmtree(path.parent, ignore_errors=True)
        return
    if not path.is_file():
        return
    try:
        recorded = json.loads(path.read_text())
    except ValueError as err:
        raise ConfigError(f"{path} is not valid JSON ({err}); delete it or use --overwrite") from err
    new = json.loads(json.dumps(job.settings))  # as JSON holds them (tuples as lists)
    keys = changed_keys(recorded, new)
    if keys:
        raise ConfigError(
            f"{out} holds {job.name} results made with other settings: {describe_changes(recorded, new, keys)}; "
            "rerun with the recorded settings to resume, use --overwrite to redo everything, or choose another --out"
        )


__all__ = ["FolderImage", "FolderJob", "FolderReport", "RunInterrupted", "folder_images", "run_folder"]
