"""`samtasks point`: the mask at a point (and/or in a box) of one image."""

from __future__ import annotations

import argparse
from pathlib import Path

from samtasks.cli.common import UsageError, add_model_args, floats, logger, predictor


def add_parser(sub) -> None:
    parser = sub.add_parser("point", help="segment the object at a point (and/or in a box)")
    parser.add_argument("image", help="image file")
    parser.add_argument("--point", action="append", default=[], metavar="X,Y", help="click in pixels (repeatable)")
    parser.add_argument("--label", action="append", type=int, choices=[0, 1], help="1 fg / 0 bg per --point")
    parser.add_argument("--box", metavar="X0,Y0,X1,Y1", help="box prompt in pixels")
    parser.add_argument("--single", action="store_true", help="single-mask output instead of the best of 3")
    parser.add_argument("--out", default="out", help="output folder (default ./out)")
    add_model_args(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from samtasks.utils.export import write_prompt_result
    from samtasks.utils.image import load_image

    points = [floats(p, 2, "--point") for p in args.point]
    labels = args.label if args.label else [1] * len(points)
    if len(labels) != len(points):
        raise UsageError(f"--label given {len(labels)} times for {len(points)} --point")
    box = floats(args.box, 4, "--box") if args.box else None
    if not points and box is None:
        raise UsageError("give at least one --point X,Y or a --box X0,Y0,X1,Y1")

    image = load_image(args.image)
    sam = predictor(args)
    sam.set_image(image)
    pred = sam.predict(
        points=[points] if points else None,
        labels=[labels] if points else None,
        boxes=[box] if box else None,
        multimask=not args.single,
    )
    stem = Path(args.image).stem
    write_prompt_result(
        args.out,
        stem,
        image,
        pred.masks[0],
        pred.iou_scores[0],
        int(pred.best()[0]),
        source=str(args.image),
        model=args.sam,
        points=points,
        labels=labels,
        box=box,
    )
    logger.info("wrote %s_mask.png, %s_overlay.png and %s.json to %s", stem, stem, stem, Path(args.out))
    return 0
