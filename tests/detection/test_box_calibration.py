"""Box calibration (learning.box_calibration) and polygon helpers (learning.polygons), on synthetic data."""

from __future__ import annotations

import numpy as np
from scipy.stats import binom

from learning.box_calibration import ImageBoxes, box_correct, calibrate_boxes, map50, propose
from learning.polygons import mask_to_polygon, polygon_bbox, polygon_to_mask


def synthetic(n_images: int, rng: np.random.Generator, n_classes: int = 2) -> tuple[list, list]:
    """Per image 1-3 human boxes; the model finds each with a score; a found box is right
    (same class, shifted a little) with probability rising in the score, else mislocated;
    plus a few low-scoring false boxes."""
    preds, gts = [], []
    for _ in range(n_images):
        k = int(rng.integers(1, 4))
        g = np.column_stack([rng.uniform(0, 100, (k, 2)), rng.uniform(20, 40, (k, 2))])
        gl = rng.integers(0, n_classes, k)
        s = rng.uniform(0, 1, k)
        right = rng.uniform(0, 1, k) < 0.5 + 0.5 * s  # p(correct | score) = 0.5 + score / 2
        p = g + np.where(right[:, None], rng.normal(0, 1, (k, 4)) * [1, 1, 0, 0], [[60, 60, 0, 0]])
        extra = int(rng.integers(0, 2))
        p = np.vstack([p, np.column_stack([rng.uniform(150, 200, (extra, 2)), np.full((extra, 2), 20.0)])])
        preds.append(ImageBoxes(p, np.concatenate([gl, rng.integers(0, n_classes, extra)]),
                                np.concatenate([s, rng.uniform(0, 0.3, extra)])))
        gts.append(ImageBoxes(g, gl))
    return preds, gts


def true_precision(threshold: float) -> float:
    """Precision of boxes scoring >= t with p(correct | s) = 0.5 + s / 2, s ~ U(0, 1) (true boxes only;
    false boxes score < 0.3 and never reach the thresholds tested here)."""
    return 0.5 + (1 + threshold) / 4


def test_box_correct_matches_same_class_at_iou() -> None:
    gt = ImageBoxes([[0, 0, 10, 10], [50, 50, 10, 10]], [0, 1])
    pred = ImageBoxes([[1, 0, 10, 10], [50, 50, 10, 10], [0, 0, 10, 10]], [0, 0, 0], [0.9, 0.8, 0.7])
    assert box_correct(pred, gt).tolist() == [True, False, False]  # wrong class; duplicate of a matched box


def test_threshold_guarantee_holds_over_many_holdout_draws() -> None:
    target, delta, misses, certified, worst = 0.85, 0.1, 0, 0, 1.0
    for seed in range(40):
        preds, gts = synthetic(150, np.random.default_rng(seed))
        cal = calibrate_boxes(preds, gts, 2, target=target, delta=delta)
        for t in cal.thresholds:
            if t is not None:
                certified += 1
                misses += true_precision(t) < target
                worst = min(worst, true_precision(t))
    assert certified >= 40  # the method has power here (51 of 80 when written)
    # each certified threshold misses the target with probability <= delta: the count of misses
    # is at most Binomial(certified, delta); allow its 99.9% quantile (6 of 51 when written)
    assert misses <= binom.ppf(0.999, certified, delta)
    assert worst > target - 0.05


def test_thin_class_takes_the_pooled_threshold_and_no_evidence_gives_none() -> None:
    preds, gts = synthetic(200, np.random.default_rng(1), n_classes=2)
    for p, g in zip(preds, gts, strict=True):  # class 1 becomes very rare
        p.labels[p.labels == 1] = 0
        g.labels[g.labels == 1] = 0
    preds[0].labels[0] = gts[0].labels[0] = 1
    cal = calibrate_boxes(preds, gts, 2, target=0.85, delta=0.1)
    assert cal.source == ["class", "pooled"] and cal.thresholds[1] == cal.pooled.threshold
    empty = calibrate_boxes([ImageBoxes([], [], [])], [ImageBoxes([], [])], 2)
    assert empty.thresholds == [None, None] and empty.notes


def test_completeness_rule_rejects_uncertain_band() -> None:
    pred = ImageBoxes([[0, 0, 5, 5], [10, 10, 5, 5]], [0, 1], [0.95, 0.4])
    ok, keep = propose(pred, [0.9, 0.9], possible=0.3)
    assert not ok and keep.tolist() == [True, False]  # a 0.4 box is a possible object: not complete
    ok, keep = propose(pred, [0.9, 0.9], possible=0.5)
    assert ok and keep.tolist() == [True, False]
    assert not propose(pred, [0.9, None], possible=0.3)[0]  # uncertified class above "possible"
    assert not propose(ImageBoxes([], [], []), [0.9, 0.9], 0.3)[0]  # nothing found: nothing proposed


def test_calibration_reports_complete_and_correct_images() -> None:
    preds, gts = synthetic(300, np.random.default_rng(3))
    cal = calibrate_boxes(preds, gts, 2, target=0.85, delta=0.1)
    assert 0 < cal.images_proposed <= cal.images_total
    assert 0 <= cal.images_complete_correct <= cal.images_proposed
    assert cal.possible <= min(t for t in cal.thresholds if t is not None)
    d = cal.to_dict(["a", "b"])
    assert set(d["thresholds"]) == {"a", "b"} and "threshold" in d["per_class"]["a"]


def test_map50_perfect_and_empty() -> None:
    gts = [ImageBoxes([[0, 0, 10, 10]], [0]), ImageBoxes([[5, 5, 10, 10]], [1])]
    perfect = [ImageBoxes(g.boxes, g.labels, [0.9]) for g in gts]
    assert abs(map50(perfect, gts, 2) - 1.0) < 1e-6
    assert map50([ImageBoxes([], [], []) for _ in gts], gts, 2) == 0.0


def test_polygon_mask_round_trip() -> None:
    square = [10, 10, 40, 10, 40, 30, 10, 30]
    mask = polygon_to_mask(square, 50, 60)
    assert mask.shape == (50, 60) and mask.sum() == 31 * 21
    poly = mask_to_polygon(mask, tolerance=1.0)
    assert poly is not None and len(poly) == 8  # four corners survive simplification
    assert polygon_bbox(poly) == [10.0, 10.0, 30.0, 20.0]
    ring = np.zeros((40, 40), dtype=bool)
    yy, xx = np.mgrid[:40, :40]
    ring[(yy - 20) ** 2 + (xx - 20) ** 2 <= 100] = True
    ring[0, 0] = True  # a speck: the largest component wins
    circle = mask_to_polygon(ring, tolerance=0.5)
    assert circle is not None and 8 <= len(circle) // 2 <= 60
    redrawn = polygon_to_mask(circle, 40, 40)
    assert (redrawn & ring).sum() / (redrawn | ring).sum() > 0.85
    assert mask_to_polygon(np.zeros((5, 5), dtype=bool)) is None
