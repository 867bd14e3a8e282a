"""Look-alike grid pages: lease pages, confirm a page with one label (and a class for each
look-alike that is something else), skip a page.

Pages are :class:`~service.models.GridPage` rows cut by the newest succeeded ``cluster``
job (:mod:`service.loop.clusters`). Serving a page leases each of its live items to the
caller (``Lease`` reason ``grid``, the queue's TTL), so two people never get the same
page and the queue does not hand those items out meanwhile; items labelled since the
clustering drop out, and a page with none left vanishes. A confirm closes a page for
everyone (``confirmed_at``), a skip for the person who skipped it (``GridPageSkip``);
both are also written to the audit log. The routes (:mod:`service.api.routes.grids`)
and the simulator call these; pages travel as dicts (:func:`page_dict`).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from service.crud.annotations import canonical, current_annotation, lock, validate_for_project, write_version
from service.crud.holdout import take_after_grid
from service.crud.queue import CLAIM_LOCK, expire_leases
from service.errors import Conflict, Forbidden, Invalid, NotFound
from service.loop.clusters import CLASSIFICATION, GRID, POOL, SIZES
from service.models import (
    Annotation,
    AuditLog,
    GridPage,
    GridPageSkip,
    Item,
    Job,
    JobState,
    Lease,
    Project,
    Provenance,
    User,
    utcnow,
)
from service.security import audit


def page_dict(page: GridPage) -> dict[str, Any]:
    """A page as the domain functions pass it around (``holdout_ids`` included: never show it)."""
    return {"id": page.page_id, "size": page.size, "cluster": page.cluster, "item_ids": list(page.item_ids),
            "cohesion": page.cohesion, "suggested_class": page.suggested_class, "confidence": page.confidence,
            "agreement": page.agreement, "holdout_ids": list(page.holdout_ids)}


def pages_of(session: Session, job_id: int, size: int) -> list[dict[str, Any]]:
    """Every page of ``size`` that cluster job ``job_id`` cut, in its order (open or closed)."""
    rows = session.exec(select(GridPage).where(GridPage.job_id == job_id, GridPage.size == size)
                        .order_by(col(GridPage.position))).all()
    return [page_dict(p) for p in rows]


def _row(session: Session, page_id: str, *, for_update: bool = False) -> GridPage:
    """The page with public id ``"<job id>-<size>-<index>"``, or :class:`NotFound`."""
    try:
        job_id, size, n = (int(x) for x in page_id.split("-"))
    except ValueError:
        raise NotFound("grid page not found") from None
    q = select(GridPage).where(GridPage.job_id == job_id, GridPage.size == size, GridPage.position == n)
    page = session.exec(q.with_for_update() if for_update else q).first()
    if page is None:
        raise NotFound("grid page not found")
    return page


def lease_pages(session: Session, *, project: Project, user: User, size: int, limit: int,
                ttl_seconds: int) -> dict[str, Any]:
    """Up to ``limit`` pages leased to ``user``: pages they hold first, then free ones."""
    assert project.id is not None and user.id is not None
    if project.task not in CLASSIFICATION:
        raise Invalid("grids label whole images: classification projects only")
    if size not in SIZES:
        raise Invalid(f"size must be one of {list(SIZES)}")
    job = session.exec(select(Job).where(Job.project_id == project.id, Job.kind == "cluster",
                                         Job.state == JobState.succeeded).order_by(col(Job.id).desc())).first()
    out: dict[str, Any] = {"data": [], "count": 0, "cluster_job_id": job.id if job else None,
                           "model_version_id": (job.result or {}).get("model_version_id") if job else None}
    if job is None:
        return out
    if session.get_bind().dialect.name == "postgresql":  # grid lessors of a project take turns
        session.connection().execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": CLAIM_LOCK + project.id})
    expire_leases(session, project_id=project.id)
    pool = set(session.exec(select(Item.id).where(Item.project_id == project.id, col(Item.status).in_(POOL))))
    leases = {le.item_id: le for le in session.exec(select(Lease).where(Lease.project_id == project.id))}
    skipped = select(GridPageSkip.page_id).where(GridPageSkip.user_id == user.id)
    open_pages = session.exec(select(GridPage).where(
        GridPage.job_id == job.id, GridPage.size == size, col(GridPage.confirmed_at).is_(None),
        col(GridPage.id).not_in(skipped)).order_by(col(GridPage.position))).all()
    mine: list[tuple[dict[str, Any], list[int]]] = []
    free: list[tuple[dict[str, Any], list[int]]] = []
    for row in open_pages:
        # an item someone labels in the queue leaves the page; a page on someone's grid is theirs
        live = [i for i in row.item_ids if i in pool and (i not in leases or leases[i].reason == GRID)]
        holders = {leases[i].user_id for i in live if i in leases}
        if not live or holders - {user.id}:
            continue
        (mine if holders else free).append((page_dict(row), live))
    expires = utcnow() + timedelta(seconds=ttl_seconds)
    for page, live in mine + free:
        if len(out["data"]) >= limit:
            break
        try:
            with session.begin_nested():
                for i in live:
                    le = leases.get(i) or Lease(item_id=i, project_id=project.id, user_id=user.id, reason=GRID,
                                                expires_at=expires)
                    le.expires_at = expires
                    session.add(le)
                session.flush()
        except IntegrityError:
            continue
        shown = {k: v for k, v in page.items() if k != "holdout_ids"}  # calibration stays blind
        out["data"].append({**shown, "item_ids": live, "size": size, "lease_expires_at": expires})
    kept = {i for p in out["data"] for i in p["item_ids"]}
    for i, le in leases.items():  # the caller's grid leases are exactly the pages returned
        if le.user_id == user.id and le.reason == GRID and i not in kept:
            session.delete(le)
    out["count"] = len(out["data"])
    return out


def find_page(session: Session, page_id: str) -> tuple[Job, dict[str, Any]]:
    """The cluster job that cut page ``page_id`` and the page (:func:`page_dict`)."""
    page = _row(session, page_id)
    job = session.get(Job, page.job_id)
    if job is None or job.state != JobState.succeeded:  # a clustering that did not finish has no pages
        raise NotFound("grid page not found")
    return job, page_dict(page)


def confirm_page(session: Session, *, project: Project, job: Job, page: dict[str, Any], user: User, label: str,
                 exclude: list[int], corrections: dict[int, str] | None = None) -> dict[str, Any]:
    """One ``human`` version (origin ``grid``) per page item: ``label``, or the class
    ``corrections`` gives the item instead; ``exclude``d items are not labelled. Every item's
    grid lease is released, so excluded items go back to the queue. Items labelled meanwhile or
    leased in the queue by someone else are left alone (``unavailable``); a page on another
    person's grid is 409."""
    assert project.id is not None
    corrections = dict(corrections or {})
    ids: list[int] = list(page["item_ids"])
    stray = sorted((set(exclude) | set(corrections)) - set(ids))
    if stray:
        raise Invalid(f"items {stray[:20]} are not on page {page['id']}")
    both = sorted(set(exclude) & set(corrections))
    if both:
        raise Invalid(f"items {both[:20]} are both excluded and corrected: choose one")
    row = _row(session, page["id"], for_update=True)  # two confirms of one page take turns
    if row.confirmed_at is not None:
        raise Conflict(f"page {page['id']} was already confirmed")
    data = {c: canonical({"labels": [c]}) for c in {label, *corrections.values()}}
    items = {it.id: it for it in session.exec(select(Item).where(col(Item.id).in_(ids)))}
    leases = {le.item_id: le for le in session.exec(select(Lease).where(col(Lease.item_id).in_(ids)))}
    now = utcnow()
    if any(le.reason == GRID and le.user_id != user.id and le.expires_at > now for le in leases.values()):
        raise Conflict(f"page {page['id']} is leased to someone else right now")
    labelled: list[int] = []
    corrected: list[int] = []
    released: list[int] = []
    unavailable: list[int] = []
    for iid in ids:
        item, le = items.get(iid), leases.get(iid)
        if item is None or (le is not None and le.user_id != user.id and le.expires_at > now):
            unavailable.append(iid)
            continue
        if le is not None and (le.reason == GRID or le.expires_at <= now or iid not in exclude):
            session.delete(le)  # the caller's (or a stale) lease; a queue lease stays on excluded items
        if iid in exclude:
            released.append(iid)
            continue
        lock(session, item)
        if item.status not in POOL:
            unavailable.append(iid)
            continue
        given = data[corrections.get(iid, label)]
        validate_for_project(session, project, item, given)
        write_version(session, item=item, data=given, provenance=Provenance.human, origin=GRID, author=user)
        (corrected if iid in corrections else labelled).append(iid)
    # the page's hold-out items of this class would have been labelled with it; those of other
    # classes too when the person gave every exception its class and left none out; else they
    # would have been left out and stay in calibration (service/crud/holdout.py)
    take_after_grid(session, holdout_ids=row.holdout_ids, label=label, every=bool(corrections) and not exclude)
    row.confirmed_at, row.confirmed_by = utcnow(), user.id
    session.add(row)
    audit(session, user.id, "grid.confirm", project_id=project.id,
          detail={"page_id": page["id"], "label": label, "labelled": labelled, "excluded": released,
                  "corrected": {str(i): corrections[i] for i in corrected}})
    return {"page_id": page["id"], "label": label, "labelled": labelled, "corrected": corrected,
            "released": released, "unavailable": unavailable}


