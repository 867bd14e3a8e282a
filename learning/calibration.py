"""Confidence thresholds that come with a precision guarantee (pure functions).

The question a threshold answers: "if the model pre-labels every item whose score
is at least ``t``, what share of those pre-labels is right?"  That share, over
items drawn the way the hold-out set was drawn, is the *precision at t*,
``p(t) = P(correct | score >= t)``.  :func:`calibrate` returns the lowest
threshold it can *prove* reaches the target precision, or ``None``.

The guarantee
-------------
Let the hold-out set be ``N`` items drawn at random (i.i.d.) from the same stream
as the items to be pre-labelled, and not used for training.  Then, with
probability at least ``1 - delta`` over the draw of the hold-out set, the returned
threshold ``t`` has ``p(t) >= target``.  The statement is about the population
precision of the rule "pre-label when score >= t"; the precision realised on any
one finite batch scatters around ``p(t)`` like a binomial proportion.  With
probability at most ``delta`` the threshold is wrong; when the hold-out set is too
small to prove anything the answer is ``None`` (do not pre-label), never a guess.

How
---
1. *One threshold.*  For a threshold fixed before the labels are seen, the
   ``n`` hold-out items scoring ``>= t`` are, given ``n``, i.i.d. draws from the
   items above ``t``, so the number correct is ``Binomial(n, p(t))``.  The
   one-sided Clopper-Pearson bound ``L = Beta.ppf(delta, k, n - k + 1)`` (0 when
   ``k == 0``) satisfies ``P(L > p(t)) <= delta`` exactly, with no normal
   approximation.  Rejecting ``H0: p(t) < target`` when ``L >= target`` is a test at
   level ``delta``.
2. *Many thresholds, fixed-sequence testing* (:func:`calibrate`).  Candidate
   thresholds are ordered from high to low before any label is looked at and
   tested in that order, each at level ``delta``; the walk stops at the first
   test that fails and answers the last threshold that passed.  A wrong answer
   needs the *first* threshold with ``p(t) < target`` to pass its test, which
   happens with probability at most ``delta``; so the family-wise error is at most
   ``delta`` with no Bonferroni split (Bauer 1991; "Learn then Test", Angelopoulos
   et al. 2021).  The cost: an unlucky early failure ends the walk.
3. *Bonferroni grid* (:func:`calibrate_bonferroni_grid`), for comparison: test all
   ``m`` candidates at ``delta / m`` and answer the lowest that passes.  Robust to
   one early failure, but each test needs more evidence.

Candidate thresholds taken from the hold-out scores
---------------------------------------------------
By default the candidates are the distinct hold-out scores (thinned to at most
``max_steps``, evenly in rank).  Their values and their order depend on the
scores only, never on which items are correct, so the order is still fixed
"before seeing labels".  Exactness survives this: given that the ``(m+1)``-th
highest hold-out score is ``s``, the top ``m`` items are i.i.d. draws from the
items scoring above ``s`` (order statistics of a continuous score), so their
number correct is ``Binomial(m, p(s))``.  We answer the *lowest score inside* the
evidence set rather than ``s`` itself, which only raises the threshold.  The
fixed-sequence argument needs one assumption, that ``p(t)`` does not fall as
``t`` rises (that is what it means for the score to be a confidence; calibration
in the probabilistic sense is *not* assumed), so that "the first threshold whose
precision is below target" is one fixed point of the score axis.  To drop the
assumption, pass ``grid=`` values fixed in advance to
:func:`calibrate_bonferroni_grid`: each test is then exact as in step 1 and the
union bound needs nothing else.

Scope: the guarantee holds for each call separately.  :func:`calibrate_per_class`
makes one statement per class at level ``delta`` each; pass ``simultaneous=True``
to hold all classes at once (``delta / C`` per class).  Hold-out items picked by
a query strategy instead of at random void the guarantee.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import beta as beta_dist

DEFAULT_MAX_STEPS = 200


@dataclass(frozen=True)
class Threshold:
    """A calibrated threshold for one score; ``threshold is None`` means "do not pre-label".

    ``n_above``/``k_correct``: hold-out items scoring ``>= threshold`` and how many of
    them are correct; ``lower_bound``: their one-sided Clopper-Pearson bound;
    ``precision``: ``k_correct / n_above``; ``coverage``: ``n_above / n_total``.  All
    four are 0 when ``threshold is None``; ``reason`` then says why.
    """

    threshold: float | None
    n_above: int
    k_correct: int
    lower_bound: float
    precision: float
    coverage: float
    method: str
    reason: str
    target: float
    delta: float
    n_total: int

    @property
    def certified(self) -> bool:
        return self.threshold is not None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def clopper_pearson_lower(k: int, n: int, delta: float) -> float:
    """One-sided ``1 - delta`` lower confidence bound on a binomial proportion.

    ``P(bound > p) <= delta`` for the true proportion ``p``.  ``n == 0`` or ``k == 0``
    gives 0.0.
    """
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    _check_level(0.5, delta)
    if n == 0 or k == 0:
        return 0.0
    return float(beta_dist.ppf(delta, k, n - k + 1))


def min_evidence_for(target: float, delta: float) -> int:
    """Fewest items for which the bound can reach ``target`` (all of them correct).

    The all-correct bound is ``delta ** (1 / n)``; e.g. 59 items for 0.95 / 0.05.
    """
    _check_level(target, delta)
    n = max(1, math.ceil(math.log(delta) / math.log(target)))
    while delta ** (1.0 / n) < target:  # guard the float rounding of the ceil
        n += 1
    return n


def calibrate(
    scores: np.ndarray,
    correct: np.ndarray,
    *,
    target: float = 0.95,
    delta: float = 0.05,
    min_evidence: int | None = None,
    max_steps: int = DEFAULT_MAX_STEPS,
    grid: np.ndarray | None = None,
) -> Threshold:
    """Lowest threshold with ``precision >= target`` at confidence ``1 - delta`` (fixed sequence).

    ``scores``: ``[N]`` float, higher = more confident (e.g. the max probability);
    ``correct``: ``[N]`` bool, whether the prediction behind each score is right.
    ``min_evidence``: fewest items the first (highest) candidate must cover; never
    below :func:`min_evidence_for` (a smaller start could only fail).  Raising it
    makes the walk tolerate a few wrong items among the very top scores.
    ``grid``: candidate values instead of the distinct hold-out scores.
    See the module docstring for the exact guarantee.
    """
    s, c = _check_inputs(scores, correct, target, delta)
    start = max(min_evidence or 0, min_evidence_for(target, delta))
    cand, n, k = _candidates(s, c, grid, start, max_steps)
    method = "fixed_sequence"
    if cand.size == 0:
        return _uncertified(s.size, target, delta, method, _too_few(s.size, start, target, delta))
    lower = _lower_bounds(k, n, delta)
    passed = lower >= target
    n_pass = int(np.argmin(passed)) if not passed.all() else passed.size
    if n_pass == 0:
        why = (
            f"the top {n[0]} hold-out items (score >= {cand[0]:.4g}) have {k[0]} correct: "
            f"lower bound {lower[0]:.3f} < target {target:g}"
        )
        return _uncertified(s.size, target, delta, method, why)
    i = n_pass - 1
    return _certified(cand[i], n[i], k[i], lower[i], s.size, target, delta, method)


def calibrate_bonferroni_grid(
    scores: np.ndarray,
    correct: np.ndarray,
    *,
    target: float = 0.95,
    delta: float = 0.05,
    n_grid: int = 20,
    grid: np.ndarray | None = None,
) -> Threshold:
    """Lowest of ``m`` candidate thresholds that passes at level ``delta / m`` (union bound).

    Shapes and score direction as :func:`calibrate`.  ``grid``: candidate values fixed
    in advance (then the guarantee needs no assumption); by default ``n_grid`` hold-out
    scores evenly spaced in rank among those with enough items above them.
    """
    s, c = _check_inputs(scores, correct, target, delta)
    method = "bonferroni_grid"
    if grid is not None:
        cand, n, k = _candidates(s, c, grid, 0, max(len(grid), 1))
        m = max(len(grid), 1)
    else:
        start = min_evidence_for(target, delta / n_grid)
        cand, n, k = _candidates(s, c, None, start, n_grid)
        m = n_grid
        if cand.size == 0:
            why = _too_few(s.size, start, target, delta / m)
            return _uncertified(s.size, target, delta, method, why)
    lower = _lower_bounds(k, n, delta / m)
    ok = np.flatnonzero(lower >= target)
    if ok.size == 0:
        why = f"none of {m} candidate thresholds has a lower bound >= {target:g} at level {delta:g}/{m}"
        return _uncertified(s.size, target, delta, method, why)
    i = int(ok[np.argmin(cand[ok])])
    return _certified(cand[i], n[i], k[i], lower[i], s.size, target, delta, method)


def calibrate_per_class(
    probs: np.ndarray,
    y_true: np.ndarray,
    *,
    target: float = 0.95,
    delta: float = 0.05,
    min_evidence: int | None = None,
    simultaneous: bool = False,
    max_steps: int = DEFAULT_MAX_STEPS,
) -> list[Threshold]:
    """One threshold per class for multiclass predictions.

    ``probs``: ``[N, C]`` probabilities; ``y_true``: ``[N]`` int class indices.  For
    class ``c`` the evidence is the hold-out items whose argmax is ``c``, scored by
    their max probability, correct when ``y_true == c``; so ``p_c(t)`` is the share of
    pre-labels "c" that are right, and ``coverage`` is relative to the items predicted
    ``c``.  ``simultaneous=True`` uses ``delta / C`` so that all classes hold together.
    """
    p, y = _check_probs(probs, y_true, multilabel=False)
    pred = p.argmax(axis=1)
    score = p.max(axis=1)
    d = delta / p.shape[1] if simultaneous else delta
    out = []
    for cls in range(p.shape[1]):
        mask = pred == cls
        out.append(
            calibrate(
                score[mask], y[mask] == cls, target=target, delta=d,
                min_evidence=min_evidence, max_steps=max_steps,
            )
        )
    return out


def calibrate_multilabel(
    probs: np.ndarray,
    y_true: np.ndarray,
    *,
    target: float = 0.95,
    delta: float = 0.05,
    min_evidence: int | None = None,
    simultaneous: bool = False,
    max_steps: int = DEFAULT_MAX_STEPS,
) -> list[Threshold]:
    """One threshold per class for multilabel predictions.

    ``probs``: ``[N, C]`` independent per-class probabilities; ``y_true``: ``[N, C]``
    bool.  Class ``c`` is proposed for an item when ``probs[:, c] >= t_c``; it is right
    when ``y_true[:, c]``.  ``coverage`` is relative to all ``N`` items.
    """
    p, y = _check_probs(probs, y_true, multilabel=True)
    d = delta / p.shape[1] if simultaneous else delta
    return [
        calibrate(
            p[:, cls], y[:, cls], target=target, delta=d,
            min_evidence=min_evidence, max_steps=max_steps,
        )
        for cls in range(p.shape[1])
    ]


def calibrate_pooled(
    probs: np.ndarray,
    y_true: np.ndarray,
    *,
    target: float = 0.95,
    delta: float = 0.05,
    min_evidence: int | None = None,
    max_steps: int = DEFAULT_MAX_STEPS,
) -> Threshold:
    """One threshold on the max probability shared by all classes (multiclass).

    For when per-class evidence is thin.  ``probs``: ``[N, C]``; ``y_true``: ``[N]``.
    The guarantee covers the precision of all pre-labels taken together, *not* of
    each class: a rare class can be worse than the target while the pool is fine.
    """
    p, y = _check_probs(probs, y_true, multilabel=False)
    return calibrate(
        p.max(axis=1), p.argmax(axis=1) == y, target=target, delta=delta,
        min_evidence=min_evidence, max_steps=max_steps,
    )


def risk_coverage_curve(
    scores: np.ndarray, correct: np.ndarray, n_points: int = 50, *, delta: float = 0.05
) -> dict[str, list[float]]:
    """Precision and coverage at ``n_points`` thresholds evenly spaced in rank.

    ``scores``: ``[N]`` (higher = more confident); ``correct``: ``[N]`` bool.  Returns
    lists ``threshold`` (descending), ``coverage``, ``precision`` and ``lower_bound``
    (pointwise ``1 - delta`` Clopper-Pearson, *not* simultaneous: for display only).
    """
    s, c = _check_inputs(scores, correct, 0.5, delta)
    if s.size == 0:
        return {"threshold": [], "coverage": [], "precision": [], "lower_bound": []}
    cand, n, k = _candidates(s, c, None, 1, n_points)
    lower = _lower_bounds(k, n, delta)
    return {
        "threshold": cand.tolist(),
        "coverage": (n / s.size).tolist(),
        "precision": (k / n).tolist(),
        "lower_bound": lower.tolist(),
    }


# -- helpers -------------------------------------------------------------------


def _check_level(target: float, delta: float) -> None:
    if not 0.0 < target < 1.0:
        raise ValueError(f"target precision must be in (0, 1), got {target}")
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta}")


def _check_inputs(
    scores: np.ndarray, correct: np.ndarray, target: float, delta: float
) -> tuple[np.ndarray, np.ndarray]:
    _check_level(target, delta)
    s = np.asarray(scores, dtype=np.float64)
    c = np.asarray(correct)
    if s.ndim != 1 or c.shape != s.shape:
        raise ValueError(f"scores and correct must both be [N], got {s.shape} and {c.shape}")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    if c.dtype != np.bool_ and s.size and not np.isin(c, (0, 1)).all():
        raise ValueError("correct must be boolean (or 0/1)")
    return s, c.astype(bool)


def _check_probs(
    probs: np.ndarray, y_true: np.ndarray, *, multilabel: bool
) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y_true)
    if p.ndim != 2 or p.shape[1] < 1:
        raise ValueError(f"probs must be [N, C], got shape {p.shape}")
    want = p.shape if multilabel else p.shape[:1]
    if y.shape != want:
        raise ValueError(f"y_true must have shape {want}, got {y.shape}")
    return p, (y.astype(bool) if multilabel else y.astype(np.int64))


def _candidates(
    s: np.ndarray, c: np.ndarray, grid: np.ndarray | None, start: int, max_steps: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidates (descending), items ``>=`` each (``n``) and correct among them (``k``).

    Only candidates with ``n >= start`` are kept; then at most ``max_steps`` of them,
    evenly spaced in rank, always keeping the first and the last.
    """
    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    order = np.argsort(-s, kind="stable")
    desc = s[order]
    cum = np.concatenate([[0], np.cumsum(c[order])])
    values = np.unique(s)[::-1] if grid is None else np.unique(np.asarray(grid, float))[::-1]
    n = np.searchsorted(-desc, -values, side="right")
    keep = n >= max(start, 1) if grid is None else n >= start
    values, n = values[keep], n[keep]
    if values.size > max_steps:
        pick = np.unique(np.round(np.linspace(0, values.size - 1, max_steps)).astype(int))
        values, n = values[pick], n[pick]
    return values, n.astype(np.int64), cum[n].astype(np.int64)


