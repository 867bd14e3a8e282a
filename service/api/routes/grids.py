"""Look-alike grid pages over HTTP: lease, confirm, skip, refresh. What a page is and how it
is leased and closed is :mod:`service.loop.grids`; the routes parse, check access and call it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, Field
from sqlmodel import Session

from service.api.deps import CONFLICT, STD_ERRORS, CurrentUser, SessionDep, SettingsDep, _err, get_project
from service.db import session_scope
from service.jobs.runner import JobConflict, enqueue
from service.loop.grids import confirm_page, find_page, lease_pages, skip_page
from service.models import JobPublic, Role

# -- grid pages for people -------------------------------------------------------------------


router = APIRouter(tags=["grids"])
LEASES: dict[int | str, dict[str, Any]] = {
    409: _err("the page was already confirmed, or another person holds it"),
    422: _err("not a classification project, bad size or label, or items not on the page")}


def write_session(request: Request) -> Iterator[Session]:
    """A session on the writing engine even for GET: serving a page leases its items."""
    with session_scope(request.app.state.engine) as session:
        yield session


class GridPageOut(BaseModel):
    id: str = Field(description='"<cluster job id>-<size>-<index>"')
    size: int
    cluster: int
    item_ids: list[int] = Field(description="items still unlabelled, nearest to the cluster centre first")
    suggested_class: str | None = Field(description="the model's best guess for the page (null before a model)")
    confidence: float | None = Field(description="mean probability of the suggested class over the page")
    agreement: float | None = Field(description="share of the page whose own top class is the suggestion")
    cohesion: float = Field(description="mean cosine similarity to the cluster centre (higher: more alike)")
    lease_expires_at: datetime


class GridsOut(BaseModel):
    data: list[GridPageOut]
    count: int
    cluster_job_id: int | None = Field(description="the clustering that cut these pages")
    model_version_id: int | None = Field(description="the model whose predictions made the suggestions")


@router.get("/projects/{project_id}/grids", response_model=GridsOut, responses={**STD_ERRORS, **LEASES})
def get_grids(project_id: int, user: CurrentUser, settings: SettingsDep,
              session: Session = Depends(write_session, scope="function"),
              size: int = Query(default=9, description="page size: 4, 6 or 9"),
              limit: int = Query(default=1, ge=1, le=20)) -> GridsOut:
    """Lease up to ``limit`` pages of ``size`` look-alike items to the caller.

    Pages the caller already holds come first (asking again renews them); the
    caller's grid leases on pages not returned are released. Empty before the
    first clustering."""
    project = get_project(session, user, project_id)
    return GridsOut.model_validate(lease_pages(session, project=project, user=user, size=size, limit=limit,
                                               ttl_seconds=settings.lease_ttl_seconds))


class ConfirmIn(BaseModel):
    label: str = Field(min_length=1, max_length=200, description="the class every non-excluded item gets")
    exclude: list[int] = Field(default_factory=list, max_length=9,
                               description="item ids that are not this class: left unlabelled, back in the queue")
    corrections: dict[int, str] = Field(
        default_factory=dict, max_length=9,
        description="item ids that are not this class, with the class each is instead: labelled with it "
                    "(one action each, like an exclusion, and the item needs no second look)")


class ConfirmOut(BaseModel):
    page_id: str
    label: str
    labelled: list[int] = Field(description="items that got the page's label (human, origin grid)")
    corrected: list[int] = Field(description="items that got the class given in corrections (human, origin grid)")
    released: list[int] = Field(description="excluded items, back in the queue")
    unavailable: list[int] = Field(description="items labelled meanwhile or held by someone else")


@router.post("/grids/{page_id}/confirm", response_model=ConfirmOut, responses={**STD_ERRORS, **LEASES})
def post_confirm(page_id: str, body: ConfirmIn, user: CurrentUser, session: SessionDep) -> ConfirmOut:
    """Label the page's items with ``label`` in one action, except ``exclude`` (left unlabelled)
    and ``corrections`` (labelled with the class given for each)."""
    job, page = find_page(session, page_id)
    project = get_project(session, user, job.project_id or 0)
    return ConfirmOut.model_validate(confirm_page(session, project=project, job=job, page=page, user=user,
                                                  label=body.label, exclude=body.exclude,
                                                  corrections=body.corrections))


class SkipOut(BaseModel):
    page_id: str
    released: list[int]


@router.post("/grids/{page_id}/skip", response_model=SkipOut, responses=STD_ERRORS)
def post_skip(page_id: str, user: CurrentUser, session: SessionDep) -> SkipOut:
    """Give the page back; it is not offered to the caller again."""
    job, page = find_page(session, page_id)
    project = get_project(session, user, job.project_id or 0)
    return SkipOut.model_validate(skip_page(session, project=project, page=page, user=user))


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
