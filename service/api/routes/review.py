"""Hard-example flags over HTTP: list them, resolve them, start a scan (reviewer role or higher)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Header, HTTPException, Query
from pydantic import BaseModel, Field

from service.api.deps import CONFLICT, PRECONDITION, STD_ERRORS, CurrentUser, SessionDep, _err, get_project
from service.crud.annotations import BoxIn, PolygonIn
from service.jobs.runner import JobConflict, enqueue
from service.loop import review as crud
from service.models import JobPublic, ReviewFlag, Role

router = APIRouter(tags=["review"])

FlagState = Literal["open", "confirmed", "fixed", "dismissed", "all"]


class FlagOut(BaseModel):
    id: int
    item_id: int
    file_name: str
    width: int = Field(description="image width, pixels (boxes are in image pixels)")
    height: int
    kind: str = Field(description="label error | unstable | false detection | missed detection")
    score: float = Field(description="higher = more likely wrong; review first")
    state: str = Field(description="open | confirmed | fixed | dismissed")
    detail: dict[str, Any] = Field(description="label error: given, suggested, self_confidence, annotation_version; "
                                   "unstable: prediction_id, proposed, views")
    model_version_id: int | None
    labels: list[str] = Field(description="the item's current labels")
    boxes: list[dict[str, Any]] = Field(default_factory=list, description="the item's current boxes")
    polygons: list[dict[str, Any]] = Field(default_factory=list, description="the item's current polygons")
    provenance: str | None = Field(description="provenance of the current labels")
    item_status: str
    etag: str = Field(description="the item's version, for If-Match on fix")
    is_holdout: bool
    stale: bool = Field(description="the label or proposal changed since the flag (next scan closes it)")
    proposal: dict[str, Any] | None = Field(description="the item's open pre-label: prediction_id, label, score")
    created_at: datetime
    resolved_by: int | None
    resolved_at: datetime | None


class FlagsOut(BaseModel):
    data: list[FlagOut]
    count: int


@router.get("/projects/{project_id}/review", response_model=FlagsOut, responses=STD_ERRORS)
def list_review(project_id: int, user: CurrentUser, session: SessionDep,
                kind: str | None = Query(default=None, max_length=100, description="e.g. 'label error'"),
                state: FlagState = "open", offset: int = Query(default=0, ge=0),
                limit: int = Query(default=50, ge=1, le=500)) -> FlagsOut:
    """Hard-example flags with their item and its current labels, highest score first."""
    project = get_project(session, user, project_id, Role.reviewer)
    rows, count = crud.list_flags(session, project=project, kind=kind, state=None if state == "all" else state,
                                  offset=offset, limit=limit)
    return FlagsOut(data=[FlagOut.model_validate(r) for r in rows], count=count)


class ResolveIn(BaseModel):
    action: Literal["confirm", "fix", "dismiss"] = Field(
        description="confirm: the current labels (unstable: the proposal) are right; fix: replace them with "
                    "`labels` (a human version, origin review); dismiss: close without a verdict")
    labels: list[str] | None = Field(default=None, max_length=1000,
                                     description="fix of a classification flag: the right labels")
    boxes: list[BoxIn] | None = Field(default=None, max_length=5000,
                                      description="fix of a detection flag: the image's right boxes (all of them)")
    polygons: list[PolygonIn] | None = Field(default=None, max_length=5000,
                                             description="fix of a detection flag: the right polygons")
    note: str = Field(default="", max_length=1000)


@router.post("/review/{flag_id}/resolve", response_model=FlagOut,
             responses={**STD_ERRORS, **CONFLICT, **PRECONDITION, 422: _err("fix without labels, or unknown class")})
def resolve(flag_id: int, body: ResolveIn, user: CurrentUser, session: SessionDep,
            if_match: str | None = Header(default=None, description="optional: the etag the reviewer saw")
            ) -> FlagOut:
    """Resolve a flag; outcome, resolver and time are recorded on it."""
    flag = session.get(ReviewFlag, flag_id)
    if flag is None:
        raise HTTPException(404, "flag not found")
    project = get_project(session, user, flag.project_id, Role.reviewer)
    shapes = None if body.boxes is None and body.polygons is None else {
        "boxes": [b.model_dump() for b in body.boxes or []], "polygons": [q.model_dump() for q in body.polygons or []]}
    return FlagOut.model_validate(crud.resolve_flag(session, flag=flag, project=project, user=user,
                                                    action=body.action, labels=body.labels, note=body.note,
                                                    shapes=shapes,
                                                    if_match=if_match))


@router.post("/projects/{project_id}/review/scan", response_model=JobPublic, status_code=202,
             responses={**STD_ERRORS, **CONFLICT})
def scan(project_id: int, user: CurrentUser, session: SessionDep) -> JobPublic:
    """Look for hard examples now (a ``hard_examples`` job); otherwise it follows each inference."""
    project = get_project(session, user, project_id, Role.reviewer)
    try:
        job = enqueue(session, kind="hard_examples", project_id=project.id, payload={"reason": "requested"},
                      user_id=user.id)
    except JobConflict as exc:
        raise HTTPException(409, str(exc)) from exc
    return JobPublic.model_validate(job, from_attributes=True)
