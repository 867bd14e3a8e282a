"""Detection and segmentation's parts: box sets, hard-example flags, mirrored views.

The detection pipeline (:mod:`service.pipelines.detection`) trains, calibrates and
proposes with these; ``train`` and ``infer`` are the same jobs as for every task
(:mod:`service.pipelines.jobs`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlmodel import Session

import learning.adapters.detector  # noqa: F401  (registers the "detector" adapter)
from learning.box_calibration import ImageBoxes
from learning.hard_examples import (
    FALSE_DETECTION,
    MISSED_DETECTION,
    FlagRule,
    detection_cuts,
    detection_flags,
    iou_matrix,
    match_boxes,
    pair_trust,
)
from service.config import Settings
from service.crud.audit import shape_boxes
from service.crud.items import blob_store
from service.loop.data import HUMAN, TrainingGuard, current_labels, flag_verdicts, judged_flags
from service.models import Item, ModelVersion, Project, Provenance, ReviewFlag

DEFAULT_IMAGE_SIZE = 320
CHUNK = 32
CROSSFIT_FOLDS, CROSSFIT_MIN, CROSSFIT_MAX = 2, 10, 2000  # hard examples on training images
TTA_MAX = 2000  # box proposals mirrored per scan (each once)


def box_mode(calibration: str) -> str:
    """Boxes' calibration mode for a policy's ``calibration``: ``auto`` is boxes' ``per_class``
    (each class with enough hold-out boxes proves its own threshold, thin classes share the
    pooled one: :mod:`learning.box_calibration`)."""
    return "per_class" if calibration == "auto" else calibration


def image_boxes(dets: list[dict[str, Any]], classes: list[str], *, scored: bool) -> ImageBoxes:
    """Annotation/prediction boxes (polygons count by their box) -> :class:`ImageBoxes` (known classes)."""
    rows = [d for d in dets if d["label"] in classes]
    return ImageBoxes(np.array([d["bbox"] for d in rows], dtype=np.float64).reshape(-1, 4),
                      np.array([classes.index(d["label"]) for d in rows], dtype=np.int64),
                      np.array([d["score"] for d in rows]) if scored else None)


def shapes(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"label": label, "bbox": box} for label, box in shape_boxes(data)]


def labelled_sets(session: Session, project: Project, settings: Settings) -> dict[str, list]:
    """People's current labels split into train and hold-out: ids, paths, annotation dicts."""
    assert project.id is not None
    store = blob_store(settings)
    out: dict[str, list] = {f"{part}_{k}": [] for part in ("train", "holdout")
                            for k in ("ids", "paths", "data", "versions")}
    for item, ann in current_labels(session, project.id):
        if ann.provenance not in HUMAN or not (ann.data.get("boxes") or ann.data.get("polygons")):
            continue
        part = "holdout" if item.is_holdout and ann.provenance == Provenance.human else "train"
        out[f"{part}_ids"].append(item.id)
        out[f"{part}_paths"].append(store.path(item.sha256))
        out[f"{part}_data"].append(ann.data)
        out[f"{part}_versions"].append(item.version)
    return out


def objects(data: list[dict[str, Any]]) -> np.ndarray:
    arr = np.empty(len(data), dtype=object)
    arr[:] = data
    return arr


def confident_cut(mv: ModelVersion | None) -> float:
    """Score at which a box counts as confident: the lowest certified class threshold (0.5 without one)."""
    live = [t for t in ((mv.thresholds or {}).get("in_force") or {}).values() if t is not None] if mv else []
    return min(live) if live else 0.5


# a labelled box the model barely sees / a box it is very sure of. On the cross-fitted canvases of
# tests/detection/test_box_errors.py (two runs) the three objects left out of the labels scored
# 0.82-0.94 and no other unlabelled box above 0.77; correct labelled boxes scored 0.40 and more.
MISSED_CUT, FALSE_CUT = 0.3, 0.8
FLAG_SHARE, FLAG_MIN = 0.05, 5  # new flags of each kind per run: at most max(FLAG_MIN, FLAG_SHARE * images)
LIKELY_RIGHT_FIXES = 3  # a kind's flags take images out of training only after reviewers fixed this many


