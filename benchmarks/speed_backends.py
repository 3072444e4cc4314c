"""Speed of every SAM family against its own official package: same weights, same image, one run.

Per model: (a) image encoder seconds per image; (b) 64 point prompts (8 x 8 grid, 3 masks each where
the family gives 3) decoded and upsampled to the original size in one call; (c) the automatic mask
generator with the official preset's filters (IoU 0.88, stability 0.95, box NMS 0.7) on a
`--amg-side` x `--amg-side` grid, encoder included; and the peak resident memory of the whole
worker. Each side runs in its own fresh process, so peak memory is its own. The low-res logits and
IoU of (b) are checked within 1e-4 and the generated masks one to one at IoU >= 0.99 before any
time is reported. The official model's seeded random initialization, saved in the official
checkpoint format and loaded by `build_sam`, stands in for the checkpoint: speed does not depend on
values.

    python benchmarks/speed_backends.py [--models mobile_sam hq_vit_b efficientvit_sam_l0 ...]
        [--amg-side 16] [--repeats 2]

Writes benchmarks/results/speed_backends_cpu.json and prints a table of ratios (official / ours).
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
from speed_amg import matched
from speed_core import grid_points, interleaved, load_image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_MODELS = [
    "mobile_sam",
    "hq_vit_b",
    "efficientvit_sam_l0",
    "efficientvit_sam_xl0",
    "sam2.1_hiera_tiny",
    "sam2.1_hiera_base_plus",
]
AMG = {"pred_iou_thresh": 0.88, "stability_score_thresh": 0.95, "box_nms_thresh": 0.7}


def official_model(name: str) -> torch.nn.Module:
    """The official package's model for our spec `name`, with its constructor's seeded weights."""
    from samtasks.build import MODEL_SPECS

    spec = MODEL_SPECS[name]
    torch.manual_seed(0)
    if spec.family == "MobileSAM":
        from tests.official_hq import build_official_mobile_sam

        return build_official_mobile_sam(spec)
    if spec.family == "SAM-HQ":
        from tests.official_hq import build_official_hq

        return build_official_hq(spec)
    if spec.family == "EfficientViT-SAM":
        from tests.official_efficientvit import build_official

        return build_official(spec)
    if spec.family.startswith("SAM 2"):
        from tests.official_sam2 import build_official_sam2

        return build_official_sam2(spec)
    raise SystemExit(f"{name}: family {spec.family} has no official package here (see speed_core.py for SAM)")


def save_official(model: torch.nn.Module, family: str, path: Path) -> None:
    """The official file format: SAM 2.x wraps its state dict as `{"model": ...}`."""
    state = model.state_dict()
    torch.save({"model": state} if family.startswith("SAM 2") else state, path)


class Official:
    """The official predictor and generator of one family behind one small interface."""

    def __init__(self, model: torch.nn.Module, family: str) -> None:
        self.model, self.family = model, family
        if family.startswith("SAM 2"):
            from sam2.sam2_image_predictor import SAM2ImagePredictor

            self.predictor = SAM2ImagePredictor(model)
        elif family == "EfficientViT-SAM":
            from efficientsam.models.efficientvit.sam import EfficientViTSamPredictor

            self.predictor = EfficientViTSamPredictor(model)
        elif family == "SAM-HQ":
            from segment_anything_hq import SamPredictor

            self.predictor = SamPredictor(model)
        else:
            from mobile_sam import SamPredictor

            self.predictor = SamPredictor(model)

    def set_image(self, image: np.ndarray) -> None:
        self.predictor.set_image(image)

    def decode(self, points: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`[P, 1, 2]` pixel points -> (upsampled logits, IoU, low-res logits), multimask."""
        labels = np.ones(points.shape[:2], np.int64)
        p = self.predictor
        if self.family.startswith("SAM 2"):
            _, coords, labels_t, _ = p._prep_prompts(points, labels, None, None, True)
            return p._predict(coords, labels_t, None, None, True, return_logits=True)
        h, w = p.original_size
        coords = torch.as_tensor(p.transform.apply_coords(points, (h, w)), dtype=torch.float)
        return p.predict_torch(coords, torch.as_tensor(labels), multimask_output=True, return_logits=True)

    def generator(self, side: int):
        settings = dict(points_per_side=side, output_mode="coco_rle", **AMG)
        if self.family.startswith("SAM 2"):
            from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

            return SAM2AutomaticMaskGenerator(self.model, **settings)
        if self.family == "EfficientViT-SAM":
            from efficientsam.models.efficientvit.sam import EfficientViTSamAutomaticMaskGenerator

            return EfficientViTSamAutomaticMaskGenerator(self.model, **settings)
        if self.family == "SAM-HQ":
            from segment_anything_hq import SamAutomaticMaskGenerator
        else:
            from mobile_sam import SamAutomaticMaskGenerator
        return SamAutomaticMaskGenerator(self.model, **settings)


