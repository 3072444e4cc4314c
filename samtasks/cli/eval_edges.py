"""`samtasks eval-edges`: the BSDS boundary benchmark of any folder of edge maps."""

from __future__ import annotations

import argparse

from samtasks.cli.common import check_limit, usage


def add_parser(sub) -> None:
    parser = sub.add_parser("eval-edges", help="BSDS boundary benchmark (ODS/OIS/AP/R50) of any edge maps, no MATLAB")
    parser.add_argument("--pred", required=True, help="folder of <id>.png / .npy / .mat (ucm2 or segs) maps")
    parser.add_argument("--gt", required=True, help="folder of BSDS <id>.mat ground truth (or a BSDS500 root)")
    parser.add_argument("--thresholds", type=int, default=99, help="number of thresholds (default 99)")
    parser.add_argument("--max-dist", type=float, default=0.0075, help="match distance / diagonal (default 0.0075)")
    parser.add_argument("--no-thin", action="store_true", help="do not thin the thresholded maps")
    parser.add_argument("--workers", type=int, help="processes (default: all cores)")
    parser.add_argument("--limit", type=int, help="only the first N images")
    parser.add_argument("--out", required=True, help="folder for eval_bdry*.txt, pr_curve.txt/png")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from samtasks.data.bsds import ground_truth_folder
    from samtasks.evaluation.edges import BoundaryEvalConfig
    from samtasks.metrics.bsds import evaluate_folder
    from samtasks.utils.progress import progress_bar

    e = usage(BoundaryEvalConfig, n_thresholds=args.thresholds, max_dist=args.max_dist, thinning=not args.no_thin)
    check_limit(args)
    bench = evaluate_folder(
        args.pred,
        ground_truth_folder(args.gt),
        n_thresholds=e.n_thresholds,
        max_dist=e.max_dist,
        thinning=e.thinning,
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
