"""Box-prompted instance masks against the official predictor, same weights, same image, one run.

50 seeded random boxes on `bus.jpg`, single-mask output, bool masks at the original size. The image is
encoded once per side before timing; the time is the decoding and postprocessing of all 50 boxes:
- official, box by box as its README shows (`predict(box=...)` per box);
- official, batched (`predict_torch` with all boxes, its documented batch path);
- ours, batched (`InstanceSegmenter.predict`, 64 prompts per decoder call, and `--small-batch` per
  call), without and with the refinement pass; the official
  loop with the same refinement (a second `predict` with the first low-res logits) is timed beside it.
Masks are checked equal (zero differing pixels where the official logit is at least 1e-3 from the
threshold) before any time is reported.

    python benchmarks/speed_instance.py [--model vit_b] [--device cpu] [--boxes 50] [--repeats 2]

Writes benchmarks/results/speed_instance_<device>_<model>.json and prints the ratios.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import numpy as np
import torch
from speed_core import interleaved, load_image, same_weights


def random_boxes(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    size = rng.uniform(40, 400, (n, 2))
    x0 = rng.uniform(0, w - size[:, 0])
    y0 = rng.uniform(0, h - size[:, 1])
    return np.stack([x0, y0, x0 + size[:, 0], y0 + size[:, 1]], 1).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vit_b", choices=["vit_b", "vit_l", "vit_h"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--boxes", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--small-batch", type=int, default=8, help="also time ours with this many prompts per call")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()

    from segment_anything import SamPredictor as OfficialPredictor

    from samtasks import SamPredictor
    from samtasks.tasks.instance import InstanceSegmenter

    device = torch.device(args.device)
    official_model, ours_model = same_weights(args.model)
    official = OfficialPredictor(official_model.to(device).eval())
    ours = SamPredictor(ours_model, device=device, prompt_batch_size=64)
    image, image_name = load_image()
    h, w = image.shape[:2]
    boxes = random_boxes(args.boxes, h, w)
    official.set_image(image)
    ours.set_image(image)

    def official_loop(refine: bool):
        logits = []  # per box: float [H, W] logits at the original size
        for box in boxes:
            m, _, low = official.predict(box=box, multimask_output=False, return_logits=True)
            if refine:
                m, _, _ = official.predict(box=box, mask_input=low, multimask_output=False, return_logits=True)
            logits.append(m[0])
        return np.stack(logits)

    boxes_t = torch.as_tensor(official.transform.apply_boxes(boxes, (h, w)), device=device)

    def official_batched():
        with torch.inference_mode():
            return official.predict_torch(None, None, boxes=boxes_t, multimask_output=False, return_logits=True)[0][
                :, 0
            ]

    plain = InstanceSegmenter(ours, refine=False)
    refined = InstanceSegmenter(ours, refine=True)
    boxes_ours = torch.as_tensor(boxes)

    def ours_with_batch(size: int):
        ours.prompt_batch_size = size
        try:
            return plain.predict(boxes_ours)
        finally:
            ours.prompt_batch_size = 64

    times = interleaved(
        {
            "official_loop": lambda: official_loop(False),
            "official_batched": official_batched,
            "ours_batched": lambda: plain.predict(boxes_ours),
            f"ours_batched_{args.small_batch}_per_call": lambda: ours_with_batch(args.small_batch),
            "official_loop_refine": lambda: official_loop(True),
            "ours_batched_refine": lambda: refined.predict(boxes_ours),
        },
        device,
        args.repeats,
    )

    def differing(ref_logits: np.ndarray, masks: torch.Tensor) -> int:
        ref_logits = np.asarray(ref_logits, np.float32)
        confident = np.abs(ref_logits) >= 1e-3
        return int(((ref_logits > 0) != masks.cpu().numpy())[confident].sum())

    checks = {
        "loop_vs_ours": differing(official_loop(False), plain.predict(boxes_ours)[0]),
        "batched_vs_ours": differing(official_batched().cpu().numpy(), plain.predict(boxes_ours)[0]),
        "loop_refine_vs_ours_refine": differing(official_loop(True), refined.predict(boxes_ours)[0]),
    }
    result = {
        "model": args.model,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "image": f"{image_name} {w}x{h}",
        "boxes": args.boxes,
        "seconds": times,
        "ratios": {
            "official_loop / ours": times["official_loop"] / times["ours_batched"],
            f"official_loop / ours_{args.small_batch}_per_call": times["official_loop"]
            / times[f"ours_batched_{args.small_batch}_per_call"],
            "official_batched / ours": times["official_batched"] / times["ours_batched"],
            "official_loop_refine / ours_refine": times["official_loop_refine"] / times["ours_batched_refine"],
        },
        "confident_mask_pixels_differing": checks,
        "outputs_equal": not any(checks.values()),
    }
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"speed_instance_{device.type}_{args.model}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    if not result["outputs_equal"]:
        raise SystemExit(f"masks differ: {checks}")


if __name__ == "__main__":
    main()
