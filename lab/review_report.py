"""Summaries and markdown tables of the review experiments' runs (plain dicts in, text out)."""

from __future__ import annotations

from typing import Any

import numpy as np


def _mean(xs: list[Any]) -> float | None:
    vals = [float(x) for x in xs if x is not None]
    return float(np.mean(vals)) if vals else None


def summarize(kind: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over seeds and the acceptance verdicts."""
    if kind == "actions":
        api = [r["actions_per_item"] for r in runs]
        purity = [r["grid_purity_mean"] for r in runs]
        return {"actions_per_item": api, "actions_per_item_mean": _mean(api), "grid_purity": purity,
                "grid_purity_mean": _mean(purity), "target_actions_met": all(a <= 0.35 for a in api),
                "target_purity_met": all(p is not None and p >= 0.9 for p in purity)}
    if kind == "label-errors":
        rec = [r["recall_at_cut"] for r in runs]
        marks = sorted({c["labels"] for r in runs for c in r.get("checkpoints", [])})
        by_mark = {m: [c for r in runs for c in r.get("checkpoints", []) if c["labels"] == m] for m in marks}
        clean = runs[0].get("noise") == 0
        per = {m: {"flagged_share": _mean([c["flagged_share"] for c in cs]),
                   "flagged_share_max": max(c["flagged_share"] for c in cs),
                   "precision": _mean([c["precision"] for c in cs]), "recall": _mean([c["recall"] for c in cs])}
               for m, cs in by_mark.items()}
        whole = {"precision": _mean([r["precision_all_flags"] for r in runs]),
                 "recall": _mean([r["recall_all_flags"] for r in runs])}
        if clean:  # every label right: at most 2% of human labels flagged at each checkpoint
            met = all(c["flagged_share"] <= 0.02 for cs in by_mark.values() for c in cs)
        else:  # 5% corrupted: precision and recall >= 0.6 over the whole run
            met = all((r["precision_all_flags"] or 0) >= 0.6 and (r["recall_all_flags"] or 0) >= 0.6 for r in runs)
        return {"at_checkpoints": per, "whole_run": whole, "recall_at_cut": rec, "recall_mean": _mean(rec),
                "precision_at_cut": [r["precision_at_cut"] for r in runs],
                "precision_mean": _mean([r["precision_at_cut"] for r in runs]),
                "target_met": met}
    if kind == "audit":
        cov = [r["all_versions_covered"] for r in runs]
        pooled = [r["pooled"]["covered"] for r in runs]
        redraws = [d for r in runs for d in r.get("redraws", [])]
        draws = len(runs) + len(redraws)  # independent audit draws (a redraw keeps the labels, not the draw)
        covered = sum(bool(c) for c in cov) + sum(bool(d["all_versions_covered"]) for d in redraws)
        return {"seeds_all_versions_covered": sum(bool(c) for c in cov), "seeds": len(runs),
                "seeds_pooled_covered": sum(bool(c) for c in pooled),
                "seeds_with_audits": sum(r["audited"] > 0 for r in runs),
                "redraws": len(redraws), "redraws_covered": sum(bool(d["all_versions_covered"]) for d in redraws),
                "draws": draws, "draws_covered": covered,
                "target_met": covered >= 0.9 * draws if draws >= 10 else None}
    if kind == "strategies":
        names = sorted({n for r in runs for n in r["runs"]})
        keys = sorted({k for r in runs for v in r["runs"].values() for k in v["labels_to"]})
        table = {n: {k: [r["runs"][n]["labels_to"][k] for r in runs if n in r["runs"]] for k in keys} for n in names}
        at = {n: {b: _mean([r["runs"][n]["at"].get(b) for r in runs if n in r["runs"]])
                  for b in ("1000", "2000", "3000")} for n in names}
        ratios: dict[str, list[Any]] = {}
        for k in keys:  # how many times fewer labels the default strategy needs than random
            for r in runs:
                rand, default = (r["runs"].get(n, {}).get("labels_to", {}).get(k) for n in ("random", "margin"))
                ratios.setdefault(k, []).append(
                    None if default is None else rand / default if rand is not None
                    else f"> {r['budget'] / default:.2f} (random never reached it)")
        return {"labels_to": table, "pool_accuracy_at": at, "random_over_margin": ratios}
    return {}


def _f(x: Any, nd: int = 3) -> str:
    return "-" if x is None else f"{x:.{nd}f}" if isinstance(x, float) else str(x)


def _verdict(ok: bool | None) -> str:
    return "fewer than 10 draws, not judged" if ok is None else "met" if ok else "not met"


def _version_row(run: str, v: dict[str, Any]) -> str:
    lo, hi = v["interval"]
    return (f"| {run} | v{v['version']} | {v['auto_accepted']} | {v['audited']} | {v['audit_right']} | "
            f"{_f(v['reported_precision'])} | [{_f(lo)}, {_f(hi)}] | {_f(v['true_precision'])} | {v['covered']} |")


def markdown(report: dict[str, Any]) -> str:
    """A short table per experiment (the JSON holds everything)."""
    kind, runs, summ = report["experiment"], report["runs"], report["summary"]
    lines = [f"## {kind}", "", f"`{report.get('command', '')}`", ""]
    if kind == "actions":
        lines += ["| seed | actions / item | labelled | grid purity (pages) | purity (items) | pages served "
                  "| by kind | labels by route | trainings | seconds |", "|" + " --- |" * 10]
        lines += [f"| {r['seed']} | {_f(r['actions_per_item'])} | {_f(r['labelled_share'])} | "
                  f"{_f(r['grid_purity_mean'])} | {_f(r['grid_purity_items'])} | {r['grid_pages_served']} | "
                  f"{r['by_kind']} | {r['labels_by_route']} | {r['trainings']} | {r['seconds']:.0f} |" for r in runs]
        lines += ["", f"Mean actions per item {_f(summ['actions_per_item_mean'])} (target <= 0.35: "
                  f"{'met' if summ['target_actions_met'] else 'not met'}); mean grid purity "
                  f"{_f(summ['grid_purity_mean'])} (target >= 0.9: "
                  f"{'met' if summ['target_purity_met'] else 'not met'})."]
    elif kind == "strategies":
        keys = sorted({k for r in runs for v in r["runs"].values() for k in v["labels_to"]})
        lines += ["| seed | strategy | " + " | ".join(f"labels to {k}" for k in keys)
                  + " | pool acc. @1000 | @2000 | @3000 |", "|" + " --- |" * (len(keys) + 5)]
        for r in runs:
            for name, v in r["runs"].items():
                lines.append(f"| {r['seed']} | {name} | " + " | ".join(_f(v["labels_to"][k], 0) for k in keys)
                             + " | " + " | ".join(_f(v["at"].get(b)) for b in ("1000", "2000", "3000")) + " |")
        lines += ["", "A dash: not reached within the budget of " + str(runs[0]["budget"]) + " labels.", "",
                  "Labels random needs / labels margin (the default) needs, per seed: "
                  + "; ".join(f"{k}: {[_f(x, 2) for x in v]}" for k, v in summ["random_over_margin"].items())
                  + " (target >= 1.3 at 90% pool accuracy)."]
    elif kind == "label-errors":
        lines += ["| seed | labels | corrupted | flags | cut | hits in cut | recall@cut | precision@cut "
                  "| recall (all flags) | precision (all flags) |", "|" + " --- |" * 10]
        lines += [f"| {r['seed']} | {r['labels']} | {r['corrupted']} | {r['flags']} | {r['cut']} | {r['hits_in_cut']} "
                  f"| {_f(r['recall_at_cut'])} | {_f(r['precision_at_cut'])} | {_f(r['recall_all_flags'])} "
                  f"| {_f(r['precision_all_flags'])} |" for r in runs]
        lines += ["", "Flags raised so far, at each checkpoint (nobody resolves a flag):", "",
                  "| seed | labels | corrupted | labels flagged | share flagged | precision | recall | scans |",
                  "|" + " --- |" * 8]
        lines += [f"| {r['seed']} | {c['labels']} | {c['corrupted']} | {c['flagged']} | {_f(c['flagged_share'])} "
                  f"| {_f(c['precision'])} | {_f(c['recall'])} | {c['scans']} |"
                  for r in runs for c in r.get("checkpoints", [])]
        goal = ("at most 2% of labels flagged at every checkpoint" if runs[0].get("noise") == 0
                else "precision and recall >= 0.6 over the whole run, every seed")
        lines += ["", f"Over the whole run: precision {_f(summ['whole_run']['precision'])}, recall "
                  f"{_f(summ['whole_run']['recall'])} (means); {goal}: {'met' if summ['target_met'] else 'not met'}. "
                  f"Top {runs[0]['cut']} by flag score: mean recall {_f(summ['recall_mean'])}, precision "
                  f"{_f(summ['precision_mean'])}."]
    elif kind == "audit":
        lines += ["| seed | version | auto-accepted | audited | audit right | reported | interval | true | covered |",
                  "|" + " --- |" * 9]
        for r in runs:
            lines += [_version_row(str(r["seed"]), v) for v in r["versions"]]
            lines += [_version_row(f"{r['seed']} redraw {j}", v) for j, d in enumerate(r.get("redraws", []))
                      for v in d["versions"]]
            lo, hi = r["pooled"]["interval"]
            lines.append(f"| {r['seed']} | all | {r['auto_accepted']} | {r['audited']} | {r['pooled']['right']} | "
                         f"- | [{_f(lo)}, {_f(hi)}] | {_f(r['true_precision'])} | {r['pooled']['covered']} |")
        lines += ["", f"Seeds whose every audited version's interval covers the truth: "
                  f"{summ['seeds_all_versions_covered']} of {summ['seeds']} (pooled over versions: "
                  f"{summ['seeds_pooled_covered']}; seeds with audits: {summ['seeds_with_audits']}); "
                  f"redraws of the audit (same labels, a new audit draw): {summ['redraws_covered']} of "
                  f"{summ['redraws']} covered; all draws: {summ['draws_covered']} of {summ['draws']}; target >= 9 of "
                  f"10: {_verdict(summ['target_met'])}."]
    return "\n".join(lines) + "\n"

