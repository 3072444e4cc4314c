"""The `samtasks` command line: thin argparse subcommands over the library."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from samtasks import __version__
from samtasks.build import MODEL_SPECS
from samtasks.checkpoints import CheckpointError, cached_path
from samtasks.cli.common import UsageError, add_model_args, floats, logger, predictor
from samtasks.cli.folders import add_parsers
from samtasks.evaluation.runner import RunInterrupted
from samtasks.utils.image import ImageReadError, load_image
from samtasks.utils.optional import MissingDependencyError


def cmd_models(args: argparse.Namespace) -> int:
    import torch

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


def cmd_point(args: argparse.Namespace) -> int:
    from PIL import Image

    from samtasks.utils.viz import draw_overlay

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
    best = int(pred.best()[0])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = Path(args.image).stem
    mask = pred.masks[0, best]
    Image.fromarray(mask.astype(np.uint8) * 255).save(out / f"{stem}_mask.png")
    overlay = draw_overlay(
        image,
        mask[None],
        boxes=np.asarray([box]) if box else None,
        points=np.asarray(points) if points else None,
        point_labels=np.asarray(labels),
    )
    overlay.save(out / f"{stem}_overlay.png")
    record = {
        "image": str(args.image),
        "size": list(image.shape[:2]),
        "model": args.sam,
        "prompt": {"points": points, "labels": labels, "box": box},
        "chosen": best,
        "masks": [
            {
                "index": i,
                "predicted_iou": float(pred.iou_scores[0, i]),
                "area": int(pred.masks[0, i].sum()),
            }
            for i in range(pred.masks.shape[1])
        ],
    }
    (out / f"{stem}.json").write_text(json.dumps(record, indent=2))
    logger.info("wrote %s_mask.png, %s_overlay.png and %s.json to %s", stem, stem, stem, out)
    return 0


def cmd_eval_edges(args: argparse.Namespace) -> int:
    from samtasks.metrics.bsds import evaluate_folder
    from samtasks.utils.progress import progress_bar

    gt = Path(args.gt)
    if gt.is_dir() and not any(gt.glob("*.mat")) and (gt / "groundTruth" / "test").is_dir():
        gt = gt / "groundTruth" / "test"  # a BSDS500 root
    if args.thresholds < 1:
        raise UsageError(f"--thresholds must be >= 1, got {args.thresholds}")
    if not 0 < args.max_dist < 1:
        raise UsageError(f"--max-dist is a fraction of the diagonal in (0, 1), got {args.max_dist}")
    _check_limit(args)

    bench = evaluate_folder(
        args.pred,
        gt,
        n_thresholds=args.thresholds,
        max_dist=args.max_dist,
        thinning=not args.no_thin,
        workers=args.workers,
        limit=args.limit,
        progress=lambda results, total: progress_bar(results, not args.quiet, "eval-edges", total=total),
    )
    metrics = bench.write(args.out)
    print(
        f"ODS {metrics['ODS']:.4f}  OIS {metrics['OIS']:.4f}  AP {metrics['AP']:.4f}  R50 {metrics['R50']:.4f}"
        f"  ({metrics['images']} images; files in {args.out})"
    )
    return 0


def _check_limit(args: argparse.Namespace) -> None:
    if args.limit is not None and args.limit < 0:
        raise UsageError(f"--limit must be >= 0, got {args.limit}")


def cmd_bench(args: argparse.Namespace) -> int:
    from samtasks.evaluation.runner import finish_distributed

    _check_limit(args)
    try:
        return _bench(args)
    finally:
        finish_distributed()


def _bench(args: argparse.Namespace) -> int:
    from samtasks.evaluation import benchmarks, load_config, run_benchmark

    if args.name == "single-point":
        return _bench_single_point(args)
    if args.datasets:
        raise UsageError("--datasets applies to single-point only")
    defaults, make = benchmarks()[args.name]
    overrides = list(args.set)
    if args.detections or args.detector:
        if not args.name.endswith("-instance"):
            raise UsageError("--detections and --detector apply to the instance benchmarks only")
        if args.detections:
            overrides.append(f"detector.detections={Path(args.detections).resolve()}")
        if args.detector:
            overrides.append(f"detector.name={args.detector}")
    if args.pairs:
        if args.name != "coco-text":
            raise UsageError("--pairs applies to coco-text only")
        overrides.append(f"pairs={Path(args.pairs).resolve()}")
    config = load_config(defaults, args.config, overrides)
    extra = {"out": args.out} if args.name == "bsds-edges" else {}  # it saves edge maps beside the records
    benchmark = make(args.name, config, args.data, **extra)
    result = run_benchmark(
        benchmark, args.out, limit=args.limit, device=args.device or config.model.device, progress=not args.quiet
    )
    if result is not None:
        width = max(len(k) for k in result["metrics"])
        for key, value in result["metrics"].items():
            print(f"{key.ljust(width)}  {value:.4f}")
        print(
            f"{result['images']} images, {len(result['failed'])} failed; results in {Path(args.out) / 'results.json'}"
        )
        if result["failed"]:
            logger.warning(
                "failed images (rerun to retry them): %s", ", ".join(str(r["image_id"]) for r in result["failed"])
            )
            return 1
    return 0


def _bench_single_point(args: argparse.Namespace) -> int:
    from samtasks.evaluation import load_config
    from samtasks.evaluation.single_point import SinglePointSuiteConfig, format_table, run_suite

    if args.detections or args.detector:
        raise UsageError("--detections and --detector apply to the instance benchmarks only")
    if not args.config:
        raise UsageError("single-point needs --config (e.g. configs/single_point_suite.yaml) listing the datasets")
    config = load_config(SinglePointSuiteConfig(), args.config, args.set)
    datasets = [d.strip() for d in args.datasets.split(",")] if args.datasets else None
    summary = run_suite(
        config, args.data, args.out, datasets=datasets, limit=args.limit, device=args.device, progress=not args.quiet
    )
    if summary is not None:
        print(format_table(summary))
        print(f"results in {Path(args.out) / 'results.json'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="samtasks", description="Zero-shot tasks with Segment Anything.")
    parser.add_argument("--version", action="version", version=f"samtasks {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    models = sub.add_parser("models", help="list SAM models, their checkpoints and whether they are cached")
    models.set_defaults(func=cmd_models)

    point = sub.add_parser("point", help="segment the object at a point (and/or in a box)")
    point.add_argument("image", help="image file")
    point.add_argument("--point", action="append", default=[], metavar="X,Y", help="click in pixels (repeatable)")
    point.add_argument("--label", action="append", type=int, choices=[0, 1], help="1 fg / 0 bg per --point")
    point.add_argument("--box", metavar="X0,Y0,X1,Y1", help="box prompt in pixels")
    point.add_argument("--single", action="store_true", help="single-mask output instead of the best of 3")
    point.add_argument("--out", default="out", help="output folder (default ./out)")
    add_model_args(point)
    point.set_defaults(func=cmd_point)

    add_parsers(sub)
    from samtasks.evaluation import benchmarks

    ev = sub.add_parser("eval-edges", help="BSDS boundary benchmark (ODS/OIS/AP/R50) of any edge maps, no MATLAB")
    ev.add_argument("--pred", required=True, help="folder of <id>.png / .npy / .mat (ucm2 or segs) maps")
    ev.add_argument("--gt", required=True, help="folder of BSDS <id>.mat ground truth (or a BSDS500 root)")
    ev.add_argument("--thresholds", type=int, default=99, help="number of thresholds (default 99)")
    ev.add_argument("--max-dist", type=float, default=0.0075, help="match distance / diagonal (default 0.0075)")
    ev.add_argument("--no-thin", action="store_true", help="do not thin the thresholded maps")
    ev.add_argument("--workers", type=int, help="processes (default: all cores)")
    ev.add_argument("--limit", type=int, help="only the first N images")
    ev.add_argument("--out", required=True, help="folder for eval_bdry*.txt, pr_curve.txt/png")
    ev.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    ev.set_defaults(func=cmd_eval_edges)

    bench = sub.add_parser("bench", help="run a paper benchmark from a config (resumable, shardable)")
    bench.add_argument("name", choices=sorted([*benchmarks(), "single-point"]), help="which benchmark")
    bench.add_argument("--data", required=True, help="dataset root; the config's paths are relative to it")
    bench.add_argument("--config", help="YAML config (default: the paper protocol, see configs/)")
    bench.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    bench.add_argument("--limit", type=int, help="only the first N images (smoke runs)")
    bench.add_argument("--device", help="overrides model.device")
    bench.add_argument("--detections", help="instance benchmarks: COCO results JSON of boxes (detector.detections)")
    bench.add_argument("--detector", help="instance benchmarks: yolov8, yolo11, torchvision:<model> (detector.name)")
    bench.add_argument("--datasets", metavar="A,B", help="single-point: only these datasets of the config")
    bench.add_argument("--pairs", help="coco-text: JSON list of {image, phrase, mask} instead of COCO")
    bench.add_argument("--out", required=True, help="output folder; run again with the same one to resume")
    bench.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    bench.set_defaults(func=cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the CLI; returns the exit status (0 ok, 1 failure, 2 bad usage)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        status = args.func(args)
        sys.stdout.flush()  # here, so that a closed pipe is caught below
        return status
    except UsageError as err:
        print(f"samtasks {args.command}: error: {err}", file=sys.stderr)
        return 2
    except (CheckpointError, ImageReadError, MissingDependencyError, ValueError, RuntimeError, OSError) as err:
        if isinstance(err, BrokenPipeError):  # `samtasks models | head`: the reader has gone
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        if args.verbose:
            logger.exception("traceback")
        print(f"samtasks {args.command}: error: {err}", file=sys.stderr)
        return 1
    except (RunInterrupted, KeyboardInterrupt) as err:
        print(f"samtasks {args.command}: {str(err) or 'interrupted; the same command resumes'}", file=sys.stderr)
        return 130
