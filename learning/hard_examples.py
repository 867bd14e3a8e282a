"""Hard examples: likely label errors, unstable predictions, detection mismatches (pure).

Each finder returns :class:`Flag` objects, highest ``score`` = most worth a
reviewer's look first.  Inputs are arrays; nothing here calls a model.

* :func:`flag_label_errors` - the flags a reviewer sees: a human label whose
  out-of-sample (cross-fitted) evidence says it is more likely wrong than right, at
  most a few per run, with a stricter bar for class pairs reviewers kept rejecting
  (:func:`pair_history`, :func:`pair_bars`).
* :func:`find_label_issues` - plain confident learning (Northcutt, Jiang & Chuang 2021,
  the method behind cleanlab's ``find_label_issues``) over out-of-sample
  probabilities: a ranking, too eager to show a reviewer (about a quarter of correct
  labels at 1,000 labels with a 0.85-accurate model; ``lab/benchmarks/bench_flags.py``).
* :func:`unstable_predictions` / :func:`flag_unstable` - disagreement between
  test-time-augmented views of the same image.
* :func:`detection_flags` - ``false detection`` (a very sure box no label overlaps)
  and ``missed detection`` (a labelled box the model barely sees).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

LABEL_ISSUE = "label issue"
UNSTABLE = "unstable prediction"
FALSE_DETECTION = "false detection"
MISSED_DETECTION = "missed detection"


@dataclass
class Flag:
    """One item for review.  ``index`` is a row of the input that ``kind`` refers to
    (an item, a predicted box for ``false detection``, a labelled box for
    ``missed detection``); ``score``: higher = more suspicious."""

    index: int
    kind: str
    score: float
    detail: dict[str, Any] = field(default_factory=dict)


# -- classification label errors -------------------------------------------------


def find_label_issues(
    labels: np.ndarray,
    pred_probs: np.ndarray,
    *,
    method: Literal["confident_learning", "prune_by_noise_rate"] = "confident_learning",
    max_flags: int | None = None,
) -> list[Flag]:
    """Human labels that out-of-sample predictions confidently contradict.

    ``labels``: ``[N]`` int given classes; ``pred_probs``: ``[N, C]`` out-of-sample
    probabilities.  Per class ``j`` the threshold ``t_j`` is the mean of
    ``pred_probs[:, j]`` over items labelled ``j`` (its average self-confidence).  An
    item is *confidently* class ``j`` when ``p_j >= t_j`` (the highest such ``p_j``
    wins); the counts of (given, confident) pairs form the confident joint.

    ``"confident_learning"`` flags the off-diagonal items of the joint; an item no
    class is confident about counts by its argmax (measured on Fashion-MNIST with 5%
    of 2,000 labels corrupted, 3 seeds: recall in the top 10% flagged rose from 0.67
    to 0.87 when the same runs' out-of-sample probabilities were scored this way;
    ``labelloop simulate-review label-errors``).
    ``"prune_by_noise_rate"`` calibrates the joint to the label counts and, for each
    off-diagonal cell ``(i, j)``, flags that many items labelled ``i`` with the
    largest margin ``p_j - p_i`` (cleanlab's default).  Either way an item whose
    argmax equals its label is never flagged.  Flags are ranked by self-confidence
    ``p[label]``, lowest first; ``score = 1 - p[label]``.  A class nobody labelled
    has no threshold and is never the suggested class.
    """
    y, p = _check_labels(labels, pred_probs)
    n, c = p.shape
    thresholds = np.full(c, np.inf)
    for j in range(c):
        if (y == j).any():
            thresholds[j] = p[y == j, j].mean()
    above = p >= thresholds[None, :] - 1e-12
    masked = np.where(above, p, -np.inf)
    has_conf = np.asarray(above.any(axis=1), dtype=bool)
    # an item no class is confident about falls back to its argmax: with few labels per
    # class the per-class thresholds are high, and most wrong labels sit in that band
    confident = np.where(has_conf, masked.argmax(axis=1), p.argmax(axis=1))
    off = confident != y
    if method == "confident_learning":
        issue = off
    elif method == "prune_by_noise_rate":
        issue = _prune_by_noise_rate(y, p, confident, has_conf)
    else:
        raise ValueError(
            f"unknown method {method!r}; known: confident_learning, prune_by_noise_rate"
        )
    issue &= p.argmax(axis=1) != y
    idx = np.flatnonzero(issue)
    self_conf = p[np.arange(n), y]
    idx = idx[np.argsort(self_conf[idx], kind="stable")]
    if max_flags is not None:
        idx = idx[:max_flags]
    suggested = np.where(has_conf, confident, p.argmax(axis=1))
    return [
        Flag(
            int(i),
            LABEL_ISSUE,
            float(1.0 - self_conf[i]),
            {
                "given": int(y[i]),
                "suggested": int(suggested[i]),
                "self_confidence": float(self_conf[i]),
                "suggested_prob": float(p[i, suggested[i]]),
            },
        )
        for i in idx
    ]


def _prune_by_noise_rate(
    y: np.ndarray, p: np.ndarray, confident: np.ndarray, has_conf: np.ndarray
) -> np.ndarray:
    n, c = p.shape
    joint = np.zeros((c, c))
    np.add.at(joint, (y[has_conf], confident[has_conf]), 1.0)
    label_counts = np.bincount(y, minlength=c).astype(float)
    row = joint.sum(axis=1, keepdims=True)
    calibrated = np.divide(joint, row, out=np.zeros_like(joint), where=row > 0)
    calibrated *= label_counts[:, None]
    n_prune = np.round(calibrated / max(calibrated.sum(), 1.0) * n).astype(int)
    issue = np.zeros(n, dtype=bool)
    for i in range(c):
        members = np.flatnonzero(y == i)
        for j in range(c):
            if i == j or n_prune[i, j] == 0 or members.size == 0:
                continue
            gap = p[members, j] - p[members, i]
            issue[members[np.argsort(-gap, kind="stable")[: n_prune[i, j]]]] = True
    return issue


# -- classification label errors: the reviewer-facing rule ----------------------


@dataclass(frozen=True)
class FlagRule:
    """When :func:`flag_label_errors` flags a human label, and when the flag is *likely right*.

    ``min_labels``: no flag before this many checked labels; ``min_per_class``: nor for a
    label whose given or suggested class has fewer (per-class thresholds need a sample).
    ``min_prob``: the suggested class's out-of-sample probability must exceed it (0.5:
    the label is more likely wrong than right). ``max_share`` / ``min_cap``: at most
    ``max(min_cap, floor(max_share * N))`` flags open at once, new and old (5%: a
    2% cap would miss three in five wrong labels of a project with 5% of them wrong;
    the rule itself flags about 1% of clean labels, ``lab/benchmarks/bench_flags.py``). ``min_odds``:
    the suggested class must also be at least this many times as probable as the given one
    (out of sample). Margin's labels are the hard images, and the heads often doubt a right
    label of a class that looks like another (dresses the heads call shirts at 0.5-0.9 while
    still giving "dress" 0.01-0.3): with every label of a Fashion-MNIST run right and a scan
    after every training, 4.3% of 740 labels were flagged without the odds, 1.8% of 1,000 and
    3.25% of 2,000 at 30 to 1 while flags stayed open once raised, 1.6% and 1.8% (replayed) once
    a later scan withdraws what it no longer supports (:func:`unsupported_flags`; lab/RESULTS.md,
    "Label-error flags on the defaults" and the section after it). On a project with fewer than ``small`` checked
    labels, half the odds the heads give the upper quarter of the labels, if lower. ``likely_right``: a flag
    whose suggested probability reaches it (and whose pair reviewers have not mostly
    rejected) may take its item out of training. ``window``: most recent verdicts per
    (given, suggested) pair that count. ``class_threshold``: also require confident learning's
    per-class bar (off: on a Fashion-MNIST run with 5% of 2,000 labels corrupted it turned away
    16 of the 100 least self-confident labels, 11 of them wrong, which the odds already judge:
    flags' precision / recall at 2,000 labels 0.62 / 0.61 with it, 0.65 / 0.66 without, both
    with the withdrawal of :func:`unsupported_flags`; ``lab/benchmarks/flag_replay.py``)."""

    min_labels: int = 50
    min_per_class: int = 10
    min_prob: float = 0.5
    min_odds: float = 30.0
    small: int = 100
    max_share: float = 0.05
    min_cap: int = 5
    likely_right: float = 0.9
    window: int = 20
    class_threshold: bool = False


def pair_history(
    n_classes: int,
    given: np.ndarray,
    suggested: np.ndarray,
    flag_right: np.ndarray,
    *,
    window: int = 20,
) -> tuple[np.ndarray, np.ndarray]:
    """Reviewers' verdicts on past label-error flags, per (given, suggested) pair.

    ``given`` / ``suggested``: ``[H]`` class ids of resolved flags, oldest first;
    ``flag_right``: ``[H]`` bool, the reviewer fixed the label (the flag was right) or
    kept it (confirmed or dismissed: the flag was wrong).  Only each pair's last
    ``window`` verdicts count.  Returns ``(right [C, C], wrong [C, C])`` counts.
    """
    g, s = np.asarray(given, dtype=np.int64), np.asarray(suggested, dtype=np.int64)
    ok = np.asarray(flag_right, dtype=bool)
    if not g.shape == s.shape == ok.shape or g.ndim != 1:
        raise ValueError("given, suggested and flag_right must all be [H]")
    right, wrong = np.zeros((n_classes, n_classes)), np.zeros((n_classes, n_classes))
    seen = np.zeros((n_classes, n_classes), dtype=np.int64)
    for i in range(g.size - 1, -1, -1):  # newest first
        a, b = g[i], s[i]
        if seen[a, b] >= window:
            continue
        seen[a, b] += 1
        (right if ok[i] else wrong)[a, b] += 1
    return right, wrong


def pair_trust(right: np.ndarray, wrong: np.ndarray) -> np.ndarray:
    """``[C, C]`` in ``(0, 1]``: ``min(1, (right + 1) / (wrong + 1))``, 1 until reviewers
    rejected more flags of the pair than they accepted.  Higher = trust the pair's flags more."""
    return np.minimum(1.0, (np.asarray(right) + 1.0) / (np.asarray(wrong) + 1.0))


