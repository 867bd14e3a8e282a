"""The labelling queue: leases, and the mix of strategy / hold-out / audit streams.

Two labelers never hold the same item: a lease row is unique per item, and the
claim runs inside a write transaction (SQLite ``BEGIN IMMEDIATE``) or locks the
candidate with ``FOR UPDATE SKIP LOCKED`` (PostgreSQL). Expired leases are
deleted before each claim, so their items return to the queue.

Streams: with probability ``holdout_share`` the next item is drawn from the
random stream (lowest uniform ``queue_rank``), and the label it gets is held
out for calibration, so the hold-out set is an unbiased sample of the
unlabelled pool. Otherwise the strategy stream serves the highest
``query_score`` (written by the last inference job), or the random order
before a model exists (reason ``random``). Audit items (auto-accepted
pre-labels drawn for a check) come first when there are any.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, exists, text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from service.models import Item, ItemStatus, Lease, Prediction, Project, QueueReason, Skip, User, utcnow

_rng = random.Random()
CLAIM_LOCK = 7_340_000_000  # advisory-lock key space for queue claims


@dataclass
class Leased:
    lease: Lease
    item: Item
    reason: str
    renewed: bool = False


def expire_leases(session: Session, *, project_id: int | None = None) -> int:
    stmt = delete(Lease).where(col(Lease.expires_at) <= utcnow())
    if project_id is not None:
        stmt = stmt.where(col(Lease.project_id) == project_id)
    return session.exec(stmt).rowcount or 0  # type: ignore[call-overload]


def _candidates(session: Session, project: Project, user: User, reason: str, limit: int) -> list[Item]:
    leased = exists().where(col(Lease.item_id) == Item.id)
    skipped = exists().where(col(Skip.item_id) == Item.id, col(Skip.user_id) == user.id)
    q = select(Item).where(Item.project_id == project.id, ~leased, ~skipped)
    if reason == QueueReason.audit:
        audit = exists().where(col(Prediction.item_id) == Item.id, col(Prediction.audit).is_(True),
                               col(Prediction.audit_correct).is_(None), col(Prediction.state) == "auto")
        q = q.where(audit).order_by(col(Item.queue_rank))
    else:
        q = q.where(col(Item.status).in_([ItemStatus.unlabelled, ItemStatus.skipped]))
        # unlabelled before skipped-by-others, then by stream order
        status_order = (col(Item.status) == ItemStatus.skipped)
        if reason == QueueReason.strategy:
            q = q.order_by(status_order, col(Item.query_score).desc().nulls_last(), col(Item.queue_rank))
        else:
            q = q.order_by(status_order, col(Item.queue_rank))
    if session.get_bind().dialect.name == "postgresql":
        q = q.with_for_update(skip_locked=True, of=Item)  # type: ignore[arg-type]
    return list(session.exec(q.limit(limit)).all())


def _still_free(session: Session, item_id: int, reason: str) -> bool:
    """Re-check a locked candidate with a fresh statement (PostgreSQL READ COMMITTED may
    have shown it from a snapshot older than a claim or a label committed meanwhile)."""
    if session.get_bind().dialect.name != "postgresql":
        return True
    if session.exec(select(Lease.id).where(Lease.item_id == item_id)).first() is not None:
        return False
    status = session.exec(select(Item.status).where(Item.id == item_id)).one()
    return reason == QueueReason.audit or status in (ItemStatus.unlabelled, ItemStatus.skipped)


def choose_stream(session: Session, project: Project, rng: random.Random) -> list[str]:
    """Streams to try in order for the next draw."""
    policy = project.policy or {}
    share = float(policy.get("holdout_share", 0.2))
    has_scores = session.exec(select(Item.id).where(Item.project_id == project.id,
                                                    col(Item.query_score).is_not(None)).limit(1)).first()
    main = QueueReason.strategy if has_scores is not None else QueueReason.random
    first = QueueReason.holdout if rng.random() < share else main
    order = [QueueReason.audit, first, main if first == QueueReason.holdout else QueueReason.holdout]
    return [str(r) for r in order]


def next_item(session: Session, *, project: Project, user: User, ttl_seconds: int,
              rng: random.Random | None = None) -> Leased | None:
    """Lease the next item for ``user`` (their current lease first), or None when nothing is left."""
    assert project.id is not None and user.id is not None
    if session.get_bind().dialect.name == "postgresql":
        # claims of one project take turns (SQLite gets the same from BEGIN IMMEDIATE);
        # every statement after the lock sees every claim committed before it.
        session.connection().execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": CLAIM_LOCK + project.id})
    now = utcnow()
    expire_leases(session, project_id=project.id)
    mine = session.exec(select(Lease).where(Lease.project_id == project.id, Lease.user_id == user.id,
                                            Lease.reason != "grid").order_by(col(Lease.id))).first()
    if mine is not None:
        item = session.get(Item, mine.item_id)
        if item is not None and item.status in (ItemStatus.unlabelled, ItemStatus.skipped) or (
                item is not None and mine.reason == QueueReason.audit):
            mine.expires_at = now + timedelta(seconds=ttl_seconds)
            session.add(mine)
            return Leased(mine, item, mine.reason, renewed=True)
        session.delete(mine)
        session.flush()
    for reason in choose_stream(session, project, rng or _rng):
        for item in _candidates(session, project, user, reason, limit=5):
            assert item.id is not None
            if not _still_free(session, item.id, reason):
                continue
            lease = Lease(item_id=item.id, project_id=project.id, user_id=user.id, reason=reason,
                          expires_at=now + timedelta(seconds=ttl_seconds))
            try:
                with session.begin_nested():
                    session.add(lease)
                    session.flush()
            except IntegrityError:
                continue
            return Leased(lease, item, reason)
    return None


def heartbeat(session: Session, *, lease: Lease, user: User, ttl_seconds: int) -> Lease:
    from fastapi import HTTPException

    if lease.user_id != user.id:
        raise HTTPException(404, "lease not found")
    if lease.expires_at <= utcnow():
        raise HTTPException(410, "lease expired; ask the queue for the next item")
    lease.expires_at = utcnow() + timedelta(seconds=ttl_seconds)
    session.add(lease)
    return lease
