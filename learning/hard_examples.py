"""Hard examples: likely label errors, unstable predictions, detection mismatches (pure).

Each finder returns :class:`Flag` objects, highest ``score`` = most worth a
reviewer's look first.  Inputs are arrays; nothing here calls a model.

* :func:`find_label_issues` - confident learning (Northcutt, Jiang & Chuang 2021,
  the method behind cleanlab's ``find_label_issues``) over out-of-sample
  probabilities (cross-validated, or from a model that never trained on the item).
* :func:`unstable_predictions` / :func:`flag_unstable` - disagreement between
  test-time-augmented views of the same image.
* :func:`detection_flags` - ``false detection`` (a confident box no label matches)
  and ``missed detection`` (a label no confident box matches).
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
    score_threshold: float,
    iou: float = 0.5,
) -> list[Flag]:
    """Mismatches between a model's boxes and the labelled boxes of one image.

    ``pred``: ``[P, 4]`` xywh with ``pred_scores`` ``[P]`` and ``pred_labels`` ``[P]``;
    ``gt``: ``[G, 4]`` with ``gt_labels`` ``[G]``.  Predictions scoring
    ``>= score_threshold`` are matched to labels (:func:`match_boxes`, COCO order).

    * ``false detection`` (``index`` = prediction): a confident box with no match -
      a model error or an object the labels lack.  ``score`` = its confidence.
    * ``missed detection`` (``index`` = labelled box): no confident box of its class
      covers it.  ``score`` = ``1 - `` the best IoU any same-class box reaches.

    ``detail`` names the best overlapping box on the other side (any class), which
    shows a class confusion as a false/missed pair at the same place.
    """
    scores = np.asarray(pred_scores, dtype=np.float64)
    pb, gb = _boxes(pred, "pred"), _boxes(gt, "gt")
    pl, gl = np.asarray(pred_labels), np.asarray(gt_labels)
    if scores.shape != (pb.shape[0],):
        raise ValueError(f"pred_scores must be [{pb.shape[0]}], got {scores.shape}")
    keep = np.flatnonzero(scores >= score_threshold)
    mp, mg = match_boxes(pb[keep], pl[keep], gb, gl, iou=iou, pred_scores=scores[keep])
    ious = iou_matrix(pb, gb)
    flags: list[Flag] = []
    for pi in keep[np.setdiff1d(np.arange(keep.size), mp)]:
        best = int(ious[pi].argmax()) if gb.shape[0] else -1
        flags.append(
            Flag(
                int(pi),
                FALSE_DETECTION,
                float(scores[pi]),
                {
                    "box": pb[pi].tolist(),
                    "label": _item(pl[pi]),
                    "best_gt": best,
                    "best_iou": float(ious[pi, best]) if best >= 0 else 0.0,
                },
            )
        )
    flags.sort(key=lambda f: -f.score)
    matched_gt = set(mg.tolist())
    for gi in range(gb.shape[0]):
        if gi in matched_gt:
            continue
        same = np.flatnonzero(pl == gl[gi])
        best_same = float(ious[same, gi].max()) if same.size else 0.0
        best = int(ious[:, gi].argmax()) if pb.shape[0] else -1
        flags.append(
            Flag(
                gi,
                MISSED_DETECTION,
                1.0 - best_same,
                {
                    "box": gb[gi].tolist(),
                    "label": _item(gl[gi]),
                    "best_same_class_iou": best_same,
                    "best_pred": best,
                    "best_pred_score": float(scores[best]) if best >= 0 else 0.0,
                },
            )
        )
    return flags


# -- helpers ---------------------------------------------------------------------


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
