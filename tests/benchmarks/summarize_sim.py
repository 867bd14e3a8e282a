"""Print a markdown table from ``labelloop simulate`` outputs (one or more ``summary.json``).

    .venv/bin/python tests/benchmarks/summarize_sim.py sim/summary.json [more ...]
"""

from __future__ import annotations

import json
import sys
from statistics import mean


def main(paths: list[str]) -> None:
    rows = [r for p in paths for r in json.load(open(p))]
    budgets = sorted({b["labels"] for r in rows for b in r["at_budgets"] if b})
    print(f"{len(rows)} runs: {paths}")
    print("| budget | runs with proposals | coverage mean (min-max) | realised precision min "
          "| runs with precision >= 0.95 | pool accuracy mean | best-in-hindsight coverage mean |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for b in budgets:
        pts = [next(x for x in r["at_budgets"] if x and x["labels"] == b) for r in rows]
        cov = [p["coverage"] for p in pts]
        precs = [p["precision"] for p in pts if p["precision"] is not None]
        ok = sum(1 for p in pts if p["precision"] is None or p["precision"] >= 0.95)
        print(f"| {b} | {len(precs)} of {len(pts)} | {mean(cov):.3f} ({min(cov):.3f}-{max(cov):.3f}) | "
              f"{min(precs) if precs else float('nan'):.4f} | {ok} of {len(pts)} | "
              f"{mean(p['pool_accuracy'] for p in pts):.3f} | {mean(p['hindsight_coverage'] for p in pts):.3f} |")
    secs = [r["seconds"] for r in rows]
    print(f"seconds per run: mean {mean(secs):.0f}, max {max(secs):.0f}")
    keys = rows[0]["timing"].keys()
    print("timing mean:", {k: round(mean(r["timing"][k] for r in rows)) for k in keys})


if __name__ == "__main__":
    main(sys.argv[1:])
