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
    FlagRule,
    detection_cuts,
    detection_flags,
    find_label_issues,
    flag_label_errors,
    flag_unstable,
    iou_matrix,
    match_boxes,
    pair_bars,
    pair_history,
    pair_trust,
    unstable_predictions,
    unsupported_flags,
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


# -- flag_label_errors: the flags a reviewer sees -----------------------------------


def confident(labels: np.ndarray, n_cls: int = 3, p: float = 0.9) -> np.ndarray:
    """``[N, C]``: probability ``p`` on each given label, the rest spread evenly."""
    out = np.full((labels.size, n_cls), (1 - p) / (n_cls - 1))
    out[np.arange(labels.size), labels] = p
    return out


def balanced(n: int = 60, n_cls: int = 3) -> np.ndarray:
    return np.arange(n) % n_cls


def test_clean_well_separated_labels_get_no_flag() -> None:
    labels = balanced()
    probs = confident(labels)
    probs[0] = [0.45, 0.55, 0.0]  # honestly ambiguous: 0.55 is far below class 1's self-confidence
    assert flag_label_errors(labels, np.stack([probs] * 3)) == []
    assert flag_label_errors(labels, probs) == []  # one fit [N, C] works too


def test_an_obviously_swapped_label_is_flagged_with_a_reason() -> None:
    labels = balanced()
    probs = confident(labels)
    probs[3] = [0.03, 0.95, 0.02]  # labelled 0 ("dog"), every model says 1 ("cat")
    flags = flag_label_errors(labels, np.stack([probs] * 3), class_names=["dog", "cat", "owl"])
    assert [f.index for f in flags] == [3]
    d = flags[0].detail
    assert (d["given"], d["suggested"], d["votes"], d["fits"]) == (0, 1, 3, 3)
    assert d["suggested_prob"] == pytest.approx(0.95) and flags[0].score == pytest.approx(0.97)
    assert d["likely_right"] and d["bar"] == 0.5
    assert d["reason"] == "3 of 3 out-of-sample models say cat (0.95); the label says dog (0.03)"
    one = flag_label_errors(labels, probs, class_names=["dog", "cat", "owl"])[0].detail["reason"]
    assert one.startswith("a model that never saw this label says cat (0.95)")


def test_a_label_is_flagged_only_when_more_likely_wrong_than_right() -> None:
    labels = balanced()
    probs = confident(labels, p=0.5)  # self-confidence 0.5 per class: the per-class thresholds
    probs[0] = [0.5, 0.5, 0.0]  # a tie is not "more likely wrong"
    probs[3] = [0.3, 0.5, 0.2]  # 0.5 is not above 0.5
    probs[6] = [0.3, 0.55, 0.15]  # above 0.5 and above class 1's threshold: flagged
    evens = FlagRule(min_odds=1.0)  # these checks alone; the odds have their own test
    assert [f.index for f in flag_label_errors(labels, probs, rule=evens)] == [6]
    probs[6] = [0.05, 0.55, 0.4]  # above 0.5 but ...
    high = confident(labels, p=0.6)
    high[6] = probs[6]  # ... below class 1's self-confidence 0.6: flagged only with the class bar
    assert [f.index for f in flag_label_errors(labels, high, rule=evens)] == [6]
    assert flag_label_errors(labels, high, rule=FlagRule(min_odds=1.0, class_threshold=True)) == []


def test_a_later_scan_withdraws_the_flags_its_evidence_no_longer_supports() -> None:
    labels = balanced()
    probs = confident(labels, p=0.99)
    # rows 3, 6 and 9 are labelled 0 and were flagged as class 1
    probs[3] = [0.01, 0.98, 0.01]  # still 98 to 1 for class 1: the flag stays
    probs[6] = [0.2, 0.7, 0.1]  # now 3.5 to 1: withdrawn (the bar is 30 to 1)
    probs[9] = [0.6, 0.39, 0.01]  # the label's class came back first: withdrawn
    gone = unsupported_flags(labels, np.stack([probs] * 3), np.array([3, 6, 9]), np.array([1, 1, 1]))
    assert gone.tolist() == [False, True, True]
    assert unsupported_flags(labels, probs, np.array([6]), np.array([1]), rule=FlagRule(min_odds=3.0)).tolist() == [
        False]
    with pytest.raises(ValueError, match="rows and suggested"):
        unsupported_flags(labels, probs, np.array([6]), np.array([1, 2]))


