"""Which items go on grid pages: the most likely right first, to a purity target (pure).

A grid page is confirmed as one class; every image on it that is not of that class
costs the labeler an exception. Whether an image belongs on a page therefore
depends on how likely the model's class for it is right, and a raw score says that
badly: ``0.8`` on an easy class (trousers) is right far more often than ``0.8`` on a
hard one (shirts), and once grids have taken the easy images the model is
over-confident on what is left.

:func:`fit_correctness` learns ``P(right | score, predicted class)`` from the
calibrating hold-out, which is a random sample of the pool that is left
(``service/loop/holdout.py``): a logistic regression on the logit of the top score
with one intercept per predicted class (L2-shrunk towards the shared one, so a
class with few hold-out images keeps close to the average). With too little
evidence it answers ``None`` and the score itself stands in.

:func:`purity_cut` then keeps the largest set of items, most likely right
first, whose mean likelihood is at least the target: the expected share of
images on a page that are of the page's class. Lower-ranked items go to single
labels. For a given purity this puts the most items on pages: an item of
likelihood ``p`` costs about ``1/9 + (1 - p)`` actions on a page of nine and ``1``
as a single label, so the pages should hold the items with the highest ``p``.

These are point estimates for a workflow choice; no guarantee is claimed (the
guarantee is :mod:`learning.calibration`'s, for pre-labels).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression

MIN_EVIDENCE = 40  # hold-out items with a prediction
MIN_WRONG = 5  # of which wrong: without mistakes there is nothing to learn the slope from
EPS = 1e-6


@dataclass(frozen=True)
class Correctness:
    """``P(right | top score, predicted class)``; fitted on ``n`` hold-out items."""

    model: LogisticRegression
    n_classes: int
    n: int

    def predict(self, probs: np.ndarray) -> np.ndarray:
        """``probs [N, C]`` -> ``[N]`` likelihood that each argmax is right."""
        return self.model.predict_proba(_features(probs, self.n_classes))[:, 1]


def _features(probs: np.ndarray, n_classes: int) -> np.ndarray:
    top = np.clip(probs.max(axis=1), EPS, 1.0 - EPS)
    onehot = np.eye(n_classes)[probs.argmax(axis=1)]
    return np.column_stack([np.log(top / (1.0 - top)), onehot])


def fit_correctness(probs: np.ndarray, y_true: np.ndarray, *, min_evidence: int = MIN_EVIDENCE,
                    min_wrong: int = MIN_WRONG, c: float = 1.0) -> Correctness | None:
    """Fit on hold-out ``probs [N, C]`` (rows sum to one) and true class indices ``y_true
    [N]``; ``None`` below ``min_evidence`` items or ``min_wrong`` (or as many right) ones."""
    probs, y_true = np.asarray(probs, dtype=np.float64), np.asarray(y_true)
    if probs.ndim != 2 or len(probs) != len(y_true):
        raise ValueError(f"probs must be [N, C] and y_true [N], got {probs.shape} and {y_true.shape}")
    right = (probs.argmax(axis=1) == y_true).astype(int) if len(probs) else np.zeros(0, dtype=int)
    n_wrong = int(len(right) - right.sum())
    if len(right) < min_evidence or min(n_wrong, int(right.sum())) < min_wrong:
        return None
    model = LogisticRegression(C=c, max_iter=1000).fit(_features(probs, probs.shape[1]), right)
    return Correctness(model=model, n_classes=probs.shape[1], n=len(right))


def purity_cut(likely: np.ndarray, purity: float) -> float:
    """The likelihood at or above which items go on pages: the largest most-likely-first
    set of ``likely [N]`` whose mean is at least ``purity`` is ``likely >= cut`` (ties
    with its last item included); ``inf`` when not even the most likely item reaches it."""
    likely = np.asarray(likely, dtype=np.float64)
    if not 0.0 < purity < 1.0:
        raise ValueError(f"purity must be strictly between 0 and 1, got {purity!r}")
    ranked = np.sort(likely)[::-1]
    mean = np.cumsum(ranked) / np.arange(1, len(ranked) + 1)
    ok = np.flatnonzero(mean >= purity)  # the running mean only falls: a prefix
    return float(ranked[ok[-1]]) if len(ok) else float("inf")