def pair_bars(right: np.ndarray, wrong: np.ndarray, *, base: float = 0.5, ceiling: float = 0.99) -> np.ndarray:
    """``[C, C]`` suggested-probability bar per (given, suggested) pair.

    ``1 - (1 - base) * trust`` (:func:`pair_trust`), in ``[base, ceiling]``: ``base`` for a
    pair without rejected flags; 3 rejected and none accepted give 0.875 (base 0.5), 10
    give 0.955.  A pair's flag needs its suggested probability above the bar."""
    return np.clip(1.0 - (1.0 - base) * pair_trust(right, wrong), base, ceiling)


def flag_label_errors(
    labels: np.ndarray,
    fits: np.ndarray,
    *,
    rule: FlagRule = FlagRule(),  # noqa: B008  (frozen)
    right: np.ndarray | None = None,
    wrong: np.ndarray | None = None,
    skip: np.ndarray | None = None,
    open_flags: int = 0,
    class_names: list[str] | None = None,
) -> list[Flag]:
    """Human labels the out-of-sample evidence says are more likely wrong than right.

    ``labels``: ``[N]`` given classes; ``fits``: ``[R, N, C]`` (or ``[N, C]``)
    out-of-sample probabilities from ``R`` cross-fittings with different seeds; their
    mean ``p`` decides.  Item ``i`` with label ``y`` and most likely other class ``s`` is
    flagged when all hold:

    * ``N >= rule.min_labels`` and classes ``y`` and ``s`` have ``>= rule.min_per_class`` labels;
    * ``p_s > p_y``, and with ``rule.class_threshold`` also ``p_s >= t_s``, ``t_s`` the mean
      self-confidence of class ``s`` (confident learning's per-class threshold, as in cleanlab);
    * ``p_s >`` the pair's bar (:func:`pair_bars` of ``right`` / ``wrong`` ``[C, C]``
      verdicts, :func:`pair_history`; ``rule.min_prob`` without history);
    * ``p_s >= k * p_y``, ``k`` = ``rule.min_odds`` (the given class far less likely than
      the suggested one); below ``rule.small`` labels, half the odds ``p_y / p_s`` of the
      upper quarter of the labels where that is lower (on 60 labels of two colours the heads
      gave an obvious swap 10-12 to 1);
    * more than half of the ``R`` fits put ``s`` first;
    * it is not in ``skip`` (``[N]`` bool: an open flag, or a label a reviewer judged).

    At most ``max(rule.min_cap, floor(rule.max_share * N)) - open_flags`` flags (the
    flags still open count against the cap, so a reviewer's queue stays bounded),
    highest ``score = 1 - p_y`` first (ties: lower index); a pair's share of that cap
    shrinks by its :func:`pair_trust`.  ``detail``: ``given``, ``suggested``, ``self_confidence``,
    ``suggested_prob``, ``votes`` of ``fits``, the class ``threshold``, the pair's ``bar``,
    ``likely_right`` (``p_s >= max(rule.likely_right, bar)`` and reviewers did not reject
    more of the pair's flags than they accepted) and ``reason``, a sentence for the
    reviewer naming ``class_names`` (ids without).  Deterministic.
    """
    stack = np.asarray(fits, dtype=np.float64)
    stack = stack[None] if stack.ndim == 2 else stack
    if stack.ndim != 3 or stack.shape[0] < 1:
        raise ValueError(f"fits must be [R, N, C] or [N, C], got shape {stack.shape}")
    y, p = _check_labels(labels, stack.mean(axis=0))
    n, c = p.shape
    right = np.zeros((c, c)) if right is None else np.asarray(right, dtype=np.float64)
    wrong = np.zeros((c, c)) if wrong is None else np.asarray(wrong, dtype=np.float64)
    if right.shape != (c, c) or wrong.shape != (c, c):
        raise ValueError(f"right and wrong must be [{c}, {c}]")
    if n < rule.min_labels:
        return []
    counts = np.bincount(y, minlength=c)
    thresholds = np.array([p[y == j, j].mean() if counts[j] else np.inf for j in range(c)])
    self_conf, s, ps = _given_and_other(p, y)
    bars = np.maximum(pair_bars(right, wrong, base=rule.min_prob), rule.min_prob)[y, s]
    votes = (stack.argmax(axis=2) == s[None]).sum(axis=0)
    ok = (counts[y] >= rule.min_per_class) & (counts[s] >= rule.min_per_class)
    ok &= (ps > self_conf) & (ps > bars) & (2 * votes > stack.shape[0])
    if rule.class_threshold:
        ok &= ps >= thresholds[s] - 1e-12
    ok &= ps >= odds_needed(self_conf, ps, rule) * self_conf
    if skip is not None:
        ok &= ~np.asarray(skip, dtype=bool)
    idx = np.flatnonzero(ok)
    idx = idx[np.argsort(self_conf[idx], kind="stable")]
    cap = max(rule.min_cap, int(np.floor(rule.max_share * n))) - open_flags
    trust = pair_trust(right, wrong)
    taken: dict[tuple[int, int], int] = {}
    names = class_names or [f"class {j}" for j in range(c)]
    flags: list[Flag] = []
    for i in idx:
        pair = (int(y[i]), int(s[i]))
        if len(flags) >= cap or taken.get(pair, 0) >= max(1, int(cap * trust[pair])):
            continue
        taken[pair] = taken.get(pair, 0) + 1
        likely = bool(ps[i] >= max(rule.likely_right, bars[i]) and wrong[pair] <= right[pair])
        detail: dict[str, Any] = {
            "given": pair[0],
            "suggested": pair[1],
            "self_confidence": float(self_conf[i]),
            "suggested_prob": float(ps[i]),
            "votes": int(votes[i]),
            "fits": int(stack.shape[0]),
            "threshold": float(thresholds[pair[1]]),
            "bar": float(bars[i]),
            "likely_right": likely,
        }
        detail["reason"] = label_reason(detail, names, right[pair], wrong[pair])
        flags.append(Flag(int(i), LABEL_ISSUE, float(1.0 - self_conf[i]), detail))
    return flags


