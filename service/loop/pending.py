"""Pending: people confirm, correct or reject proposed pre-labels (many at once).

Each decision also takes the hold-out items the same model would have proposed rightly
in that class at a score no lower out of the calibration set (:mod:`service.crud.holdout`).
"""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, col, func, select

from service.crud.annotations import canonical, current_annotation, is_empty, lock, validate_for_project, write_version
from service.crud.holdout import take_after_pending
from service.errors import Conflict, Forbidden, Invalid, NotFound
from service.models import (
    Annotation,
    Item,
    ItemStatus,
    ModelVersion,
    Prediction,
    Project,
    Provenance,
    ReviewFlag,
    User,
    utcnow,
)
from service.security import audit

DECIDED = ("confirmed", "corrected", "rejected")
OPEN_AGAIN = (ItemStatus.unlabelled, ItemStatus.skipped, ItemStatus.proposed)


def list_pending(session: Session, *, project: Project, label: str | None = None, min_score: float | None = None,
                 max_score: float | None = None, model_version_id: int | None = None, offset: int = 0,
                 limit: int = 60) -> tuple[list[dict[str, Any]], int]:
    q = select(Prediction, Item, ModelVersion).join(Item, col(Item.id) == Prediction.item_id).join(
        ModelVersion, col(ModelVersion.id) == Prediction.model_version_id).where(
        Prediction.project_id == project.id, Prediction.state == "proposed")
    if label is not None:
        q = q.where(Prediction.label == label)
    if min_score is not None:
        q = q.where(col(Prediction.score) >= min_score)
    if max_score is not None:
        q = q.where(col(Prediction.score) <= max_score)
    if model_version_id is not None:
        q = q.where(Prediction.model_version_id == model_version_id)
    count = session.exec(select(func.count()).select_from(q.subquery())).one()
    rows = session.exec(q.order_by(col(Prediction.label), col(Prediction.score).desc(), col(Prediction.id))
                        .offset(offset).limit(limit)).all()
    flags: dict[int, list[str]] = {}
    ids = [it.id for _, it, _ in rows]
    if ids:
        for f in session.exec(select(ReviewFlag).where(col(ReviewFlag.item_id).in_(ids),
                                                       ReviewFlag.state == "open")).all():
            flags.setdefault(f.item_id, []).append(f.kind)
    out = []
    for p, it, mv in rows:
        out.append({"prediction_id": p.id, "item_id": it.id, "file_name": it.file_name, "label": p.label,
                    "labels": p.data.get("labels", []), "score": p.score, "model_version": mv.version,
                    "model_version_id": mv.id, "etag": f'"v{it.version}"', "flags": flags.get(it.id or 0, []),
                    "top": p.data.get("top", []), "boxes": p.data.get("boxes", []),
                    "polygons": p.data.get("polygons", [])})
    return out, count


def _open(session: Session, project: Project, ids: list[int]) -> list[tuple[Prediction, Item]]:
    if not ids:
        raise Invalid("no prediction ids given")
    rows = session.exec(select(Prediction, Item).join(Item, col(Item.id) == Prediction.item_id)
                        .where(col(Prediction.id).in_(ids), Prediction.project_id == project.id)).all()
    found = {p.id for p, _ in rows}
    missing = [i for i in ids if i not in found]
    if missing:
        raise NotFound(f"predictions not found in this project: {missing[:20]}")
    closed = [p.id for p, _ in rows if p.state != "proposed"]
    if closed:
        raise Conflict(f"no longer pending (decided or superseded): {closed[:20]}")
    return list(rows)


def confirm(session: Session, *, project: Project, ids: list[int], user: User) -> int:
    """Proposals become labels with provenance ``model-confirmed``."""
    decided: list[Prediction] = []
    for p, item in _open(session, project, ids):
        if p.state != "proposed":  # superseded by the label an earlier id of this call gave its image
            continue
        data = canonical({"labels": p.data.get("labels") or ([p.label] if p.label and not p.data.get("boxes")
                                                            and not p.data.get("polygons") else []),
                          "boxes": [{"label": b["label"], "bbox": b["bbox"]} for b in p.data.get("boxes", [])],
                          "polygons": [{"label": q["label"], "points": q["points"]}
                                       for q in p.data.get("polygons", [])]})
        write_version(session, item=item, data=data, provenance=Provenance.model_confirmed, origin="pending",
                      author=user, model_version_id=p.model_version_id, score=p.score)
        p.state, p.decided_at, p.decided_by = "confirmed", utcnow(), user.id
        session.add(p)
        decided.append(p)
    take_after_pending(session, decided)
    return len(ids)


