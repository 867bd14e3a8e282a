"""What a simulated run measures, from arrays: fresh hold-outs, label efficiency and its interval.

Pure numpy (and :mod:`learning`'s calibration): no database, no model.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from learning import calibration
from learning.calibration_auto import thresholds_by_mode, top_probs


def fresh_holdouts(scores: np.ndarray, correct: np.ndarray, n_holdout: int, *, draws: int = 200, seed: int = 0,
                   target: float = 0.95, delta: float = 0.05, mode: str = "pooled", pred: np.ndarray | None = None,
                   truth: np.ndarray | None = None, n_classes: int | None = None,
                   **options: Any) -> dict[str, float]:
    """What fresh random hold-outs of ``n_holdout`` items from the pool itself would certify.

    ``scores`` / ``correct``: ``[N]`` the model's top score on each pool item and whether its
    top class is right. Each of ``draws`` seeded draws calibrates on ``n_holdout`` items under
    the policy's ``mode`` (``pooled``; ``auto`` and ``per_class`` also need each item's top
    class ``pred [N]``, true class ``truth [N]`` and ``n_classes``; ``options`` go on to
    :func:`learning.calibration.calibrate`) and pre-labels the pool at the thresholds it proves.
    Returns the mean certified ``coverage`` of the pool, the share of draws that certify
    ``none`` and the share whose pre-labels fall ``below_target``. A run's own certificate is
    one such draw (its hold-out was drawn from the pool as it then was): the mean over draws is
    the same expectation without that draw's luck, so it tells a weak model from an unlucky
    hold-out and compares policies on far fewer seeds.
    """
    if not 0 < n_holdout <= len(scores):
        raise ValueError(f"need 0 < n_holdout <= {len(scores)} pool items, got {n_holdout}")
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    scores, correct = np.asarray(scores, dtype=np.float64), np.asarray(correct, dtype=bool)
    if mode != "pooled" and (pred is None or truth is None or not n_classes):
        raise ValueError(f"calibration {mode!r} needs pred, truth and n_classes")
    probs = top_probs(pred, scores, n_classes) if mode != "pooled" else None  # type: ignore[arg-type]
    rng = np.random.default_rng(seed)
    cov, none, low = np.zeros(draws), 0, 0
    for i in range(draws):
        idx = rng.choice(len(scores), n_holdout, replace=False)
        if probs is None:
            t = calibration.calibrate(scores[idx], correct[idx], target=target, delta=delta, **options)
            above = scores >= t.threshold if t.threshold is not None else np.zeros(len(scores), bool)
        else:
            ths = thresholds_by_mode(mode, probs[idx], np.asarray(truth)[idx], target=target, delta=delta, **options)
            cut = np.array([np.inf if t is None else t for t in ths])
            above = scores >= cut[np.asarray(pred, dtype=np.int64)]
        if not above.any():
            none += 1
            continue
        cov[i] = float(above.mean())
        low += int(correct[above].mean() < target)
    return {"coverage": float(cov.mean()), "none": none / draws, "below_target": low / draws}


def best_hindsight(scores: np.ndarray, correct: np.ndarray, target: float) -> float:
    """Largest coverage whose precision on the pool itself reaches ``target`` (an upper reference)."""
    if len(scores) == 0:
        return 0.0
    order = np.argsort(-scores)
    prec = np.cumsum(correct[order]) / np.arange(1, len(order) + 1)
    ok = np.flatnonzero(prec >= target)
    return float((ok.max() + 1) / len(scores)) if len(ok) else 0.0


def label_efficiency(active: list[dict], baseline: list[dict], budget: int) -> dict[str, Any]:
    """How many labels random sampling needs to reach the active run's coverage at ``budget``."""
    a = next((p for p in active if p["labels"] == budget), None)
    if a is None:
        return {"budget": budget, "ratio": None}
    target_cov = a["coverage"]
    pts = [(p["labels"], p["coverage"]) for p in baseline]
    for (l0, c0), (l1, c1) in zip(pts, pts[1:], strict=False):
        if c0 < target_cov <= c1:
            need = l0 + (l1 - l0) * (target_cov - c0) / (c1 - c0)
            return {"budget": budget, "coverage": target_cov, "random_labels_needed": need, "ratio": need / budget}
    if pts and pts[0][1] >= target_cov:
        return {"budget": budget, "coverage": target_cov, "random_labels_needed": pts[0][0],
                "ratio": pts[0][0] / budget}
    last = pts[-1][0] if pts else 0
    return {"budget": budget, "coverage": target_cov, "random_labels_needed": f"> {last}",
            "ratio": f"> {last / budget:.2f}" if budget else None}