def odds_needed(self_conf: np.ndarray, suggested_prob: np.ndarray, rule: FlagRule) -> float:
    """How many times as probable as the given class the suggested one must be, over ``[N]``
    checked labels: ``rule.min_odds``; on a small project (fewer than ``rule.small`` labels),
    whose heads are never sure enough for that, half the odds they give the upper quarter of
    the labels where that is lower (on a larger one that would let a weak early model flag
    every doubtful look-alike: 37 of 860 right Fashion-MNIST labels)."""
    need = rule.min_odds
    if len(self_conf) < rule.small:
        need = min(need, 0.5 * float(np.quantile(self_conf / np.maximum(suggested_prob, 1e-12), 0.75)))
    return need


def unsupported_flags(labels: np.ndarray, fits: np.ndarray, rows: np.ndarray, suggested: np.ndarray, *,
                      rule: FlagRule = FlagRule()) -> np.ndarray:  # noqa: B008  (frozen)
    """``[F]`` bool: which open flags a new scan's evidence no longer supports.

    ``rows`` / ``suggested``: ``[F]`` the flagged labels (rows of ``labels`` / ``fits``, as
    :func:`flag_label_errors` takes them) and the class each flag suggested. A flag stays while
    its suggested class is still at least the odds bar (:func:`odds_needed`) times as probable
    as the given one; else the flag is withdrawn (the flags of a scan after every training would
    otherwise pile up: with every Fashion-MNIST label right, 2.2% of 1,700 labels flagged, 1.5%
    when each scan withdraws what it no longer supports; ``lab/benchmarks/flag_replay.py``)."""
    stack = np.asarray(fits, dtype=np.float64)
    stack = stack[None] if stack.ndim == 2 else stack
    y, p = _check_labels(labels, stack.mean(axis=0))
    rows, suggested = np.asarray(rows, dtype=np.int64), np.asarray(suggested, dtype=np.int64)
    if rows.shape != suggested.shape or rows.ndim != 1:
        raise ValueError("rows and suggested must both be [F]")
    self_conf, _, ps = _given_and_other(p, y)
    need = odds_needed(self_conf, ps, rule)
    return np.asarray(p[rows, suggested] < need * self_conf[rows], dtype=bool)