def _lower_bounds(k: np.ndarray, n: np.ndarray, delta: float) -> np.ndarray:
    """Vectorised :func:`clopper_pearson_lower`; ``[M]`` in, ``[M]`` out."""
    out = np.zeros(k.shape, dtype=np.float64)
    ok = k > 0
    out[ok] = beta_dist.ppf(delta, k[ok], n[ok] - k[ok] + 1)
    return out


def _too_few(n_total: int, start: int, target: float, delta: float) -> str:
    if n_total == 0:
        return "no hold-out items to calibrate on"
    return (
        f"only {n_total} hold-out items; proving {target:.0%} precision with "
        f"{1 - delta:.1%} confidence needs at least {start}"
    )


def _uncertified(n_total: int, target: float, delta: float, method: str, reason: str) -> Threshold:
    return Threshold(None, 0, 0, 0.0, 0.0, 0.0, method, reason, target, delta, n_total)


def _certified(
    t: float, n: int, k: int, lower: float, n_total: int, target: float, delta: float, method: str
) -> Threshold:
    return Threshold(
        threshold=float(t), n_above=int(n), k_correct=int(k), lower_bound=float(lower),
        precision=k / n, coverage=n / n_total, method=method, reason="",
        target=target, delta=delta, n_total=n_total,
    )
