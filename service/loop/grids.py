"""Look-alike grid pages: lease pages, confirm a page with one label (and a class for each
look-alike that is something else), skip a page.

Pages come from the newest succeeded ``cluster`` job (:mod:`service.loop.clusters`).
Serving a page leases each of its live items to the caller (``Lease`` reason
``grid``, the queue's TTL), so two people never get the same page and the queue
does not hand those items out meanwhile; items labelled since the clustering
drop out, and a page with none left vanishes. Page state lives in the audit
log: ``grid.confirm`` closes a page for everyone, ``grid.skip`` for the person
who skipped it. The routes (:mod:`service.api.routes.grids`) and the simulator call these.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from service.crud.annotations import canonical, lock, validate_for_project, write_version
from service.crud.queue import CLAIM_LOCK, expire_leases
from service.errors import Conflict, Invalid, NotFound
from service.loop.clusters import CLASSIFICATION, GRID, POOL, SIZES
from service.loop.holdout import take_after_grid
from service.models import AuditLog, Item, Job, JobState, Lease, Project, Provenance, User, utcnow
from service.security import audit


def _closed_pages(session: Session, project_id: int, user_id: int | None, since: Any) -> set[str]:
    rows = session.exec(select(AuditLog).where(AuditLog.project_id == project_id, col(AuditLog.at) >= since,
                                               col(AuditLog.action).in_(["grid.confirm", "grid.skip"]))).all()
    return {str(r.detail.get("page_id")) for r in rows if r.action == "grid.confirm" or r.user_id == user_id}


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
    closed = _closed_pages(session, project.id, user.id, job.created_at)
    mine: list[tuple[dict[str, Any], list[int]]] = []
    free: list[tuple[dict[str, Any], list[int]]] = []
    for page in (job.result or {}).get("pages", {}).get(str(size), []):
        # an item someone labels in the queue leaves the page; a page on someone's grid is theirs
        live = [i for i in page["item_ids"] if i in pool and (i not in leases or leases[i].reason == GRID)]
        holders = {leases[i].user_id for i in live if i in leases}
        if page["id"] in closed or not live or holders - {user.id}:
            continue
        (mine if holders else free).append((page, live))
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
    try:
        job_id, size, n = (int(x) for x in page_id.split("-"))
    except ValueError:
        raise NotFound("grid page not found") from None
    job = session.get(Job, job_id)
    pages = (job.result or {}).get("pages", {}).get(str(size), []) if job and job.kind == "cluster" else []
    if job is None or not 0 <= n < len(pages) or pages[n].get("id") != page_id:
        raise NotFound("grid page not found")
    return job, pages[n]


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
    if page["id"] in _closed_pages(session, project.id, None, job.created_at):
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
    # would have been left out and stay in calibration (service/loop/holdout.py)
    take_after_grid(session, holdout_ids=page.get("holdout_ids", []), label=label,
                    every=bool(corrections) and not exclude)
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
    audit(session, user.id, "grid.skip", project_id=project.id, detail={"page_id": page["id"]})
    return {"page_id": page["id"], "released": released}


# -- routes --------------------------------------------------------------------------------

