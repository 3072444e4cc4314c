"""Core speed against the official `segment-anything` package, same weights, same image, one run.

(a) image encoder seconds per image; (b) 64 point prompts decoded and postprocessed to the original
size in one call; on a CPU also (c) our decoder alone (low-res logits) per prompt against the
float32 FLOP bound (the plain computation's FLOPs at the matmul rate measured in the same run).
Outputs are checked equal before any time is reported. Random weights (the official
constructor's initialization, seeded) stand in for the checkpoint: speed does not depend on values.

    python benchmarks/speed_core.py [--model vit_b] [--device cpu] [--dtype float32] [--repeats 3]

Writes benchmarks/results/speed_core_<device>_<model>_<dtype>.json and prints the ratios.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from samtasks import SamPredictor, build_sam
from samtasks.build import MODEL_SPECS


def encoder_gflop(name: str) -> float:
    """Multiply-accumulates x 2 of the image encoder at its input size (linear layers, attention,
    patch embedding, neck), counting the window padding the model computes."""
    spec = MODEL_SPECS[name]
    c, grid, ws = spec.encoder_embed_dim, spec.embedding_size, spec.window_size
    tokens = grid * grid
    padded = (grid + (-grid % ws)) ** 2
    flops = 2 * tokens * 3 * 16 * 16 * c  # patch embedding
    for i in range(spec.encoder_depth):
        window = i not in spec.encoder_global_attn_indexes
        keys = ws * ws if window else tokens
        queries = padded if window else tokens
        flops += 2 * (queries * 4 * c * c + tokens * 8 * c * c)  # qkv + proj, mlp
        flops += 2 * queries * keys * c * 2  # q k^T and attn v
        flops += 2 * queries * keys * 2 * grid  # relative-position bias terms (small)
    out = spec.prompt_embed_dim
    flops += 2 * tokens * (c * out + 9 * out * out)  # neck
    return flops / 1e9


def decoder_gflop(name: str, tokens: int) -> float:
    """Multiply-accumulates x 2 of the plain mask decoder computation for one prompt of `tokens`
    tokens (5 output tokens + prompt tokens), with the first layer's image-side projections counted
    once per image (not per prompt): the two-way transformer's image-side projections and attention,
    the output upscaling and the hypernetwork product (the token-side MLPs are negligible)."""
    spec = MODEL_SPECS[name]
    n, c = spec.embedding_size**2, spec.prompt_embed_dim
    i = c // 2  # attention_downsample_rate 2
    proj = 2 * n * c * i  # one image-side projection (or out_proj) of the N tokens
    flops = 7 * proj  # layer 1: i2t out_proj; layer 2: t2i k, v, i2t q, out_proj; final: k, v
    flops += 5 * 2 * 2 * n * tokens * i  # q k^T and attn v of the five cross attentions
    flops += 2 * n * c * c + 2 * 4 * n * (c // 4) * (c // 2)  # the two transposed convolutions
    flops += 2 * 16 * n * (c // 8) * 3  # hypernetwork product, 3 masks
    return flops / 1e9


def matmul_gflops(device: torch.device, repeats: int = 5) -> float:
    a = torch.randn(4096, 4096, device=device)
    b = torch.randn(4096, 4096, device=device)
    best = min(_timed(lambda: a @ b, device) for _ in range(repeats))
    return 2 * 4096**3 / best / 1e9


def _timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def interleaved(fns: dict, device: torch.device, repeats: int) -> dict[str, float]:
    """Best of `repeats` for each function, the functions taking turns (so that load from other
    processes on a shared machine falls on all of them alike); one warm-up each first."""
    for fn in fns.values():
        fn()
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for key, fn in fns.items():
            best[key] = min(best[key], _timed(fn, device))
    return best


def grid_points(h: int, w: int, side: int = 8) -> np.ndarray:
    """`float32 [side^2, 1, 2]` single-point prompts (x, y) at the cell centres of a side x side grid."""
    xs = (np.arange(side) + 0.5) / side * w
    ys = (np.arange(side) + 0.5) / side * h
    return np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 1, 2).astype(np.float32)


def load_image() -> tuple[np.ndarray, str]:
    """ultralytics' bus.jpg (810x1080), else scikit-image's astronaut. The photo is found without
    importing ultralytics: its import sets OMP_NUM_THREADS=1 in the environment, which every process
    a benchmark starts after it would inherit (one thread each on this 2-core machine)."""
    from importlib.util import find_spec

    from samtasks.utils.image import load_image as read

    spec = find_spec("ultralytics")
    if spec is not None and spec.submodule_search_locations:
        path = Path(spec.submodule_search_locations[0]) / "assets" / "bus.jpg"
        if path.exists():
            return read(path), "ultralytics bus.jpg"
    from skimage import data

    return data.astronaut(), "skimage astronaut"


def same_weights(name: str):
    """The official model with the official constructor's seeded random weights, and ours loaded
    from the same weights saved in the official `.pth` format: `(official, ours)`."""
    from segment_anything import sam_model_registry

    torch.manual_seed(0)
    official = sam_model_registry[name]()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "weights.pth"
        torch.save(official.state_dict(), path)
        ours = build_sam(name, path)
    return official, ours


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vit_b", choices=["vit_b", "vit_l", "vit_h"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()

    from segment_anything import SamPredictor as OfficialPredictor

    device = torch.device(args.device)
    if device.type == "cuda" and args.dtype == "float32":
        # cuDNN runs float32 convolutions (the patch embedding, the neck) in TF32 by default, on
        # both sides: features then differ by ~6e-4 for rounding alone (9.5e-6 with it off).
        torch.backends.cudnn.allow_tf32 = False
    official_model, ours_model = same_weights(args.model)
    official_model.to(device).eval()
    image, image_name = load_image()
    h, w = image.shape[:2]

    official = OfficialPredictor(official_model)
    ours = SamPredictor(ours_model, device=device, dtype=args.dtype)
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16)
        if args.dtype == "bfloat16"
        else torch.autocast("cpu", enabled=False)
    )

    def run_official_encoder():
        with autocast:
            official.set_image(image)

    enc = interleaved({"official": run_official_encoder, "ours": lambda: ours.set_image(image)}, device, args.repeats)
    t_enc_official, t_enc_ours = enc["official"], enc["ours"]
    enc_diff = (ours.features.float() - official.features.float()).abs().max().item()

    # (b) 64 single-point prompts on an 8 x 8 grid, multimask, masks at the original size.
    points = grid_points(h, w)
    labels = np.ones((64, 1), np.int64)
    coords = torch.as_tensor(official.transform.apply_coords(points, (h, w)), device=device)
    labels_t = torch.as_tensor(labels, device=device)

    def run_official_decoder():
        with torch.inference_mode(), autocast:
            return official.predict_torch(coords, labels_t, multimask_output=True, return_logits=True)

    points_t = torch.as_tensor(points, device=device)
    ours.prompt_batch_size = 64

    dec = interleaved(
        {
            "official": lambda: run_official_decoder()[0] > 0,
            "ours": lambda: ours.predict_torch(points_t, labels_t),
            "ours_low_res": lambda: ours.predict_torch(points_t, labels_t, return_masks=False),
        },
        device,
        args.repeats,
    )
    t_dec_official, t_dec_ours = dec["official"], dec["ours"]
    ref_logits, ref_iou, ref_low = run_official_decoder()
    out = ours.predict_torch(points_t, labels_t)
    low_diff = (out.low_res_logits - ref_low.float()).abs().max().item()
    iou_diff = (out.iou_scores - ref_iou.float()).abs().max().item()
    confident = ref_logits.float().abs() >= 1e-3
    mask_mismatch = int((out.masks != (ref_logits > 0))[confident].sum())

    tol = 1e-4 if args.dtype == "float32" else 5e-2
    checks = {"encoder": enc_diff <= tol, "low_res_logits": low_diff <= tol, "iou": iou_diff <= tol}
    checks["masks"] = mask_mismatch == 0 if args.dtype == "float32" else True
    result = {
        "model": args.model,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "threads": torch.get_num_threads(),
        "dtype": args.dtype,
        "torch": torch.__version__,
        "image": f"{image_name} {w}x{h}",
        "encoder_s": {"official": t_enc_official, "ours": t_enc_ours, "ratio": t_enc_official / t_enc_ours},
        "decode_64_points_s": {"official": t_dec_official, "ours": t_dec_ours, "ratio": t_dec_official / t_dec_ours},
        "max_abs_diff": {"features": enc_diff, "low_res_logits": low_diff, "iou": iou_diff},
        "confident_mask_pixels_differing": mask_mismatch,
        "outputs_equal": all(checks.values()),
    }
    if device.type == "cpu":
        rate = matmul_gflops(device)
        gflop = encoder_gflop(args.model)
        result["matmul_gflops"] = rate
        result["encoder_gflop"] = gflop
        result["encoder_bound_s"] = gflop / rate
        result["encoder_ours_over_bound"] = t_enc_ours / (gflop / rate)
        per_prompt = decoder_gflop(args.model, tokens=7)  # 5 output tokens, the point, the padding point
        result["decoder_gflop_per_prompt"] = per_prompt
        result["decoder_bound_ms_per_prompt"] = per_prompt / rate * 1e3
        result["decoder_ours_ms_per_prompt"] = dec["ours_low_res"] / 64 * 1e3
        result["decoder_ours_over_bound"] = dec["ours_low_res"] / 64 / (per_prompt / rate)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    out_path = out_dir / f"speed_core_{device.type}_{args.model}_{args.dtype}.json"
    out_path.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    if not result["outputs_equal"]:
        raise SystemExit(f"outputs differ: {checks}")


if __name__ == "__main__":
    main()
