"""The data browser: items filtered by what their labels say and who or what made them,
one item's timeline, and sending a labelled item back to the queue.

A row joins the item with its current annotation version (``Annotation.version ==
Item.version``) and its newest open proposal, so every filter is a condition of one
query: counting, paging and exporting a selection all read the same statement.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, and_, exists, func, or_
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from service.crud.annotations import check_if_match, etag, is_empty, lock, plain_text, write_version
from service.crud.classes import uses_label
from service.errors import Conflict, Invalid
from service.models import (
    Annotation,
    AuditLog,
    Item,
    ItemStatus,
    ModelVersion,
    Prediction,
    Provenance,
    ReviewFlag,
    User,
    utcnow,
)
from service.models.items import ItemFilter, ItemRowPublic, ItemTimelinePublic, TimelineEntry
from service.security import audit

LABELLED = (ItemStatus.labelled, ItemStatus.review)  # statuses whose current version holds labels
_Newer = aliased(Prediction)


def _newest_proposal() -> Any:
    """The id of the item's newest open proposal (correlated to the outer ``Item``)."""
    return (select(func.max(_Newer.id)).where(_Newer.item_id == Item.id, _Newer.state == "proposed")
            .correlate(Item).scalar_subquery())


def _joined(columns: tuple[Any, ...], session: Session, project_id: int, f: ItemFilter,
            lean: bool = False) -> Select:
    """``columns`` of the items ``f`` selects; ``lean``: join the current version and the open
    proposal only when a filter reads them (a count or a selection needs no more)."""
    q = select(*columns).select_from(Item)
    on_labels = f.label or f.provenance or f.labeller_id is not None
    on_model = f.model_version_id is not None or f.score_min is not None or f.score_max is not None
    if not lean or on_labels or on_model:
        q = q.outerjoin(Annotation, and_(col(Annotation.item_id) == Item.id,
                                         col(Annotation.version) == Item.version))
    if not lean or on_model:
        q = q.outerjoin(Prediction, col(Prediction.id) == _newest_proposal())
    return q.where(Item.project_id == project_id, *_conditions(session, f))


def _conditions(session: Session, f: ItemFilter) -> list[Any]:
    if f.score_min is not None and f.score_max is not None and f.score_min > f.score_max:
        raise Invalid("score_min is above score_max")
    where: list[Any] = []
    if f.status is not None:
        where.append(Item.status == f.status)
    if f.label:
        where.append(uses_label(session, f.label))
    if f.provenance is not None:
        where += [Annotation.provenance == f.provenance, col(Item.status).in_(LABELLED)]
    if f.model_version_id is not None:
        where.append(or_(col(Annotation.model_version_id) == f.model_version_id,
                         col(Prediction.model_version_id) == f.model_version_id))
    score = func.coalesce(Prediction.score, Annotation.score)
    if f.score_min is not None:
        where.append(score >= f.score_min)
    if f.score_max is not None:
        where.append(score <= f.score_max)
    if f.labeller_id is not None:
        where += [Annotation.author_id == f.labeller_id, col(Item.status).in_(LABELLED)]
    if f.flag:
        open_flag = select(ReviewFlag.id).where(ReviewFlag.item_id == Item.id, ReviewFlag.state == "open")
        if f.flag != "any":
            open_flag = open_flag.where(ReviewFlag.kind == f.flag)
        where.append(exists(open_flag.correlate(Item)))
    if f.holdout is not None:
        where.append(col(Item.is_holdout).is_(f.holdout))
    return where


def selection(session: Session, *, project_id: int, f: ItemFilter) -> Select:
    """``SELECT item.id`` of the items ``f`` selects (for ``IN (...)`` in an export)."""
    return _joined((Item.id,), session, project_id, f, lean=True)


