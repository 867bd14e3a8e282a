"""Calibration: the precision guarantee holds over repeated draws, and the edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binom

from learning.calibration import (
    Threshold,
    calibrate,
    calibrate_bonferroni_grid,
    calibrate_multilabel,
    calibrate_per_class,
    calibrate_pooled,
    clopper_pearson_lower,
    min_evidence_for,
    risk_coverage_curve,
)

TARGET, DELTA, DRAWS = 0.95, 0.05, 500
# A correct procedure fails in at most DELTA of draws; allow binomial noise at 1 in 1000.
MAX_FAILURES = int(binom.ppf(0.999, DRAWS, DELTA))


def linear_world(a: float, b: float):
    """Scores ~ U(0, 1), P(correct | s) = a + b s, so precision(>= t) = a + b (1 + t) / 2."""

    def draw(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        s = rng.random(n)
        return s, rng.random(n) < a + b * s

    def precision(t: float) -> float:
        return a + b * (1.0 + t) / 2.0

    return draw, precision


def fresh_precision(scores: np.ndarray, correct: np.ndarray):
    """Precision of ``score >= t`` on a large fresh sample, as a function of t."""
    order = np.argsort(-scores, kind="stable")
    desc, cum = scores[order], np.cumsum(correct[order])

    def at(t: float) -> float:
        n = int(np.searchsorted(-desc, -t, side="right"))
        return float(cum[n - 1] / n)

    return at


@pytest.mark.parametrize("fn", [calibrate, calibrate_bonferroni_grid])
def test_guarantee_over_repeated_draws(fn) -> None:
    """P(precision(t) < target) <= delta over the hold-out draw, with the exact curve."""
    draw, precision = linear_world(0.85, 0.15)  # precision(t) >= 0.95 from t = 1/3 up
    rng = np.random.default_rng(20240601)
    failures = certified = 0
    for _ in range(DRAWS):
        th = fn(*draw(rng, 1000), target=TARGET, delta=DELTA)
        if th.certified:
            certified += 1
            failures += precision(th.threshold) < TARGET
    assert failures <= MAX_FAILURES, (failures, MAX_FAILURES)
    assert certified >= DRAWS // 2  # the check is not passed by never answering


def test_naive_empirical_threshold_fails_the_same_check() -> None:
    """The harness has teeth: 'empirical precision >= target' breaks the guarantee."""
    draw, precision = linear_world(0.85, 0.15)
    rng = np.random.default_rng(7)
    failures = 0
    for _ in range(200):
        s, c = draw(rng, 1000)
        order = np.argsort(-s)
        n = np.arange(1, s.size + 1)
        ok = (np.cumsum(c[order]) / n >= TARGET) & (n >= 59)
        failures += precision(s[order][np.flatnonzero(ok).max()]) < TARGET
    assert failures > 200 * 0.3


def test_per_class_guarantee_on_fresh_data() -> None:
    """Softmax-like multiclass scores; realised precision on a fresh 200k sample."""
    rng = np.random.default_rng(11)
    n_cls = 3

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(n_cls, size=n)
        logits = rng.normal(size=(n, n_cls))
        logits[np.arange(n), y] += rng.gamma(2.0, 1.0, size=n)  # signal varies per item
        p = np.exp(logits - logits.max(1, keepdims=True))
        return p / p.sum(1, keepdims=True), y

    fp, fy = draw(200_000)
    pred, score = fp.argmax(1), fp.max(1)
    fresh = [fresh_precision(score[pred == c], fy[pred == c] == c) for c in range(n_cls)]
    failures = np.zeros(n_cls, dtype=int)
    certified = np.zeros(n_cls, dtype=int)
    for _ in range(DRAWS):
        for c, th in enumerate(calibrate_per_class(*draw(1500), target=TARGET, delta=DELTA)):
            if th.certified:
                certified[c] += 1
                # 200k fresh items put the estimate within ~0.002; count clear misses only
                failures[c] += fresh[c](th.threshold) < TARGET - 0.002
    assert (failures <= MAX_FAILURES).all(), failures
    assert (certified >= DRAWS // 2).all(), certified


def test_clopper_pearson_values() -> None:
    assert clopper_pearson_lower(0, 0, 0.05) == 0.0
    assert clopper_pearson_lower(0, 10, 0.05) == 0.0
    assert clopper_pearson_lower(10, 10, 0.05) == pytest.approx(0.05 ** (1 / 10))
    # textbook value: 45/50 at 95% one-sided -> about 0.8012
    assert clopper_pearson_lower(45, 50, 0.05) == pytest.approx(0.8012, abs=1e-3)
    assert clopper_pearson_lower(45, 50, 0.01) < clopper_pearson_lower(45, 50, 0.05)
    with pytest.raises(ValueError, match="0 <= k <= n"):
        clopper_pearson_lower(5, 3, 0.05)


def test_min_evidence_for() -> None:
    assert min_evidence_for(0.95, 0.05) == 59 == math.ceil(math.log(0.05) / math.log(0.95))
    assert [min_evidence_for(0.95, 0.05, e) for e in (1, 2)] == [93, 124]
    n = min_evidence_for(0.9, 0.1, 3)
    assert clopper_pearson_lower(n - 3, n, 0.1) >= 0.9 > clopper_pearson_lower(n - 4, n - 1, 0.1)


def test_all_correct_gives_a_threshold_covering_everything() -> None:
    s = np.linspace(0.5, 1.0, 100)
    th = calibrate(s, np.ones(100, bool))
    assert th.certified and th.threshold == pytest.approx(0.5)
    assert (th.n_above, th.k_correct, th.coverage, th.precision) == (100, 100, 1.0, 1.0)
    assert th.lower_bound >= 0.95 and th.reason == "" and th.method == "fixed_sequence"


def test_too_little_evidence_is_none_with_reason() -> None:
    th = calibrate(np.linspace(0, 1, 40), np.ones(40, bool))
    assert th.threshold is None and not th.certified
    assert "only 40 hold-out items" in th.reason and "59" in th.reason
    assert (th.n_above, th.coverage) == (0, 0.0)
    empty = calibrate(np.zeros(0), np.zeros(0, bool))
    assert empty.threshold is None and "no hold-out items" in empty.reason


def test_all_wrong_is_none() -> None:
    th = calibrate(np.linspace(0, 1, 500), np.zeros(500, bool))
    assert th.threshold is None and "lower bound 0.000" in th.reason


def test_early_error_stops_the_walk_but_not_the_grid_variant() -> None:
    s = np.linspace(1.0, 0.0, 1000)
    c = np.ones(1000, bool)
    c[0] = False  # the single most confident item is wrong
    strict = calibrate(s, c, start_error_rate=0.0)
    assert strict.threshold is None  # a start at 59 items cannot absorb it
    assert "have 58 correct" in strict.reason
    later = calibrate(s, c, start_error_rate=0.0, min_evidence=100)
    assert later.threshold == pytest.approx(0.0)
    assert calibrate_bonferroni_grid(s, c).certified


def test_fixed_sequence_stops_at_first_failure() -> None:
    s = np.linspace(1.0, 0.0, 400)
    c = np.ones(400, bool)
    c[200:] = False  # perfect top half, useless bottom half
    th = calibrate(s, c, max_steps=400)
    # it walks a few items into the bad half, as far as the bound allows, then stops
    assert th.certified and 200 <= th.n_above <= 210 and th.k_correct == 200
    assert th.lower_bound >= 0.95 > clopper_pearson_lower(200, th.n_above + 1, 0.05)
    curve_point = clopper_pearson_lower(th.k_correct, th.n_above, 0.05)
    assert th.lower_bound == pytest.approx(curve_point)


def test_ties_are_counted_together() -> None:
    s = np.array([0.99] * 80 + [0.9] * 20)
    c = np.array([True] * 80 + [False] * 20)
    th = calibrate(s, c)
    assert th.threshold == pytest.approx(0.99) and th.n_above == 80  # never splits a tie
    all_tied = calibrate(np.full(70, 0.7), np.ones(70, bool))
    assert all_tied.threshold == pytest.approx(0.7) and all_tied.n_above == 70


def test_start_error_rate_lets_large_sets_absorb_a_top_error() -> None:
    s = np.linspace(1.0, 0.0, 2000)
    c = np.ones(2000, bool)
    c[[0, 5]] = False
    assert calibrate(s, c).certified  # 2000 * 0.0075 = 15 tolerated errors at the start
    assert calibrate(s, c, start_error_rate=0.0).threshold is None


def test_fixed_grid_bonferroni() -> None:
    s = np.linspace(1.0, 0.0, 1000)
    c = s > 0.2
    th = calibrate_bonferroni_grid(s, c, grid=np.array([0.9, 0.5, 0.3, 0.1]))
    assert th.threshold == pytest.approx(0.3) and th.method == "bonferroni_grid"
    assert calibrate_bonferroni_grid(s, c, grid=np.array([0.999])).threshold is None


def test_input_validation() -> None:
    with pytest.raises(ValueError, match="target"):
        calibrate(np.ones(3), np.ones(3, bool), target=1.0)
    with pytest.raises(ValueError, match="delta"):
        calibrate(np.ones(3), np.ones(3, bool), delta=0.0)
    with pytest.raises(ValueError, match=r"\[N\]"):
        calibrate(np.ones(3), np.ones(4, bool))
    with pytest.raises(ValueError, match="finite"):
        calibrate(np.array([np.nan]), np.ones(1, bool))


def test_per_class_uses_predicted_items_and_reports_each_class() -> None:
    rng = np.random.default_rng(0)
    n = 600
    y = rng.integers(3, size=n)
    probs = np.full((n, 3), 0.05)
    probs[np.arange(n), y] = 0.9
    probs[:200][y[:200] == 2] = [0.05, 0.05, 0.9]  # class 2 always right
    probs = probs / probs.sum(1, keepdims=True)
    noisy = y.copy()
    noisy[(y == 1) & (rng.random(n) < 0.5)] = 0  # half of predicted-1 items are really 0
    out = calibrate_per_class(probs, noisy)
    assert len(out) == 3 and all(isinstance(t, Threshold) for t in out)
    assert out[0].certified is False or out[0].precision >= 0.95
    assert out[1].threshold is None and out[2].certified
    assert out[2].n_total == int((probs.argmax(1) == 2).sum())
    strict = calibrate_per_class(probs, noisy, simultaneous=True)
    assert strict[2].delta == pytest.approx(0.05 / 3)


def test_multilabel_and_pooled() -> None:
    rng = np.random.default_rng(1)
    probs = rng.random((800, 2))
    truth = np.stack([probs[:, 0] > 0.3, rng.random(800) < 0.5], axis=1)
    out = calibrate_multilabel(probs, truth)
    t0 = out[0].threshold
    assert t0 is not None and t0 > 0.25 and out[0].precision >= 0.95
    assert out[1].threshold is None
    with pytest.raises(ValueError, match="y_true"):
        calibrate_multilabel(probs, truth[:, 0])
    softmax = np.stack([probs[:, 0], 1 - probs[:, 0]], axis=1)
    pooled = calibrate_pooled(softmax, (probs[:, 0] >= 0.5).astype(int), min_evidence=60)
    assert pooled.threshold is None  # argmax is always wrong
    assert calibrate_pooled(softmax, softmax.argmax(1)).certified


def test_risk_coverage_curve() -> None:
    s = np.linspace(1.0, 0.0, 300)
    curve = risk_coverage_curve(s, s > 0.5, n_points=10)
    assert set(curve) == {"threshold", "coverage", "precision", "lower_bound"}
    assert len(curve["threshold"]) == 10
    assert curve["threshold"] == sorted(curve["threshold"], reverse=True)
    assert curve["coverage"][-1] == 1.0 and curve["precision"][0] == 1.0
    assert all(lb <= p for lb, p in zip(curve["lower_bound"], curve["precision"], strict=True))
    assert risk_coverage_curve(np.zeros(0), np.zeros(0, bool))["threshold"] == []


def test_threshold_to_dict_is_plain() -> None:
    d = calibrate(np.linspace(0, 1, 100), np.ones(100, bool)).to_dict()
    assert d["method"] == "fixed_sequence" and isinstance(d["threshold"], float)
