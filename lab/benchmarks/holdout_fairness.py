"""Is a ``labelloop simulate`` run's calibrating hold-out harder than the pool it certifies?

For the run's last model: each calibrating hold-out image in the top ``--top`` share of the
pool's scores is matched with the ``--near`` pool images nearest to it in score; their error
rate is the chance a fair sample's image there would be wrong. Prints, per run and summed,
the hold-out's mistakes seen against that expectation, and how many hold-out images the
strategy stream took (``Item.holdout_taken_by``).

    .venv/bin/python lab/benchmarks/holdout_fairness.py sim200 sim201 ...

(each argument is a ``--out`` folder of a one-seed ``labelloop simulate`` run)
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lab.fashion import FASHION_CLASSES, load_fashion  # noqa: E402


def fairness(out: Path, top: float, near: int) -> dict[str, float]:
    report = json.loads(next(out.glob("seed*/report.json")).read_text())
    cfg = report["config"]
    _, y = load_fashion(Path(cfg["dataset"]), int(cfg["pool"]), int(cfg["seed"]))
    con = sqlite3.connect(f"file:{Path(report['active']['data_dir']) / 'sim.db'}?mode=ro", uri=True)
    mv = con.execute("SELECT max(id) FROM model_version").fetchone()[0]

    def rows(where: str) -> tuple[np.ndarray, np.ndarray]:
        got = con.execute("SELECT i.file_name, p.score, p.data FROM prediction p JOIN item i ON i.id = p.item_id "
                          f"WHERE p.model_version_id = ? AND {where}", (mv,)).fetchall()
        scores = np.array([r[1] for r in got])
        right = np.array([FASHION_CLASSES.index(json.loads(r[2])["top"][0][0]) == y[int(r[0][3:8])] for r in got])
        return scores, right

    pool_s, pool_ok = rows("p.state IN ('none', 'proposed') AND i.status IN ('unlabelled', 'skipped', 'proposed')")
    held_s, held_ok = rows("p.state = 'holdout'")
    taken = con.execute("SELECT count(*) FROM item WHERE holdout_taken_by IS NOT NULL").fetchone()[0]
    con.close()
    order = np.argsort(pool_s)
    sorted_s, sorted_ok = pool_s[order], pool_ok[order]
    cut = np.quantile(pool_s, 1.0 - top)
    seen = expected = 0.0
    for score, ok in zip(held_s, held_ok, strict=True):
        if score < cut:
            continue
        j = int(np.searchsorted(sorted_s, score))
        lo, hi = max(0, j - near // 2), min(len(sorted_s), j + near // 2)
        expected += 1.0 - float(sorted_ok[lo:hi].mean())
        seen += float(not ok)
    return {"seed": int(cfg["seed"]), "holdout": len(held_s), "taken": int(taken), "seen": seen, "expected": expected}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--top", type=float, default=0.6, help="share of the pool's scores looked at, from the top")
    ap.add_argument("--near", type=int, default=300, help="pool images matched to each hold-out image")
    args = ap.parse_args()
    print("| run | seed | calibrating hold-out | taken by the strategy | mistakes seen | expected of a fair sample |")
    print("| --- | --- | --- | --- | --- | --- |")
    seen = expected = 0.0
    for run in args.runs:
        r = fairness(run, args.top, args.near)
        seen, expected = seen + r["seen"], expected + r["expected"]
        print(f"| {run.name} | {r['seed']} | {r['holdout']} | {r['taken']} | {r['seen']:.0f} | {r['expected']:.1f} |")
    print(f"| all | | | | {seen:.0f} | {expected:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