def browse(session: Session, *, project_id: int, f: ItemFilter, limit: int, offset: int = 0,
           after_id: int | None = None) -> tuple[list[ItemRowPublic], int]:
    """One page of rows (by id, after ``after_id`` and ``offset``) and the count of all matches."""
    count = session.exec(select(func.count()).select_from(
        selection(session, project_id=project_id, f=f).subquery())).one()
    q = _joined((Item, Annotation, Prediction), session, project_id, f)
    if after_id is not None:
        q = q.where(col(Item.id) > after_id)
    found = session.exec(q.order_by(col(Item.id)).offset(offset).limit(limit)).all()  # type: ignore[call-overload]
    return rows(session, [(i, a, p) for i, a, p in found]), int(count)


def labels_in(data: dict[str, Any] | None) -> list[str]:
    """Every class named in a version's data, in first-seen order."""
    if not data:
        return []
    names = list(data.get("labels") or []) + [s["label"] for s in (data.get("boxes") or []) + (
        data.get("polygons") or [])]
    return list(dict.fromkeys(names))


def rows(session: Session, found: list[tuple[Item, Annotation | None, Prediction | None]]
         ) -> list[ItemRowPublic]:
    """The browser rows of ``(item, current version, open proposal)``; names and model
    version numbers are read in one query each for the whole page."""
    item_ids = [i.id for i, _, _ in found]
    author_ids = {a.author_id for _, a, _ in found if a is not None and a.author_id is not None}
    mv_ids = {x.model_version_id for _, a, p in found for x in (a, p) if x is not None and x.model_version_id}
    names = dict(session.exec(select(User.id, User.name).where(col(User.id).in_(author_ids))).all()) \
        if author_ids else {}
    numbers = dict(session.exec(select(ModelVersion.id, ModelVersion.version)
                                .where(col(ModelVersion.id).in_(mv_ids))).all()) if mv_ids else {}
    flags: dict[int, str] = {}
    if item_ids:
        for item_id, kind in session.exec(select(ReviewFlag.item_id, ReviewFlag.kind).where(
                col(ReviewFlag.item_id).in_(item_ids), ReviewFlag.state == "open").order_by(col(ReviewFlag.id))).all():
            flags.setdefault(item_id, kind)
    out = []
    for item, ann, prop in found:
        assert item.id is not None
        labelled = ann is not None and not is_empty(ann.data)
        mv = prop.model_version_id if prop is not None else (ann.model_version_id if labelled and ann else None)
        row = ItemRowPublic.model_validate({
            **item.model_dump(), "thumbnail_url": f"/api/v1/items/{item.id}/thumbnail",
            "annotation": ann.data if labelled and ann else None,
            "provenance": ann.provenance if labelled and ann else None,
            "labels": labels_in(ann.data) if labelled and ann else [],
            "labeller_id": ann.author_id if labelled and ann else None,
            "labeller": names.get(ann.author_id) if labelled and ann and ann.author_id else None,
            "model_version_id": mv, "model_version": numbers.get(mv) if mv else None,
            "score": prop.score if prop is not None else (ann.score if labelled and ann else None),
            "proposal": (prop.label or ", ".join(labels_in(prop.data)) or None) if prop is not None else None,
            "flag": flags.get(item.id),
        })
        out.append(row)
    return out


def row_of(session: Session, item: Item) -> ItemRowPublic:
    """The browser row of one item."""
    ann = session.exec(select(Annotation).where(Annotation.item_id == item.id,
                                                Annotation.version == item.version)).first()
    prop = session.exec(select(Prediction).where(Prediction.item_id == item.id, Prediction.state == "proposed")
                        .order_by(col(Prediction.id).desc())).first()
    return rows(session, [(item, ann, prop)])[0]


