"""The label-error flags a ``labelloop simulate-review label-errors`` run raised, re-read at
stricter odds: each flag records the suggested class's and the given class's out-of-sample
probabilities, so the flags a higher ``FlagRule.min_odds`` would have raised are the ones
whose odds reach it (a subset, exact while the cap of open flags never bound). Prints, per
odds and checkpoint (labels given before the flag was raised), the share of labels flagged
and the precision and recall against the corrupted labels.

    .venv/bin/python lab/benchmarks/flag_odds.py le-clean le-noisy --odds 20,25,30
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lab.fashion import FASHION_CLASSES, load_fashion  # noqa: E402


def replay(out: Path, odds: list[float]) -> list[dict]:
    report = json.loads((out / "label-errors.json").read_text())
    cfg = report["config"]
    rows = []
    for run in report["runs"]:
        pool_seed = run["seed"] if cfg.get("pool_seed") is None else cfg["pool_seed"]
        _, y = load_fashion(Path(cfg["dataset"]), int(cfg["pool"]), int(pool_seed))
        db = next((out / "work").glob("*/sim.db"))
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        # every human label with its time and whether it is wrong (the oracle's noise)
        labels = con.execute("SELECT a.item_id, a.data, a.created_at, i.file_name FROM annotation a "
                             "JOIN item i ON i.id = a.item_id ORDER BY a.created_at").fetchall()
        given = [(iid, json.loads(d)["labels"], t, FASHION_CLASSES[y[int(fn[3:8])]]) for iid, d, t, fn in labels]
        flags = con.execute("SELECT item_id, detail, created_at FROM review_flag WHERE kind = 'label error'").fetchall()
        con.close()
        for mark in [c["labels"] for c in run["checkpoints"]]:
            upto = given[:mark]
            cut_time = upto[-1][2]
            bad = {iid for iid, lab, _, truth in upto if lab != [truth]}
            for k in odds:
                hit = set()
                for iid, detail, t in flags:
                    d = json.loads(detail)
                    if t <= cut_time and d["suggested_prob"] >= k * d["self_confidence"]:
                        hit.add(iid)
                right = len(hit & bad)
                rows.append({"seed": run["seed"], "noise": cfg["noise"], "labels": mark, "odds": k,
                             "flagged": len(hit), "share": len(hit) / mark, "corrupted": len(bad),
                             "precision": right / len(hit) if hit else None,
                             "recall": right / len(bad) if bad else None})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="--out folders of label-errors runs (one seed each)")
    ap.add_argument("--odds", default="20,25,30")
    args = ap.parse_args()
    odds = [float(x) for x in args.odds.split(",")]
    print("| noise | seed | labels | odds | labels flagged | share | precision | recall |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for out in args.runs:
        for r in replay(out, odds):
            p = "-" if r["precision"] is None else f"{r['precision']:.2f}"
            rc = "-" if r["recall"] is None else f"{r['recall']:.2f} of {r['corrupted']}"
            print(f"| {r['noise']} | {r['seed']} | {r['labels']} | {r['odds']:g} | {r['flagged']} | "
                  f"{r['share']:.3f} | {p} | {rc} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
