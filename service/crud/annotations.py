"""Append-only annotation versions: submit (with ETag / If-Match), undo, skip, history."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field, FiniteFloat, field_validator
from sqlalchemy import and_, bindparam, or_
from sqlmodel import Session, col, select

from service.crud.audit import record_audit
from service.crud.classes import class_names
from service.errors import Conflict, Invalid, PreconditionFailed, PreconditionRequired
from service.formats.base import GeometryError, fit_box, fit_points
from service.models import (
    Annotation,
    Item,
    ItemStatus,
    Lease,
    Prediction,
    Project,
    Provenance,
    Skip,
    Task,
    User,
    utcnow,
)


class BoxIn(BaseModel):
    label: str = Field(min_length=1, max_length=200)
    bbox: list[FiniteFloat] = Field(description="[x, y, w, h] in pixels", min_length=4, max_length=4)

    @field_validator("bbox")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        if v[2] <= 0 or v[3] <= 0:
            raise ValueError("box width and height must be > 0")
        return v


class PolygonIn(BaseModel):
    label: str = Field(min_length=1, max_length=200)
    points: list[FiniteFloat] = Field(description="flat [x1, y1, x2, y2, ...] in pixels", min_length=6,
                                max_length=20_000)

    @field_validator("points")
    @classmethod
    def _even(cls, v: list[float]) -> list[float]:
        if len(v) % 2:
            raise ValueError("points must hold x, y pairs")
        return v


class AnnotationIn(BaseModel):
    labels: list[str] = Field(default_factory=list, max_length=1000, description="classification")
    boxes: list[BoxIn] = Field(default_factory=list, max_length=5000)
    polygons: list[PolygonIn] = Field(default_factory=list, max_length=5000)
    lease_id: int | None = Field(default=None, description="the lease this label answers (queue)")


def canonical(data: AnnotationIn | dict[str, Any]) -> dict[str, Any]:
    """The stored shape: ``{"labels": [...], "boxes": [...], "polygons": [...]}``."""
    d = data.model_dump() if isinstance(data, AnnotationIn) else dict(data)
    return {
        "labels": list(d.get("labels") or []),
        "boxes": [{"label": b["label"], "bbox": [float(x) for x in b["bbox"]]} for b in d.get("boxes") or []],
        "polygons": [{"label": p["label"], "points": [float(x) for x in p["points"]]}
                     for p in d.get("polygons") or []],
    }


def is_empty(data: dict[str, Any]) -> bool:
    return not (data.get("labels") or data.get("boxes") or data.get("polygons"))


def validate_for_project(session: Session, project: Project, item: Item, data: dict[str, Any]) -> None:
    """422 unless ``data`` (:func:`canonical`) suits the project; fits its shapes to the image in place.

    Shapes follow the rule imports follow (:func:`service.formats.base.fit_box` /
    :func:`~service.formats.base.fit_points`): one that overlaps the ``width x height``
    image is clipped to it; one that lies wholly outside, is empty after clipping or
    holds a non-finite number is a 422 naming the shape and the reason.
    """
    assert project.id is not None
    known = set(class_names(session, project.id))
    used = list(data["labels"]) + [b["label"] for b in data["boxes"]] + [p["label"] for p in data["polygons"]]
    unknown = sorted({u for u in used if u not in known})
    if unknown:
        raise Invalid(f"unknown classes {unknown}; project classes: {sorted(known)}")
    if project.task == Task.multiclass and len(data["labels"]) != 1:
        raise Invalid("a multiclass item takes exactly one label")
    if project.task == Task.multilabel and len(set(data["labels"])) != len(data["labels"]):
        raise Invalid("labels repeat")
    if project.task in (Task.multiclass, Task.multilabel) and (data["boxes"] or data["polygons"]):
        raise Invalid("boxes and polygons belong to detection/segmentation projects")
    for kind, key, fit in (("boxes", "bbox", fit_box), ("polygons", "points", fit_points)):
        for index, shape in enumerate(data[kind]):
            try:
                shape[key] = fit(shape[key], item.width, item.height)
            except GeometryError as exc:
                raise Invalid(f"{kind}[{index}]: {exc}") from None


def etag(item: Item) -> str:
    return f'"v{item.version}"'


def check_if_match(item: Item, if_match: str | None) -> None:
    """412 for a stale version, 428 when an update carries no If-Match."""
    if if_match is None:
        if item.version > 0:
            raise PreconditionRequired(f"item has labels (version {item.version}); send If-Match: {etag(item)}")
        return
    tags = {t.strip().removeprefix("W/") for t in if_match.split(",")}
    if "*" in tags:
        return
    if etag(item) not in tags and str(item.version) not in tags:
        raise PreconditionFailed(f"stale version: item is at {etag(item)}, you sent {if_match}")


def current_annotation(session: Session, item: Item) -> Annotation | None:
    if item.version == 0:
        return None
    return session.exec(select(Annotation).where(Annotation.item_id == item.id,
                                                 Annotation.version == item.version)).first()


def write_version(session: Session, *, item: Item, data: dict[str, Any], provenance: Provenance,
                  origin: str, author: User | None, model_version_id: int | None = None,
                  score: float | None = None) -> Annotation:
    """Append a version and move the item's status; never updates an old row."""
    assert item.id is not None
    item.version += 1
    ann = Annotation(item_id=item.id, project_id=item.project_id, version=item.version, data=data,
                     provenance=provenance, origin=origin, author_id=author.id if author else None,
                     model_version_id=model_version_id, score=score)
    item.status = ItemStatus.unlabelled if is_empty(data) else ItemStatus.labelled
    if item.status == ItemStatus.labelled and provenance != Provenance.model:
        # a labelled image keeps no open proposal (Pending would offer it again); the caller
        # settles the proposal it acts on (confirmed, corrected) after or before this
        for p in session.exec(select(Prediction).where(Prediction.item_id == item.id,
                                                       Prediction.state == "proposed")).all():
            p.state, p.decided_at = "superseded", utcnow()
            session.add(p)
    session.add(ann)
    session.add(item)
    session.flush()
    return ann


