"""The default calibration (``auto``): a pooled statement as soon as the hold-out allows one,
per-class statements as each class's evidence grows, and a guard for classes shown below
the target (pure functions).

One call makes a *family* of statements, all of which hold together with probability at
least ``1 - delta`` over the random draw of the hold-out set (``delta`` split between them
by a union bound):

* **pooled** (``POOLED_SHARE`` of ``delta``): pre-labels of the *eligible* classes, taken
  together, are right at least ``target`` of the time. A class is eligible once at least
  ``min_class_items`` hold-out items are predicted as it. Eligibility reads predictions only,
  never labels, so the pooled walk (:func:`learning.calibration.calibrate`) on the eligible
  classes' hold-out items keeps its exact guarantee; a class the hold-out has barely seen
  predicted (a rare class) is not pre-labelled on the strength of the others.
* **guard** (``GUARD_SHARE`` of ``delta``, split over classes): an eligible class is stopped
  when its own hold-out items at the pooled threshold show it below ``target`` with
  confidence (one-sided Clopper-Pearson *upper* bound below ``target``). Stopping a class
  whose precision is below the target can only raise the precision of the rest, so the
  pooled statement survives the guard whenever the guard's own statements hold.
* **per class** (``PER_CLASS_SHARE`` of ``delta``, split over classes, simultaneous): class
  ``c`` is also certified on its own when :func:`learning.calibration.calibrate` on the items
  predicted ``c`` proves a threshold at or below the one in force. With precision not falling
  as the threshold rises (the assumption :mod:`learning.calibration` states), the class's
  pre-labels at the threshold in force are then right at least ``target`` of the time. When
  no pooled threshold is proven, each class certified on its own is pre-labelled at its own
  threshold: every such class meets the target, so all of them together do too.

``per_class`` (each class proves its own threshold at level ``delta``) and ``pooled`` (one
statement, no guard) stay available for teams that need exactly one of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import beta as beta_dist

from learning.calibration import Threshold, calibrate, calibrate_per_class, calibrate_pooled

__all__ = ["AutoCalibration", "calibrate_auto", "clopper_pearson_upper", "describe", "thresholds_by_mode", "top_probs"]

POOLED_SHARE, GUARD_SHARE, PER_CLASS_SHARE = 0.8, 0.1, 0.1
MIN_CLASS_ITEMS = 20


@dataclass(frozen=True)
class AutoCalibration:
    """What ``auto`` decided. ``thresholds``: ``[C]`` threshold in force per class (``None``:
    not pre-labelled); ``pooled``: the pooled walk on the eligible classes; ``per_class``:
    ``[C]`` each class's own walk (level ``delta * PER_CLASS_SHARE / C``); ``eligible``,
    ``stopped`` and ``certified``: class indices (eligible for the pooled statement, stopped
    by the guard, certified on their own at the threshold in force)."""

    thresholds: list[float | None]
    pooled: Threshold
    per_class: list[Threshold]
    eligible: list[int]
    stopped: list[int]
    certified: list[int]
    guard: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self, classes: list[str]) -> dict[str, Any]:
        return {"thresholds": {c: t for c, t in zip(classes, self.thresholds, strict=True)},
                "eligible": [classes[i] for i in self.eligible], "stopped": [classes[i] for i in self.stopped],
                "certified": [classes[i] for i in self.certified], "guard": self.guard,
                "statement": describe(self, classes)}


def clopper_pearson_upper(k: int, n: int, level: float) -> float:
    """One-sided ``1 - level`` upper confidence bound on a binomial proportion ``k / n``
    (1.0 when ``k == n``); ``P(bound < p) <= level`` for the true proportion ``p``."""
    if not 0 <= k <= n or n == 0:
        raise ValueError(f"need 0 <= k <= n and n > 0, got k={k}, n={n}")
    return 1.0 if k == n else float(beta_dist.ppf(1 - level, k + 1, n - k))


def calibrate_auto(probs: np.ndarray, y_true: np.ndarray, *, target: float = 0.95, delta: float = 0.05,
                   min_class_items: int = MIN_CLASS_ITEMS, **options: Any) -> AutoCalibration:
    """The ``auto`` family of statements for multiclass hold-out ``probs [N, C]`` and labels
    ``y_true [N]`` (int). ``options`` go to :func:`learning.calibration.calibrate`. The
    guarantee is in the module docstring."""
    p, y = np.asarray(probs, dtype=np.float64), np.asarray(y_true).astype(np.int64)
    if p.ndim != 2 or y.shape != p.shape[:1]:
        raise ValueError(f"probs must be [N, C] and y_true [N], got {p.shape} and {y.shape}")
    n_classes = p.shape[1]
    pred, score = p.argmax(axis=1), p.max(axis=1)
    counts = np.bincount(pred, minlength=n_classes)
    eligible = [c for c in range(n_classes) if counts[c] >= min_class_items]
    rows = np.isin(pred, eligible)
    pooled = calibrate(score[rows], pred[rows] == y[rows], target=target, delta=delta * POOLED_SHARE, **options)
    per = calibrate_per_class(p, y, target=target, delta=delta * PER_CLASS_SHARE, simultaneous=True, **options)
    level = delta * GUARD_SHARE / n_classes
    thresholds: list[float | None] = [None] * n_classes
    stopped, guard = [], []
    if pooled.threshold is not None:
        for c in eligible:
            sel = (pred == c) & (score >= pooled.threshold)
            n, k = int(sel.sum()), int((y[sel] == c).sum())
            upper = clopper_pearson_upper(k, n, level) if n else 1.0
            if upper < target:
                stopped.append(c)
                guard.append({"class": c, "n_above": n, "k_correct": k, "upper_bound": round(upper, 4)})
            else:
                thresholds[c] = pooled.threshold
    for c, t in enumerate(per):  # a class proven on its own joins at its own threshold
        if thresholds[c] is None and t.threshold is not None:
            thresholds[c] = t.threshold
    certified = [c for c, t in enumerate(per) if t.threshold is not None and thresholds[c] is not None
                 and t.threshold <= thresholds[c]]  # type: ignore[operator]
    return AutoCalibration(thresholds, pooled, per, eligible, stopped, certified, guard)


def describe(cal: AutoCalibration, classes: list[str]) -> str:
    """The statements in force, in words a labeller or manager reads."""
    t, d = cal.pooled.target, cal.pooled.delta / POOLED_SHARE
    conf = f"with {1 - d:.0%} confidence"
    on = [classes[c] for c, th in enumerate(cal.thresholds) if th is not None]
    if not on:
        reason = cal.pooled.reason or "no class can be proven yet"
        return f"nothing is pre-labelled: {reason}"
    parts = []
    if cal.pooled.threshold is not None:
        pooled_on = [classes[c] for c in cal.eligible if c not in cal.stopped]
        parts.append(f"pooled: proposals are right at least {t:.0%} of the time overall, {conf} "
                     f"({', '.join(pooled_on)})")
    own = [classes[c] for c in cal.certified]
    if own:
        parts.append(f"per class for {', '.join(own)}")
    if cal.stopped:
        parts.append(f"stopped: {', '.join(classes[c] for c in cal.stopped)} (its hold-out shows it below {t:.0%})")
    left = [classes[c] for c in range(len(classes)) if c not in cal.eligible and cal.thresholds[c] is None]
    if left and cal.pooled.threshold is not None:
        parts.append(f"not yet: {', '.join(left)} (too few hold-out images predicted as it)")
    return "; ".join(parts)


def thresholds_by_mode(mode: str, probs: np.ndarray, y_true: np.ndarray, *, target: float = 0.95,
                       delta: float = 0.05, **options: Any) -> list[float | None]:
    """``[C]`` thresholds in force under a policy's ``calibration`` (``auto``, ``per_class`` or
    ``pooled``) for multiclass hold-out ``probs [N, C]`` and labels ``y_true [N]``."""
    if mode == "auto":
        return calibrate_auto(probs, y_true, target=target, delta=delta, **options).thresholds
    if mode == "per_class":
        return [t.threshold for t in calibrate_per_class(probs, y_true, target=target, delta=delta, **options)]
    if mode == "pooled":
        t = calibrate_pooled(probs, y_true, target=target, delta=delta, **options)
        return [t.threshold] * int(np.shape(probs)[1])
    raise ValueError(f"calibration must be auto, per_class or pooled, got {mode!r}")


def top_probs(pred: np.ndarray, score: np.ndarray, n_classes: int) -> np.ndarray:
    """``[N, C]`` probabilities with the given top class ``pred [N]`` and top score ``score [N]``
    (the rest spread evenly): all any calibration mode reads of a prediction."""
    pred, score = np.asarray(pred, dtype=np.int64), np.asarray(score, dtype=np.float64)
    out = np.repeat(((1.0 - score) / max(n_classes - 1, 1))[:, None], n_classes, axis=1)
    out[np.arange(len(pred)), pred] = score
    return out