def label_reason(detail: dict[str, Any], names: list[str], right: float = 0, wrong: float = 0) -> str:
    """The sentence a reviewer reads for a :func:`flag_label_errors` flag."""
    said, given = names[detail["suggested"]], names[detail["given"]]
    votes, fits, prob = detail["votes"], detail["fits"], detail["suggested_prob"]
    who = (f"{votes} of {fits} out-of-sample models say" if fits > 1
           else "a model that never saw this label says")
    out = f"{who} {said} ({prob:.2f}); the label says {given} ({detail['self_confidence']:.2f})"
    if wrong:
        out += (f"; reviewers kept the label in {int(wrong)} of {int(right + wrong)} recent {given} -> {said}"
                f" flags, so this pair needs {detail['bar']:.2f}")
    return out


# -- unstable predictions --------------------------------------------------------


def unstable_predictions(
    probs_views: np.ndarray, *, method: Literal["flip", "kl"] = "flip"
) -> np.ndarray:
    """How much test-time-augmented views of each item disagree; ``[V, N, C] -> [N]``.

    ``"flip"``: share of the ``V`` views whose argmax differs from the argmax of the
    mean prediction, in ``[0, 1 - 1/V]``.  ``"kl"``: mean ``KL(view || mean)`` in nats
    (the mutual information between view and prediction).  Higher = less stable.
    """
    pv = np.asarray(probs_views, dtype=np.float64)
    if pv.ndim != 3 or pv.shape[0] < 1:
        raise ValueError(f"probs_views must be [V, N, C], got shape {pv.shape}")
    mean = pv.mean(axis=0)
    if method == "flip":
        return (pv.argmax(axis=2) != mean.argmax(axis=1)[None, :]).mean(axis=0)
    if method == "kl":
        eps = 1e-12
        kl = (pv * (np.log(pv + eps) - np.log(mean[None] + eps))).sum(axis=2)
        return np.maximum(kl, 0.0).mean(axis=0)
    raise ValueError(f"unknown method {method!r}; known: flip, kl")