def test_the_given_class_must_be_far_less_likely_than_the_suggested_one() -> None:
    labels = balanced()
    probs = confident(labels, p=0.99)  # the heads are sure of most labels: 198 to 1 ...
    probs[labels == 1] = confident(labels, p=0.9)[labels == 1]  # ... class 1's 18 to 1 (threshold 0.9)
    probs[3] = [0.08, 0.9, 0.02]  # likely wrong, but class 0 keeps 0.08: odds 11 to 1
    probs[6] = [0.03, 0.95, 0.02]  # odds 32 to 1
    assert [f.index for f in flag_label_errors(labels, probs)] == [6]  # the default asks for 30 to 1
    assert sorted(f.index for f in flag_label_errors(labels, probs, rule=FlagRule(min_odds=5.0))) == [3, 6]
    # heads that give the labels themselves only 9 to 1 (few labels) ask for half that
    unsure = confident(labels, p=0.9)  # 0.9 against 0.05 and 0.05: 18 to 1 ... halved: 9 to 1
    unsure[3], unsure[6] = probs[3], [0.1, 0.88, 0.02]  # 11 to 1, and 8.8 to 1
    assert [f.index for f in flag_label_errors(labels, unsure)] == [3]
    # ... on a small project only: from 100 labels on the bar is 30 to 1 whatever the heads say
    more = balanced(120)
    unsure = confident(more, p=0.9)
    unsure[3] = probs[3]
    assert flag_label_errors(more, unsure) == []
    assert [f.index for f in flag_label_errors(more, unsure, rule=FlagRule(small=200))] == [3]


def test_no_flag_before_enough_labels_or_for_a_rare_class() -> None:
    labels = balanced(48)
    probs = confident(labels)
    probs[3] = [0.03, 0.95, 0.02]
    assert flag_label_errors(labels, probs) == []  # 48 < 50 labels
    labels = np.array([0] * 30 + [1] * 25 + [2] * 8)
    probs = confident(labels)
    probs[0] = [0.03, 0.02, 0.95]  # suggests class 2, which has 8 < 10 labels
    probs[1] = [0.03, 0.95, 0.02]
    assert [f.index for f in flag_label_errors(labels, probs)] == [1]
    assert flag_label_errors(labels, probs, rule=FlagRule(min_per_class=5))[0].index == 0


def test_the_fits_must_agree() -> None:
    labels = balanced()
    base = confident(labels, p=0.55)  # class thresholds 0.55
    sure, unsure = base.copy(), base.copy()
    sure[3] = [0.0, 1.0, 0.0]
    unsure[3] = [0.45, 0.4, 0.15]  # two of three fits keep the label
    fits = np.stack([sure, unsure, unsure])
    assert fits.mean(0)[3, 1] == pytest.approx(0.6)  # above 0.5 and the threshold, on one fit's say-so
    evens = FlagRule(min_odds=1.0)  # the votes alone
    assert flag_label_errors(labels, fits, rule=evens) == []
    fits = np.stack([sure, sure, unsure])  # mean 0.8 for class 1, 2 of 3 fits agree
    flags = flag_label_errors(labels, fits, rule=evens)
    assert [f.index for f in flags] == [3] and flags[0].detail["votes"] == 2
    assert not flags[0].detail["likely_right"]  # 0.8 < 0.9


