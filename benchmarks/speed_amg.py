"""Automatic mask generation speed and peak memory against the official `SamAutomaticMaskGenerator`,
same weights, same image, same settings, one run.

Settings: the `official` preset (32x32 grid, IoU 0.88, stability 0.95, NMS 0.7), the same at 16x16
(`official-16`), and the paper's `proposals-lvis` settings (64x64 grid, no filtering, NMS 0.9; the
official generator is given the same knobs), also at 32x32 (`proposals-lvis-32`: memory against the
grid size). Each generator runs in its own fresh process so that its peak resident memory
(ru_maxrss) is its own; the masks come back as RLE and are checked equal (same count, every mask
matched one-to-one at IoU >= 0.99) before any time is reported. Time is the whole `generate(image)`
call (encoder included), after a warm-up `generate` on a small image on CUDA.

Random weights (the official constructor's seeded initialization, or `--weights noise` for fan-in
scaled noise that keeps more masks through the filters) stand in for the checkpoint.

    python benchmarks/speed_amg.py [--model vit_b] [--device cpu] [--settings official proposals-lvis]

Writes benchmarks/results/speed_amg_<device>_<model>.json (updating the settings run, keeping the
others) and prints the ratios.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from speed_core import load_image

SETTINGS = {
    "official": {},
    "official-16": {"points_per_side": 16},
    "proposals-lvis": {
        "points_per_side": 64,
        "pred_iou_thresh": 0.0,
        "stability_score_thresh": 0.0,
        "box_nms_thresh": 0.9,
    },
}
# The same at 32x32: peak memory against the grid size, all else equal.
SETTINGS["proposals-lvis-32"] = {**SETTINGS["proposals-lvis"], "points_per_side": 32}


def make_weights(model: str, kind: str, path: Path) -> None:
    from segment_anything import sam_model_registry

    torch.manual_seed(0)
    net = sam_model_registry[model]()
    if kind == "noise":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from tests.conftest import randomize

        randomize(net, seed=0)
    torch.save(net.state_dict(), path)


def worker(args: argparse.Namespace) -> None:
    """One side, one setting: time `generate`, write RLEs, time and peak memory to `args.result`."""
    image, _ = load_image()
    knobs = {**SETTINGS[args.setting], **json.loads(args.knobs)}
    device = torch.device(args.device)
    if args.side == "official":
        from segment_anything import SamAutomaticMaskGenerator, sam_model_registry

        net = sam_model_registry[args.model](checkpoint=args.weights).to(device).eval()
        generator = SamAutomaticMaskGenerator(net, output_mode="coco_rle", **knobs)

        # Always float32: under bfloat16 autocast the official generator fails (numpy has no bfloat16).

        def run(img):
            with torch.inference_mode():
                return [r["segmentation"] for r in generator.generate(img)]
    else:
        from samtasks import SamPredictor, build_sam
        from samtasks.tasks.amg import AutomaticMaskGenerator

        predictor = SamPredictor(build_sam(args.model, args.weights), device=device, dtype=args.dtype)
        generator = AutomaticMaskGenerator(predictor, **knobs)

        def run(img):
            return generator.generate(img).rles

    if device.type == "cuda":
        run(image[:64, :64])  # warm-up: kernels, allocator (on a CPU a warm-up changes nothing)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    rles = run(image)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    result = {
        "seconds": seconds,
        "threads": torch.get_num_threads(),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rles": [
            {"size": r["size"], "counts": r["counts"] if isinstance(r["counts"], str) else r["counts"].decode()}
            for r in rles
        ],
    }
    if device.type == "cuda":
        result["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    Path(args.result).write_text(json.dumps(result))


def matched(ours: list[dict], ref: list[dict]) -> tuple[bool, float]:
    """Same count and a one-to-one greedy matching with every IoU >= 0.99; returns (ok, worst IoU)."""
    from pycocotools import mask as mask_utils

    if len(ours) != len(ref):
        return False, 0.0
    if not ours:
        return True, 1.0
    iou = mask_utils.iou(ours, ref, [0] * len(ref))  # [ours, ref]
    used, worst = set(), 1.0
    for i in np.argsort(-iou.max(1)):
        j = next(j for j in np.argsort(-iou[i]) if j not in used)
        used.add(j)
        worst = min(worst, float(iou[i, j]))
    return worst >= 0.99, worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vit_b", choices=["vit_b", "vit_l", "vit_h"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--weights", default="official-init", choices=["official-init", "noise"])
    parser.add_argument("--knobs", default="{}", help="JSON of extra AMG knobs for both sides (smoke runs)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--side", choices=["official", "ours"], help=argparse.SUPPRESS)
    parser.add_argument("--setting", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--weights-file", dest="weights_file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        args.weights = args.weights_file
        worker(args)
        return

    _, image_name = load_image()
    report = {
        "model": args.model,
        "device": args.device,
        "device_name": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else platform.processor(),
        "threads": torch.get_num_threads(),
        "dtype": args.dtype,
        "torch": torch.__version__,
        "image": image_name,
        "weights": args.weights,
        "knobs": json.loads(args.knobs),
        "settings": {},
    }
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "weights.pth"
        make_weights(args.model, args.weights, weights)
        for setting in args.settings:
            sides = {}
            for side in ("official", "ours"):
                out = Path(tmp) / f"{setting}_{side}.json"
                command = [sys.executable, __file__, "--side", side, "--setting", setting, "--result", str(out)]
                command += ["--model", args.model, "--device", args.device, "--weights-file", str(weights)]
                command += ["--knobs", args.knobs, "--dtype", args.dtype]
                subprocess.run(command, check=True)
                sides[side] = json.loads(out.read_text())
            equal, worst = matched(sides["ours"]["rles"], sides["official"]["rles"])
            ok &= equal or args.dtype != "float32"  # ours in bfloat16 against the official float32
            entry = {
                "masks": {"official": len(sides["official"]["rles"]), "ours": len(sides["ours"]["rles"])},
                "masks_equal": equal,
                "worst_matched_iou": worst,
                "threads": {side: sides[side]["threads"] for side in sides},  # each worker's own
            }
            for key in ("seconds", "peak_rss_mib", "peak_cuda_mib"):
                if key in sides["ours"]:
                    a, b = sides["official"][key], sides["ours"][key]
                    entry[key] = {"official": a, "ours": b, "ratio": a / b}
            entry["finished_utc"] = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
            report["settings"][setting] = entry
            print(setting, json.dumps(entry), flush=True)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.knobs == "{}" else "_smoke"
    dtype = "" if args.dtype == "float32" else f"_{args.dtype}"
    path = out_dir / f"speed_amg_{args.device.split(':')[0]}_{args.model}{dtype}{suffix}.json"
    if path.exists():  # settings run earlier (and not now) are kept, each with its own finish time
        report["settings"] = {**json.loads(path.read_text())["settings"], **report["settings"]}
    path.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    if not ok:
        raise SystemExit("masks differ between the generators")


if __name__ == "__main__":
    main()
