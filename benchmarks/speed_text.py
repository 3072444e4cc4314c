"""Where the time of a text query goes: per image, candidate masks (AMG), crops, the CLIP image
tower and the text tower, and the time of a second query on the same image (candidates reused).

There is no official text-to-mask implementation to compare with (the paper's model was not
released), so this is a time split, not a ratio. Random weights stand in for SAM (official
constructor, seeded) and CLIP (open_clip, `pretrained=None`); because random SAM weights pass almost
no quality filter, the candidate filters are off and the grid is 16x16 with NMS off, which gives a
fixed 768 candidates -- the CLIP cost grows linearly with that count.

    python benchmarks/speed_text.py [--model vit_b] [--clip ViT-B-32] [--device cpu]

Writes benchmarks/results/speed_text_<device>_<model>.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from speed_core import load_image, same_weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vit_b", choices=["vit_b", "vit_l", "vit_h"])
    parser.add_argument("--clip", default="ViT-B-32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--points-per-side", type=int, default=16)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()

    from samtasks import SamPredictor
    from samtasks.tasks.text import OpenClipEncoder, TextSegmenter, mask_crop

    predictor = SamPredictor(same_weights(args.model)[1], device=args.device)
    encoder = OpenClipEncoder(args.clip, pretrained=None, device=args.device)
    knobs = {"points_per_side": args.points_per_side, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
    segmenter = TextSegmenter.from_preset(predictor, "text-clip", encoder=encoder, amg={**knobs, "box_nms_thresh": 1.0})
    image, image_name = load_image()

    timings = {}
    start = time.perf_counter()
    masks = segmenter.generator.generate(image)
    timings["amg_s"] = time.perf_counter() - start
    start = time.perf_counter()
    crops = np.stack(
        [
            mask_crop(image, m, b, encoder.input_size, encoder.mean)
            for m, b in zip(masks.masks(), masks.boxes, strict=True)
        ]
    )
    timings["crops_s"] = time.perf_counter() - start
    start = time.perf_counter()
    encoder.encode_images(crops)
    timings["clip_image_s"] = time.perf_counter() - start
    start = time.perf_counter()
    segmenter.text_features("a bus")
    timings["clip_text_s"] = time.perf_counter() - start

    start = time.perf_counter()
    segmenter.query(image, "a bus")  # first query: candidates computed (again) and cached
    timings["first_query_s"] = time.perf_counter() - start
    start = time.perf_counter()
    segmenter.query(image, "a wheel")
    timings["second_query_s"] = time.perf_counter() - start

    result = {
        "model": args.model,
        "clip": args.clip,
        "device": args.device,
        "device_name": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else platform.processor(),
        "threads": torch.get_num_threads(),
        "image": image_name,
        "candidates": len(masks),
        "seconds": timings,
    }
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"speed_text_{args.device.split(':')[0]}_{args.model}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