def flag_cuts(mv: ModelVersion | None, classes: list[str], trust: float) -> tuple[float, np.ndarray]:
    """``(missed_below, false_above [C])`` for :func:`learning.hard_examples.detection_flags`.

    Judged at cuts chosen for the flag's precision, not the pre-label thresholds (a
    certified threshold near 0.9 made every correct box scored below it a ``missed
    detection``): missed below ``MISSED_CUT`` (lower where a class's pre-label threshold
    is lower), false at or above ``max(FALSE_CUT, the class's pre-label threshold)``;
    both tightened by ``trust`` (:func:`learning.hard_examples.detection_cuts`)."""
    in_force = (mv.thresholds or {}).get("in_force") or {} if mv else {}
    live = [in_force.get(c) for c in classes]
    low = min([MISSED_CUT, *(t for t in live if t is not None)])
    missed, _ = detection_cuts(low, FALSE_CUT, trust)
    return missed, np.array([detection_cuts(low, max(FALSE_CUT, t or 0.0), trust)[1] for t in live])


def flag_hard_examples(session: Session, *, project_id: int, mv: ModelVersion | None, item_ids: list[int],
                       versions: list[int], preds: list[ImageBoxes], gts: list[ImageBoxes], classes: list[str],
                       source: str) -> int:
    """``false detection`` / ``missed detection`` flags from out-of-sample predictions.

    ``source``: ``hold-out`` (the model version's own predictions of images it never trained
    on) or ``cross-fitted`` (:func:`find_box_errors`). Boxes are judged at :func:`flag_cuts`,
    tightened for a kind whose flags reviewers kept rejecting; at most ``max(FLAG_MIN,
    FLAG_SHARE * images)`` new flags of each kind, most suspicious first. At most one open
    flag per item and kind; never again for a label version a reviewer already judged, nor
    for an item labelled again since ``versions`` were read. A flagged training image keeps
    training unless the flag is likely right: reviewers fixed at least ``LIKELY_RIGHT_FIXES``
    flags of that kind and more than they rejected; then it gets status ``review`` (the
    queue skips it, training leaves its boxes out) while its classes keep the labels
    readiness needs (:class:`service.loop.data.TrainingGuard`). Returns the number of new flags."""
    project = session.get(Project, project_id)
    assert project is not None
    guard = TrainingGuard(session, project)
    n = 0
    for kind in (FALSE_DETECTION, MISSED_DETECTION):
        open_, done = judged_flags(session, project_id, kind)
        verdicts = [right for _, right in flag_verdicts(session, project_id, kind)][-FlagRule.window:]
        fixed, kept = sum(verdicts), len(verdicts) - sum(verdicts)
        likely = fixed >= LIKELY_RIGHT_FIXES and fixed > kept
        low, high = flag_cuts(mv, classes, float(pair_trust(np.array(fixed), np.array(kept))))
        found = []
        for item_id, version, p, g in zip(item_ids, versions, preds, gts, strict=True):
            if item_id in open_ or (item_id, version) in done:
                continue
            mine = [f for f in detection_flags(p.boxes, np.asarray(p.scores), p.labels, g.boxes, g.labels,
                                               missed_below=low, false_above=high) if f.kind == kind]
            if mine:
                found.append((max(f.score for f in mine), item_id, version, mine, g))
        found.sort(key=lambda r: (-r[0], r[1]))
        for score, item_id, version, mine, g in found[:max(FLAG_MIN, int(FLAG_SHARE * len(item_ids)))]:
            item = session.get(Item, item_id)
            if item is None or item.version != version:
                continue
            out = likely and guard.withhold(item, [classes[int(c)] for c in g.labels])
            boxes = [{**f.detail, "label": classes[int(f.detail["label"])], "score": f.score} for f in mine]
            detail = {"boxes": boxes, "missed_below": round(low, 5), "false_above": dict(zip(
                classes, np.round(high, 5).tolist(), strict=True)), "reason": box_reason(kind, boxes, low, high,
                                                                                          classes),
                "likely_right": likely, "withheld": out, "annotation_version": version, "source": source}
            session.add(ReviewFlag(project_id=project_id, item_id=item_id, model_version_id=mv.id if mv else None,
                                   kind=kind, score=score, detail=detail))
            session.add(item)
            open_.add(item_id)
            n += 1
    return n


