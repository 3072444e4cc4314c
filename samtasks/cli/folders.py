"""The folder commands (proposals, instance, text, edges): parse, make the library's folder job, run
it with `samtasks.evaluation.folder.run_folder`, print."""

from __future__ import annotations

import argparse
from pathlib import Path

from samtasks.cli.common import add_model_args, floats, ints, logger, model_config, overrides, usage


def run_folder_command(job, args: argparse.Namespace, what: str) -> int:
    """Runs a folder job over `args.source` into `args.out`; exit status 1 when an image failed."""
    from samtasks.evaluation.folder import run_folder
    from samtasks.evaluation.runner import finish_distributed

    try:
        report = run_folder(
            job, args.source, args.out, overwrite=args.overwrite, device=args.device, progress=not args.quiet
        )
    finally:
        finish_distributed()
    logger.info("%d of %d images have %s in %s", report.done, report.total, what, report.out)
    if report.failed:
        logger.warning(
            "%d image(s) failed (rerun to retry them): %s",
            len(report.failed),
            "; ".join(f"{k}: {v}" for k, v in sorted(report.failed.items())),
        )
        return 1
    return 0


def cmd_proposals(args: argparse.Namespace) -> int:
    from samtasks.evaluation.folder_jobs import ProposalsJob

    job = usage(ProposalsJob, model_config(args), args.preset, overrides(args.set), args.overlay_max)
    return run_folder_command(job, args, "proposals")


def cmd_instance(args: argparse.Namespace) -> int:
    from samtasks.evaluation.folder_jobs import DetectorChoice, InstanceJob, instance_formats
    from samtasks.tasks.instance import InstanceSettings

    classes = ints(args.classes, "--classes")
    detector = usage(
        DetectorChoice,
        detections=str(Path(args.detections).resolve()) if args.detections else None,
        name=args.detector,
        weights=args.detector_weights,
        conf=args.conf,
        iou=args.iou,
        max_det=args.max_det,
        classes=tuple(classes) if classes is not None else None,
    )
    formats = usage(instance_formats, args.format)
    task = InstanceSettings(refine=not args.no_refine, multimask=args.multimask, score=args.score)
    job = InstanceJob(model_config(args), detector, formats, task)
    return run_folder_command(job, args, "instance masks")


def cmd_text(args: argparse.Namespace) -> int:
    from samtasks.evaluation.folder_jobs import TextJob
    from samtasks.tasks.text import CLIP_MODELS

    point = floats(args.point, 2, "--point") if args.point else None
    model, pretrained = CLIP_MODELS[args.clip]
    model, pretrained = args.clip_model or model, args.clip_pretrained or pretrained
    clip = (model, None if pretrained == "none" else pretrained)
    job = usage(TextJob, model_config(args), clip, args.prompt, point=tuple(point) if point else None, all=args.all)
    return run_folder_command(job, args, "text answers")


def cmd_edges(args: argparse.Namespace) -> int:
    from samtasks.evaluation.folder_jobs import EdgesJob

    job = usage(EdgesJob, model_config(args), args.preset, overrides(args.set))
    return run_folder_command(job, args, "edge maps")


def add_parsers(sub) -> None:
    """The four folder commands' subparsers."""
    proposals = sub.add_parser("proposals", help="masks for everything in images (SA-1B-style JSON + overlay)")
    proposals.add_argument("source", help="image file, folder or glob pattern")
    proposals.add_argument(
        "--preset",
        default="proposals-lvis",
        help="proposals-lvis (default; 64x64 grid, top 1000), proposals-single-output, or an AMG preset: "
        "official, sa1b, edges-bsds",
    )
    proposals.add_argument("--set", action="append", default=[], metavar="KNOB=VALUE", help="override an AMG knob")
    proposals.add_argument("--overlay-max", type=int, default=200, help="masks drawn on the overlay (default 200)")
    proposals.add_argument("--overwrite", action="store_true", help="redo images that already have a JSON in --out")
    proposals.add_argument("--out", default="out", help="output folder (default ./out)")
    proposals.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_model_args(proposals)
    proposals.set_defaults(func=cmd_proposals)

    instance = sub.add_parser("instance", help="instance masks from detector boxes (the main job)")
    instance.add_argument("source", help="image file, folder or glob pattern")
    instance.add_argument("--detector", default="yolov8", help="yolov8 (default), yolo11 or torchvision:<model>")
    instance.add_argument("--detector-weights", help="detector weights or yaml (default yolov8n.pt / yolo11n.pt)")
    instance.add_argument("--detections", help="COCO results JSON of boxes instead of a detector")
    instance.add_argument("--conf", type=float, default=0.25, help="minimum detector score (default 0.25)")
    instance.add_argument("--iou", type=float, default=0.7, help="detector NMS IoU (YOLO; default 0.7)")
    instance.add_argument("--classes", metavar="ID,ID", help="keep only these detector class ids")
    instance.add_argument("--max-det", type=int, default=300, help="most boxes per image (default 300)")
    instance.add_argument("--no-refine", action="store_true", help="skip the refinement pass")
    instance.add_argument("--multimask", action="store_true", help="first pass with 3 outputs, best by predicted IoU")
    instance.add_argument("--score", default="detector", choices=["detector", "detector*iou"])
    instance.add_argument("--format", default="coco,png", help="any of coco,png,yolo (default coco,png)")
    instance.add_argument("--overwrite", action="store_true", help="redo images already done in --out")
    instance.add_argument("--out", default="out", help="output folder (default ./out)")
    instance.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_model_args(instance)
    instance.set_defaults(func=cmd_instance)

    text = sub.add_parser("text", help="the mask a text prompt describes (SAM masks ranked by CLIP)")
    text.add_argument("source", help="image file, folder or glob pattern")
    text.add_argument("--prompt", action="append", default=[], help="text (repeatable; candidates are reused)")
    text.add_argument("--point", metavar="X,Y", help="a click that re-prompts SAM with the chosen mask")
    text.add_argument("--all", action="store_true", help="every candidate within the margin (plural queries)")
    text.add_argument("--clip", default="fast", choices=["fast", "paper"], help="fast: ViT-B-32; paper: ViT-L-14-336")
    text.add_argument("--clip-model", help="any open_clip architecture (overrides --clip)")
    text.add_argument("--clip-pretrained", help="its open_clip pretrained tag ('none': random weights, tests)")
    text.add_argument("--overwrite", action="store_true", help="redo images already done in --out")
    text.add_argument("--out", default="out", help="output folder (default ./out)")
    text.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_model_args(text)
    text.set_defaults(func=cmd_text)

    edges = sub.add_parser("edges", help="soft edge maps (8-bit PNG, the BSDS benchmark's format)")
    edges.add_argument("source", help="image file, folder or glob pattern")
    edges.add_argument(
        "--preset",
        default="edges-paper",
        help="edges-paper (default; the paper's recipe) or edges-reference (the public re-implementation's)",
    )
    edges.add_argument("--set", action="append", default=[], metavar="KNOB=VALUE", help="an edge or AMG knob")
    edges.add_argument("--overwrite", action="store_true", help="redo images that already have a map in --out")
    edges.add_argument("--out", default="out", help="output folder (default ./out)")
    edges.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_model_args(edges)
    edges.set_defaults(func=cmd_edges)
