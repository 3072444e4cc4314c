"""The benchmark runner: per-image work appended to a results store, resumable, shardable under
`torchrun`, then one evaluation and one results JSON.

Output folder layout:
    config.yaml            the resolved config, written once the model is built (a resumed run must
                           match it except in resource keys: device, batch sizes, workers)
    records/rank<R>.jsonl  one JSON line per finished image, appended and fsync'ed as it finishes
    results.json           metrics, config, versions, device, timings (written by rank 0 at the end)

Under `torchrun` rank r takes every world_size-th image of the (limited) list and writes its own
records file; rank 0 waits for all ranks (a gloo barrier), merges every records file and evaluates.
An interrupted run started again with the same config and folder skips every image already in any
records file (so the world size may change between runs); a line cut off by a crash is discarded.
Each process locks the folder (`.lock`, `.lock.rank<R>` under torchrun), so two runs never share it.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import json
import logging
import os
import platform
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
import yaml

from samtasks.evaluation.config import ConfigError, changed_keys, describe_changes, dump_yaml, to_dict
from samtasks.structures import Sample
from samtasks.utils.files import FolderLock, prepare_folder, write_text
from samtasks.utils.progress import progress_bar

logger = logging.getLogger(__name__)

PACKAGES = ("samtasks", "torch", "torchvision", "numpy", "pycocotools", "lvis", "ultralytics", "open_clip_torch")


class Benchmark(Protocol):
    """What the runner needs from a benchmark definition."""

    name: str
    config: Any  # a frozen config dataclass

    def samples(self) -> Sequence[Sample]:
        """Every image of the benchmark, in a fixed order."""

    def setup(self, device: str | None) -> torch.device:
        """Builds the models (called only when there is an image left to process); returns the device
        they are on."""

    def process(self, sample: Sample) -> dict:
        """One image's record (JSON-ready); raising `ValueError` marks the image failed."""

    def evaluate(self, records: Iterator[dict]) -> dict[str, float]:
        """Metrics from the successful records of every image."""


@dataclasses.dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @staticmethod
    def from_env() -> DistInfo:
        """The `torchrun` environment (RANK, WORLD_SIZE, LOCAL_RANK), or a single process."""
        return DistInfo(
            rank=int(os.environ.get("RANK", 0)),
            world_size=int(os.environ.get("WORLD_SIZE", 1)),
            local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        )


class ResultsStore:
    """Append-only JSON-lines records of finished images, one file per rank."""

    def __init__(self, folder: str | Path, rank: int = 0) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / f"rank{rank}.jsonl"
        self._repair(self.path)
        self._file = None

    @staticmethod
    def _repair(path: Path) -> None:
        """Truncates a final line left incomplete by a crash (everything before it is intact)."""
        if not path.is_file():
            return
        data = path.read_bytes()
        good = data.rfind(b"\n") + 1
        if good < len(data):
            logger.warning("%s: discarding an incomplete last record (%d bytes)", path, len(data) - good)
            with open(path, "r+b") as f:
                f.truncate(good)

    def append(self, record: dict) -> None:
        if self._file is None:
            self._file = open(self.path, "a")
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def records(self) -> Iterator[dict]:
        """Every complete record of every rank's file; for an image recorded twice, the last one in
        file order wins (`latest` does the de-duplication)."""
        for path in sorted(self.folder.glob("rank*.jsonl")):
            with open(path) as f:
                for line in f:
                    if line.endswith("\n"):
                        yield json.loads(line)

    def latest(self) -> dict[Any, dict]:
        """`image_id -> record`, a successful record preferred over a failed one."""
        out: dict[Any, dict] = {}
        for record in self.records():
            old = out.get(record["image_id"])
            if old is None or "error" in old or "error" not in record:
                out[record["image_id"]] = record
        return out


def environment() -> dict:
    """Package versions and the machine, for the results JSON."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    device = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()}
    device["torch_threads"] = torch.get_num_threads()
    if torch.cuda.is_available():
        device["cuda"] = torch.cuda.get_device_name(0)
        device["cuda_count"] = torch.cuda.device_count()
    return {"versions": versions, "device": device}


class RunInterrupted(Exception):
    """Ctrl-C during a run; the message says how far it got and that a rerun resumes."""


def _check_config(out: Path, config: Any) -> None:
    """Refuses `out` if its config.yaml differs from `config` in a key that changes results (the
    message names the keys); resource keys (`RESOURCE_FIELDS`) may change between runs."""
    path = out / "config.yaml"
    if not path.is_file():
        return
    recorded = yaml.safe_load(path.read_text()) or {}
    keys = changed_keys(recorded, to_dict(config))
    if keys:
        raise ConfigError(
            f"{out} holds results of a different config (see {path}): "
            f"{describe_changes(recorded, to_dict(config), keys)}; use another --out, or the recorded settings"
        )


def device_for(dist: DistInfo, requested: str | None) -> str | None:
    """The device a rank's model goes on: the rank's local GPU under torchrun when `requested` is
    None, "auto" or "cuda", else `requested` (None: the best available)."""
    if dist.world_size > 1 and (requested in (None, "auto", "cuda")) and torch.cuda.is_available():
        return f"cuda:{dist.local_rank % torch.cuda.device_count()}"
    return None if requested in (None, "auto") else requested


def init_distributed(dist: DistInfo) -> None:
    """Joins the gloo group of a `torchrun` launch (nothing for a single process)."""
    if dist.world_size > 1:
        import torch.distributed as torch_dist

        if not torch_dist.is_initialized():
            # Only barriers go over this group; a long timeout lets ranks finish far apart.
            torch_dist.init_process_group("gloo", timeout=datetime.timedelta(days=7))


def run_benchmark(
    benchmark: Benchmark,
    out: str | Path,
    *,
    limit: int | None = None,
    device: str | None = None,
    progress: bool = True,
    dist: DistInfo | None = None,
) -> dict | None:
    """Runs `benchmark` into the folder `out`; returns the results (rank 0) or None (other ranks).

    Args:
        limit: only the first `limit` images (smoke runs); recorded in the results.
        device: the device for the model ("auto" or None: the best available; under torchrun with
            CUDA, the rank's local GPU).
        progress: a progress bar with images/s and ETA on rank 0.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"--limit must be >= 0, got {limit}")
    dist = dist or DistInfo.from_env()
    out = prepare_folder(out)
    init_distributed(dist)
    with rank_lock(out, dist):
        return _run(benchmark, out, limit, device, progress, dist)


