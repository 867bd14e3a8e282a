"""Print a markdown table from ``labelloop simulate`` outputs (one or more ``summary.json``).

    .venv/bin/python lab/benchmarks/summarize_sim.py sim/summary.json [more ...]

With ``--baseline`` (the ``summary.json`` of ``--strategy random`` runs on the same seeds)
it also prints the label efficiency: how many labels random sampling needs to reach the
active runs' certified coverage, per seed and on the mean curves
(:func:`lab.metrics.label_efficiency`, linear between the baseline's budgets), with
a 95% bootstrap interval over seeds (:func:`lab.metrics.efficiency_interval`, the
seeds both arms ran, redrawn in pairs); where the runs report it, the same on the coverage
fresh hold-outs from each pool would certify (``fresh_holdout_coverage``, far less noisy
than one hold-out per run).

    .venv/bin/python lab/benchmarks/summarize_sim.py sim/summary.json --baseline sim-random/summary.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from statistics import mean, stdev
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lab import metrics  # noqa: E402
from lab.metrics import efficiency_interval, label_efficiency, share_below  # noqa: E402


def load(paths: list[str]) -> list[dict[str, Any]]:
    return [r for p in paths for r in json.load(open(p))]


def at(run: dict[str, Any], budget: int) -> dict[str, Any]:
    """A run's checkpoint at ``budget`` labels."""
    return next(x for x in run["at_budgets"] if x and x["labels"] == budget)


def budgets_of(rows: list[dict[str, Any]]) -> list[int]:
    return sorted({b["labels"] for r in rows for b in r["at_budgets"] if b})


def table(rows: list[dict[str, Any]]) -> None:
    print("| budget | runs with proposals | coverage mean (min-max) | standard error of the mean "
          "| realised precision min | runs with precision >= 0.95 | pool accuracy mean "
          "| best-in-hindsight coverage mean | coverage on fresh hold-outs mean |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for b in budgets_of(rows):
        pts = [at(r, b) for r in rows]
        cov = [p["coverage"] for p in pts]
        precs = [p["precision"] for p in pts if p["precision"] is not None]
        ok = sum(1 for p in pts if p["precision"] is None or p["precision"] >= 0.95)
        sem = stdev(cov) / len(cov) ** 0.5 if len(cov) > 1 else float("nan")
        fresh = [p.get("fresh_holdout_coverage") for p in pts]
        fresh_mean = f"{mean(f for f in fresh if f is not None):.3f}" if None not in fresh else "-"
        print(f"| {b} | {len(precs)} of {len(pts)} | {mean(cov):.3f} ({min(cov):.3f}-{max(cov):.3f}) | {sem:.3f} | "
              f"{min(precs) if precs else float('nan'):.4f} | {ok} of {len(pts)} | "
              f"{mean(p['pool_accuracy'] for p in pts):.3f} | {mean(p['hindsight_coverage'] for p in pts):.3f} | "
              f"{fresh_mean} |")
    secs = [r["seconds"] for r in rows]
    print(f"seconds per run: mean {mean(secs):.0f}, max {max(secs):.0f}")
    keys = rows[0]["timing"].keys()
    print("timing mean:", {k: round(mean(r["timing"][k] for r in rows)) for k in keys})


def mean_curve(rows: list[dict[str, Any]], key: str = "coverage") -> list[dict[str, Any]]:
    """One point per budget: the mean of ``key`` over the runs."""
    return metrics.mean_curve([r["at_budgets"] for r in rows], key)


def has_key(rows: list[dict[str, Any]], key: str) -> bool:
    """Whether every checkpoint of every run reports ``key`` (older outputs lack the fresh hold-outs)."""
    return all(b.get(key) is not None for r in rows for b in r["at_budgets"] if b)


def curves(rows: list[dict[str, Any]], key: str) -> list[list[dict[str, Any]]]:
    """Each run's checkpoints with ``key`` as their ``coverage`` (what the efficiency reads)."""
    return [[{"labels": b["labels"], "coverage": b[key]} for b in r["at_budgets"] if b] for r in rows]


def _num(x: Any) -> str:
    return f"{x:.2f}x" if isinstance(x, float) else f"{x}x"


def _ratio(e: dict[str, Any]) -> str:
    return "-" if e.get("ratio") is None else _num(e["ratio"])


def efficiency(active: list[dict[str, Any]], baseline: list[dict[str, Any]]) -> None:
    by_seed = {r["seed"]: r for r in baseline}
    budgets = budgets_of(active)
    print("\nlabel efficiency (labels random sampling needs for the same certified coverage / labels)")
    print("| seed | " + " | ".join(f"{b}: coverage, random needs, ratio" for b in budgets) + " |")
    print("| --- | " + " | ".join("---" for _ in budgets) + " |")
    for r in active:
        paired = by_seed.get(r["seed"])
        if paired is None:
            continue
        effs = [label_efficiency(r["at_budgets"], paired["at_budgets"], b) for b in budgets]
        cells = [f"{e.get('coverage', 0):.3f}, {e.get('random_labels_needed', '-')!s:.6}, {_ratio(e)}" for e in effs]
        print(f"| {r['seed']} | " + " | ".join(cells) + " |")
    seeds = {r["seed"] for r in active} & set(by_seed)
    act = sorted((r for r in active if r["seed"] in seeds), key=lambda r: r["seed"])  # paired with base
    base = [by_seed[s] for s in sorted(seeds)]
    keys = [("coverage", "certified coverage"), ("hindsight_coverage", "best-in-hindsight coverage")]
    if has_key(act + base, "fresh_holdout_coverage"):
        keys.insert(1, ("fresh_holdout_coverage", "certified coverage on fresh hold-outs"))
    for key, name in keys:
        a, b = mean_curve(act, key), mean_curve(base, key)
        effs = [label_efficiency(a, b, x) for x in budgets]
        print(f"mean curves over {len(seeds)} seeds, {name}: " + "; ".join(
            f"{e['budget']} labels: {e.get('coverage', 0):.3f} -> random needs "
            f"{e.get('random_labels_needed', '-')!s:.6} ({_ratio(e)})" for e in effs))
    for key, name in keys[:-1]:  # not in hindsight
        for x in budgets:
            e = efficiency_interval(curves(act, key), curves(base, key), x, paired=True)
            print(f"{name}, {x} labels: {_ratio(e)} (95% bootstrap interval over seeds {_num(e['low'])} to "
                  f"{_num(e['high'])}; {share_below(e, 1.5):.0%} of {e['reps']} replicates below 1.5x)")
    print("random sampling's mean curve: " + ", ".join(
        f"{p['labels']}: {p['coverage']:.3f}" for p in mean_curve(base)))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("summaries", nargs="+")
    ap.add_argument("--baseline", nargs="+", default=[], help="summary.json of random-sampling runs")
    args = ap.parse_args(argv)
    rows = load(args.summaries)
    print(f"{len(rows)} runs: {args.summaries}")
    table(rows)
    if args.baseline:
        efficiency(rows, load(args.baseline))


if __name__ == "__main__":
    main()
