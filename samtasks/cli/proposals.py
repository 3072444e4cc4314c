"""`samtasks proposals`: masks for everything in images (SA-1B-style JSON and an overlay)."""

from __future__ import annotations

import argparse

from samtasks.cli.common import add_folder_args, model_config, overrides, run_folder_command, usage


def add_parser(sub) -> None:
    parser = sub.add_parser("proposals", help="masks for everything in images (SA-1B-style JSON + overlay)")
    parser.add_argument("source", help="image file, folder or glob pattern")
    parser.add_argument(
        "--preset",
        default="proposals-lvis",
        help="proposals-lvis (default; 64x64 grid, top 1000), proposals-single-output, or an AMG preset: "
        "official, sa1b, amg-lvis, edges-bsds, text-candidates",
    )
    parser.add_argument("--set", action="append", default=[], metavar="KNOB=VALUE", help="override an AMG knob")
    parser.add_argument("--overlay-max", type=int, default=200, help="masks drawn on the overlay (default 200)")
    add_folder_args(parser, "that already have a JSON in --out")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from samtasks.evaluation.folder_jobs import ProposalsJob

    job = usage(ProposalsJob, model_config(args), args.preset, overrides(args.set), args.overlay_max)
    return run_folder_command(job, args, "proposals")