def mean_curve(runs: list[list[dict[str, Any]]], key: str = "coverage") -> list[dict[str, Any]]:
    """One point per budget every run has: the mean of ``key`` over the runs' checkpoints,
    under ``coverage`` (what :func:`label_efficiency` reads) whatever ``key`` is."""
    if not runs:
        return []
    budgets = sorted(set.intersection(*({p["labels"] for p in r if p} for r in runs)))
    return [{"labels": b, "coverage": float(np.mean([next(p[key] for p in r if p and p["labels"] == b)
                                                     for r in runs]))} for b in budgets]


def efficiency_interval(active: list[list[dict[str, Any]]], baseline: list[list[dict[str, Any]]], budget: int,
                        *, level: float = 0.95, reps: int = 2000, seed: int = 0,
                        paired: bool = False) -> dict[str, Any]:
    """Label efficiency at ``budget`` on the mean curves, with a percentile bootstrap interval.

    ``active`` / ``baseline``: one checkpoint list per seed. Each replicate redraws the seeds
    of each arm with replacement and recomputes :func:`label_efficiency` on the mean curves;
    a coverage random sampling never reached counts as above every finite ratio. ``paired``:
    ``active[i]`` and ``baseline[i]`` ran on the same pool (same seed) and are redrawn
    together, so that how hard a pool is counts once. Seeds are the unit because a run's
    checkpoints share one model history and one hold-out: the spread between seeds is what
    a new project would see. Returns ``ratio`` (all seeds), the
    interval's ends ``low`` and ``high`` (``"> x"`` where an end lies past the baseline's last
    budget) and the replicates (``draws``, for :func:`share_below`).
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be between 0 and 1, got {level}")
    if not active or not baseline:
        raise ValueError("need at least one run in each arm")
    if paired and len(active) != len(baseline):
        raise ValueError(f"paired arms need as many runs: {len(active)} and {len(baseline)}")
    point = label_efficiency(mean_curve(active), mean_curve(baseline), budget)
    if point["ratio"] is None:
        raise ValueError(f"not every active run has a checkpoint at {budget} labels")
    rng = np.random.default_rng(seed)
    draws = np.empty(reps)
    for i in range(reps):
        ia = rng.integers(0, len(active), len(active))
        ib = ia if paired else rng.integers(0, len(baseline), len(baseline))
        a, b = [active[j] for j in ia], [baseline[j] for j in ib]
        draws[i] = _as_number(label_efficiency(mean_curve(a), mean_curve(b), budget)["ratio"])
    lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2], method="inverted_cdf")  # no inf - inf
    last = max(p["labels"] for p in mean_curve(baseline)) / budget
    return {"budget": budget, "ratio": point.get("ratio"), "level": level, "reps": reps,
            "low": float(lo) if np.isfinite(lo) else f"> {last:.2f}",
            "high": float(hi) if np.isfinite(hi) else f"> {last:.2f}", "draws": draws}


def share_below(interval: dict[str, Any], ratio: float) -> float:
    """Share of :func:`efficiency_interval`'s bootstrap replicates below ``ratio``."""
    return float(np.mean(interval["draws"] < ratio))


def _as_number(ratio: Any) -> float:
    """``label_efficiency``'s ratio as a number: ``"> x"`` (never reached) is infinity."""
    if ratio is None:
        return float("nan")
    return float("inf") if isinstance(ratio, str) else float(ratio)
