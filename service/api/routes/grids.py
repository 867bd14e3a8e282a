"""Look-alike grid pages over HTTP: lease, confirm, skip, refresh. What a page is and how it
is leased and closed is :mod:`service.loop.grids`; the routes parse, check access and call it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from sqlmodel import Session

from service.api.deps import CONFLICT, STD_ERRORS, CurrentUser, SessionDep, SettingsDep, _err, get_project
from service.db import session_scope
from service.jobs.runner import JobConflict, enqueue
from service.loop.grids import confirm_page, find_page, lease_pages, skip_page, undo_confirm
from service.models import GridConfirm, GridConfirmPublic, GridPagesPublic, GridSkipPublic, JobPublic, Role
from service.models.grids import GridUndoPublic

router = APIRouter(tags=["grids"])
LEASES: dict[int | str, dict[str, Any]] = {
    409: _err("the page was already confirmed, or another person holds it"),
    422: _err("not a classification project, bad size or label, or items not on the page")}


def write_session(request: Request) -> Iterator[Session]:
    """A session on the writing engine even for GET: serving a page leases its items."""
    with session_scope(request.app.state.engine) as session:
        yield session


@router.get("/projects/{project_id}/grids", response_model=GridPagesPublic, responses={**STD_ERRORS, **LEASES})
def get_grids(project_id: int, user: CurrentUser, settings: SettingsDep,
              session: Session = Depends(write_session, scope="function"),
              size: int = Query(default=9, description="page size: 4, 6 or 9"),
              limit: int = Query(default=1, ge=1, le=20)) -> GridPagesPublic:
    """Lease up to ``limit`` pages of ``size`` look-alike items to the caller.

    Pages the caller already holds come first (asking again renews them); the
    caller's grid leases on pages not returned are released. Empty before the
    first clustering."""
    project = get_project(session, user, project_id)
    return GridPagesPublic.model_validate(lease_pages(session, project=project, user=user, size=size, limit=limit,
                                                      ttl_seconds=settings.lease_ttl_seconds))


@router.post("/grids/{page_id}/confirm", response_model=GridConfirmPublic, responses={**STD_ERRORS, **LEASES})
def post_confirm(page_id: str, body: GridConfirm, user: CurrentUser, session: SessionDep) -> GridConfirmPublic:
    """Label the page's items with ``label`` in one action, except ``exclude`` (left unlabelled)
    and ``corrections`` (labelled with the class given for each)."""
    job, page = find_page(session, page_id)
    project = get_project(session, user, job.project_id or 0)
    return GridConfirmPublic.model_validate(confirm_page(session, project=project, job=job, page=page, user=user,
                                                         label=body.label, exclude=body.exclude,
                                                         corrections=body.corrections))


@router.post("/grids/{page_id}/undo", response_model=GridUndoPublic, responses={**STD_ERRORS, **CONFLICT})
def post_undo(page_id: str, user: CurrentUser, session: SessionDep, settings: SettingsDep) -> GridUndoPublic:
    """Undo the caller's confirm of the page (the last action): its items get their labels
    from before it as new versions, and the page is open again, leased to the caller."""
    job, page = find_page(session, page_id)
    project = get_project(session, user, job.project_id or 0)
    return GridUndoPublic.model_validate(undo_confirm(session, project=project, page=page, user=user,
                                                      ttl_seconds=settings.lease_ttl_seconds))


@router.post("/grids/{page_id}/skip", response_model=GridSkipPublic, responses=STD_ERRORS)
def post_skip(page_id: str, user: CurrentUser, session: SessionDep) -> GridSkipPublic:
    """Give the page back; it is not offered to the caller again."""
    job, page = find_page(session, page_id)
    project = get_project(session, user, job.project_id or 0)
    return GridSkipPublic.model_validate(skip_page(session, project=project, page=page, user=user))


@router.post("/projects/{project_id}/grids/refresh", response_model=JobPublic, status_code=202,
             responses={**STD_ERRORS, **CONFLICT})
def refresh_grids(project_id: int, user: CurrentUser, session: SessionDep) -> JobPublic:
    """Re-cluster the pool now (a ``cluster`` job); otherwise it follows each inference."""
    project = get_project(session, user, project_id, Role.manager)
    try:
        job = enqueue(session, kind="cluster", project_id=project.id, payload={"reason": "requested"},
                      user_id=user.id)
    except JobConflict as exc:
        raise HTTPException(409, str(exc)) from exc
    return JobPublic.model_validate(job, from_attributes=True)
