"""`samtasks bench`: a paper benchmark from a config (resumable, shardable)."""

from __future__ import annotations

import argparse
from pathlib import Path

from samtasks.cli.common import UsageError, check_limit, logger

# Options that only some benchmarks take (`BenchmarkSpec.config_options` or `run_options`).
OPTIONS = ("detections", "detector", "datasets", "pairs")


def add_parser(sub) -> None:
    from samtasks.evaluation import benchmarks

    def absolute(path: str) -> str:
        return str(Path(path).resolve())

    def names(text: str) -> list[str]:
        return [name.strip() for name in text.split(",")]

    parser = sub.add_parser("bench", help="run a paper benchmark from a config (resumable, shardable)")
    parser.add_argument("name", choices=sorted(benchmarks()), help="which benchmark")
    parser.add_argument("--data", required=True, help="dataset root; the config's paths are relative to it")
    parser.add_argument("--config", help="YAML config (default: the paper protocol, see configs/)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    parser.add_argument("--limit", type=int, help="only the first N images (smoke runs)")
    parser.add_argument("--device", help="overrides model.device")
    parser.add_argument(
        "--detections", type=absolute, help="instance benchmarks: COCO results JSON of boxes (detector.detections)"
    )
    parser.add_argument("--detector", help="instance benchmarks: yolov8, yolo11, torchvision:<model> (detector.name)")
    parser.add_argument("--datasets", type=names, metavar="A,B", help="single-point: only these datasets of the config")
    parser.add_argument("--pairs", type=absolute, help="coco-text: JSON list of {image, phrase, mask} instead of COCO")
    parser.add_argument("--out", required=True, help="output folder; run again with the same one to resume")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from samtasks.evaluation import benchmarks, load_config
    from samtasks.evaluation.runner import finish_distributed

    check_limit(args)
    specs = benchmarks()
    spec = specs[args.name]
    if spec.requires_config and not args.config:
        raise UsageError(f"{args.name} needs --config ({spec.requires_config})")
    overrides, options = list(args.set), {}
    for option in OPTIONS:
        value = getattr(args, option)
        if value is None:
            continue
        if option in spec.config_options:
            overrides.append(f"{spec.config_options[option]}={value}")
        elif option in spec.run_options:
            options[option] = value
        else:
            takers = [n for n, s in specs.items() if option in s.config_options or option in s.run_options]
            raise UsageError(f"--{option} applies to {', '.join(takers)} only")
    config = load_config(spec.defaults, args.config, overrides)
    try:
        run_args = {"limit": args.limit, "device": args.device, "progress": not args.quiet, **options}
        result = spec.run(args.name, config, args.data, args.out, **run_args)
    finally:
        finish_distributed()
    if result is None:  # a torchrun rank other than 0
        return 0
    print(spec.report(result, Path(args.out)))
    if result.get("failed"):
        failed = ", ".join(str(r["image_id"]) for r in result["failed"])
        logger.warning("failed images (rerun to retry them): %s", failed)
        return 1
    return 0
