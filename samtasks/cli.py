"""The `samtasks` command line: thin argparse subcommands over the library."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from samtasks import __version__
from samtasks.build import MODEL_SPECS, build_sam
from samtasks.checkpoints import CheckpointError, cached_path
from samtasks.utils.image import ImageReadError, list_images, load_image
from samtasks.utils.optional import MissingDependencyError

logger = logging.getLogger("samtasks")


class UsageError(ValueError):
    """A command-line argument is malformed; the message names it."""


def _floats(text: str, count: int, name: str) -> list[float]:
    parts = text.replace(" ", "").split(",")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != count:
        raise UsageError(f"{name} expects {count} comma-separated numbers, got {text!r}")
    return values


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sam", default="vit_b", choices=sorted(MODEL_SPECS), help="SAM model (default vit_b)")
    parser.add_argument("--sam-checkpoint", help="local .pth file (default: the official one, downloaded once)")
    parser.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: best available)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])


def _predictor(args: argparse.Namespace):
    from samtasks.predictor import SamPredictor

    model = build_sam(args.sam, args.sam_checkpoint)
    return SamPredictor(model, device=args.device, dtype=args.dtype)


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

    points = [_floats(p, 2, "--point") for p in args.point]
    labels = args.label if args.label else [1] * len(points)
    if len(labels) != len(points):
        raise UsageError(f"--label given {len(labels)} times for {len(points)} --point")
    box = _floats(args.box, 4, "--box") if args.box else None
    if not points and box is None:
        raise UsageError("give at least one --point X,Y or a --box X0,Y0,X1,Y1")

    image = load_image(args.image)
    predictor = _predictor(args)
    predictor.set_image(image)
    pred = predictor.predict(
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


def _overrides(items: Sequence[str]) -> dict:
    """`--set key=value` strings -> dict (values parsed as YAML)."""
    from samtasks.evaluation.config import ConfigError, parse_assignment

    try:
        return dict(parse_assignment(item) for item in items)
    except ConfigError as err:
        raise UsageError(str(err)) from err


def _pending(args: argparse.Namespace, suffix: str, what: str) -> tuple[Path, list[Path]]:
    """`--out` (created) and the images of `args.source` without `<out>/<stem><suffix>` yet (all with
    `--overwrite`)."""
    paths = list_images(args.source)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    todo = [p for p in paths if args.overwrite or not (out / f"{p.stem}{suffix}").is_file()]
    if len(todo) < len(paths):
        done = len(paths) - len(todo)
        logger.info("%d of %d images already have %s in %s (--overwrite redoes them)", done, len(paths), what, out)
    return out, todo


def _readable_images(paths: list[Path], args: argparse.Namespace, name: str, failed: list[str]):
    """`(path, image)` for each readable image behind a progress bar; unreadable files are reported
    and appended to `failed`."""
    from samtasks.evaluation.runner import progress_bar

    for path in progress_bar(paths, not args.quiet, name):
        try:
            image = load_image(path)
        except ImageReadError as err:
            logger.warning("skipped: %s", err)
            failed.append(str(path))
            continue
        yield path, image


def _report(done: int, what: str, out: Path, failed: list[str]) -> int:
    logger.info("wrote %d %s to %s", done, what, out)
    if failed:
        logger.warning("%d image(s) could not be read: %s", len(failed), ", ".join(failed))
        return 1
    return 0


def cmd_proposals(args: argparse.Namespace) -> int:
    from samtasks.tasks.amg import PRESETS as AMG_PRESETS
    from samtasks.tasks.amg import AutomaticMaskGenerator
    from samtasks.tasks.proposals import PRESETS, ProposalGenerator
    from samtasks.utils.masks import decode_rle
    from samtasks.utils.viz import draw_overlay

    if args.preset not in PRESETS and args.preset not in AMG_PRESETS:
        raise UsageError(f"--preset must be one of {', '.join([*PRESETS, *AMG_PRESETS])}, got {args.preset!r}")
    knobs = _overrides(args.set)
    out, todo = _pending(args, ".json", "results")
    if not todo:
        return 0
    predictor = _predictor(args)
    try:
        if args.preset in PRESETS:
            generator = ProposalGenerator.from_preset(predictor, args.preset, amg=knobs)
        else:
            generator = AutomaticMaskGenerator.from_preset(predictor, args.preset, **knobs)
    except TypeError as err:
        raise UsageError(f"--set: {err}") from err
    failed: list[str] = []
    for path, image in _readable_images(todo, args, "proposals", failed):
        result = generator.generate(image)
        masks, scores = (result.masks, result.scores) if hasattr(result, "scores") else (result, result.predicted_iou)
        records = masks.records()
        for i, (record, score) in enumerate(zip(records, scores, strict=True)):
            record["id"] = i
            record["score"] = float(score)
        h, w = image.shape[:2]
        sa1b = {
            "image": {"file_name": path.name, "height": h, "width": w},
            "preset": args.preset,
            "annotations": records,
        }
        shown = np.argsort([-r["area"] for r in records[: args.overlay_max]], kind="stable")
        stack = (
            np.stack([decode_rle(records[i]["segmentation"]) for i in shown])
            if len(shown)
            else np.zeros((0, h, w), bool)
        )
        draw_overlay(image, stack.astype(bool)).save(out / f"{path.stem}_overlay.png")
        tmp = out / f"{path.stem}.json.tmp"
        tmp.write_text(json.dumps(sa1b))
        tmp.replace(out / f"{path.stem}.json")
        logger.debug("%s: %d masks", path.name, len(records))
    return _report(len(todo) - len(failed), "result(s)", out, failed)


def _ints(text: str | None, name: str) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(v) for v in text.split(",")]
    except ValueError as err:
        raise UsageError(f"{name} expects comma-separated integers, got {text!r}") from err


def cmd_instance(args: argparse.Namespace) -> int:
    import shutil

    from samtasks.evaluation import ResultsStore
    from samtasks.evaluation.runner import progress_bar
    from samtasks.tasks.detectors import PrecomputedDetections, make_detector
    from samtasks.tasks.instance import InstanceSegmenter
    from samtasks.utils.export import coco_results, write_yolo_dataset_yaml, yolo_label_lines
    from samtasks.utils.viz import draw_overlay

    formats = {f.strip() for f in args.format.split(",") if f.strip()}
    if not formats or formats - {"coco", "png", "yolo"}:
        raise UsageError(f"--format takes a comma-separated subset of coco,png,yolo, got {args.format!r}")
    paths = list_images(args.source)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    store = ResultsStore(out / "records")
    done = {r["file_name"] for r in store.records() if "error" not in r}
    todo = [(i + 1, p) for i, p in enumerate(paths) if str(p) not in done or args.overwrite]
    if len(todo) < len(paths):
        logger.info(
            "%d of %d images already done in %s (--overwrite redoes them)", len(paths) - len(todo), len(paths), out
        )
    if todo:
        if args.detections:
            detector = PrecomputedDetections(args.detections, min_score=args.conf)
        else:
            knobs = {
                "conf": args.conf,
                "iou": args.iou,
                "max_det": args.max_det,
                "classes": _ints(args.classes, "--classes"),
            }
            detector = make_detector(args.detector, args.detector_weights, **knobs)
        segmenter = InstanceSegmenter(
            _predictor(args), detector, refine=not args.no_refine, multimask=args.multimask, score=args.score
        )
    if "yolo" in formats:
        (out / "labels").mkdir(exist_ok=True)
        (out / "images").mkdir(exist_ok=True)
    failed = []
    try:
        for image_id, path in progress_bar(todo, not args.quiet, "instance"):
            try:
                image = load_image(path)
            except ImageReadError as err:
                logger.warning("skipped: %s", err)
                store.append({"file_name": str(path), "image_id": image_id, "error": str(err)})
                failed.append(str(path))
                continue
            instances = segmenter.segment(image, image_id=path.name)
            h, w = image.shape[:2]
            if "png" in formats:
                captions = [
                    f"{instances.names.get(int(c), c)} {s:.2f}"
                    for c, s in zip(instances.labels, instances.scores, strict=True)
                ]
                draw_overlay(image, instances.masks, boxes=instances.boxes, labels=captions).save(
                    out / f"{path.stem}_overlay.png"
                )
            if "yolo" in formats:
                (out / "labels" / f"{path.stem}.txt").write_text(
                    "".join(line + "\n" for line in yolo_label_lines(instances, h, w))
                )
                target = out / "images" / path.name
                if not target.exists():
                    try:
                        target.hardlink_to(path)
                    except OSError:
                        shutil.copy2(path, target)
            record = {"file_name": str(path), "image_id": image_id, "height": h, "width": w}
            record["names"] = {str(k): v for k, v in instances.names.items()}
            record["results"] = coco_results(instances, image_id)
            store.append(record)
    finally:
        store.close()
    latest = {r["file_name"]: r for r in store.records() if "error" not in r}
    if "coco" in formats:
        results = [{**e, "file_name": Path(f).name} for f, r in latest.items() for e in r["results"]]
        tmp = out / "coco_results.json.tmp"
        tmp.write_text(json.dumps(results))
        tmp.replace(out / "coco_results.json")
    if "yolo" in formats:
        names = {int(k): v for r in latest.values() for k, v in r["names"].items()}
        write_yolo_dataset_yaml(out, names)
    count = sum(len(r["results"]) for r in latest.values())
    logger.info("%d instances in %d images; outputs in %s", count, len(latest), out)
    if failed:
        logger.warning("%d image(s) could not be read: %s", len(failed), ", ".join(failed))
        return 1
    return 0


def cmd_text(args: argparse.Namespace) -> int:
    import re

    from PIL import Image

    from samtasks.tasks.text import CLIP_MODELS, OpenClipEncoder, TextSegmenter
    from samtasks.utils.viz import draw_overlay

    prompts = [p.strip() for p in args.prompt]
    if not prompts or not all(prompts):
        raise UsageError("give at least one non-empty --prompt")
    point = _floats(args.point, 2, "--point") if args.point else None
    model, pretrained = CLIP_MODELS[args.clip]
    model, pretrained = args.clip_model or model, args.clip_pretrained or pretrained
    encoder = OpenClipEncoder(model, None if pretrained == "none" else pretrained, device=args.device)
    image = load_image(args.image)
    segmenter = TextSegmenter(_predictor(args), encoder)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = Path(args.image).stem
    report = {
        "image": str(args.image),
        "clip": [args.clip_model or model, args.clip_pretrained or pretrained],
        "queries": [],
    }
    for prompt in prompts:
        result = segmenter.query(image, prompt, point=point, all=args.all)
        slug = re.sub(r"[^a-z0-9]+", "_", prompt.lower()).strip("_")[:40] or "prompt"
        entry = {"prompt": prompt, "index": result.index, "score": result.score, "selected": result.selected}
        entry["point"] = list(result.refined_by_point) if result.refined_by_point else None
        entry["ranking"] = result.ranking[:20]
        if result.mask is None:
            logger.warning("%r: no candidate masks in %s", prompt, args.image)
        else:
            Image.fromarray(result.mask.astype(np.uint8) * 255).save(out / f"{stem}_{slug}_mask.png")
            overlay = draw_overlay(
                image, result.mask[None], points=np.asarray([point]) if point else None, point_labels=np.ones(1)
            )
            overlay.save(out / f"{stem}_{slug}_overlay.png")
            entry["files"] = [f"{stem}_{slug}_mask.png", f"{stem}_{slug}_overlay.png"]
        report["queries"].append(entry)
    (out / f"{stem}_text.json").write_text(json.dumps(report, indent=2))
    logger.info("wrote %d quer%s to %s", len(prompts), "y" if len(prompts) == 1 else "ies", out)
    return 0


def cmd_edges(args: argparse.Namespace) -> int:
    import dataclasses

    from samtasks.tasks.amg import AmgSettings, preset_with_overrides
    from samtasks.tasks.edges import PRESETS, EdgeDetector, EdgeSettings

    if args.preset not in PRESETS:
        raise UsageError(f"--preset must be one of {', '.join(PRESETS)}, got {args.preset!r}")
    knobs = _overrides(args.set)
    edge_fields = {f.name for f in dataclasses.fields(EdgeSettings)} - {"amg", "amg_preset"}
    amg_fields = {f.name for f in dataclasses.fields(AmgSettings)}
    unknown = sorted(set(knobs) - edge_fields - amg_fields)
    if unknown:
        raise UsageError(f"--set: unknown knob(s) {', '.join(unknown)}; edge knobs: {', '.join(sorted(edge_fields))}")
    overrides = {k: v for k, v in knobs.items() if k in edge_fields}
    overrides["amg"] = {k: v for k, v in knobs.items() if k not in edge_fields}
    try:
        settings = preset_with_overrides(PRESETS, args.preset, "edges", overrides)
    except (TypeError, ValueError) as err:
        raise UsageError(f"--set: {err}") from err
    out, todo = _pending(args, ".png", "maps")
    if not todo:
        return 0
    detector = EdgeDetector(_predictor(args), settings)
    failed: list[str] = []
    for path, image in _readable_images(todo, args, "edges", failed):
        result = detector.detect(image)
        tmp = result.save(out / f"{path.stem}.tmp.png")
        tmp.replace(out / f"{path.stem}.png")
        logger.debug("%s: %d masks", path.name, result.num_masks)
    return _report(len(todo) - len(failed), "edge map(s)", out, failed)


def cmd_eval_edges(args: argparse.Namespace) -> int:
    from samtasks.evaluation.runner import progress_bar
    from samtasks.metrics.bsds import evaluate_folder

    gt = Path(args.gt)
    if gt.is_dir() and not any(gt.glob("*.mat")) and (gt / "groundTruth" / "test").is_dir():
        gt = gt / "groundTruth" / "test"  # a BSDS500 root
    if args.thresholds < 1:
        raise UsageError(f"--thresholds must be >= 1, got {args.thresholds}")
    if not 0 < args.max_dist < 1:
        raise UsageError(f"--max-dist is a fraction of the diagonal in (0, 1), got {args.max_dist}")

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


def cmd_bench(args: argparse.Namespace) -> int:
    from samtasks.evaluation.runner import finish_distributed

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
    _add_model_args(point)
    point.set_defaults(func=cmd_point)

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
    _add_model_args(proposals)
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
    _add_model_args(instance)
    instance.set_defaults(func=cmd_instance)

    text = sub.add_parser("text", help="the mask a text prompt describes (SAM masks ranked by CLIP)")
    text.add_argument("image", help="image file")
    text.add_argument("--prompt", action="append", default=[], help="text (repeatable; candidates are reused)")
    text.add_argument("--point", metavar="X,Y", help="a click that re-prompts SAM with the chosen mask")
    text.add_argument("--all", action="store_true", help="every candidate within the margin (plural queries)")
    text.add_argument("--clip", default="fast", choices=["fast", "paper"], help="fast: ViT-B-32; paper: ViT-L-14-336")
    text.add_argument("--clip-model", help="any open_clip architecture (overrides --clip)")
    text.add_argument("--clip-pretrained", help="its open_clip pretrained tag ('none': random weights, tests)")
    text.add_argument("--out", default="out", help="output folder (default ./out)")
    _add_model_args(text)
    text.set_defaults(func=cmd_text)

    from samtasks.evaluation import benchmarks

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
    _add_model_args(edges)
    edges.set_defaults(func=cmd_edges)

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
        return args.func(args)
    except UsageError as err:
        print(f"samtasks {args.command}: error: {err}", file=sys.stderr)
        return 2
    except (CheckpointError, ImageReadError, MissingDependencyError, ValueError, RuntimeError) as err:
        print(f"samtasks {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