def _release_lease(session: Session, *, item: Item, user: User, lease_id: int | None) -> Lease | None:
    lease = session.exec(select(Lease).where(Lease.item_id == item.id)).first()
    if lease is None:
        return None
    active = lease.expires_at > utcnow()
    if active and lease.user_id != user.id:
        raise Conflict("another labeler holds this item right now")
    if lease_id is not None and lease.id != lease_id:
        raise Conflict("that lease is no longer yours (it expired and the item moved on)")
    session.delete(lease)
    return lease


def lock(session: Session, item: Item) -> None:
    """Re-read the item under a row lock (PostgreSQL) so version checks cannot race."""
    session.refresh(item, with_for_update=True)


def submit(session: Session, *, item: Item, project: Project, user: User, body: AnnotationIn,
           if_match: str | None) -> Annotation:
    lock(session, item)
    check_if_match(item, if_match)
    data = canonical(body)
    validate_for_project(session, project, item, data)
    lease = _release_lease(session, item=item, user=user, lease_id=body.lease_id)
    if lease is not None and lease.reason == "holdout" and item.version == 0:
        item.is_holdout = True
    # one round trip for what a label settles: open proposals and open audits of the item
    open_preds = session.exec(_open_predictions(), params={"item_id": item.id}).all()
    _settle_predictions(session, item, data, user, [p for p in open_preds if p.state == "proposed"])
    record_audit(session, item, data, user, open_audits=[p for p in open_preds if p.state == "auto"])
    origin = f"queue:{lease.reason}" if lease is not None else "edit"
    return write_version(session, item=item, data=data, provenance=Provenance.human, origin=origin, author=user)


@functools.cache
def _open_predictions() -> Any:
    """The item's open proposals and undecided audits (built once; ``:item_id`` bound per call)."""
    return select(Prediction).where(Prediction.item_id == bindparam("item_id"), or_(
        col(Prediction.state) == "proposed", and_(col(Prediction.state) == "auto", col(Prediction.audit).is_(True),
                                                  col(Prediction.audit_correct).is_(None))))