def flag_unstable(
    probs_views: np.ndarray,
    *,
    threshold: float = 0.25,
    method: Literal["flip", "kl"] = "flip",
) -> list[Flag]:
    """Items whose :func:`unstable_predictions` score is ``>= threshold`` (> 0), worst first."""
    scores = unstable_predictions(probs_views, method=method)
    pv = np.asarray(probs_views, dtype=np.float64)
    mean_cls, view_cls = pv.mean(axis=0).argmax(axis=1), pv.argmax(axis=2)
    idx = np.flatnonzero((scores >= threshold) & (scores > 0))
    idx = idx[np.argsort(-scores[idx], kind="stable")]
    return [
        Flag(
            int(i),
            UNSTABLE,
            float(scores[i]),
            {"mean_class": int(mean_cls[i]), "view_classes": view_cls[:, i].tolist()},
        )
        for i in idx
    ]


# -- detection -------------------------------------------------------------------


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of boxes ``[A, 4]`` x ``[B, 4]`` -> ``[A, B]``.

    Boxes are ``(x, y, width, height)`` with ``(x, y)`` the top-left corner (COCO).
    """
    a, b = _boxes(a, "a"), _boxes(b, "b")
    ax2, ay2 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]
    bx2, by2 = b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.minimum(ax2[:, None], bx2[None]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(ay2[:, None], by2[None]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def match_boxes(
    pred: np.ndarray,
    pred_labels: np.ndarray,
    gt: np.ndarray,
    gt_labels: np.ndarray,
    iou: float = 0.5,
    pred_scores: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matches between predicted ``[P, 4]`` and labelled ``[G, 4]`` boxes (xywh).

    A pair can match only with equal labels and IoU ``>= iou``.  With
    ``pred_scores`` ``[P]`` the matching is COCO's: predictions in descending score
    order each take the best free labelled box; without, the highest-IoU pairs are
    matched first.  Returns ``(pred_idx [M], gt_idx [M])`` int64.
    """
    ious = iou_matrix(pred, gt)
    pl, gl = np.asarray(pred_labels), np.asarray(gt_labels)
    if pl.shape != (ious.shape[0],) or gl.shape != (ious.shape[1],):
        raise ValueError("pred_labels must be [P] and gt_labels [G]")
    rows, cols = np.nonzero((pl[:, None] == gl[None, :]) & (ious >= iou))
    overlap = ious[rows, cols]
    if pred_scores is None:
        order = np.argsort(-overlap, kind="stable")
    else:  # by score, then by IoU: each prediction takes its best free box in turn
        order = np.lexsort((-overlap, -np.asarray(pred_scores, dtype=np.float64)[rows]))
    pairs: list[tuple[int, int]] = []
    used_p: set[int] = set()
    used_g: set[int] = set()
    for r in order:
        pi, gi = int(rows[r]), int(cols[r])
        if pi not in used_p and gi not in used_g:
            pairs.append((pi, gi))
            used_p.add(pi)
            used_g.add(gi)
    arr = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    return arr[:, 0], arr[:, 1]