def test_the_cap_holds_and_open_flags_count_against_it() -> None:
    labels = balanced(120)
    probs = confident(labels)
    swapped = np.arange(0, 60, 3)  # 20 labels of class 0 that every model calls class 1
    probs[swapped] = [0.02, 0.97, 0.01]
    probs[swapped[:4], 0] = [0.005, 0.01, 0.015, 0.0]  # the four most clearly wrong
    probs[swapped[:4], 2] = 1 - 0.97 - probs[swapped[:4], 0]
    flags = flag_label_errors(labels, probs)
    assert len(flags) == max(5, int(0.05 * 120)) == 6
    assert [f.index for f in flags[:4]] == [int(swapped[3]), int(swapped[0]), int(swapped[1]), int(swapped[2])]
    assert len(flag_label_errors(labels, probs, open_flags=4)) == 2
    assert flag_label_errors(labels, probs, open_flags=6) == []
    skip = np.zeros(120, dtype=bool)
    skip[swapped[:10]] = True  # open or judged already: never flagged again, not counted
    again = flag_label_errors(labels, probs, skip=skip)
    assert len(again) == 6 and not {f.index for f in again} & set(swapped[:10].tolist())


def test_rejected_flags_raise_the_bar_for_their_pair_only() -> None:
    labels = balanced(90)
    probs = confident(labels, p=0.7)
    probs[0] = [0.03, 0.8, 0.17]  # 0 -> 1, fairly sure
    probs[3] = [0.02, 0.97, 0.01]  # 0 -> 1, very sure
    probs[1] = [0.15, 0.03, 0.82]  # 1 -> 2
    # reviewers kept the label on 3 earlier 0 -> 1 flags and fixed none
    right, wrong = pair_history(3, np.array([0, 0, 0]), np.array([1, 1, 1]), np.array([False, False, False]))
    assert wrong[0, 1] == 3 and right.sum() == 0 and wrong.sum() == 3
    bars = pair_bars(right, wrong)
    assert bars[0, 1] == pytest.approx(0.875) and bars[1, 2] == 0.5
    plain = flag_label_errors(labels, probs)
    assert sorted(f.index for f in plain) == [0, 1, 3]
    flags = flag_label_errors(labels, probs, right=right, wrong=wrong, class_names=["a", "b", "c"])
    assert sorted(f.index for f in flags) == [1, 3]  # 0.8 < 0.875; the 1 -> 2 pair is untouched
    f3 = next(f for f in flags if f.index == 3)
    assert not f3.detail["likely_right"]  # reviewers mostly rejected this pair: it stays in training
    assert "reviewers kept the label in 3 of 3 recent a -> b flags, so this pair needs 0.88" in f3.detail["reason"]
    # with as many fixes as rejections the pair is trusted again
    right[0, 1] = 3
    assert sorted(f.index for f in flag_label_errors(labels, probs, right=right, wrong=wrong)) == [0, 1, 3]


def test_a_distrusted_pair_gets_a_smaller_share_of_the_cap() -> None:
    labels = balanced(300)
    probs = confident(labels)
    probs[np.arange(0, 60, 3)] = [0.01, 0.98, 0.01]  # 20 labels of class 0 every model calls 1
    assert len(flag_label_errors(labels, probs)) == 15  # the cap: 5% of 300
    wrong = np.zeros((3, 3))
    wrong[0, 1] = 3  # trust 1/4: a quarter of the cap for this pair
    assert len(flag_label_errors(labels, probs, wrong=wrong)) == 3


def test_pair_history_keeps_each_pairs_recent_verdicts() -> None:
    given = np.array([0] * 25 + [1])
    suggested = np.array([1] * 25 + [0])
    right_flags = np.array([True] * 5 + [False] * 20 + [True])  # the 5 old fixes fall out of the window
    right, wrong = pair_history(2, given, suggested, right_flags, window=20)
    assert (right[0, 1], wrong[0, 1], right[1, 0]) == (0, 20, 1)
    with pytest.raises(ValueError, match=r"\[H\]"):
        pair_history(2, given, suggested[:3], right_flags)