def timeline(session: Session, *, item: Item) -> ItemTimelinePublic:
    """The item's label versions, proposals, review flags and item audit rows, oldest first."""
    versions = session.exec(select(Annotation).where(Annotation.item_id == item.id)
                            .order_by(col(Annotation.version))).all()
    preds = session.exec(select(Prediction).where(Prediction.item_id == item.id, Prediction.state != "holdout")
                         .order_by(col(Prediction.id))).all()
    flags = session.exec(select(ReviewFlag).where(ReviewFlag.item_id == item.id).order_by(col(ReviewFlag.id))).all()
    audits = session.exec(select(AuditLog).where(
        AuditLog.project_id == item.project_id, col(AuditLog.action).startswith("item."),
        AuditLog.detail["item_id"].as_integer() == item.id).order_by(col(AuditLog.id))).all()  # type: ignore[index]
    users = {u for u in [*(v.author_id for v in versions), *(p.decided_by for p in preds),
                         *(f.resolved_by for f in flags), *(a.user_id for a in audits)] if u is not None}
    mv_ids = {m for m in [*(v.model_version_id for v in versions), *(p.model_version_id for p in preds)] if m}
    names = dict(session.exec(select(User.id, User.name).where(col(User.id).in_(users))).all()) if users else {}
    numbers = dict(session.exec(select(ModelVersion.id, ModelVersion.version)
                                .where(col(ModelVersion.id).in_(mv_ids))).all()) if mv_ids else {}
    entries = [TimelineEntry(at=v.created_at, kind="version", what=v.origin, version=v.version,
                             labels=labels_in(v.data), provenance=v.provenance, user_id=v.author_id,
                             user=names.get(v.author_id) if v.author_id else None,
                             model_version_id=v.model_version_id, model_version=numbers.get(v.model_version_id),
                             score=v.score) for v in versions]
    entries += [TimelineEntry(at=p.decided_at or p.created_at, kind="proposal", what=p.state,
                              labels=[p.label] if p.label else labels_in(p.data), user_id=p.decided_by,
                              user=names.get(p.decided_by) if p.decided_by else None,
                              model_version_id=p.model_version_id, model_version=numbers.get(p.model_version_id),
                              score=p.score) for p in preds]
    entries += [TimelineEntry(at=f.resolved_at or f.created_at, kind="flag", what=f"{f.kind}: {f.state}",
                              user_id=f.resolved_by, user=names.get(f.resolved_by) if f.resolved_by else None,
                              model_version_id=f.model_version_id, model_version=numbers.get(f.model_version_id),
                              score=f.score) for f in flags]
    entries += [TimelineEntry(at=a.at, kind="audit", what=a.action, user_id=a.user_id,
                              user=names.get(a.user_id) if a.user_id else None, detail=a.detail) for a in audits]
    entries.sort(key=lambda e: e.at)
    return ItemTimelinePublic(item=row_of(session, item), etag=etag(item), entries=entries)


def reject(session: Session, *, item: Item, user: User, if_match: str | None, reason: str = "") -> Annotation:
    """Send a labelled (or proposed) item back to the queue: an empty version (the old labels
    stay in the history), its open proposals closed as ``superseded``, and an audit row.

    Like :func:`service.crud.annotations.undo` to an empty version, the item leaves the
    hold-out: it was drawn for it by its lease, and whatever route labels it next decides
    anew (the hold-out stream may draw it again)."""
    lock(session, item)
    if item.status not in (*LABELLED, ItemStatus.proposed):
        raise Conflict(f"nothing to send back: the item is {item.status.value}")
    check_if_match(item, if_match)
    before = session.exec(select(Annotation).where(Annotation.item_id == item.id,
                                                   Annotation.version == item.version)).first()
    closed = 0
    for p in session.exec(select(Prediction).where(Prediction.item_id == item.id,
                                                   Prediction.state == "proposed")).all():
        p.state, p.decided_at, p.decided_by = "superseded", utcnow(), user.id
        session.add(p)
        closed += 1
    ann = write_version(session, item=item, data={"labels": [], "boxes": [], "polygons": []},
                        provenance=Provenance.human, origin="reject", author=user)
    item.is_holdout, item.holdout_taken_by = False, None
    session.add(item)
    audit(session, user.id, "item.reject", project_id=item.project_id, detail={
        "item_id": item.id, "labels": labels_in(before.data) if before else [], "proposals_closed": closed,
        "reason": plain_text(reason, 500)})
    session.flush()
    return ann
