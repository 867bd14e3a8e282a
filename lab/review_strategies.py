"""Experiment 2 of :mod:`lab.sim_review`: query strategies, labels to reach an accuracy."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from lab.fashion import FASHION_CLASSES
from lab.simulate import SimConfig, run

log = logging.getLogger("labelloop.sim_review")
MIN_HOLDOUT = 100


def labels_to(curve: list[dict[str, Any]], key: str, level: float) -> float | None:
    """Labels at which ``key`` first reaches ``level`` (linear between checkpoints); None if never."""
    prev = None
    for p in curve:
        v = p.get(key)
        if v is None:
            continue
        if v >= level:
            if prev is None or prev[1] >= level:
                return float(p["labels"])
            (l0, v0), (l1, v1) = prev, (p["labels"], v)
            return float(l0 + (l1 - l0) * (level - v0) / (v1 - v0))
        prev = (p["labels"], v)
    return None


def strategies_run(cfg: SimConfig, strategies: list[str], *, work_dir: Path,
                   levels: tuple[float, ...] = (0.85, 0.9)) -> dict[str, Any]:
    """:func:`lab.simulate.run` for each strategy on one seed's pool."""
    from service.loop.scoring import query_scores

    probs = np.random.default_rng(cfg.seed).dirichlet(np.ones(len(FASHION_CLASSES)), size=1000)
    # how the infer job calls it (no embeddings): does the diverse strategy differ from plain margin at all?
    same = bool(np.array_equal(query_scores("margin_diverse", probs), query_scores("margin", probs)))
    out: dict[str, Any] = {"seed": cfg.seed, "budget": max(cfg.budgets), "runs": {},
                           "margin_diverse_scores_equal_margin_in_infer": same}
    for name in strategies:
        r = run(cfg, work_dir=work_dir, strategy=name)
        curve = [{k: p[k] for k in ("labels", "pool_accuracy", "holdout_accuracy", "coverage", "precision",
                                    "holdout")} for p in r["curve"]]
        out["runs"][name] = {
            "curve": curve, "seconds": r["seconds"],
            # hold-out accuracy only once the hold-out holds MIN_HOLDOUT items (40 labels: 2 items, accuracy 1.0)
            "labels_to": {f"{key}>={lv}": labels_to([p for p in curve if key == "pool_accuracy"
                                                     or (p["holdout"] or 0) >= MIN_HOLDOUT], key, lv)
                          for key in ("pool_accuracy", "holdout_accuracy") for lv in levels},
            "at": {str(b): next((p["pool_accuracy"] for p in curve if p["labels"] == b), None)
                   for b in (500, 1000, 1500, 2000, 2500, 3000, 4000)}}
        log.info("seed %d %s: %s", cfg.seed, name, out["runs"][name]["labels_to"])
    return out

