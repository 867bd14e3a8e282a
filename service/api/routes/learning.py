"""The learning loop over HTTP: readiness, train now, model versions, Pending."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field
from sqlmodel import col, select

from service.api.deps import CONFLICT, STD_ERRORS, CurrentUser, SessionDep, _err, get_project
from service.jobs.runner import JobConflict, enqueue
from service.loop import pending as crud
from service.loop.state import readiness_report
from service.models import JobPublic, ModelVersion, ModelVersionPublic, Role
from service.models.pending import PendingUndonePublic
from service.models.stats import ReadinessPublic

router = APIRouter(tags=["learning"])


@router.get("/projects/{project_id}/readiness", response_model=ReadinessPublic, responses=STD_ERRORS)
def get_readiness(project_id: int, user: CurrentUser, session: SessionDep) -> ReadinessPublic:
    """Whether the project can train, and why not (one sentence per reason)."""
    project = get_project(session, user, project_id)
    return ReadinessPublic.model_validate(readiness_report(session, project))


@router.post("/projects/{project_id}/train", response_model=JobPublic, status_code=202,
             responses={**STD_ERRORS, **CONFLICT, 422: _err("the project is not ready to train")})
def train_now(project_id: int, user: CurrentUser, session: SessionDep) -> JobPublic:
    project = get_project(session, user, project_id, Role.manager)
    report = readiness_report(session, project)
    if not report["ready"]:
        raise HTTPException(422, "not ready to train: " + "; ".join(report["reasons"]))
    try:
        job = enqueue(session, kind="train", project_id=project.id, payload={"reason": "requested"},
                      user_id=user.id)
    except JobConflict as exc:
        raise HTTPException(409, str(exc)) from exc
    return JobPublic.model_validate(job, from_attributes=True)


@router.get("/projects/{project_id}/model-versions", response_model=list[ModelVersionPublic],
            responses=STD_ERRORS)
def model_versions(project_id: int, user: CurrentUser, session: SessionDep) -> list[ModelVersionPublic]:
    get_project(session, user, project_id)
    rows = session.exec(select(ModelVersion).where(ModelVersion.project_id == project_id)
                        .order_by(col(ModelVersion.version).desc())).all()
    return [ModelVersionPublic.model_validate(r, from_attributes=True) for r in rows]


class PendingOut(BaseModel):
    data: list[dict[str, Any]]
    count: int


@router.get("/projects/{project_id}/pending", response_model=PendingOut, responses=STD_ERRORS)
def list_pending(project_id: int, user: CurrentUser, session: SessionDep,
                 label: str | None = Query(default=None, alias="class", max_length=200),
                 min_score: float | None = Query(default=None, ge=0, le=1),
                 max_score: float | None = Query(default=None, ge=0, le=1),
                 model_version_id: int | None = None, offset: int = Query(default=0, ge=0),
                 limit: int = Query(default=60, ge=1, le=500)) -> PendingOut:
    project = get_project(session, user, project_id)
    rows, count = crud.list_pending(session, project=project, label=label, min_score=min_score,
                                    max_score=max_score, model_version_id=model_version_id, offset=offset,
                                    limit=limit)
    return PendingOut(data=rows, count=count)


class IdsIn(BaseModel):
    ids: list[int] = Field(min_length=1, max_length=1000, description="prediction ids")


class CorrectIn(BaseModel):
    id: int = Field(description="prediction id")
    labels: list[str] = Field(min_length=1, max_length=1000)


class DoneOut(BaseModel):
    done: int


@router.post("/projects/{project_id}/pending/confirm", response_model=DoneOut, responses={**STD_ERRORS, **CONFLICT})
def pending_confirm(project_id: int, body: IdsIn, user: CurrentUser, session: SessionDep) -> DoneOut:
    project = get_project(session, user, project_id)
    return DoneOut(done=crud.confirm(session, project=project, ids=body.ids, user=user))


@router.post("/projects/{project_id}/pending/correct", response_model=DoneOut, responses={**STD_ERRORS, **CONFLICT})
def pending_correct(project_id: int, body: CorrectIn, user: CurrentUser, session: SessionDep) -> DoneOut:
    project = get_project(session, user, project_id)
    return DoneOut(done=crud.correct(session, project=project, prediction_id=body.id, labels=body.labels, user=user))


@router.post("/projects/{project_id}/pending/reject", response_model=DoneOut, responses={**STD_ERRORS, **CONFLICT})
def pending_reject(project_id: int, body: IdsIn, user: CurrentUser, session: SessionDep) -> DoneOut:
    project = get_project(session, user, project_id)
    return DoneOut(done=crud.reject(session, project=project, ids=body.ids, user=user))


@router.post("/projects/{project_id}/pending/undo", response_model=PendingUndonePublic,
             responses={**STD_ERRORS, **CONFLICT})
def pending_undo(project_id: int, body: IdsIn, user: CurrentUser, session: SessionDep) -> PendingUndonePublic:
    """Undo the caller's confirm, correction or rejection of these proposals (the last action):
    the item's label before it comes back as a new version and the proposal is open again.
    409 when the item changed since."""
    project = get_project(session, user, project_id)
    return PendingUndonePublic.model_validate(crud.undo(session, project=project, ids=body.ids, user=user))
