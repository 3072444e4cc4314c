"""`samtasks text`: the masks text prompts describe in images (SAM's masks ranked by CLIP)."""

from __future__ import annotations

import argparse

from samtasks.cli.common import add_folder_args, floats, model_config, run_folder_command, usage


def add_parser(sub) -> None:
    parser = sub.add_parser("text", help="the mask a text prompt describes (SAM masks ranked by CLIP)")
    parser.add_argument("source", help="image file, folder or glob pattern")
    parser.add_argument("--prompt", action="append", default=[], help="text (repeatable; candidates are reused)")
    parser.add_argument("--point", metavar="X,Y", help="a click that re-prompts SAM with the chosen mask")
    parser.add_argument("--all", action="store_true", help="every candidate within the margin (plural queries)")
    parser.add_argument("--clip", default="fast", choices=["fast", "paper"], help="fast: ViT-B-32; paper: ViT-L-14-336")
    parser.add_argument("--clip-model", help="any open_clip architecture (overrides --clip)")
    parser.add_argument("--clip-pretrained", help="its open_clip pretrained tag ('none': random weights, tests)")
    add_folder_args(parser, "already done in --out")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from samtasks.evaluation.folder_jobs import TextJob
    from samtasks.tasks.text import CLIP_MODELS

    point = floats(args.point, 2, "--point") if args.point else None
    model, pretrained = CLIP_MODELS[args.clip]
    model, pretrained = args.clip_model or model, args.clip_pretrained or pretrained
    clip = (model, None if pretrained == "none" else pretrained)
    job = usage(TextJob, model_config(args), clip, args.prompt, point=tuple(point) if point else None, all=args.all)
    return run_folder_command(job, args, "text answers")