def box_reason(kind: str, boxes: list[dict[str, Any]], low: float, high: np.ndarray, classes: list[str]) -> str:
    """The sentence a reviewer reads for a detection flag."""
    if kind == FALSE_DETECTION:
        parts = [f"a {b['label']} ({b['score']:.2f})" for b in boxes]
        return (f"a model that never saw these labels is very sure of {', '.join(parts)} where no labelled box is "
                f"(sure: >= {min(high.tolist(), default=FALSE_CUT):.2f})")
    parts = [f"a labelled {b['label']} ({b['best_same_class_score']:.2f})" for b in boxes]
    return (f"a model that never saw these labels barely sees {', '.join(parts)} (best score of its class there; "
            f"below {low:.2f})")


def flip_boxes(dets: list[dict[str, Any]], width: int) -> list[dict[str, Any]]:
    """Boxes predicted on the mirrored image, in the original image's coordinates."""
    return [{**d, "bbox": [width - d["bbox"][0] - d["bbox"][2], *d["bbox"][1:]]} for d in dets]


def unstable_box_flags(proposed: ImageBoxes, view: ImageBoxes, *, possible: float, cut: float,
                       iou: float = 0.5) -> list[tuple[str, float, dict[str, Any]]]:
    """Disagreements between a proposal's boxes and the model's boxes on the mirrored image.

    * ``false detection``: a proposed box that no same-class mirrored box (scoring at least
      ``possible``) matches at IoU ``>= iou``; score = 1 - its best same-class IoU.
    * ``missed detection``: a confident mirrored box (``>= cut``) that no proposed box
      matches, an object the proposal lacks; score = its confidence.
    Returns ``(kind, score, detail)`` per box, ``detail`` as the review card shows it."""
    vs = np.asarray(view.scores, dtype=np.float64)
    ps = np.asarray(proposed.scores, dtype=np.float64)
    out: list[tuple[str, float, dict[str, Any]]] = []
    seen = np.flatnonzero(vs >= possible)
    mp, _ = match_boxes(proposed.boxes, proposed.labels, view.boxes[seen], view.labels[seen], iou=iou, pred_scores=ps)
    ious = iou_matrix(proposed.boxes, view.boxes[seen])
    for i in np.setdiff1d(np.arange(len(proposed.boxes)), mp):
        same = view.labels[seen] == proposed.labels[i]
        best = float(ious[i, same].max()) if same.any() else 0.0
        out.append((FALSE_DETECTION, 1.0 - best, {"box": proposed.boxes[i].tolist(), "label": int(proposed.labels[i]),
                                                  "score": float(ps[i]), "best_same_class_iou": best, "view": "flip"}))
    sure = np.flatnonzero(vs >= cut)
    _, mv_ = match_boxes(proposed.boxes, proposed.labels, view.boxes[sure], view.labels[sure], iou=iou,
                         pred_scores=ps)
    for j in np.setdiff1d(np.arange(sure.size), mv_):
        k = sure[j]
        out.append((MISSED_DETECTION, float(vs[k]), {"box": view.boxes[k].tolist(), "label": int(view.labels[k]),
                                                      "score": float(vs[k]), "best_same_class_iou": 0.0,
                                                      "view": "flip"}))
    return out


def proposal(dets: list[dict[str, Any]], keep: np.ndarray, segmentation: bool) -> dict[str, Any]:
    kept = [d for d, k in zip(dets, keep, strict=True) if k]
    data: dict[str, Any] = {"labels": [], "boxes": [], "polygons": []}
    for d in kept:
        if segmentation and d.get("points"):
            data["polygons"].append({"label": d["label"], "points": d["points"], "score": d["score"]})
        else:
            data["boxes"].append({"label": d["label"], "bbox": d["bbox"], "score": d["score"]})
    return data
