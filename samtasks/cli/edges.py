"""`samtasks edges`: soft edge maps of images, as the BSDS benchmark's 8-bit PNGs."""

from __future__ import annotations

import argparse

from samtasks.cli.common import add_folder_args, model_config, overrides, run_folder_command, usage


def add_parser(sub) -> None:
    parser = sub.add_parser("edges", help="soft edge maps (8-bit PNG, the BSDS benchmark's format)")
    parser.add_argument("source", help="image file, folder or glob pattern")
    parser.add_argument(
        "--preset",
        default="edges-paper",
        help="edges-paper (default; the paper's recipe) or edges-reference (the public re-implementation's)",
    )
    parser.add_argument("--set", action="append", default=[], metavar="KNOB=VALUE", help="an edge or AMG knob")
    add_folder_args(parser, "that already have a map in --out")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from samtasks.evaluation.folder_jobs import EdgesJob

    job = usage(EdgesJob, model_config(args), args.preset, overrides(args.set))
    return run_folder_command(job, args, "edge maps")
