"""BSDS boundary evaluation speed: our evaluator against pyedgeeval (the official C++ matcher and CSA
assignment, Cython-wrapped) on the same maps, the same number of worker processes, in one run, with
the numbers checked equal.

The maps are the Canny baseline's (benchmarks/edges_baselines.py; made here if missing). Both sides run
the full protocol: 99 thresholds, maxDist 0.0075, thinning. pyedgeeval runs through its own BSDS
pipeline (`calculate_metrics` with `bsds_eval_single`, what its `BSDS500Evaluator` calls).

    python benchmarks/speed_bsds_eval.py --data ../shared/data/bsds500 [--workers 2] [--limit N]

Reports wall seconds, images/s, the CPU seconds of the worker processes (less sensitive to other load
on the machine) and the ratios; writes benchmarks/results/speed_bsds_eval.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from pathlib import Path

import numpy as np

from samtasks.data.bsds import BsdsDataset
from samtasks.metrics.bsds import evaluate_folder, fmeasure

HERE = Path(__file__).parent


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_ours(pred: Path, gt: Path, workers: int, limit: int | None) -> dict:
    cpu, t0 = children_cpu(), time.perf_counter()
    bench = evaluate_folder(pred, gt, workers=workers, limit=limit)
    wall = time.perf_counter() - t0
    total = bench.curve()
    return {
        "wall": wall,
        "cpu": children_cpu() - cpu,
        "metrics": bench.compute(),
        "recall": total.recall.tolist(),
        "precision": total.precision.tolist(),
    }


def run_pyedgeeval(pred: Path, gt: Path, ids: list[str], workers: int) -> dict:
    from pyEdgeEval.common.binary_label import calculate_metrics
    from pyEdgeEval.datasets import bsds_eval_single

    samples = [
        {
            "name": i,
            "thresholds": 99,
            "gt_path": str(gt / f"{i}.mat"),
            "pred_path": str(pred / f"{i}.png"),
            "scale": 1.0,
            "apply_thinning": True,
            "apply_nms": False,
            "max_dist": 0.0075,
        }
        for i in ids
    ]
    cpu, t0 = children_cpu(), time.perf_counter()
    _, per_threshold, overall = calculate_metrics(bsds_eval_single, 99, samples, nproc=workers)
    wall = time.perf_counter() - t0
    return {
        "wall": wall,
        "cpu": children_cpu() - cpu,
        "metrics": {k: float(v) for k, v in overall.items()},
        "recall": [float(t["recall"]) for t in per_threshold],
        "precision": [float(t["precision"]) for t in per_threshold],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="BSDS500 root (images/test, groundTruth/test)")
    parser.add_argument("--pred", default="out/edges_baselines/canny", help="the maps (made here if missing)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--tolerance", type=float, default=0.002)
    args = parser.parse_args(argv)
    dataset = BsdsDataset(args.data)
    pred = Path(args.pred)
    ids = [s.image_id for s in dataset][: args.limit]
    if any(not (pred / f"{i}.png").is_file() for i in ids):
        import sys

        sys.path.insert(0, str(HERE))
        from edges_baselines import write_maps

        write_maps(dataset, "canny", pred, args.limit)

    ours = run_ours(pred, dataset.gt_dir, args.workers, args.limit)
    print(
        f"ours:       {ours['wall']:.1f} s wall, {ours['cpu']:.1f} CPU s, {len(ids) / ours['wall']:.3f} img/s",
        flush=True,
    )
    theirs = run_pyedgeeval(pred, dataset.gt_dir, ids, args.workers)
    print(f"pyedgeeval: {theirs['wall']:.1f} s wall, {theirs['cpu']:.1f} CPU s, {len(ids) / theirs['wall']:.3f} img/s")

    m, t = ours["metrics"], theirs["metrics"]
    r_diff = float(np.abs(np.subtract(ours["recall"], theirs["recall"])).max())
    p_diff = float(np.abs(np.subtract(ours["precision"], theirs["precision"])).max())
    # pyedgeeval's OIS takes each image's first best threshold (the official code the last) and its
    # "AUC" is the official AP (its "AP" is another definition); F of its own curve is compared too.
    checks = {
        "ODS": abs(m["ODS"] - t["ODS_f1"]),
        "OIS": abs(m["OIS"] - t["OIS_f1"]),
        "AP_vs_AUC": abs(m["AP"] - t["AUC"]),
        "max_recall_diff": r_diff,
        "max_precision_diff": p_diff,
        "max_F_diff": float(
            np.abs(fmeasure(ours["recall"], ours["precision"]) - fmeasure(theirs["recall"], theirs["precision"])).max()
        ),
    }
    equal = all(v <= args.tolerance for v in checks.values())
    record = {
        "images": len(ids),
        "workers": args.workers,
        "thresholds": 99,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "ours": ours,
        "pyedgeeval": theirs,
        "differences": checks,
        "equal_within": args.tolerance if equal else None,
        "ratio_wall": theirs["wall"] / ours["wall"],
        "ratio_cpu": theirs["cpu"] / ours["cpu"] if ours["cpu"] else None,
    }
    out = HERE / "results" / "speed_bsds_eval.json"
    out.write_text(json.dumps(record, indent=2))
    print(f"ours ODS {m['ODS']:.4f} OIS {m['OIS']:.4f} AP {m['AP']:.4f}")
    print(f"pyedgeeval ODS {t['ODS_f1']:.4f} OIS {t['OIS_f1']:.4f} AUC {t['AUC']:.4f}")
    print("differences: " + ", ".join(f"{k} {v:.5f}" for k, v in checks.items()))
    print(f"speed-up: {record['ratio_wall']:.2f}x wall, {record['ratio_cpu']:.2f}x CPU; wrote {out}")
    if not equal:
        print(f"NOT EQUAL within {args.tolerance}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
