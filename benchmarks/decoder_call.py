"""One mask-decoder call, official against ours: peak memory and time, same weights, outputs checked.

ViT-B's decoder (random weights from the official constructor, seeded, with the LayerNorm weights
perturbed so that no norm is the identity), a random `[1, 256, 64, 64]` image embedding and P
single-point prompts, multimask, low-res logits. Each implementation runs in its own process: the
peak resident memory of one call is `ru_maxrss` after the call minus before it (the process's
earlier peak is below: only the models and inputs are loaded first). Time is the best of
`--repeats` calls in that process, with `--threads` threads; process CPU time is reported too (on
a shared machine it is less sensitive to the load than wall-clock time).

    PYTHONPATH=. .venv/bin/python benchmarks/decoder_call.py [--prompts 64] [--repeats 3] [--threads 2]

Writes results/decoder_call_<prompts>.json and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def models(seed: int = 0):
    """`(official, ours, prompt_encoder)`: ViT-B's decoder with the same weights."""
    from segment_anything.modeling import MaskDecoder as OfficialDecoder
    from segment_anything.modeling import PromptEncoder
    from segment_anything.modeling import TwoWayTransformer as OfficialTransformer

    from samtasks.modeling.mask_decoder import MaskDecoder
    from samtasks.modeling.transformer import TwoWayTransformer

    torch.manual_seed(seed)
    transformer = OfficialTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8)
    official = OfficialDecoder(transformer_dim=256, transformer=transformer, iou_head_depth=3, iou_head_hidden_dim=256)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in official.named_parameters():
            if "norm" in name:
                param.add_(0.3 * torch.randn(param.shape, generator=gen))
    ours = MaskDecoder(
        transformer_dim=256,
        transformer=TwoWayTransformer(depth=2, embedding_dim=256, num_heads=8, mlp_dim=2048),
        iou_head_hidden_dim=256,
    )
    ours.load_state_dict(official.state_dict())
    prompt_encoder = PromptEncoder(
        embed_dim=256, image_embedding_size=(64, 64), input_image_size=(1024, 1024), mask_in_chans=16
    )
    return official.eval(), ours.eval(), prompt_encoder.eval()


def inputs(prompt_encoder, prompts: int, seed: int = 2) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    image = torch.randn(1, 256, 64, 64, generator=gen)
    points = torch.rand(prompts, 1, 2, generator=gen) * 1024
    with torch.inference_mode():
        labels = torch.ones(prompts, 1, dtype=torch.int64)
        sparse, dense = prompt_encoder(points=(points, labels), boxes=None, masks=None)
        return image, prompt_encoder.get_dense_pe(), sparse, dense


def measure(which: str, prompts: int, repeats: int, threads: int, out: str) -> None:
    """Child process: one implementation's peak and times; its outputs saved to `out`."""
    torch.set_num_threads(threads)
    official, ours, prompt_encoder = models()
    decoder = official if which == "official" else ours
    image, pe, sparse, dense = inputs(prompt_encoder, prompts)
    with torch.inference_mode():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        logits, iou = decoder(image, pe, sparse, dense, True)
        peak_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
        wall, cpu = [], []
        for _ in range(repeats):
            start, start_cpu = time.perf_counter(), time.process_time()
            decoder(image, pe, sparse, dense, True)
            wall.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
    torch.save({"logits": logits, "iou": iou}, out)
    print(json.dumps({"peak_mib": peak_mib, "wall_s": min(wall), "cpu_s": min(cpu)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        measure(args.child, args.prompts, args.repeats, args.threads, args.out)
        return
    result = {"prompts": args.prompts, "threads": args.threads, "load_average": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        for which in ("official", "ours"):
            command = [sys.executable, __file__, "--child", which, "--out", f"{tmp}/{which}.pt"]
            command += ["--prompts", str(args.prompts), "--repeats", str(args.repeats), "--threads", str(args.threads)]
            line = subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            result[which] = json.loads(line)
        official, ours = torch.load(f"{tmp}/official.pt"), torch.load(f"{tmp}/ours.pt")
    result["max_abs_diff"] = {key: (ours[key] - official[key]).abs().max().item() for key in ("logits", "iou")}
    result["outputs_equal"] = max(result["max_abs_diff"].values()) <= 1e-4
    for key in ("peak_mib", "wall_s", "cpu_s"):
        result[f"{key}_ratio"] = result["official"][key] / result["ours"][key]
    HERE.joinpath("results").mkdir(exist_ok=True)
    HERE.joinpath("results", f"decoder_call_{args.prompts}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    if not result["outputs_equal"]:
        raise SystemExit("outputs differ")


if __name__ == "__main__":
    main()
