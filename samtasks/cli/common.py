"""Helpers shared by the command modules: usage errors, number lists, `--set`, the SAM arguments, the
folder commands' arguments and their run."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from samtasks.build import MODEL_SPECS, build_sam

logger = logging.getLogger("samtasks")


class UsageError(ValueError):
    """A command-line argument is malformed; the message names it."""


def floats(text: str, count: int, name: str) -> list[float]:
    parts = text.replace(" ", "").split(",")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != count:
        raise UsageError(f"{name} expects {count} comma-separated numbers, got {text!r}")
    return values


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sam", default="vit_b", choices=sorted(MODEL_SPECS), help="SAM model (default vit_b)")
    parser.add_argument("--sam-checkpoint", help="local .pth file (default: the official one, downloaded once)")
    parser.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: best available)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile the image encoder (pays off on a GPU over many images)"
    )


def predictor(args: argparse.Namespace):
    from samtasks.predictor import SamPredictor

    model = build_sam(args.sam, args.sam_checkpoint)
    return SamPredictor(model, device=args.device, dtype=args.dtype, compile=args.compile)


def overrides(items: Sequence[str]) -> dict:
    """`--set key=value` strings -> dict (values parsed as YAML)."""
    from samtasks.evaluation.config import ConfigError, parse_assignment

    try:
        return dict(parse_assignment(item) for item in items)
    except ConfigError as err:
        raise UsageError(str(err)) from err


def usage(make, *args, **kwargs):
    """`make(*args, **kwargs)`, a `ValueError` turned into a usage error (exit status 2)."""
    try:
        return make(*args, **kwargs)
    except ValueError as err:
        raise UsageError(str(err)) from err


def ints(text: str | None, name: str) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(v) for v in text.split(",")]
    except ValueError as err:
        raise UsageError(f"{name} expects comma-separated integers, got {text!r}") from err


def model_config(args: argparse.Namespace):
    """The `ModelConfig` of the SAM arguments (checkpoint made absolute: it is a recorded setting)."""
    from samtasks.evaluation.config import ModelConfig

    checkpoint = args.sam_checkpoint
    if checkpoint and not checkpoint.startswith(("http://", "https://")):
        checkpoint = str(Path(checkpoint).expanduser().resolve())
    return ModelConfig(
        name=args.sam, checkpoint=checkpoint, device=args.device or "auto", dtype=args.dtype, compile=args.compile
    )


def check_limit(args: argparse.Namespace) -> None:
    if args.limit is not None and args.limit < 0:
        raise UsageError(f"--limit must be >= 0, got {args.limit}")


def add_folder_args(parser: argparse.ArgumentParser, what: str) -> None:
    """The arguments every folder command takes; `what` names what `--overwrite` redoes."""
    parser.add_argument("--overwrite", action="store_true", help=f"redo images {what}")
    parser.add_argument("--out", default="out", help="output folder (default ./out)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_model_args(parser)


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
