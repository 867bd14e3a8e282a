"""Replay label-error flag rules over the scans of recorded label-errors runs.

``labelloop simulate-review label-errors ... --out DIR`` saves each scan's evidence in
``DIR/work/evidence-<seed>/`` (the checked labels, their cross-fits, :func:`lab.review_checks.
label_errors_run`). This script runs :func:`learning.hard_examples.flag_label_errors` again over
that sequence of scans with other rules: the odds bar, and whether a later scan withdraws an
open flag its evidence no longer supports (``--withdraw``: ``rule``, the product's
:func:`learning.hard_examples.unsupported_flags`; ``K``: when the flagged class is no longer at
least ``K`` times as probable as the given one; ``rescan``: each scan re-decides, so the open
flags are the last scan's; ``0``: never). Nobody resolves a flag, as in the
run. At each checkpoint it prints the share of labels with an open flag and, against the
corrupted labels, the open flags' precision and recall.

The evidence does not depend on the flags except through the cap and the labels the flags
skip, which the replay recomputes; the items the loop asked for are the run's (flags that took
an image out of training changed the run's later models a little).

    python lab/benchmarks/flag_replay.py le-clean le-noisy --odds 20,30 --withdraw 0,rule --class-threshold on,off
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from learning.hard_examples import FlagRule, flag_label_errors, unsupported_flags


def load_run(folder: Path) -> tuple[list[dict[str, np.ndarray]], dict[str, Any]]:
    ev = next((folder / "work").glob("evidence-*")) if (folder / "work").is_dir() else folder
    scans = [dict(np.load(p)) for p in sorted(ev.glob("scan-*.npz"))]
    return scans, json.loads((ev / "truth.json").read_text())


def replay(scans: list[dict[str, np.ndarray]], truth: dict[str, Any], rule: FlagRule, withdraw: str
           ) -> list[dict[str, Any]]:
    """Per checkpoint: labels checked, open flags, precision and recall of the open flags."""
    corrupted = {int(i) for i in truth["corrupted"]}
    marks = sorted(int(m) for m in truth["checkpoints"])
    open_: dict[int, int] = {}  # item id -> suggested class of its open flag
    rows: list[dict[str, Any]] = []
    last: dict[str, Any] | None = None
    for scan in scans:
        ids, y, fits = scan["item_ids"], scan["y"], scan["fits"].astype(np.float64)
        p = fits.mean(axis=0)
        where = {int(i): k for k, i in enumerate(ids)}
        if withdraw == "rescan":  # each scan re-decides: the open flags are this scan's
            open_.clear()
        elif withdraw == "rule":  # the product's: what the odds bar no longer supports
            held = [(item, where[item], s) for item, s in open_.items() if item in where]
            if held:
                gone = unsupported_flags(y, fits, np.array([k for _, k, _ in held]), np.array([s for *_, s in held]),
                                         rule=rule)
                for (item, _, _), g in zip(held, gone, strict=True):
                    if g:
                        del open_[item]
        elif float(withdraw) > 0:
            for item, s in list(open_.items()):
                k = where.get(item)
                if k is not None and p[k, s] < float(withdraw) * p[k, y[k]]:
                    del open_[item]
        skip = np.array([int(i) in open_ for i in ids])
        for f in flag_label_errors(y, fits, rule=rule, skip=skip, open_flags=len(open_)):
            open_[int(ids[f.index])] = int(f.detail["suggested"])
        n = len(ids)
        bad = corrupted & {int(i) for i in ids}
        hits = len(set(open_) & bad)
        last = {"labels": n, "flagged": len(open_), "share": len(open_) / n, "hits": hits,
                "precision": hits / len(open_) if open_ else None,
                "recall": hits / len(bad) if bad else None}
        while marks and n >= marks[0] - 25:  # a scan within a training of the mark
            rows.append({**last, "checkpoint": marks.pop(0)})
    if marks and last is not None:
        rows.append({**last, "checkpoint": marks[0]})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--odds", default="30", help="comma-separated min_odds values")
    ap.add_argument("--withdraw", default="rule", help="comma-separated: rule, rescan, 0 (never) or odds K")
    ap.add_argument("--share", default=None, help="comma-separated max_share values (default: the rule's)")
    ap.add_argument("--class-threshold", default="on" if FlagRule().class_threshold else "off",
                    help="on, off or on,off: confident learning's per-class bar (default: the rule's)")
    args = ap.parse_args()
    shares = [float(x) for x in args.share.split(",")] if args.share else [FlagRule().max_share]
    print("| run | noise | odds | withdrawal | cap, class bar | checkpoint | labels | flagged | precision | recall |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for run in args.runs:
        scans, truth = load_run(run)
        for odds in (float(x) for x in args.odds.split(",")):
            for w in args.withdraw.split(","):
                for share, ct in ((a, b) for a in shares for b in args.class_threshold.split(",")):
                    rule = replace(FlagRule(), min_odds=odds, max_share=share, class_threshold=ct == "on")
                    for r in replay(scans, truth, rule, w):
                        pr = "-" if r["precision"] is None else f"{r['precision']:.2f}"
                        rc = "-" if r["recall"] is None else f"{r['recall']:.2f}"
                        print(f"| {run.name} | {truth['noise']} | {odds:g} | {w} | {share:g}, {ct} | "
                              f"{r['checkpoint']} | {r['labels']} | {100 * r['share']:.1f}% | {pr} | {rc} |")


if __name__ == "__main__":
    main()