def detection_flags(
    pred: np.ndarray,
    pred_scores: np.ndarray,
    pred_labels: np.ndarray,
    gt: np.ndarray,
    gt_labels: np.ndarray,
    *,
    score_threshold: float | None = None,
    missed_below: float | None = None,
    false_above: float | np.ndarray | None = None,
    iou: float = 0.5,
) -> list[Flag]:
    """Boxes of one image where the model and the labels clearly disagree.

    ``pred``: ``[P, 4]`` xywh with ``pred_scores`` ``[P]`` and ``pred_labels`` ``[P]``
    (class ids); ``gt``: ``[G, 4]`` with ``gt_labels`` ``[G]``.  Each side is judged at a
    cut chosen for the flag's own precision, not at a pre-label threshold:

    * ``false detection`` (``index`` = prediction): the model is very sure, score
      ``>= false_above`` (a float, or ``[C]`` per predicted class), and no labelled box of
      any class overlaps it at IoU ``>= iou`` (an object the labels lack).
      ``score`` = its confidence.
    * ``missed detection`` (``index`` = labelled box): the best score among same-class
      predictions overlapping it at IoU ``>= iou`` is ``< missed_below`` (0 with none):
      the model barely sees that object.  ``score`` = ``1 -`` that best score.

    ``score_threshold`` stands for either cut not given (one cut for both, as before).
    ``detail`` names the best overlapping box on the other side (any class), which shows
    a class confusion: a labelled box flagged missed under a sure box of another class.
    """
    scores = np.asarray(pred_scores, dtype=np.float64)
    pb, gb = _boxes(pred, "pred"), _boxes(gt, "gt")
    pl, gl = np.asarray(pred_labels), np.asarray(gt_labels)
    if scores.shape != (pb.shape[0],):
        raise ValueError(f"pred_scores must be [{pb.shape[0]}], got {scores.shape}")
    if pl.shape != (pb.shape[0],) or gl.shape != (gb.shape[0],):
        raise ValueError("pred_labels must be [P] and gt_labels [G]")
    low = score_threshold if missed_below is None else missed_below
    high: Any = score_threshold if false_above is None else false_above
    if low is None or high is None:
        raise ValueError("give missed_below and false_above (or score_threshold for both)")
    high_arr = np.asarray(high, dtype=np.float64)
    sure = high_arr[pl.astype(np.int64)] if high_arr.ndim == 1 and pl.size else np.broadcast_to(high_arr, scores.shape)
    ious = iou_matrix(pb, gb)
    flags: list[Flag] = []
    for pi in np.flatnonzero(scores >= sure):
        if gb.shape[0] and ious[pi].max() >= iou:
            continue
        best = int(ious[pi].argmax()) if gb.shape[0] else -1
        flags.append(Flag(int(pi), FALSE_DETECTION, float(scores[pi]), {
            "box": pb[pi].tolist(), "label": _item(pl[pi]), "best_gt": best,
            "best_iou": float(ious[pi, best]) if best >= 0 else 0.0}))
    flags.sort(key=lambda f: -f.score)
    for gi in range(gb.shape[0]):
        same = (pl == gl[gi]) & (ious[:, gi] >= iou)
        seen = float(scores[same].max()) if same.any() else 0.0
        if seen >= low:
            continue
        same_any = np.flatnonzero(pl == gl[gi])
        best = int(ious[:, gi].argmax()) if pb.shape[0] else -1
        flags.append(Flag(gi, MISSED_DETECTION, 1.0 - seen, {
            "box": gb[gi].tolist(), "label": _item(gl[gi]), "best_same_class_score": seen,
            "best_same_class_iou": float(ious[same_any, gi].max()) if same_any.size else 0.0,
            "best_pred": best, "best_pred_score": float(scores[best]) if best >= 0 else 0.0}))
    return flags


