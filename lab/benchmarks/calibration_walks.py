"""How the calibration walk's start and spacing change what ``auto`` certifies, on the last
models of ``labelloop simulate`` runs: fresh random hold-outs of each run's own size drawn
from the pool its model left, calibrated with each walk (prints a table).

    .venv/bin/python lab/benchmarks/calibration_walks.py sim/seed*/report.json --draws 200

Walks: ``now`` (the library's start and spacing), other starts (``start_error_rate``) and a
coarser spacing (``max_steps``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lab.benchmarks.holdout_modes import load_pool  # noqa: E402
from lab.fashion import FASHION_CLASSES  # noqa: E402
from lab.metrics import best_hindsight, fresh_holdouts  # noqa: E402

WALKS: dict[str, dict[str, Any]] = {"now": {}, "start 0.5%": {"start_error_rate": 0.005},
                                    "start 1%": {"start_error_rate": 0.01}, "start 1.25%": {"start_error_rate": 0.0125},
                                    "steps 50": {"max_steps": 50}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("reports", nargs="+", type=Path)
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--mode", default="auto", choices=["auto", "pooled", "per_class"])
    ap.add_argument("--holdout", type=int, default=None, help="hold-out size (default: each run's own)")
    args = ap.parse_args()
    print("| seed | labels | hold-out | pool accuracy | best in hindsight | "
          + " | ".join(f"{w} (none / below)" for w in WALKS) + " |")
    print("| --- " * (5 + len(WALKS)) + "|")
    means: dict[str, list[float]] = {w: [] for w in WALKS}
    for report in args.reports:
        pool = load_pool(report)
        if pool is None:
            continue
        pred, truth, scores = pool["pred"], pool["truth"], pool["scores"]
        n_holdout = args.holdout or pool["holdout"]
        cells = []
        for walk, options in WALKS.items():
            f = fresh_holdouts(scores, pred == truth, n_holdout, draws=args.draws, mode=args.mode, pred=pred,
                               truth=truth, n_classes=len(FASHION_CLASSES), **options)
            means[walk].append(f["coverage"])
            cells.append(f"{f['coverage']:.3f} ({f['none']:.2f} / {f['below_target']:.3f})")
        print(f"| {pool['seed']} | {pool['labels']} | {n_holdout} | {(pred == truth).mean():.3f} | "
              f"{best_hindsight(scores, pred == truth, 0.95):.3f} | " + " | ".join(cells) + " |")
    print("| mean | | | | | " + " | ".join(f"{np.mean(v):.3f}" for v in means.values()) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
