"""Image-encoder throughput and reduced-precision parity on a GPU, ours against the official
`segment-anything` package on the same random weights, in one run.

For each model: images/s of the image encoder on a batch of copies of one image, the official
encoder in float32 and under bfloat16 autocast, ours in float32, bfloat16 and bfloat16 with
`torch.compile`; float32 features checked against the official ones, and our bfloat16 (eager and
compiled) masks for 64 point prompts against our float32 masks (mean IoU >= 0.99 required, the
lowest reported). The AMG's
ms/image come from `speed_amg.py --device cuda`, the decoder's from `speed_core.py --device cuda`.
Random weights (the official constructor's seeded initialization) stand in for the checkpoints:
speed does not depend on values, and the masks mean nothing as quality.

    python benchmarks/speed_gpu.py [--models vit_b vit_h] [--batch 8] [--repeats 5] [--no-compile]

Writes benchmarks/results/speed_gpu_<device>.json and prints it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
from pathlib import Path

import numpy as np
import torch
from speed_core import grid_points, interleaved, load_image, same_weights

from samtasks import SamPredictor


def mask_ious(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of each pair of bool masks `[..., H, W]`, over the masks that are not empty in both."""
    a, b = a.flatten(-2), b.flatten(-2)
    union = (a | b).sum(-1)
    inter = (a & b).sum(-1)
    keep = union > 0
    return (inter[keep] / union[keep]).flatten()


def masks_for(predictor: SamPredictor, image: np.ndarray, points: np.ndarray) -> torch.Tensor:
    predictor.set_image(image)
    points_t = torch.as_tensor(points, device=predictor.device)
    labels = torch.ones(points_t.shape[:2], dtype=torch.int64, device=predictor.device)
    return predictor.predict_torch(points_t, labels).masks


def measure(name: str, device: torch.device, batch: int, repeats: int, compile: bool) -> dict:
    official, ours_model = same_weights(name)
    official.to(device).eval()
    ours = SamPredictor(ours_model, device=device)
    image, image_name = load_image()
    x = ours.frame.encoder_input(image, device)[None].expand(batch, -1, -1, -1).contiguous()
    bf16 = torch.autocast(device.type, dtype=torch.bfloat16)
    fp32 = contextlib.nullcontext()
    compiled = torch.compile(ours_model.encode) if compile else None

    def run(fn, ctx):
        def call():
            with torch.inference_mode(), ctx:
                return fn(x)

        return call

    fns = {
        "official_float32": run(official.image_encoder, fp32),
        "official_bfloat16": run(official.image_encoder, bf16),
        "ours_float32": run(ours_model.encode, fp32),
        "ours_bfloat16": run(ours_model.encode, bf16),
    }
    compile_error = None
    if compiled is not None:
        try:
            run(compiled, bf16)()
            fns["ours_bfloat16_compile"] = run(compiled, bf16)
        except Exception as error:  # reported, so that the eager figures still come out
            compile_error, compile = f"{type(error).__name__}: {str(error)[:300]}", False
    seconds = interleaved(fns, device, repeats)
    with torch.inference_mode():
        ref = official.image_encoder(x[:1]).float()
        mine = ours_model.encode(x[:1])["image_embeddings"].float()
    feature_diff = (mine - ref).abs().max().item()
    if device.type == "cuda":
        # cuDNN's convolutions run in TF32 by default (the patch embedding and the neck, on both
        # sides), which can turn float32 rounding differences upstream into ~1e-3 relative ones;
        # the same comparison with TF32 off and PyTorch's plain attention kernel tells.
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with (
            torch.inference_mode(),
            sdpa_kernel(SDPBackend.MATH),
            torch.backends.cudnn.flags(enabled=True, allow_tf32=False),
        ):
            ref = official.image_encoder(x[:1]).float()
            plain = ours_model.encode(x[:1])["image_embeddings"].float()
        feature_diff_plain = (plain - ref).abs().max().item()
    else:
        feature_diff_plain = feature_diff

    points = grid_points(*image.shape[:2])
    reference = masks_for(ours, image, points)
    parity = {}
    for key, use_compile in (("bfloat16", False), ("bfloat16_compile", True)):
        if use_compile and not compile:
            continue
        low = SamPredictor(ours_model, device=device, dtype="bfloat16", compile=use_compile)
        ious = mask_ious(masks_for(low, image, points), reference)
        parity[key] = {"masks": len(ious), "min_iou": ious.min().item(), "mean_iou": ious.mean().item()}
    result = {
        "image": f"{image_name} {image.shape[1]}x{image.shape[0]}",
        "batch": batch,
        "images_per_s": {key: batch / t for key, t in seconds.items()},
        "float32_feature_max_abs_diff": feature_diff,
        "compile_error": compile_error,
        "float32_feature_max_abs_diff_no_tf32": feature_diff_plain,
        "bfloat16_masks_vs_float32": parity,
        "peak_cuda_mib": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None,
    }
    result["ok"] = feature_diff_plain <= 1e-4 and all(p["mean_iou"] >= 0.99 for p in parity.values())
    del official, ours_model, ours, compiled
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["vit_b", "vit_h"], choices=["vit_b", "vit_l", "vit_h"])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()

    device = torch.device(args.device)
    report = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "torch": torch.__version__,
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "models": {},
    }
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"speed_gpu_{device.type}.json"
    for name in args.models:
        report["models"][name] = measure(name, device, args.batch, args.repeats, args.compile)
        print(name, json.dumps(report["models"][name], indent=2), flush=True)
        path.write_text(json.dumps(report, indent=2))  # each model's figures kept as soon as they exist
    if not all(entry["ok"] for entry in report["models"].values()):
        raise SystemExit("parity failed: see float32_feature_max_abs_diff and bfloat16_masks_vs_float32")


if __name__ == "__main__":
    main()
