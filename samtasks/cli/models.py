"""`samtasks models`: the SAM models, their checkpoints and whether they are cached."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    parser = sub.add_parser("models", help="list SAM models, their checkpoints and whether they are cached")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from samtasks.build import MODEL_SPECS
    from samtasks.checkpoints import cached_path

    rows = [("name", "family", "encoder", "params", "input", "license", "checkpoint", "cached")]
    for name, spec in MODEL_SPECS.items():
        with torch.device("meta"):
            params = sum(p.numel() for p in spec.build().parameters())
        size = f"{spec.frame.encoder_size}" + ("" if spec.frame.resize == "longest" else " (square)")
        row = (name, spec.family, spec.description, f"{params / 1e6:.1f}M", size, spec.license)
        if spec.checkpoint is None:
            rows.append((*row, "(random weights, tests only)", "-"))
        else:
            path = cached_path(spec.checkpoint)
            rows.append((*row, spec.checkpoint.url, str(path) if path.is_file() else "no"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0
