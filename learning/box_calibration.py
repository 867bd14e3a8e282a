"""Score thresholds for detected boxes with a precision guarantee, and the completeness rule (pure).

*Correct box.*  On a hold-out image a predicted box is correct when it is matched, one to
one in descending score order (COCO's rule, :func:`learning.hard_examples.match_boxes`), to
a human box of the same class with IoU ``>= iou`` (0.5 by default).

*Thresholds.*  Per class, the predicted boxes of that class on all hold-out images give
``scores`` and ``correct``; :func:`learning.calibration.calibrate` returns the lowest score
threshold whose box precision is ``>= target`` at confidence ``1 - delta`` (fixed-sequence
Clopper-Pearson, same guarantee and assumptions as there).  A class with too few hold-out
boxes to prove anything (fewer than ``min_evidence_for(target, delta)``) takes the *pooled*
threshold (all classes' boxes together) when ``mode="per_class"``; its guarantee is then the
pooled one: the precision of all pre-labelled boxes together, not of that class alone.
``mode="pooled"`` uses the pooled threshold for every class.  A class whose own evidence
fails the test gets no threshold (never a pooled fallback that its own boxes contradict).

What the guarantee assumes beyond :mod:`learning.calibration`: the unit is a *box*.
Hold-out images are drawn at random, but boxes of one image are not independent of each
other (a hard image tends to hold several wrong boxes), so the binomial model is exact only
when boxes behave like independent draws; with strong within-image clustering the stated
``delta`` is optimistic.  The image-level figures below are the honest check.

*Completeness* (:func:`propose`).  An image is proposed only when (1) it has at least one box
at or above its class threshold and (2) no box lies in the *uncertain band*: scoring at or
above the lower ``possible`` score but below its class threshold (or of a class without a
threshold).  What this checks: that the model itself sees no object it is unsure about.
What it cannot check: objects the model does not see at all (every score below
``possible``): a proposed image may still miss objects.  ``possible`` is derived from the
hold-out set so that a ``recall`` share of the human boxes the model finds at all have
scores at or above it.  :func:`calibrate_boxes` reports, on the hold-out images the rule
would propose, the share that is *complete and correct* (every proposed box correct and
every human box matched) with its Clopper-Pearson lower bound; images are i.i.d., but the
rule's parameters were picked on the same images, so this is a measurement, not a guarantee.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from learning.calibration import Threshold, calibrate, clopper_pearson_lower, min_evidence_for
from learning.hard_examples import match_boxes

BOX_START_ERROR_RATE = 0.0025

__all__ = ["BoxCalibration", "ImageBoxes", "box_correct", "calibrate_boxes", "map50", "propose"]


@dataclass
class ImageBoxes:
    """Boxes of one image: ``boxes [K, 4]`` xywh, ``labels [K]`` int class ids, ``scores [K]``
    (predictions; ``None`` for human boxes)."""

    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        if self.scores is not None:
            self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        if len(self.labels) != len(self.boxes) or (self.scores is not None and len(self.scores) != len(self.boxes)):
            raise ValueError("boxes, labels and scores must have the same length")

    def __len__(self) -> int:
        return len(self.boxes)


@dataclass
class BoxCalibration:
    """``thresholds[c]``: score threshold in force for class ``c`` (``None``: not pre-labelled);
    ``source[c]``: ``"class"``, ``"pooled"`` or ``"none"``; ``possible``: the lower score of the
    completeness rule; ``images_*``: hold-out images the rule proposes / complete and correct."""

    thresholds: list[float | None]
    source: list[str]
    per_class: list[Threshold]
    pooled: Threshold
    possible: float
    iou: float
    images_total: int = 0
    images_proposed: int = 0
    images_complete_correct: int = 0
    complete_lower_bound: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_dict(self, classes: Sequence[str] | None = None) -> dict[str, Any]:
        names = list(classes) if classes is not None else [str(i) for i in range(len(self.thresholds))]
        d = asdict(self)
        d["per_class"] = {n: t.to_dict() for n, t in zip(names, self.per_class, strict=True)}
        d["pooled"] = self.pooled.to_dict()
        d["thresholds"] = dict(zip(names, self.thresholds, strict=True))
        d["source"] = dict(zip(names, self.source, strict=True))
        return d


def box_correct(pred: ImageBoxes, gt: ImageBoxes, iou: float = 0.5) -> np.ndarray:
    """``bool [P]``: each predicted box matched to a same-class human box at IoU >= ``iou``."""
    out = np.zeros(len(pred), dtype=bool)
    if len(pred) and len(gt):
        mp, _ = match_boxes(pred.boxes, pred.labels, gt.boxes, gt.labels, iou=iou, pred_scores=pred.scores)
        out[mp] = True
    return out


def propose(pred: ImageBoxes, thresholds: Sequence[float | None], possible: float) -> tuple[bool, np.ndarray]:
    """The completeness rule for one image -> (proposed, ``keep [P]`` boxes at/above their threshold)."""
    scores = pred.scores if pred.scores is not None else np.ones(len(pred))
    t = np.array([np.inf if thresholds[int(c)] is None else thresholds[int(c)] for c in pred.labels])
    keep = scores >= t if len(pred) else np.zeros(0, dtype=bool)
    uncertain = (scores >= possible) & ~keep
    return bool(keep.any() and not uncertain.any()), keep


def _possible(preds: Sequence[ImageBoxes], gts: Sequence[ImageBoxes], iou: float, recall: float,
              floor: float) -> float:
    """Score s such that ``recall`` of the human boxes found at all have a matching box >= s."""
    best: list[float] = []
    for p, g in zip(preds, gts, strict=True):
        if not len(p) or not len(g):
            continue
        mp, _ = match_boxes(p.boxes, p.labels, g.boxes, g.labels, iou=iou, pred_scores=p.scores)
        best += np.asarray(p.scores)[mp].tolist()
    if not best:
        return floor
    return max(floor, float(np.quantile(np.asarray(best), 1.0 - recall)))


def calibrate_boxes(preds: Sequence[ImageBoxes], gts: Sequence[ImageBoxes], n_classes: int, *,
                    target: float = 0.95, delta: float = 0.05, iou: float = 0.5, mode: str = "per_class",
                    recall: float = 0.95, possible_floor: float = 0.05) -> BoxCalibration:
    """Thresholds per class from hold-out predictions ``preds[i]`` (with scores) and human boxes
    ``gts[i]`` of the same images (see the module docstring for the guarantee)."""
    if len(preds) != len(gts):
        raise ValueError(f"{len(preds)} predicted images but {len(gts)} labelled")
    if mode not in ("per_class", "pooled"):
        raise ValueError(f"mode must be 'per_class' or 'pooled', got {mode!r}")
    for p in preds:
        if p.scores is None:
            raise ValueError("predicted boxes need scores")
    correct = [box_correct(p, g, iou) for p, g in zip(preds, gts, strict=True)]
    scores = np.concatenate([np.asarray(p.scores) for p in preds] or [np.zeros(0)])
    labels = np.concatenate([p.labels for p in preds] or [np.zeros(0, dtype=np.int64)])
    ok = np.concatenate(correct or [np.zeros(0, dtype=bool)])
    # boxes keep the walk start measured for them (0.25%); 0.75%, calibrate's default, was
    # chosen on whole-image runs only (learning/calibration.py)
    pooled = calibrate(scores, ok, target=target, delta=delta, start_error_rate=BOX_START_ERROR_RATE)
    thin = min_evidence_for(target, delta)
    per_class, ths, source = [], [], []
    for c in range(n_classes):
        sel = labels == c
        t = calibrate(scores[sel], ok[sel], target=target, delta=delta, start_error_rate=BOX_START_ERROR_RATE)
        per_class.append(t)
        if mode == "pooled" or (not t.certified and int(sel.sum()) < thin):
            ths.append(pooled.threshold)
            source.append("pooled" if pooled.certified else "none")
        else:
            ths.append(t.threshold)
            source.append("class" if t.certified else "none")
    live = [t for t in ths if t is not None]
    possible = _possible(preds, gts, iou, recall, possible_floor)
    possible = min([possible, *live]) if live else possible
    out = BoxCalibration(ths, source, per_class, pooled, float(possible), iou, images_total=len(preds))
    for p, g in zip(preds, gts, strict=True):
        proposed, keep = propose(p, ths, possible)
        if not proposed:
            continue
        out.images_proposed += 1
        matched = box_correct(ImageBoxes(p.boxes[keep], p.labels[keep], np.asarray(p.scores)[keep]), g, iou)
        out.images_complete_correct += int(bool(matched.all()) and int(matched.sum()) == len(g))
    if out.images_proposed:
        out.complete_lower_bound = clopper_pearson_lower(out.images_complete_correct, out.images_proposed, delta)
    if not live:
        out.notes.append("no class has a certified threshold yet: nothing is proposed")
    return out


def map50(preds: Sequence[ImageBoxes], gts: Sequence[ImageBoxes], n_classes: int) -> float:
    """COCO mAP at IoU 0.5 (pycocotools ``COCOeval`` ``stats[1]``) of ``preds`` against ``gts``;
    0.0 without predictions, -1.0 when no image has a human box."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    anns: list[dict[str, Any]] = []
    dets: list[dict[str, Any]] = []
    for i, (p, g) in enumerate(zip(preds, gts, strict=True)):
        for b, c in zip(g.boxes, g.labels, strict=True):
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "bbox": [float(v) for v in b], "iscrowd": 0,
                         "category_id": int(c) + 1, "area": float(b[2] * b[3])})
        dets += [{"image_id": i + 1, "bbox": [float(v) for v in b], "score": float(s), "category_id": int(c) + 1}
                 for b, c, s in zip(p.boxes, p.labels, np.asarray(p.scores), strict=True)]
    if not anns:
        return -1.0
    if not dets:
        return 0.0
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {"images": [{"id": i + 1} for i in range(len(gts))], "annotations": anns,
                        "categories": [{"id": c + 1} for c in range(n_classes)]}
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[1])
