"""The dashboard's numbers for a manager (``GET /projects/{id}/activity``): labels over time,
people's throughput and time per image, agreement between people, and each model version's
coverage and realised precision. Counted in SQL, alike on SQLite and PostgreSQL.

What counts as a *label*: an annotation version that records a decision, i.e. every version
but those written by undo, class renames, a reject back to the queue and the clean-up of
automatic annotation (:data:`NOT_LABELS`). Its provenance splits it: ``human``, ``model-confirmed``
(a person confirmed the model's proposal) and ``model`` (auto-accepted). Imported labels are
no one's work here and are left out.

A *person's label* is a ``human`` or ``model-confirmed`` label with an author.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Float, Text, and_, case, cast
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, col, func, select

from service.loop.stats import realised_precision
from service.models import Annotation, Job, JobState, ModelVersion, Prediction, Project, Provenance, Task, User

#: origins of annotation versions that are not a new decision about the image
NOT_LABELS = ("undo", "rename", "reject", "annotate-clean")
#: a gap between a person's consecutive saves longer than this ends their working session
SESSION_GAP_SECONDS = 600
#: a project younger than this counts its labels per hour, else per day
HOURLY_UNDER = timedelta(days=2)
PERSON = (Provenance.human, Provenance.model_confirmed)


def _labels() -> ColumnElement[bool]:
    return col(Annotation.origin).not_in(NOT_LABELS)


def _bucket(dialect: str, hourly: bool) -> ColumnElement[Any]:
    """The UTC day (``YYYY-MM-DD``) or hour (``YYYY-MM-DDTHH``) of a label, as text."""
    if dialect == "postgresql":
        fmt = 'YYYY-MM-DD"T"HH24' if hourly else "YYYY-MM-DD"
        return func.to_char(func.timezone("UTC", col(Annotation.created_at)), fmt)
    return func.strftime("%Y-%m-%dT%H" if hourly else "%Y-%m-%d", col(Annotation.created_at))


def _seconds_between(dialect: str, later: Any, earlier: Any) -> ColumnElement[Any]:
    """``later - earlier`` in seconds (to the millisecond on SQLite)."""
    if dialect == "postgresql":
        return cast(func.extract("epoch", later - earlier), Float)
    return func.round((func.julianday(later) - func.julianday(earlier)) * 86400.0, 3)


def _parse_bucket(key: str, hourly: bool) -> datetime:
    return datetime.strptime(key, "%Y-%m-%dT%H" if hourly else "%Y-%m-%d").replace(tzinfo=UTC)


def _floor(t: datetime, hourly: bool) -> datetime:
    t = t.astimezone(UTC)
    return t.replace(minute=0, second=0, microsecond=0) if hourly else t.replace(
        hour=0, minute=0, second=0, microsecond=0)


def labels_over_time(session: Session, project: Project, now: datetime) -> tuple[str, list[dict[str, Any]]]:
    """``(bucket, rows)``: labels per UTC day (per hour for a project younger than two days),
    one row per bucket from the project's first (or its first label's) to now, empty ones too."""
    assert project.id is not None
    dialect = session.get_bind().dialect.name
    created = project.created_at if project.created_at.tzinfo else project.created_at.replace(tzinfo=UTC)
    hourly = now - created < HOURLY_UNDER
    bucket = _bucket(dialect, hourly).label("bucket")
    rows = session.exec(
        select(bucket, Annotation.provenance, func.count()).where(  # type: ignore[call-overload]
            Annotation.project_id == project.id, _labels(),
            col(Annotation.provenance).in_([Provenance.human, Provenance.model_confirmed, Provenance.model]))
        .group_by(bucket, col(Annotation.provenance))).all()
    key = {Provenance.human: "human", Provenance.model_confirmed: "confirmed", Provenance.model: "auto_accepted"}
    counts: dict[datetime, dict[str, int]] = {}
    for b, prov, n in rows:
        start = _parse_bucket(str(b), hourly)
        counts.setdefault(start, {"human": 0, "confirmed": 0, "auto_accepted": 0})[key[Provenance(prov)]] += int(n)
    step = timedelta(hours=1) if hourly else timedelta(days=1)
    first = min([_floor(created, hourly), *counts])
    last = max([_floor(now, hourly), *counts])
    out = []
    t = first
    while t <= last:
        c = counts.get(t, {"human": 0, "confirmed": 0, "auto_accepted": 0})
        out.append({"start": t, **c, "total": sum(c.values())})
        t += step
    return ("hour" if hourly else "day"), out


def people(session: Session, project_id: int) -> list[dict[str, Any]]:
    """Per person: labels, active hours (UTC clock hours with a label), labels per active hour,
    and the median seconds between consecutive saves of one working session."""
    dialect = session.get_bind().dialect.name
    mine = and_(col(Annotation.project_id) == project_id, _labels(), col(Annotation.author_id).is_not(None),
                col(Annotation.provenance).in_(PERSON))
    hour = _bucket(dialect, True)
    totals = session.exec(
        select(Annotation.author_id, func.count(), func.count(func.distinct(hour)))  # type: ignore[call-overload]
        .where(mine).group_by(col(Annotation.author_id))).all()
    if not totals:
        return []
    # each save with the one before it by the same person (window functions: both databases)
    saves = select(col(Annotation.author_id).label("author_id"), col(Annotation.created_at).label("at"),
                   func.lag(col(Annotation.created_at)).over(
                       partition_by=col(Annotation.author_id),
                       order_by=(col(Annotation.created_at), col(Annotation.id))).label("prev")
                   ).where(mine).subquery()
    gap = _seconds_between(dialect, saves.c.at, saves.c.prev)
    gaps = select(saves.c.author_id, gap.label("gap")).where(
        saves.c.prev.is_not(None), gap <= SESSION_GAP_SECONDS).subquery()
    ranked = select(gaps.c.author_id, gaps.c.gap,
                    func.row_number().over(partition_by=gaps.c.author_id, order_by=gaps.c.gap).label("rn"),
                    func.count().over(partition_by=gaps.c.author_id).label("n")).subquery()
    # the middle one (odd count) or the mean of the middle two (even): integer division on both
    lo = (ranked.c.n + 1) // 2
    hi = (ranked.c.n + 2) // 2
    medians = dict(session.exec(  # type: ignore[call-overload]
        select(ranked.c.author_id, func.avg(ranked.c.gap)).where(ranked.c.rn.in_([lo, hi]))
        .group_by(ranked.c.author_id)).all())
    timed = dict(session.exec(  # type: ignore[call-overload]
        select(gaps.c.author_id, func.count()).group_by(gaps.c.author_id)).all())
    ids = [int(a) for a, _, _ in totals if a is not None]
    names = dict(session.exec(select(User.id, User.name).where(col(User.id).in_(ids))).all())
    out: list[dict[str, Any]] = []
    for author, n, hours in totals:
        if author is None:
            continue
        med = medians.get(author)
        out.append({"user_id": int(author), "name": names.get(author, f"user {author}"), "labels": int(n),
                    "active_hours": int(hours), "labels_per_hour": int(n) / int(hours) if hours else None,
                    "median_seconds": None if med is None else round(float(med), 3),
                    "timed_saves": int(timed.get(author, 0))})
    out.sort(key=lambda p: (-int(p["labels"]), str(p["name"])))
    return out


def agreement(session: Session, project: Project) -> dict[str, Any]:
    """Images with labels from two or more people, and how many of them got the same first
    label from each (classes for classification, the whole shapes otherwise)."""
    what = (cast(col(Annotation.data)["labels"], Text) if project.task in (Task.multiclass, Task.multilabel)
            else cast(col(Annotation.data), Text))
    first = select(col(Annotation.item_id).label("item_id"), what.label("what"),
                   func.row_number().over(partition_by=(col(Annotation.item_id), col(Annotation.author_id)),
                                          order_by=(col(Annotation.created_at), col(Annotation.id))).label("rn")
                   ).where(Annotation.project_id == project.id, _labels(), col(Annotation.author_id).is_not(None),
                           col(Annotation.provenance).in_(PERSON)).subquery()
    per_item = (select(first.c.item_id, func.count(func.distinct(first.c.what)).label("variants"))
                .where(first.c.rn == 1).group_by(first.c.item_id).having(func.count() >= 2).subquery())
    images, agreeing = session.exec(select(  # type: ignore[call-overload]
        func.count(), func.coalesce(func.sum(case((per_item.c.variants == 1, 1), else_=0)), 0))).one()
    images, agreeing = int(images), int(agreeing)
    return {"images": images, "agreeing": agreeing, "share": agreeing / images if images else None}


def _coverage_from_predictions(session: Session, project_id: int) -> dict[int, tuple[int, int]]:
    """Per model version: ``(pool, proposed)`` from its predictions (hold-out ones left out)."""
    proposed = case((col(Prediction.state).not_in(["none", "holdout"]), 1), else_=0)
    rows = session.exec(select(Prediction.model_version_id, func.count(), func.sum(proposed))  # type: ignore[call-overload]
                        .where(Prediction.project_id == project_id, Prediction.state != "holdout")
                        .group_by(col(Prediction.model_version_id))).all()
    return {int(mv): (int(n), int(p or 0)) for mv, n, p in rows}


def versions(session: Session, project: Project) -> list[dict[str, Any]]:
    """Per model version, oldest first: its certified coverage (share of the pool its newest
    finished inference proposed or auto-accepted; else from its predictions) and its realised
    precision (decided proposals people found right / decided)."""
    assert project.id is not None
    target = float((project.policy or {}).get("target_precision", 0.95))
    mvs = session.exec(select(ModelVersion).where(ModelVersion.project_id == project.id)
                       .order_by(col(ModelVersion.version), col(ModelVersion.id))).all()
    if not mvs:
        return []
    inferred: dict[int, dict[str, Any]] = {}
    for payload, result in session.exec(select(Job.payload, Job.result).where(
            Job.project_id == project.id, Job.kind == "infer", Job.state == JobState.succeeded)
            .order_by(col(Job.id))).all():
        mv_id = (result or {}).get("model_version_id") or (payload or {}).get("model_version_id")
        if mv_id is not None and isinstance((result or {}).get("pool"), int):
            inferred[int(mv_id)] = dict(result)  # the newest wins
    predicted = _coverage_from_predictions(session, project.id)
    precision = {p["model_version_id"]: p for p in realised_precision(session, project.id, target)}
    out = []
    for mv in mvs:
        assert mv.id is not None
        if mv.id in inferred:
            r = inferred[mv.id]
            pool, shown = int(r["pool"]), int(r.get("proposed", 0)) + int(r.get("auto_accepted", 0))
            source: str | None = "inference"
        elif mv.id in predicted:
            pool, shown = predicted[mv.id]
            source = "predictions"
        else:
            pool, shown, source = 0, 0, None
        p = precision.get(mv.id, {})
        decided, right = int(p.get("decided", 0)), int(p.get("right", 0))
        created = mv.created_at if mv.created_at.tzinfo else mv.created_at.replace(tzinfo=UTC)
        out.append({"model_version_id": mv.id, "version": mv.version, "created_at": created,
                    "is_current": mv.is_current, "status": mv.status, "pool": pool, "proposed": shown,
                    "coverage": shown / pool if pool else None, "coverage_from": source,
                    "decided": decided, "right": right, "precision": right / decided if decided else None})
    return out


def project_activity(session: Session, *, project: Project, now: datetime | None = None) -> dict[str, Any]:
    """Everything ``GET /projects/{id}/activity`` answers (:class:`service.models.stats.ProjectActivity`)."""
    assert project.id is not None
    now = now or datetime.now(UTC)
    bucket, over_time = labels_over_time(session, project, now)
    totals = {k: sum(r[k] for r in over_time) for k in ("human", "confirmed", "auto_accepted")}
    return {"project_id": project.id, "bucket": bucket, "labels": over_time,
            "totals": {**totals, "total": sum(totals.values())},
            "people": people(session, project.id), "agreement": agreement(session, project),
            "versions": versions(session, project), "session_gap_seconds": SESSION_GAP_SECONDS}