def worker(args: argparse.Namespace) -> None:
    """One model, one side: encoder, 64-prompt decode and AMG timings, outputs and peak memory."""
    from samtasks.build import MODEL_SPECS

    torch.set_grad_enabled(False)
    image, _ = load_image()
    h, w = image.shape[:2]
    points = grid_points(h, w)
    device = torch.device("cpu")
    family = MODEL_SPECS[args.model].family
    if args.side == "official":
        model = official_model(args.model)
        model.load_state_dict(_state(args.weights), strict=True)
        side = Official(model.eval(), family)
        encode = lambda: side.set_image(image)  # noqa: E731
        decode = lambda: side.decode(points)  # noqa: E731
        generator = side.generator(args.amg_side)

        def amg():
            return [r["segmentation"] for r in generator.generate(image)]
    else:
        from samtasks import SamPredictor, build_sam
        from samtasks.tasks.amg import AutomaticMaskGenerator

        predictor = SamPredictor(build_sam(args.model, args.weights), device=device)
        encode = lambda: predictor.set_image(image)  # noqa: E731
        points_t, labels_t = torch.as_tensor(points), torch.ones(64, 1, dtype=torch.int64)

        def decode():
            out = predictor.predict_torch(points_t, labels_t)
            return out.masks, out.iou_scores, out.low_res_logits

        generator = AutomaticMaskGenerator(predictor, points_per_side=args.amg_side, **AMG)

        def amg():
            return generator.generate(image).rles

    times = interleaved({"encoder_s": encode, "decode_64_points_s": lambda: decode()[0]}, device, args.repeats)
    result = dict(times, threads=torch.get_num_threads())
    _, iou, low = decode()
    start = time.perf_counter()
    rles = amg()
    result["amg_s"] = time.perf_counter() - start
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["rles"] = [
        {"size": r["size"], "counts": r["counts"] if isinstance(r["counts"], str) else r["counts"].decode()}
        for r in rles
    ]
    np.savez(args.result + ".npz", iou=iou.float().numpy(), low=low.float().numpy())
    Path(args.result).write_text(json.dumps(result))


def _state(path: str) -> dict:
    state = torch.load(path, weights_only=True)
    return state["model"] if "model" in state else state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    parser.add_argument("--amg-side", type=int, default=16, help="AMG grid side (default 16: 256 points)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--side", choices=["official", "ours"], help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        worker(args)
        return

    from samtasks.build import MODEL_SPECS

    _, image_name = load_image()
    report = {
        "device": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "image": image_name,
        "amg": {"points_per_side": args.amg_side, **AMG},
        "models": {},
    }
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            family = MODEL_SPECS[name].family
            weights = Path(tmp) / f"{name}.pt"
            save_official(official_model(name), family, weights)
            sides = {}
            for side in ("official", "ours"):
                out = Path(tmp) / f"{name}_{side}.json"
                command = [sys.executable, __file__, "--side", side, "--model", name, "--weights", str(weights)]
                command += ["--result", str(out), "--amg-side", str(args.amg_side), "--repeats", str(args.repeats)]
                subprocess.run(command, check=True)
                sides[side] = {**json.loads(out.read_text()), **np.load(str(out) + ".npz")}
            low_diff = float(np.abs(sides["ours"]["low"] - sides["official"]["low"]).max())
            iou_diff = float(np.abs(sides["ours"]["iou"] - sides["official"]["iou"]).max())
            equal, worst = matched(sides["ours"]["rles"], sides["official"]["rles"])
            entry = {
                "family": family,
                "max_abs_diff": {"low_res_logits": low_diff, "iou": iou_diff},
                "amg_masks": {"official": len(sides["official"]["rles"]), "ours": len(sides["ours"]["rles"])},
                "amg_worst_matched_iou": worst,
                "outputs_equal": equal and low_diff <= 1e-4 and iou_diff <= 1e-4,
                "threads": {side: sides[side]["threads"] for side in sides},  # each worker's own
            }
            for key in ("encoder_s", "decode_64_points_s", "amg_s", "peak_rss_mib"):
                a, b = sides["official"][key], sides["ours"][key]
                entry[key] = {"official": a, "ours": b, "ratio": a / b}
            ok &= entry["outputs_equal"]
            report["models"][name] = entry
            print(name, json.dumps(entry), flush=True)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "speed_backends_cpu.json").write_text(json.dumps(report, indent=2))
    print(f"\n{'model':24} {'encoder s (off/ours)':>24} {'decode 64 s':>20} {'AMG s':>20} {'peak MiB':>18}")
    for name, e in report["models"].items():
        cells = [
            f"{e[k]['official']:.2f}/{e[k]['ours']:.2f} {e[k]['ratio']:.2f}x"
            for k in ("encoder_s", "decode_64_points_s", "amg_s")
        ]
        rss = e["peak_rss_mib"]
        print(f"{name:24} {cells[0]:>24} {cells[1]:>20} {cells[2]:>20} {rss['official']:>8.0f}/{rss['ours']:.0f}")
    if not ok:
        raise SystemExit("outputs differ for at least one model")


if __name__ == "__main__":
    main()
