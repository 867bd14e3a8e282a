"""Audits of auto-accepted pre-labels.

With ``auto_accept`` the ``infer`` job turns confident proposals into labels
(provenance ``model``, ``Prediction.state == "auto"``) and draws a random
``audit_share`` of them (``Prediction.audit``). The queue serves those items
first, with reason ``audit`` (:mod:`service.crud.queue`). When a person labels
such an item, :func:`record_audit` stores the verdict in
``Prediction.audit_correct``; that ends the item's audit (the queue stops
serving it) and feeds the realised precision per model version, with its 95%
interval, on the dashboard (:func:`service.loop.stats.realised_precision`).

Audits are a random sample of the auto-accepted labels, so their share of
right answers estimates the precision of all auto-accepted labels without bias.
Only the first human answer counts: later edits of the item do not change it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlmodel import Session, col, select

from service.models import Item, Prediction, User, utcnow


def same_labels(prediction: Prediction, data: dict[str, Any]) -> bool:
    """Whether a person's ``data`` agrees with the pre-label: the same class set, and for
    detection / segmentation pre-labels the same objects (every predicted shape matches a
    person's shape of its class at IoU >= 0.5 and none of the person's is left over; the
    "complete and correct" rule of the detection benchmark)."""
    predicted = prediction.data.get("labels") or ([prediction.label] if prediction.label else [])
    if sorted(set(predicted)) != sorted(set(data.get("labels") or [])):
        return False
    pred_shapes, human_shapes = shape_boxes(prediction.data), shape_boxes(data)
    if not pred_shapes and not human_shapes:
        return True
    if len(pred_shapes) != len(human_shapes):
        return False
    from learning.hard_examples import match_boxes

    names = sorted({c for c, _ in pred_shapes + human_shapes})

    def arrays(shapes: list[tuple[str, list[float]]]) -> tuple[np.ndarray, np.ndarray]:
        return (np.array([b for _, b in shapes], dtype=np.float64).reshape(-1, 4),
                np.array([names.index(c) for c, _ in shapes], dtype=np.int64))

    (pb, pl), (hb, hl) = arrays(pred_shapes), arrays(human_shapes)
    matched, _ = match_boxes(pb, pl, hb, hl, iou=0.5)
    return len(matched) == len(pred_shapes)


def shape_boxes(data: dict[str, Any]) -> list[tuple[str, list[float]]]:
    """``(label, xywh box)`` of every box and polygon (by its bounding box) in ``data``."""
    from learning.polygons import polygon_bbox

    return ([(b["label"], list(b["bbox"])) for b in data.get("boxes") or []]
            + [(p["label"], list(polygon_bbox(p["points"]))) for p in data.get("polygons") or []])


def record_audit(session: Session, item: Item, data: dict[str, Any], user: User | None,
                 open_audits: Sequence[Prediction] | None = None) -> int:
    """Record a person's label ``data`` on ``item`` as the answer to its open audits.

    Sets ``audit_correct`` (submitted labels == auto-accepted labels), ``decided_at``
    and ``decided_by`` on every undecided audit prediction of the item; returns how
    many it settled (0 when the item is not under audit). Call it wherever a person's
    label is written (``service.crud.annotations.submit``), in the same transaction.
    """
    if open_audits is None:  # the caller may have read them already (submit does, with the proposals)
        open_audits = session.exec(select(Prediction).where(
            Prediction.item_id == item.id, Prediction.state == "auto", col(Prediction.audit).is_(True),
            col(Prediction.audit_correct).is_(None))).all()
    for p in open_audits:
        p.audit_correct = same_labels(p, data)
        p.decided_at = utcnow()
        p.decided_by = user.id if user is not None else None
        session.add(p)
    return len(open_audits)