def test_flag_label_errors_validation() -> None:
    with pytest.raises(ValueError, match="fits must be"):
        flag_label_errors(np.zeros(3, int), np.zeros(3))
    with pytest.raises(ValueError, match="right and wrong"):
        flag_label_errors(balanced(), confident(balanced()), right=np.zeros((2, 2)))


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
            [200, 200, 10, 10],  # sure, nothing labelled there: false detection
            [50, 50, 10, 10],  # right place, too unsure: gt 1 counts as missed
            [80, 0, 10, 10],  # right place, wrong class: gt 2 missed (a labelled box is there)
        ],
        float,
    )
    scores = np.array([0.95, 0.9, 0.2, 0.8])
    labels = np.array([0, 0, 0, 0])
    flags = detection_flags(pred, scores, labels, gt, gt_labels, score_threshold=0.5)
    assert all(isinstance(f, Flag) for f in flags)
    false = [(f.index, f.score) for f in flags if f.kind == FALSE_DETECTION]
    assert false == [(1, pytest.approx(0.9))]
    missed = {f.index: f for f in flags if f.kind == MISSED_DETECTION}
    assert set(missed) == {1, 2}
    assert missed[1].score == pytest.approx(0.8)  # 1 - the best same-class score over it
    assert missed[1].detail["best_same_class_score"] == pytest.approx(0.2)
    assert missed[1].detail["best_same_class_iou"] == pytest.approx(1.0)
    assert missed[2].score == pytest.approx(1.0)  # no class-1 box anywhere
    assert missed[2].detail["best_pred"] == 3 and missed[2].detail["best_pred_score"] == pytest.approx(0.8)
    assert next(f for f in flags if f.index == 1 and f.kind == FALSE_DETECTION).detail["best_gt"] in (0, 1, 2)


def test_detection_flags_judge_each_side_at_its_own_cut() -> None:
    """The digit-canvas finding: with a certified pre-label threshold near 0.9, every true box
    scored below it counted as missed. Judged at a low cut for missed (0.3) and a high one for
    false (0.9), correct labels with middling scores give no flag."""
    gt = np.array([[0, 0, 10, 10], [30, 0, 10, 10], [60, 0, 10, 10]], float)
    gt_labels = np.array([0, 1, 2])
    pred = gt + 1.0  # the model finds every object ...
    scores = np.array([0.55, 0.7, 0.85])  # ... below a 0.9 pre-label threshold
    old = detection_flags(pred, scores, gt_labels, gt, gt_labels, score_threshold=0.9)
    assert [f.kind for f in old] == [MISSED_DETECTION] * 3
    assert detection_flags(pred, scores, gt_labels, gt, gt_labels, missed_below=0.3, false_above=0.9) == []
    # a box the model barely sees (0.1) is missed; a very sure box on empty ground is false
    extra = np.vstack([pred, [[100, 100, 10, 10]]])
    flags = detection_flags(extra, np.array([0.1, 0.7, 0.85, 0.97]), np.array([0, 1, 2, 2]), gt, gt_labels,
                            missed_below=0.3, false_above=0.9)
    assert [(f.kind, f.index) for f in flags] == [(FALSE_DETECTION, 3), (MISSED_DETECTION, 0)]
    assert flags[1].score == pytest.approx(0.9)
    # per-class sure cut [C]: class 2 needs 0.99, so its 0.97 box is no longer a flag
    per_class = detection_flags(extra, np.array([0.1, 0.7, 0.85, 0.97]), np.array([0, 1, 2, 2]), gt, gt_labels,
                                missed_below=0.3, false_above=np.array([0.9, 0.9, 0.99]))
    assert [(f.kind, f.index) for f in per_class] == [(MISSED_DETECTION, 0)]
    # a duplicate sure box on a labelled object is no false detection (it overlaps a label)
    dup = detection_flags(np.vstack([gt, gt[:1]]), np.array([0.95, 0.95, 0.95, 0.93]), np.array([0, 1, 2, 0]),
                          gt, gt_labels, missed_below=0.3, false_above=0.9)
    assert dup == []
    with pytest.raises(ValueError, match="missed_below"):
        detection_flags(pred, scores, gt_labels, gt, gt_labels)


def test_detection_cuts_tighten_with_rejected_flags() -> None:
    assert detection_cuts(0.3, 0.9, 1.0) == (0.3, 0.9)
    low, high = detection_cuts(0.3, 0.9, 0.25)
    assert low == pytest.approx(0.075) and high == pytest.approx(0.975)
    assert pair_trust(np.array(3.0), np.array(0.0)) == 1.0 and pair_trust(np.array(0.0), np.array(3.0)) == 0.25


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
