"""Hard examples: flipped labels are found, unstable views flagged, boxes matched."""

from __future__ import annotations

import numpy as np
import pytest

from learning.hard_examples import (
    FALSE_DETECTION,
    LABEL_ISSUE,
    MISSED_DETECTION,
    UNSTABLE,
    Flag,
    detection_flags,
    find_label_issues,
    flag_unstable,
    iou_matrix,
    match_boxes,
    unstable_predictions,
)


def noisy_dataset(seed: int, n: int = 300, n_cls: int = 3, n_flip: int = 12):
    """Out-of-sample-like probabilities for true classes, then ``n_flip`` labels flipped."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(n_cls, size=n)
    logits = rng.normal(scale=0.5, size=(n, n_cls))
    logits[np.arange(n), truth] += 4.0
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = truth.copy()
    flipped = rng.choice(n, size=n_flip, replace=False)
    labels[flipped] = (truth[flipped] + rng.integers(1, n_cls, size=n_flip)) % n_cls
    return labels, probs, set(flipped.tolist()), truth


@pytest.mark.parametrize("method", ["confident_learning", "prune_by_noise_rate"])
def test_flipped_labels_are_found(method: str) -> None:
    labels, probs, flipped, truth = noisy_dataset(0)
    flags = find_label_issues(labels, probs, method=method)  # type: ignore[arg-type]
    found = {f.index for f in flags}
    assert len(found & flipped) >= 0.75 * len(flipped)  # recall
    assert len(found - flipped) <= 3  # few false alarms
    for f in flags:
        assert f.kind == LABEL_ISSUE and f.detail["given"] == labels[f.index]
        if f.index in flipped:
            assert f.detail["suggested"] == truth[f.index]
    scores = [f.score for f in flags]
    assert scores == sorted(scores, reverse=True)  # lowest self-confidence first


def test_clean_labels_give_no_flags_and_max_flags_caps() -> None:
    labels, probs, _, truth = noisy_dataset(1, n_flip=0)
    assert find_label_issues(truth, probs) == []
    noisy, probs2, flipped, _ = noisy_dataset(2)
    assert len(find_label_issues(noisy, probs2, max_flags=3)) == 3


def test_label_issue_hand_made() -> None:
    labels = np.array([0, 0, 0, 1, 1, 1])
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.05, 0.95], [0.1, 0.9], [0.2, 0.8], [0.3, 0.7]])
    flags = find_label_issues(labels, probs)
    assert [f.index for f in flags] == [2]
    assert flags[0].detail == {
        "given": 0,
        "suggested": 1,
        "self_confidence": 0.05,
        "suggested_prob": 0.95,
    }
    assert flags[0].score == pytest.approx(0.95)


def test_label_issue_validation() -> None:
    with pytest.raises(ValueError, match="class indices"):
        find_label_issues(np.array([0, 2]), np.full((2, 2), 0.5))
    with pytest.raises(ValueError, match="unknown method"):
        find_label_issues(np.array([0, 1]), np.eye(2), method="magic")  # type: ignore[arg-type]


def test_unstable_predictions() -> None:
    views = np.array(
        [
            [[0.9, 0.1], [0.6, 0.4], [0.5, 0.5]],
            [[0.8, 0.2], [0.3, 0.7], [0.5, 0.5]],
            [[0.9, 0.1], [0.7, 0.3], [0.5, 0.5]],
            [[0.85, 0.15], [0.2, 0.8], [0.5, 0.5]],
        ]
    )  # [V=4, N=3, C=2]
    flips = unstable_predictions(views)
    assert flips.tolist() == [0.0, 0.5, 0.0]
    kl = unstable_predictions(views, method="kl")
    assert kl[1] > kl[0] > 0 and kl[2] == pytest.approx(0.0, abs=1e-9)
    flags = flag_unstable(views, threshold=0.25)
    assert [f.index for f in flags] == [1] and flags[0].kind == UNSTABLE
    assert flags[0].detail["view_classes"] == [0, 1, 0, 1]
    with pytest.raises(ValueError, match=r"\[V, N, C\]"):
        unstable_predictions(views[0])
    with pytest.raises(ValueError, match="unknown method"):
        unstable_predictions(views, method="vibes")  # type: ignore[arg-type]


def test_iou_matrix_values() -> None:
    a = np.array([[0, 0, 10, 10], [100, 100, 5, 5]], float)
    b = np.array([[0, 0, 10, 10], [5, 0, 10, 10], [20, 20, 1, 1]], float)
    m = iou_matrix(a, b)
    assert m.shape == (2, 3)
    assert m[0].tolist() == pytest.approx([1.0, 50 / 150, 0.0])
    assert (m[1] == 0).all()
    assert iou_matrix(np.zeros((0, 4)), b).shape == (0, 3)
    assert iou_matrix(np.array([[0, 0, 0, 0]]), np.array([[0, 0, 0, 0]]))[0, 0] == 0.0


def test_match_boxes_one_to_one_same_label() -> None:
    gt = np.array([[0, 0, 10, 10], [50, 50, 10, 10]], float)
    pred = np.array([[1, 1, 10, 10], [0, 0, 10, 10], [50, 50, 10, 10]], float)
    pi, gi = match_boxes(pred, np.array([0, 0, 1]), gt, np.array([0, 0]))
    assert sorted(zip(pi.tolist(), gi.tolist(), strict=True)) == [(1, 0)]  # box 2: wrong label
    # COCO order: the higher-scoring prediction takes the box even with lower IoU
    pi, gi = match_boxes(
        pred[:2], np.array([0, 0]), gt[:1], np.array([0]), pred_scores=np.array([0.9, 0.1])
    )
    assert (pi.tolist(), gi.tolist()) == ([0], [0])
    empty = match_boxes(np.zeros((0, 4)), np.zeros(0), gt, np.array([0, 0]))
    assert empty[0].size == 0 and empty[1].size == 0


def test_detection_flags() -> None:
    gt = np.array([[0, 0, 10, 10], [50, 50, 10, 10], [80, 0, 10, 10]], float)
    gt_labels = np.array([0, 0, 1])
    pred = np.array(
        [
            [0, 0, 10, 10],  # matches gt 0
            [200, 200, 10, 10],  # confident, nothing there: false detection
            [50, 50, 10, 10],  # right place, too unsure: gt 1 counts as missed
            [80, 0, 10, 10],  # right place, wrong class: false + missed pair
        ],
        float,
    )
    scores = np.array([0.95, 0.9, 0.2, 0.8])
    labels = np.array([0, 0, 0, 0])
    flags = detection_flags(pred, scores, labels, gt, gt_labels, score_threshold=0.5)
    assert all(isinstance(f, Flag) for f in flags)
    false = [(f.index, f.score) for f in flags if f.kind == FALSE_DETECTION]
    assert false == [(1, pytest.approx(0.9)), (3, pytest.approx(0.8))]
    missed = {f.index: f for f in flags if f.kind == MISSED_DETECTION}
    assert set(missed) == {1, 2}
    assert missed[1].score == pytest.approx(0.0)  # a same-class box overlaps, only unsure
    assert missed[1].detail["best_pred_score"] == pytest.approx(0.2)
    assert missed[2].score == pytest.approx(1.0)  # no class-1 box anywhere
    assert missed[2].detail["best_pred"] == 3
    wrong_class = next(f for f in flags if f.index == 3 and f.kind == FALSE_DETECTION)
    assert wrong_class.detail["best_gt"] == 2 and wrong_class.detail["best_iou"] == 1.0


def test_detection_flags_empty_sides() -> None:
    gt = np.array([[0, 0, 10, 10]], float)
    none = np.zeros((0, 4))
    only_missed = detection_flags(
        none, np.zeros(0), np.zeros(0, int), gt, np.array([0]), score_threshold=0.5
    )
    assert [(f.kind, f.index) for f in only_missed] == [(MISSED_DETECTION, 0)]
    only_false = detection_flags(
        gt, np.array([0.9]), np.array([0]), none, np.zeros(0, int), score_threshold=0.5
    )
    assert [(f.kind, f.index) for f in only_false] == [(FALSE_DETECTION, 0)]
    with pytest.raises(ValueError, match="pred_scores"):
        detection_flags(gt, np.zeros(2), np.array([0]), gt, np.array([0]), score_threshold=0.5)