def _settle_predictions(session: Session, item: Item, data: dict[str, Any], user: User,
                        proposed: Sequence[Prediction] | None = None) -> None:
    """A human label closes any open proposal on the item (confirmed or corrected)."""
    if proposed is None:
        proposed = session.exec(select(Prediction).where(Prediction.item_id == item.id,
                                                         Prediction.state == "proposed")).all()
    for p in proposed:
        same_boxes = [(b["label"], [round(v, 1) for v in b["bbox"]]) for b in data["boxes"]] == [
            (b["label"], [round(v, 1) for v in b["bbox"]]) for b in p.data.get("boxes", [])]
        if p.data.get("boxes"):
            p.state = "confirmed" if same_boxes and not data["labels"] else "corrected"
        else:
            p.state = "confirmed" if p.label is not None and data["labels"] == [p.label] else "corrected"
        p.decided_at = utcnow()
        p.decided_by = user.id
        session.add(p)


def undo(session: Session, *, item: Item, user: User, if_match: str | None) -> Annotation:
    """Restore the previous version as a new version (history stays intact)."""
    lock(session, item)
    if item.version == 0:
        raise Conflict("nothing to undo: the item has no labels")
    check_if_match(item, if_match)
    prev = session.exec(select(Annotation).where(Annotation.item_id == item.id,
                                                 Annotation.version == item.version - 1)).first()
    data = prev.data if prev is not None else {"labels": [], "boxes": [], "polygons": []}
    prov = prev.provenance if prev is not None else Provenance.human
    ann = write_version(session, item=item, data=data, provenance=prov, origin="undo", author=user,
                        model_version_id=prev.model_version_id if prev else None)
    if is_empty(data):
        item.is_holdout = False
        session.add(item)
    return ann


# C0 and C1 control characters but tab, newline and carriage return
_CONTROLS = dict.fromkeys([*(c for c in range(32) if c not in (9, 10, 13)), *range(127, 160)])


def plain_text(text: str, limit: int) -> str:
    """Free text as stored: control characters dropped (NUL among them, which PostgreSQL
    cannot store and SQLite would keep), at most ``limit`` characters."""
    return text.translate(_CONTROLS)[:limit]


def skip(session: Session, *, item: Item, user: User, reason: str = "") -> None:
    _release_lease(session, item=item, user=user, lease_id=None)
    if not session.exec(select(Skip).where(Skip.item_id == item.id, Skip.user_id == user.id)).first():
        assert item.id is not None and user.id is not None
        session.add(Skip(item_id=item.id, user_id=user.id, reason=plain_text(reason, 500)))
    if item.status == ItemStatus.unlabelled:
        item.status = ItemStatus.skipped
        session.add(item)


def history(session: Session, *, item: Item) -> list[Annotation]:
    return list(session.exec(select(Annotation).where(Annotation.item_id == item.id)
                             .order_by(col(Annotation.version))).all())


def rename_label(session: Session, *, project_id: int, old: str, new: str) -> int:
    """Rename a class inside current labels by writing new versions (provenance kept)."""
    n = 0
    items = session.exec(select(Item).where(Item.project_id == project_id, col(Item.version) > 0)).all()
    for item in items:
        ann = current_annotation(session, item)
        if ann is None:
            continue
        data = ann.data
        used = set(data.get("labels", [])) | {s["label"] for s in data.get("boxes", []) + data.get("polygons", [])}
        if old not in used:
            continue
        new_data = {
            "labels": [new if x == old else x for x in data.get("labels", [])],
            "boxes": [{**b, "label": new if b["label"] == old else b["label"]} for b in data.get("boxes", [])],
            "polygons": [{**p, "label": new if p["label"] == old else p["label"]}
                         for p in data.get("polygons", [])],
        }
        write_version(session, item=item, data=new_data, provenance=ann.provenance, origin="rename",
                      author=None, model_version_id=ann.model_version_id, score=ann.score)
        n += 1
    for p in session.exec(select(Prediction).where(Prediction.project_id == project_id,
                                                   Prediction.label == old)).all():
        p.label = new
        session.add(p)
    return n
