"""What each calibration mode proposes on a synthetic population with a rare class that the
model gets wrong often: coverage, how often overall precision falls below the target, and
the rare class's share of proposals and precision (prints figures; no assertions).

    .venv/bin/python lab/benchmarks/bench_calibration_auto.py --draws 200 --holdout 300,600
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from learning.calibration_auto import thresholds_by_mode, top_probs  # noqa: E402


def population(n: int, rng: np.random.Generator, acc: list[float], share: list[float]
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True class, predicted class and top score: class c is predicted for share[c] of the
    items and right acc[c] of the time; right predictions score higher on average."""
    c = len(acc)
    pred = rng.choice(c, size=n, p=np.asarray(share) / np.sum(share))
    right = rng.random(n) < np.asarray(acc)[pred]
    y = np.where(right, pred, (pred + rng.integers(1, c, n)) % c)
    score = np.maximum(np.where(right, rng.beta(12, 1, n), rng.beta(4, 2, n)), 1.0 / c + 1e-6)
    return y, pred, score


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--holdout", default="300,600")
    ap.add_argument("--rare-share", type=float, default=0.02, help="the rare class's share of predictions")
    ap.add_argument("--rare-accuracy", type=float, default=0.6)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    n_classes = 10
    share = [(1 - args.rare_share) / (n_classes - 1)] * (n_classes - 1) + [args.rare_share]
    acc = list(np.linspace(0.99, 0.95, n_classes - 1)) + [args.rare_accuracy]
    y, pred, score = population(100_000, rng, acc, share)
    probs = top_probs(pred, score, n_classes)
    rare = n_classes - 1
    print(f"population: 100,000 items, 10 classes, rare class {args.rare_share:.0%} of predictions, "
          f"right {args.rare_accuracy:.0%}; the others right 95-99%")
    print("| hold-out | mode | coverage | draws below 0.95 overall | (draw, class) pairs below 0.95 | "
          "rare-class proposals per draw | rare-class precision |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for n in [int(v) for v in args.holdout.split(",")]:
        idx_all = [rng.choice(len(y), n, replace=False) for _ in range(args.draws)]
        for mode in ("pooled", "per_class", "auto"):
            cov, low, pairs_low, pairs, rare_n, rare_k = [], 0, 0, 0, 0, 0
            for idx in idx_all:
                ths = thresholds_by_mode(mode, probs[idx], y[idx])
                cut = np.array([np.inf if t is None else t for t in ths])
                above = score >= cut[pred]
                cov.append(above.mean())
                if above.any():
                    low += int((pred[above] == y[above]).mean() < 0.95)
                for c in range(n_classes):
                    sel = above & (pred == c)
                    if sel.any():
                        pairs += 1
                        pairs_low += int((y[sel] == c).mean() < 0.95)
                sel = above & (pred == rare)
                rare_n += int(sel.sum())
                rare_k += int((y[sel] == rare).sum())
            print(f"| {n} | {mode} | {np.mean(cov):.3f} | {low / args.draws:.3f} | {pairs_low}/{pairs} | "
                  f"{rare_n / args.draws:.0f} | {rare_k / rare_n if rare_n else float('nan'):.3f} |")


if __name__ == "__main__":
    main()
