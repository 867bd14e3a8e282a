"""The labelling queue: leases, and the mix of strategy / hold-out / audit streams.

Two labelers never hold the same item: a lease row is unique per item, and the
claim runs inside a write transaction (SQLite ``BEGIN IMMEDIATE``) or locks the
candidate with ``FOR UPDATE SKIP LOCKED`` (PostgreSQL, where claims of different
labelers run side by side). Expired leases are
deleted before each claim, so their items return to the queue.

Streams: with probability ``holdout_share`` (its first ``holdout_min`` labels
drawn sooner: :func:`learning.policy.holdout_draw_share`) the next item is drawn from the
random stream (lowest uniform ``queue_rank`` among the items no person has
labelled, pre-labelled ones included), and the label it gets is held out for
calibration, so the hold-out set is an unbiased sample of the unlabelled pool (it keeps
its place in the pool for the other streams: :mod:`service.crud.holdout`).
Otherwise the strategy stream serves the highest ``query_score`` (written by the
last inference job) among the unlabelled items (those in Pending are left to Pending),
then items without a score (before a model exists, or imported since) in the random
order (reason ``random``). With the ``random`` strategy the strategy stream is random
sampling proper: the random order over every item no person has labelled, Pending's
included, like the hold-out stream; leaving Pending's items out would make its draws
depend on what the model is sure of. Audit items (auto-accepted pre-labels drawn for a
check) come first when there are any.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import bindparam, delete, exists, func, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col, select

from learning.policy import Policy, front_load_labels, holdout_draw_share
from service.crud.holdout import CLASSIFICATION, strategy_takes, take_after_strategy
from service.errors import Gone, NotFound
from service.models import Item, ItemStatus, Lease, Prediction, Project, QueueReason, Skip, User, utcnow

_rng = random.Random()
_DEFAULT = Policy()
CANDIDATES = 5  # items a claim locks and tries per stage
CLAIM_LOCK = 7_340_000_000  # advisory-lock key space for grid-page leasing (one per project)


@dataclass
class Leased:
    lease: Lease
    item: Item
    reason: str
    renewed: bool = False


def expire_leases(session: Session, *, project_id: int | None = None) -> int:
    """Delete expired leases (their items go back to the queue). On PostgreSQL, leases another
    transaction is deleting are skipped rather than waited for, so concurrent claims never
    queue up (or deadlock) behind each other here."""
    stmt = _expire_stmt(project_id is not None, session.get_bind().dialect.name == "postgresql")
    params = {"now": utcnow(), "project_id": project_id}
    return session.exec(stmt, params=params).rowcount or 0  # type: ignore[call-overload]


@functools.lru_cache(maxsize=4)
def _expire_stmt(one_project: bool, pg: bool) -> Any:
    expired = select(Lease.id).where(col(Lease.expires_at) <= bindparam("now"))
    if one_project:
        expired = expired.where(col(Lease.project_id) == bindparam("project_id"))
    if pg:
        expired = expired.with_for_update(skip_locked=True)
    return delete(Lease).where(col(Lease.id).in_(expired.scalar_subquery()))


HOLDOUT_STATUSES = (ItemStatus.unlabelled, ItemStatus.proposed)
# leases that may hold an item in Pending: the random draws (hold-out, and the ``random`` strategy)
RANDOM_REASONS = (QueueReason.holdout, QueueReason.random)


def _stages(reason: str, uninformed: bool = False) -> list[tuple[tuple[ItemStatus, ...], bool | None, str]]:
    """(statuses, scored?, reason served) in the order a stream tries them: unlabelled before
    skipped-by-others; the strategy stream serves scored items by score, then the rest at random.
    The hold-out stream draws from every item no person has labelled, pre-labelled ones in
    Pending included: leaving those out would tilt the hold-out towards the items the model
    finds hard, which is not the population its thresholds are applied to. An ``uninformed``
    strategy stream (``random``) draws like the hold-out stream, for the same reason.
    Each stage reads its items in index order (``ix_item_queue`` / ``ix_item_strategy`` /
    ``ix_item_rank``), so a claim costs the same on a pool of a hundred or a million items."""
    if reason == QueueReason.strategy and uninformed:
        return [(HOLDOUT_STATUSES, None, QueueReason.random), ((ItemStatus.skipped,), None, QueueReason.random)]
    if reason == QueueReason.strategy:
        return [((ItemStatus.unlabelled,), True, QueueReason.strategy),
                ((ItemStatus.unlabelled,), False, QueueReason.random),
                ((ItemStatus.skipped,), None, QueueReason.random)]
    if reason == QueueReason.holdout:
        return [(HOLDOUT_STATUSES, None, reason), ((ItemStatus.skipped,), None, reason)]
    return [((ItemStatus.unlabelled,), None, reason), ((ItemStatus.skipped,), None, reason)]


@functools.lru_cache(maxsize=16)
def _stage_queries(reason: str, pg: bool, uninformed: bool = False) -> tuple[tuple[Any, str], ...]:
    """The statements of a stream's stages, built once per process (building a statement
    costs more CPU than running it); ``:project_id`` and ``:user_id`` are bound per claim."""
    leased = exists().where(col(Lease.item_id) == Item.id)
    skipped = exists().where(col(Skip.item_id) == Item.id, col(Skip.user_id) == bindparam("user_id"))
    base = select(Item).where(Item.project_id == bindparam("project_id"), ~leased, ~skipped)
    out = []
    for statuses, scored, served in _stages(reason, uninformed):
        q = base.where(Item.status == statuses[0]) if len(statuses) == 1 else base.where(
            col(Item.status).in_(statuses))
        if scored:  # backwards along ix_item_strategy
            q = q.where(col(Item.query_score).is_not(None)).order_by(col(Item.query_score).desc(),
                                                                     col(Item.queue_rank).desc())
        else:
            q = q.where(col(Item.query_score).is_(None)) if scored is False else q
            q = q.order_by(col(Item.queue_rank))
        if pg:  # rows another claim holds are skipped, not waited for
            q = q.with_for_update(skip_locked=True, of=Item)  # type: ignore[arg-type]
        out.append((q.limit(CANDIDATES), str(served)))
    return tuple(out)


def _candidates(session: Session, project: Project, user: User, reason: str) -> list[tuple[Item, str]]:
    pg = session.get_bind().dialect.name == "postgresql"
    params = {"project_id": project.id, "user_id": user.id}
    if reason == QueueReason.audit:
        # open audits are few (a share of auto-accepted labels, until answered): find them
        # through ix_prediction_open_audit first, never by a subquery per pool item
        open_audits = list(session.exec(select(Prediction.item_id).where(
            Prediction.project_id == project.id, col(Prediction.audit).is_(True),
            col(Prediction.audit_correct).is_(None), col(Prediction.state) == "auto").limit(500)).all())
        if not open_audits:
            return []
        leased = exists().where(col(Lease.item_id) == Item.id)
        skipped = exists().where(col(Skip.item_id) == Item.id, col(Skip.user_id) == user.id)
        q = select(Item).where(Item.project_id == project.id, ~leased, ~skipped, col(Item.id).in_(open_audits)
                               ).order_by(col(Item.queue_rank))
        if pg:
            q = q.with_for_update(skip_locked=True, of=Item)  # type: ignore[arg-type]
        queries: tuple[tuple[Any, str], ...] = ((q.limit(CANDIDATES), str(reason)),)
    else:
        queries = _stage_queries(str(reason), pg, reason == QueueReason.strategy and not strategy_takes(project.policy))
    for q, served in queries:
        got = list(session.exec(q, params=params).all())
        if got:
            return [(item, served) for item in got]
    return []


def _still_free(session: Session, item_id: int, reason: str) -> bool:
    """Re-check a locked candidate with a fresh statement (PostgreSQL READ COMMITTED may
    have shown it from a snapshot older than a claim or a label committed meanwhile)."""
    if session.get_bind().dialect.name != "postgresql":
        return True
    leased = exists().where(col(Lease.item_id) == item_id)
    status, taken = session.exec(select(Item.status, leased).where(Item.id == item_id)).one()
    return not taken and (reason == QueueReason.audit or status in (ItemStatus.unlabelled, ItemStatus.skipped)
                          or reason in RANDOM_REASONS and status == ItemStatus.proposed)


def _count(session: Session, where: Any, up_to: int) -> int:
    rows = select(Item.id).where(*where).limit(up_to)
    return int(session.exec(select(func.count()).select_from(rows.subquery())).one())


def holdout_counts(session: Session, project: Project) -> tuple[int, int] | None:
    """``(calibrating hold-out labels, labelled items)`` while the policy front-loads the
    hold-out (:func:`learning.policy.holdout_draw_share`), None once it no longer does.
    Each count stops where the answer can no longer change, so a claim costs the same
    in a project with a million labels."""
    policy = project.policy or {}
    need = int(policy.get("holdout_min", _DEFAULT.holdout_min))
    until = front_load_labels(float(policy.get("holdout_share", _DEFAULT.holdout_share)), need)
    if until <= 0:
        return None
    labelled = _count(session, (Item.project_id == project.id, Item.status == ItemStatus.labelled), until)
    if labelled >= until:
        return None
    calibrating = _count(session, (Item.project_id == project.id, Item.status == ItemStatus.labelled,
                                   col(Item.is_holdout).is_(True), col(Item.holdout_taken_by).is_(None)), need)
    return calibrating, labelled


def choose_stream(project: Project, rng: random.Random, *, counts: tuple[int, int] | None = None) -> list[str]:
    """Streams to try in order for the next draw: audit items first, then the hold-out
    (random) stream with probability ``holdout_share`` (the first ``holdout_min`` hold-out
    labels sooner: :func:`learning.policy.holdout_draw_share` given ``counts``, from
    :func:`holdout_counts`), else the strategy stream."""
    policy = project.policy or {}
    share = float(policy.get("holdout_share", _DEFAULT.holdout_share))
    if counts is not None:
        share = holdout_draw_share(share, int(policy.get("holdout_min", _DEFAULT.holdout_min)), *counts)
    first, second = (QueueReason.holdout, QueueReason.strategy) if rng.random() < share else (
        QueueReason.strategy, QueueReason.holdout)
    return [str(QueueReason.audit), str(first), str(second)]


def _insert_lease(session: Session, lease: Lease) -> Lease | None:
    """Insert ``lease`` unless its item is leased already (the unique ``item_id``);
    one round trip (``INSERT .. ON CONFLICT DO NOTHING RETURNING``) instead of a
    savepoint, an insert and a release."""
    values = lease.model_dump(exclude={"id"})
    new_id = session.execute(_insert_lease_stmt(session.get_bind().dialect.name, tuple(values)), values).scalar()
    if new_id is None:
        return None
    lease.id = int(new_id)
    return lease


@functools.lru_cache(maxsize=4)
def _insert_lease_stmt(dialect: str, columns: tuple[str, ...]) -> Any:
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    return insert(Lease).values({c: bindparam(c) for c in columns}).on_conflict_do_nothing(
        index_elements=["item_id"]).returning(col(Lease.id))


def next_item(session: Session, *, project: Project, user: User, ttl_seconds: int,
              rng: random.Random | None = None) -> Leased | None:
    """Lease the next item for ``user`` (their current lease first), or None when nothing is left.

    Two claims never get one item: the lease's unique ``item_id`` refuses the second insert
    (it retries with the next candidate), and on PostgreSQL ``SKIP LOCKED`` keeps concurrent
    claims off each other's candidates, so labelers do not wait for each other. Only claims
    of the *same* user take turns (an advisory lock per project and user), so two tabs of
    one labeler share one lease.
    """
    assert project.id is not None and user.id is not None
    if session.get_bind().dialect.name == "postgresql":
        # a lease is soft state: if the database crashed before flushing this commit to disk,
        # the item simply goes back to the queue (and a label sent for it is still saved), so
        # the claim does not wait for the WAL flush (about 4 ms here per commit)
        session.connection().execute(text("SELECT set_config('synchronous_commit', 'off', true), "
                                          "pg_advisory_xact_lock(:p, :u)"), {"p": project.id, "u": user.id})
    now = utcnow()
    expire_leases(session, project_id=project.id)
    mine = session.exec(select(Lease).where(Lease.project_id == project.id, Lease.user_id == user.id,
                                            Lease.reason != "grid").order_by(col(Lease.id))).first()
    if mine is not None:
        item = session.get(Item, mine.item_id)
        if item is not None and (item.status in (ItemStatus.unlabelled, ItemStatus.skipped)
                                 or mine.reason == QueueReason.audit
                                 or mine.reason in RANDOM_REASONS and item.status == ItemStatus.proposed):
            mine.expires_at = now + timedelta(seconds=ttl_seconds)
            session.add(mine)
            return Leased(mine, item, mine.reason, renewed=True)
        session.delete(mine)
        session.flush()
    for reason in choose_stream(project, rng or _rng, counts=holdout_counts(session, project)):
        for item, served in _candidates(session, project, user, reason):
            assert item.id is not None
            if not _still_free(session, item.id, served):
                continue
            lease = _insert_lease(session, Lease(item_id=item.id, project_id=project.id, user_id=user.id,
                                                 reason=served, expires_at=now + timedelta(seconds=ttl_seconds)))
            if lease is None:  # another claim got it first
                continue
            if served == QueueReason.strategy and item.query_score is not None and project.task in CLASSIFICATION:
                # hold-out items keep their place in the pool: those scored above this one
                # would have been served before it (service/crud/holdout.py); an uninformed
                # strategy (``random``) serves reason ``random`` and takes none
                take_after_strategy(session, project_id=project.id, served_score=item.query_score)
            return Leased(lease, item, served)
    return None


def heartbeat(session: Session, *, lease: Lease, user: User, ttl_seconds: int) -> Lease:

    if lease.user_id != user.id:
        raise NotFound("lease not found")
    if lease.expires_at <= utcnow():
        raise Gone("lease expired; ask the queue for the next item")
    lease.expires_at = utcnow() + timedelta(seconds=ttl_seconds)
    session.add(lease)
    return lease