def rank_lock(out: Path, dist: DistInfo) -> FolderLock:
    """The lock a process holds on its output folder: `.lock` for rank 0, `.lock.rank<R>` for the
    other ranks of a torchrun launch (which join as shards)."""
    return FolderLock(out, ".lock" if dist.rank == 0 else f".lock.rank{dist.rank}")


def _run(
    benchmark: Benchmark, out: Path, limit: int | None, device: str | None, progress: bool, dist: DistInfo
) -> dict | None:
    _check_config(out, benchmark.config)
    samples = benchmark.samples()
    if limit is not None:
        samples = samples[:limit]
    store = ResultsStore(out / "records", dist.rank)
    done = {k for k, r in store.latest().items() if "error" not in r}
    mine = [s for i, s in enumerate(samples) if i % dist.world_size == dist.rank and s.image_id not in done]
    start = time.perf_counter()
    used_device = None
    if mine:
        logger.info(
            "%s: %d of %d images to process on rank %d/%d (%d done before)",
            benchmark.name,
            len(mine),
            len(samples),
            dist.rank,
            dist.world_size,
            len(done & {s.image_id for s in samples}),
        )
        used_device = str(benchmark.setup(device_for(dist, device)))
    if dist.rank == 0:  # only once the config is known to build, so a failed start leaves nothing behind
        write_text(out / "config.yaml", dump_yaml(benchmark.config))
    setup_s = time.perf_counter() - start
    _process(benchmark, mine, store, progress and dist.rank == 0)
    run_s = time.perf_counter() - start
    barrier(dist)
    if dist.rank != 0:
        return None

    wanted = {s.image_id for s in samples}
    records = {k: r for k, r in store.latest().items() if k in wanted}
    failed = sorted((r for r in records.values() if "error" in r), key=lambda r: str(r["image_id"]))
    ok = [r for r in records.values() if "error" not in r]
    missing = len(wanted) - len(records)
    if missing:
        raise RuntimeError(f"{missing} images have no record in {store.folder}; run the command again to finish")
    metrics = benchmark.evaluate(iter(ok))
    result = {
        "benchmark": benchmark.name,
        "metrics": metrics,
        "images": len(ok),
        "failed": [{"image_id": r["image_id"], "error": r["error"]} for r in failed],
        "limit": limit,
        "config": to_dict(benchmark.config),
        **environment(),
        "model_device": used_device,
        "timings": {
            "seconds_per_image": sum(r["seconds"] for r in ok) / max(1, len(ok)),
            "image_seconds_total": sum(r["seconds"] for r in records.values()),
            "this_run_seconds": run_s,
            "this_run_setup_seconds": setup_s,
            "this_run_images_rank0": len(mine),
            "world_size": dist.world_size,
        },
        "finished": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    write_text(out / "results.json", json.dumps(result, indent=2))
    return result


def _process(benchmark: Benchmark, samples: list[Sample], store: ResultsStore, progress: bool) -> None:
    """Appends a record per sample to `store`; Ctrl-C becomes `RunInterrupted`."""
    finished = 0
    try:
        for sample in progress_bar(samples, progress, benchmark.name):
            t0 = time.perf_counter()
            try:
                record = benchmark.process(sample)
            except ValueError as err:  # unreadable image, bad annotation: report, keep going
                logger.warning("%s: image %s skipped: %s", benchmark.name, sample.path, err)
                record = {"error": str(err)}
            store.append({"image_id": sample.image_id, **record, "seconds": time.perf_counter() - t0})
            finished += 1
    except KeyboardInterrupt:
        raise RunInterrupted(
            f"interrupted after {finished} of {len(samples)} images; finished ones are kept in "
            f"{store.folder.parent}, the same command resumes"
        ) from None
    finally:
        store.close()


def finish_distributed() -> None:
    """Destroys the process group `run_benchmark` created (call once, after the last run; a suite
    of runs shares one group)."""
    import torch.distributed as torch_dist

    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def barrier(dist: DistInfo) -> None:
    if dist.world_size > 1:
        import torch.distributed as torch_dist

        torch_dist.barrier()
