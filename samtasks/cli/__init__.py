"""The `samtasks` command line: one module per command (`add_parser` and `run`: parse, call the
library, print); `main` sets up logging and turns errors into exit statuses."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from samtasks import __version__
from samtasks.checkpoints import CheckpointError
from samtasks.cli import bench, edges, eval_edges, instance, models, point, proposals, text
from samtasks.cli.common import UsageError, logger
from samtasks.evaluation.runner import RunInterrupted
from samtasks.utils.image import ImageReadError
from samtasks.utils.optional import MissingDependencyError

COMMANDS = (models, point, proposals, instance, text, edges, eval_edges, bench)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="samtasks", description="Zero-shot tasks with Segment Anything.")
    parser.add_argument("--version", action="version", version=f"samtasks {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the CLI; returns the exit status (0 ok, 1 failure, 2 bad usage). Errors are one line on
    stderr; with `-v` the traceback comes first."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        status = args.func(args)
        sys.stdout.flush()  # here, so that a closed pipe is caught below
        return status
    except UsageError as err:
        _traceback(args)
        print(f"samtasks {args.command}: error: {err}", file=sys.stderr)
        return 2
    except (CheckpointError, ImageReadError, MissingDependencyError, ValueError, RuntimeError, OSError) as err:
        if isinstance(err, BrokenPipeError):  # `samtasks models | head`: the reader has gone
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        _traceback(args)
        print(f"samtasks {args.command}: error: {err}", file=sys.stderr)
        return 1
    except (RunInterrupted, KeyboardInterrupt) as err:
        print(f"samtasks {args.command}: {str(err) or 'interrupted; the same command resumes'}", file=sys.stderr)
        return 130


def _traceback(args: argparse.Namespace) -> None:
    if args.verbose:
        logger.exception("traceback")