def detection_cuts(missed_below: float, false_above: float, trust: float) -> tuple[float, float]:
    """Cuts of :func:`detection_flags` tightened by reviewers' verdicts on a kind of flag.

    ``trust`` in ``(0, 1]`` (:func:`pair_trust` of the kind's fixed vs kept counts): 1
    leaves the cuts; lower moves ``missed_below`` toward 0 and ``false_above`` toward 1,
    e.g. trust 0.25 turns (0.3, 0.9) into (0.075, 0.975).  Returns ``(missed_below, false_above)``."""
    t = float(np.clip(trust, 0.0, 1.0))
    return missed_below * t, 1.0 - (1.0 - false_above) * t


# -- helpers ---------------------------------------------------------------------


def _given_and_other(p: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(p_y, s, p_s)`` per row: the given class's probability, the most probable other class
    and its probability."""
    rows = np.arange(len(y))
    other = p.copy()
    other[rows, y] = -np.inf
    s = other.argmax(axis=1)
    return p[rows, y], s, p[rows, s]


def _check_labels(labels: np.ndarray, pred_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred_probs, dtype=np.float64)
    y = np.asarray(labels)
    if p.ndim != 2 or y.shape != (p.shape[0],):
        raise ValueError(f"need labels [N] and pred_probs [N, C], got {y.shape} and {p.shape}")
    if y.size and (y.min() < 0 or y.max() >= p.shape[1]):
        raise ValueError(f"labels must be class indices in [0, {p.shape[1]})")
    return y.astype(np.int64), p


def _boxes(x: np.ndarray, name: str) -> np.ndarray:
    b = np.asarray(x, dtype=np.float64)
    if b.size == 0:
        b = b.reshape(0, 4)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"{name} boxes must be [K, 4] (x, y, w, h), got shape {b.shape}")
    return b


def _item(x: Any) -> Any:
    return x.item() if hasattr(x, "item") else x
