"""`samtasks instance`: instance masks of images from detector boxes (COCO results, overlays, YOLO)."""

from __future__ import annotations

import argparse
from pathlib import Path

from samtasks.cli.common import add_folder_args, ints, model_config, run_folder_command, usage


def add_parser(sub) -> None:
    parser = sub.add_parser("instance", help="instance masks from detector boxes (the main job)")
    parser.add_argument("source", help="image file, folder or glob pattern")
    parser.add_argument("--detector", default="yolov8", help="yolov8 (default), yolo11 or torchvision:<model>")
    parser.add_argument("--detector-weights", help="detector weights or yaml (default yolov8n.pt / yolo11n.pt)")
    parser.add_argument("--detections", help="COCO results JSON of boxes instead of a detector")
    parser.add_argument("--conf", type=float, default=0.25, help="minimum detector score (default 0.25)")
    parser.add_argument("--iou", type=float, default=0.7, help="detector NMS IoU (YOLO; default 0.7)")
    parser.add_argument("--classes", metavar="ID,ID", help="keep only these detector class ids")
    parser.add_argument("--max-det", type=int, default=300, help="most boxes per image (default 300)")
    parser.add_argument("--no-refine", action="store_true", help="skip the refinement pass")
    parser.add_argument("--multimask", action="store_true", help="first pass with 3 outputs, best by predicted IoU")
    parser.add_argument("--score", default="detector", choices=["detector", "detector*iou"])
    parser.add_argument("--format", default="coco,png", help="any of coco,png,yolo (default coco,png)")
    add_folder_args(parser, "already done in --out")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
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
    job = InstanceJob(model_config(args), detector, formats, task)  # an unreadable detections file: status 1
    return run_folder_command(job, args, "instance masks")
