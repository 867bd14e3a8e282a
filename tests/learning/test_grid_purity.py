"""Which items go on grid pages: likelihood learnt from the hold-out, cut to a purity target."""

from __future__ import annotations

import numpy as np
import pytest

from learning.grid_purity import fit_correctness, purity_cut


def scored(rng: np.random.Generator, n: int, cls: int, top: np.ndarray, n_classes: int = 3) -> np.ndarray:
    """``[n, C]`` rows whose argmax is ``cls`` with probability ``top``."""
    probs = np.tile(((1.0 - top) / (n_classes - 1))[:, None], (1, n_classes))
    probs[:, cls] = top
    return probs


def test_purity_cut_keeps_the_largest_prefix_at_the_target() -> None:
    likely = np.array([0.5, 0.99, 0.2, 0.9, 0.95])
    # most likely first: 0.99, 0.97, 0.947, 0.835 (with 0.5), ... -> keep down to 0.9
    assert purity_cut(likely, 0.9) == 0.9
    assert purity_cut(likely, 0.94) == 0.9
    assert purity_cut(likely, 0.95) == 0.95
    assert purity_cut(likely, 0.5) == 0.2  # everything
    assert purity_cut(likely, 0.995) == float("inf")  # nothing
    assert purity_cut(np.zeros(0), 0.9) == float("inf")
    with pytest.raises(ValueError, match="purity"):
        purity_cut(likely, 1.0)


def test_correctness_ranks_an_easy_class_above_a_hard_one_at_the_same_score() -> None:
    """Class 0 is right 98% of the time and class 1 only 70%, at the same scores: the
    learnt likelihood says so, and a 0.9 cut keeps class 0 and drops most of class 1."""
    rng = np.random.default_rng(0)
    n = 300
    top = rng.uniform(0.6, 1.0, size=2 * n)
    pred = np.repeat([0, 1], n)
    probs = np.concatenate([scored(rng, n, 0, top[:n]), scored(rng, n, 1, top[n:])])
    right = np.where(pred == 0, rng.random(2 * n) < 0.98, rng.random(2 * n) < 0.7)
    y = np.where(right, pred, 2)
    fitted = fit_correctness(probs, y)
    assert fitted is not None and fitted.n == 2 * n
    likely = fitted.predict(probs)
    same = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1]])
    easy, hard = fitted.predict(same)
    assert easy > 0.93 and hard < 0.8, (easy, hard)
    kept = likely >= purity_cut(likely, 0.9)
    assert kept[:n].mean() > 0.95 and kept[n:].mean() < 0.5
    assert right[kept].mean() >= 0.88  # what the pages would really hold
    # the raw score cannot tell the classes apart: a 0.9 cut on it keeps both alike
    raw = probs.max(axis=1)
    by_score = raw >= purity_cut(raw, 0.9)
    assert abs(by_score[:n].mean() - by_score[n:].mean()) < 0.15


def test_too_little_evidence_gives_no_likelihood() -> None:
    rng = np.random.default_rng(1)
    probs = scored(rng, 30, 0, rng.uniform(0.5, 1.0, size=30))
    y = np.zeros(30, dtype=int)
    y[:10] = 1
    assert fit_correctness(probs, y) is None  # 30 < 40 items
    assert fit_correctness(probs, y, min_evidence=20) is not None
    assert fit_correctness(probs, np.zeros(30, dtype=int), min_evidence=20) is None  # no mistake to learn from
    with pytest.raises(ValueError, match="y_true"):
        fit_correctness(probs, y[:5])
