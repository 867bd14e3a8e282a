"""``calibrate_auto``: pooled first, per class as evidence grows, rare and bad classes held back."""

from __future__ import annotations

import numpy as np
import pytest

from learning.calibration import calibrate_pooled
from learning.calibration_auto import (
    calibrate_auto,
    clopper_pearson_upper,
    describe,
    thresholds_by_mode,
    top_probs,
)

CLASSES = [f"c{i}" for i in range(5)]


def _population(n: int, rng: np.random.Generator, *, acc: list[float], share: list[float]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Items with true class ``y``, predicted class ``pred`` and top score ``score``: class c
    is predicted for ``share[c]`` of the items and right ``acc[c]`` of the time, right
    predictions scoring higher than wrong ones on average."""
    c = len(acc)
    pred = rng.choice(c, size=n, p=np.asarray(share) / np.sum(share))
    right = rng.random(n) < np.asarray(acc)[pred]
    y = np.where(right, pred, (pred + rng.integers(1, c, n)) % c)
    score = np.where(right, rng.beta(12, 1, n), rng.beta(4, 2, n))
    score = np.maximum(score, 1.0 / c + 1e-6)
    return y, pred, score


def test_upper_bound() -> None:
    assert clopper_pearson_upper(10, 10, 0.05) == 1.0
    assert clopper_pearson_upper(5, 10, 0.05) == pytest.approx(0.7779, abs=1e-3)
    with pytest.raises(ValueError):
        clopper_pearson_upper(3, 0, 0.05)


def test_top_probs_keep_top_class_and_score() -> None:
    p = top_probs(np.array([2, 0]), np.array([0.9, 0.5]), 4)
    assert p.argmax(1).tolist() == [2, 0] and p.max(1).tolist() == [0.9, 0.5]
    assert np.allclose(p.sum(1), 1.0)


def test_a_good_model_gets_a_pooled_statement_early() -> None:
    rng = np.random.default_rng(0)
    y, pred, score = _population(300, rng, acc=[0.97] * 5, share=[1] * 5)
    cal = calibrate_auto(top_probs(pred, score, 5), y)
    assert cal.pooled.threshold is not None and cal.stopped == []
    assert all(t == cal.pooled.threshold for t in cal.thresholds)
    text = describe(cal, CLASSES)
    assert text.startswith("pooled: proposals are right at least 95% of the time overall, with 95% confidence")
    # per class, 60 items each can prove nothing at delta / 10 / 5: the pooled statement comes first
    per = thresholds_by_mode("per_class", top_probs(pred, score, 5), y)
    assert sum(t is not None for t in per) <= 2


def test_a_class_barely_seen_is_not_prelabelled_on_the_others_strength() -> None:
    rng = np.random.default_rng(1)
    y, pred, score = _population(300, rng, acc=[0.98, 0.98, 0.98, 0.98, 0.3], share=[1, 1, 1, 1, 0.02])
    assert 0 < (pred == 4).sum() < 10
    cal = calibrate_auto(top_probs(pred, score, 5), y)
    assert 4 not in cal.eligible and cal.thresholds[4] is None
    assert "not yet: c4" in describe(cal, CLASSES)


def test_the_guard_stops_a_class_its_hold_out_shows_below_target() -> None:
    rng = np.random.default_rng(2)
    y, pred, score = _population(1500, rng, acc=[0.998, 0.998, 0.998, 0.998, 0.6], share=[1, 1, 1, 1, 0.25])
    cal = calibrate_auto(top_probs(pred, score, 5), y)
    assert cal.pooled.threshold is not None
    assert cal.stopped == [4] and cal.thresholds[4] is None
    assert "stopped: c4" in describe(cal, CLASSES)


def test_a_class_with_plenty_of_evidence_is_certified_on_its_own() -> None:
    rng = np.random.default_rng(3)
    y, pred, score = _population(3000, rng, acc=[1.0, 0.85, 0.85, 0.85, 0.85], share=[1] * 5)
    cal = calibrate_auto(top_probs(pred, score, 5), y)
    assert 0 in cal.certified
    assert "per class for c0" in describe(cal, CLASSES)


def test_nothing_proven_says_why() -> None:
    rng = np.random.default_rng(4)
    y, pred, score = _population(40, rng, acc=[0.9] * 5, share=[1] * 5)
    cal = calibrate_auto(top_probs(pred, score, 5), y)
    assert cal.thresholds == [None] * 5
    assert describe(cal, CLASSES).startswith("nothing is pre-labelled")


def test_the_family_keeps_its_error_rate_and_protects_a_rare_bad_class() -> None:
    """Monte Carlo over hold-out draws from one population: the overall precision of what
    ``auto`` proposes falls below the target in at most delta of the draws (with room for
    the simulation's own noise), and a rare class right 60% of the time is proposed far
    less than under ``pooled``."""
    rng = np.random.default_rng(5)
    acc, share = [0.985, 0.98, 0.97, 0.96, 0.6], [1, 1, 1, 1, 0.1]
    y, pred, score = _population(40_000, rng, acc=acc, share=share)
    probs = top_probs(pred, score, 5)
    low, rare_auto, rare_pooled, cov = 0, 0.0, 0.0, []
    draws = 150
    for _ in range(draws):
        idx = rng.choice(len(y), 400, replace=False)
        ths = calibrate_auto(probs[idx], y[idx]).thresholds
        cut = np.array([np.inf if t is None else t for t in ths])
        above = score >= cut[pred]
        cov.append(above.mean())
        if above.any():
            low += int((pred[above] == y[above]).mean() < 0.95)
        rare_auto += float((above & (pred == 4)).sum())
        t = calibrate_pooled(probs[idx], y[idx]).threshold
        rare_pooled += float(((score >= (t if t is not None else np.inf)) & (pred == 4)).sum())
    assert np.mean(cov) > 0.3
    assert low / draws <= 0.08
    assert rare_auto < 0.5 * rare_pooled
