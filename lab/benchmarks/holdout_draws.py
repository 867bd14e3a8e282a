"""What a fresh random hold-out would certify for one model of a ``labelloop simulate`` run.

The simulator keeps its database (``OUT/work/*/sim.db``). This script reads one model
version's predictions for the items still in the pool, draws ``--holdout`` of them at
random ``--draws`` times, runs :func:`learning.calibration.calibrate` (pooled, the
policy's default walk) on each draw and prints the mean certified coverage of the
pool, the share of draws that certify nothing and the share whose proposals fall
below the target. Set against the coverage the run itself certified, it tells a stale
hold-out (drawn from the pool as it was) from a weak model.

    .venv/bin/python lab/benchmarks/holdout_draws.py sim-precise/work/*/sim.db \\
        --model-version 11 --pool-seed 200 --holdout 432
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lab.fashion import FASHION_CLASSES, FASHION_DIR, load_fashion  # noqa: E402
from lab.metrics import fresh_holdouts  # noqa: E402


def pool_predictions(db: Path, model_version: int | None, pool: int, pool_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(max probability ``[N]``, correct ``[N]``) of ``model_version`` on the items no person labelled."""
    _, y = load_fashion(FASHION_DIR, pool, pool_seed)
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    if model_version is None:
        model_version = con.execute("SELECT max(id) FROM model_version").fetchone()[0]
    rows = con.execute(
        "SELECT i.file_name, p.data FROM prediction p JOIN item i ON i.id = p.item_id "
        "WHERE p.model_version_id = ? AND p.state IN ('none', 'proposed')", (model_version,)).fetchall()
    con.close()
    if not rows:
        raise SystemExit(f"model version {model_version} has no pool predictions in {db}")
    scores, correct = np.zeros(len(rows)), np.zeros(len(rows), dtype=bool)
    for r, (name, data) in enumerate(rows):
        best, score = json.loads(data)["top"][0]
        scores[r] = score
        correct[r] = FASHION_CLASSES.index(best) == y[int(name[3:8])]  # file names are fm_<index>.png
    return scores, correct


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("db", type=Path)
    ap.add_argument("--model-version", type=int, default=None,
                    help="model_version.id in that database (default: the last one)")
    ap.add_argument("--pool", type=int, default=10_000)
    ap.add_argument("--pool-seed", type=int, required=True, help="the simulate run's --seed")
    ap.add_argument("--holdout", type=int, required=True, help="hold-out images per draw")
    ap.add_argument("--draws", type=int, default=300)
    ap.add_argument("--target", type=float, default=0.95)
    ap.add_argument("--delta", type=float, default=0.05)
    ap.add_argument("--start-error-rates", default=None,
                    help="comma-separated walk starts to compare (calibrate's start_error_rate); "
                         "default: the library's")
    args = ap.parse_args()
    scores, correct = pool_predictions(args.db, args.model_version, args.pool, args.pool_seed)
    order = np.argsort(-scores)
    running = np.cumsum(correct[order]) / np.arange(1, len(order) + 1)
    ok = np.flatnonzero(running >= args.target)
    hindsight = (ok.max() + 1) / len(order) if ok.size else 0.0
    print(f"pool {len(scores)} images: accuracy {correct.mean():.3f}, best in hindsight {hindsight:.3f}")
    rates = [None] if args.start_error_rates is None else [float(r) for r in args.start_error_rates.split(",")]
    for rate in rates:
        options: dict[str, Any] = {} if rate is None else {"start_error_rate": rate}
        # seed 0: the same draws for every walk start
        f = fresh_holdouts(scores, correct, args.holdout, draws=args.draws, seed=0, target=args.target,
                           delta=args.delta, **options)
        walk = "" if rate is None else f"start_error_rate {rate:g}: "
        print(f"{walk}{args.draws} draws of {args.holdout}: mean certified coverage {f['coverage']:.3f}, "
              f"none certified in {f['none']:.2f}, precision below {args.target:g} in {f['below_target']:.3f} of draws")


if __name__ == "__main__":
    main()
