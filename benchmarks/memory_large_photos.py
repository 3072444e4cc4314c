"""Peak memory of the folder commands on large photos: `proposals`, `edges` and `instance` (20 boxes)
on a 4000x3000 and an 8000x6000 photo, ViT-B with random weights (an official-format `.pth`), CPU.

Each command runs in its own process; its peak resident set size comes from `wait4`. Writes
`results/memory_large_photos.json` and prints a table.

    .venv/bin/python benchmarks/memory_large_photos.py [--sizes 4000x3000,8000x6000] [--work /tmp/mem]
        [--set points_per_batch=16 --tag ppb16]   # knobs for proposals and edges; a results file per tag
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from samtasks.build import build_sam

HERE = Path(__file__).resolve().parent


def photo(path: Path, width: int, height: int) -> Path:
    """A JPEG with smooth shading, discs and bars (objects for the grid's points to land on)."""
    if path.is_file():
        return path
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack([xx / width * 200, yy / height * 200, np.full_like(xx, 90)], -1)
    for _ in range(12):
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(0.05, 0.15) * height
        image[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = rng.uniform(0, 255, 3)
    del xx, yy
    Image.fromarray(image.astype(np.uint8)).save(path, quality=90)
    return path


def boxes_json(path: Path, name: str, width: int, height: int, count: int = 20) -> Path:
    rng = np.random.default_rng(1)
    entries = []
    for _ in range(count):
        x, y = rng.uniform(0, 0.7) * width, rng.uniform(0, 0.7) * height
        w, h = rng.uniform(0.1, 0.3) * width, rng.uniform(0.1, 0.3) * height
        entries.append({"file_name": name, "bbox": [x, y, w, h], "score": 0.9, "category_id": 1})
    path.write_text(json.dumps(entries))
    return path


def peak_rss(command: list[str], log: Path) -> tuple[float, float, int]:
    """(peak RSS in GB, seconds, exit status) of `command` run as a child process (stderr to `log`)."""
    start = time.perf_counter()
    with open(log, "w") as err:
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_maxrss / 2**20, time.perf_counter() - start, child.returncode  # ru_maxrss is in KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="4000x3000,8000x6000")
    parser.add_argument("--commands", default="proposals,edges,instance")
    parser.add_argument("--work", default="/tmp/samtasks-memory")
    parser.add_argument("--set", action="append", default=[], help="a knob for proposals and edges")
    parser.add_argument("--tag", help="suffix of the results file")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    checkpoint = work / "sam_vit_b_random.pth"
    if not checkpoint.is_file():
        torch.manual_seed(0)
        torch.save(build_sam("vit_b", pretrained=False).state_dict(), checkpoint)
    model = ["--sam", "vit_b", "--sam-checkpoint", str(checkpoint), "--device", "cpu", "-q"]
    knobs = [part for item in args.set for part in ("--set", item)]
    rows = []
    for size in args.sizes.split(","):
        width, height = (int(v) for v in size.split("x"))
        image = photo(work / f"photo_{size}.jpg", width, height)
        commands = {
            "proposals": ["proposals", str(image), "--set", "points_per_side=8", *knobs],
            "edges": ["edges", str(image), *knobs],
            "instance": ["instance", str(image), "--detections", str(boxes_json(work / "boxes.json", image.name,
                                                                                 width, height))],
        }  # fmt: skip
        for name in args.commands.split(","):
            out = work / f"out_{name}_{size}_{args.tag or 'default'}"
            command = [sys.executable, "-m", "samtasks.cli", *commands[name], *model, "--out", str(out), "--overwrite"]
            gb, seconds, status = peak_rss(command, work / f"log_{name}_{size}.txt")
            rows.append({"command": name, "size": size, "peak_rss_gb": round(gb, 2), "seconds": round(seconds, 1)})
            rows[-1]["exit_status"] = status
            print(f"{name:10s} {size:10s} peak RSS {gb:6.2f} GB  {seconds:7.1f} s  exit {status}", flush=True)
            result = {"rows": rows, "set": args.set, "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count()}
            (HERE / "results").mkdir(exist_ok=True)
            name_json = f"memory_large_photos{'_' + args.tag if args.tag else ''}.json"
            (HERE / "results" / name_json).write_text(json.dumps(result, indent=2))  # after every row: kept if cut


if __name__ == "__main__":
    main()