def correct(session: Session, *, project: Project, prediction_id: int, labels: list[str], user: User) -> int:
    """A person's different answer: a ``human`` label; the proposal counts as wrong."""
    [(p, item)] = _open(session, project, [prediction_id])
    data = canonical({"labels": labels})
    validate_for_project(session, project, item, data)
    write_version(session, item=item, data=data, provenance=Provenance.human, origin="pending", author=user)
    p.state, p.decided_at, p.decided_by = "corrected", utcnow(), user.id
    session.add(p)
    take_after_pending(session, [p])
    return 1


def reject(session: Session, *, project: Project, ids: list[int], user: User) -> int:
    """Back to the queue; the same model version never proposes that label for the item again."""
    rows = _open(session, project, ids)
    for p, _ in rows:
        p.state, p.decided_at, p.decided_by = "rejected", utcnow(), user.id
        session.add(p)
    session.flush()
    for _, item in rows:  # an image with another open proposal stays in Pending
        if item.status == ItemStatus.proposed and session.exec(select(Prediction.id).where(
                Prediction.item_id == item.id, Prediction.state == "proposed")).first() is None:
            item.status = ItemStatus.unlabelled
            session.add(item)
    take_after_pending(session, [p for p, _ in rows])
    return len(ids)


def undo(session: Session, *, project: Project, ids: list[int], user: User) -> dict[str, Any]:
    """Undo the caller's own decisions on these proposals (the last action of Pending).

    A confirm or a correction is undone through the annotation versions: the item's
    version before the decision is written again as a new version (origin ``undo``; the
    history keeps both), and the proposal is open again (the item ``proposed``); where the
    item held a label before, that label is back and the proposal stays closed
    (``superseded``). A rejection is undone by opening the proposal again. Another proposal
    of the image that the decision's label closed, given in ``ids`` too, opens again with it. Refused (409)
    when the item changed since the decision (another label, a later decision, a newer
    proposal): the Data page's history undoes those. Hold-out items the decision took out
    of calibration stay taken (it only makes the certificate more cautious)."""
    if not ids:
        raise Invalid("no prediction ids given")
    rows = session.exec(select(Prediction, Item).join(Item, col(Item.id) == Prediction.item_id)
                        .where(col(Prediction.id).in_(ids), Prediction.project_id == project.id)
                        .order_by(col(Prediction.id))).all()
    missing = sorted(set(ids) - {p.id for p, _ in rows})
    if missing:
        raise NotFound(f"predictions not found in this project: {missing[:20]}")
    # a proposal the same action closed with its image's label (two proposals of one image): it
    # opens again with the one decided, as it was before
    closed = [p for p, _ in rows if p.state == "superseded"]
    rows = [(p, item) for p, item in rows if p.state != "superseded"] or rows
    for p, _ in rows:
        if p.state not in DECIDED:
            raise Conflict(f"proposal {p.id} is {p.state}, not decided: nothing to undo")
        if p.decided_by != user.id:
            raise Forbidden(f"proposal {p.id} was decided by someone else: only they can undo it here")
    items: list[int] = []
    for p, item in rows:
        assert item.id is not None
        lock(session, item)
        newer = session.exec(select(Prediction.id).where(
            Prediction.item_id == item.id, Prediction.id != p.id, col(Prediction.state).in_(("proposed", *DECIDED)),
            col(Prediction.created_at) > p.created_at)).first()
        later = session.exec(select(Prediction.id).where(
            Prediction.item_id == item.id, Prediction.id != p.id, col(Prediction.state).in_(DECIDED),
            col(Prediction.decided_at) > p.decided_at)).first() if p.decided_at is not None else None
        if newer is not None or later is not None:
            raise Conflict(f"{item.file_name} has a newer proposal or decision since: undo it from its history")
        if p.state == "rejected":
            if item.status not in OPEN_AGAIN:
                raise Conflict(f"{item.file_name} was labelled since it was rejected: undo it from its history")
            reopen = True
        else:
            cur = current_annotation(session, item)
            if cur is None or cur.origin != "pending" or cur.author_id != user.id:
                raise Conflict(f"{item.file_name} was labelled again since: undo it from its history")
            prev = session.exec(select(Annotation).where(Annotation.item_id == item.id,
                                                         Annotation.version == item.version - 1)).first()
            data = prev.data if prev is not None else canonical({})
            write_version(session, item=item, data=data, provenance=prev.provenance if prev else Provenance.human,
                          origin="undo", author=user, model_version_id=prev.model_version_id if prev else None,
                          score=prev.score if prev else None)
            reopen = is_empty(data)
        if reopen:
            p.state, p.decided_at, p.decided_by = "proposed", None, None
            item.status = ItemStatus.proposed
            session.add(item)
        else:
            p.state = "superseded"
        session.add(p)
        if reopen:
            for other in closed:
                if other.item_id == item.id:
                    other.state, other.decided_at, other.decided_by = "proposed", None, None
                    session.add(other)
        items.append(item.id)
    audit(session, user.id, "pending.undo", project_id=project.id,
          detail={"ids": [p.id for p, _ in rows], "items": items})
    return {"done": len(rows), "item_ids": items}