def skip_page(session: Session, *, project: Project, page: dict[str, Any], user: User) -> dict[str, Any]:
    """Release the caller's leases on the page; it is not offered to them again."""
    ids: list[int] = list(page["item_ids"])
    leases = {le.item_id: le for le in session.exec(select(Lease).where(col(Lease.item_id).in_(ids)))}
    released = [i for i in ids if i in leases and leases[i].user_id == user.id and leases[i].reason == GRID]
    for i in released:
        session.delete(leases[i])
    row = _row(session, page["id"])
    assert row.id is not None and user.id is not None
    if session.exec(select(GridPageSkip).where(GridPageSkip.page_id == row.id,
                                               GridPageSkip.user_id == user.id)).first() is None:
        session.add(GridPageSkip(page_id=row.id, user_id=user.id))
    audit(session, user.id, "grid.skip", project_id=project.id, detail={"page_id": page["id"]})
    return {"page_id": page["id"], "released": released}


def undo_confirm(session: Session, *, project: Project, page: dict[str, Any], user: User,
                 ttl_seconds: int) -> dict[str, Any]:
    """Undo the caller's confirm of ``page`` (the last action of Grids): each item the confirm
    labelled gets its version before it again, as a new version (origin ``undo``; history
    keeps both), the page opens again and its items are leased to the caller, so the next
    ``GET /grids`` serves it first. Items labelled or leased by someone else since are left as
    they are (``unavailable``). Hold-out items the confirm took out of calibration stay taken
    (it only makes the certificate more cautious)."""
    assert project.id is not None and user.id is not None
    row = _row(session, page["id"], for_update=True)
    if row.confirmed_at is None:
        raise Conflict(f"page {page['id']} is not confirmed: nothing to undo")
    if row.confirmed_by != user.id:
        raise Forbidden(f"page {page['id']} was confirmed by someone else: only they can undo it here")
    entries = session.exec(select(AuditLog).where(
        AuditLog.project_id == project.id, AuditLog.user_id == user.id, AuditLog.action == "grid.confirm")
        .order_by(col(AuditLog.id).desc()).limit(500)).all()
    entry = next((e for e in entries if (e.detail or {}).get("page_id") == page["id"]), None)
    if entry is not None:
        given = [int(i) for i in entry.detail.get("labelled", [])] + [int(i) for i in entry.detail.get("corrected", {})]
    else:  # no audit row (pruned): the page's items the caller labelled on a grid
        given = list(row.item_ids)
    items = {it.id: it for it in session.exec(select(Item).where(col(Item.id).in_(row.item_ids)))}
    leases = {le.item_id: le for le in session.exec(select(Lease).where(col(Lease.item_id).in_(row.item_ids)))}
    now = utcnow()
    restored: list[int] = []
    unavailable: list[int] = []
    for iid in given:
        item = items.get(iid)
        if item is None:
            unavailable.append(iid)
            continue
        lock(session, item)
        cur = current_annotation(session, item)
        le = leases.get(iid)
        if cur is None or cur.origin != GRID or cur.author_id != user.id or (
                le is not None and le.user_id != user.id and le.expires_at > now):
            if entry is not None:
                unavailable.append(iid)
            continue
        prev = session.exec(select(Annotation).where(Annotation.item_id == iid,
                                                     Annotation.version == item.version - 1)).first()
        write_version(session, item=item, data=prev.data if prev is not None else canonical({}),
                      provenance=prev.provenance if prev is not None else Provenance.human, origin="undo",
                      author=user, model_version_id=prev.model_version_id if prev is not None else None,
                      score=prev.score if prev is not None else None)
        restored.append(iid)
    expires = now + timedelta(seconds=ttl_seconds)
    for iid in row.item_ids:  # the page is the caller's again: its items in the pool, free or theirs
        item, le = items.get(iid), leases.get(iid)
        if item is None or item.status not in POOL:
            continue
        if le is not None and le.user_id != user.id and le.expires_at > now:
            continue
        if le is None:
            le = Lease(item_id=iid, project_id=project.id, user_id=user.id, reason=GRID, expires_at=expires)
        le.user_id, le.reason, le.expires_at = user.id, GRID, expires
        session.add(le)
    row.confirmed_at, row.confirmed_by = None, None
    session.add(row)
    audit(session, user.id, "grid.undo", project_id=project.id,
          detail={"page_id": page["id"], "restored": restored, "unavailable": unavailable})
    return {"page_id": page["id"], "restored": restored, "unavailable": unavailable}
