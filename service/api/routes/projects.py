"""Projects, classes, members and the retraining policy."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, HTTPException
from pydantic import BaseModel

from learning.policy import ALGORITHMS, CALIBRATIONS, FEATURES, Policy
from learning.query import STRATEGIES
from service.api.deps import CONFLICT, STD_ERRORS, CurrentUser, SessionDep, get_project, role_in_project
from service.crud import projects as crud
from service.models import (
    LabelClassCreate,
    LabelClassPublic,
    MembershipPublic,
    MembershipSet,
    PolicyPublic,
    ProjectCreate,
    ProjectPublic,
    ProjectsPublic,
    ProjectUpdate,
    Role,
)
from service.models import (
    LabelClassUpdate as _LCU,
)

router = APIRouter(tags=["projects"])


class PolicyDefaultsPublic(BaseModel):
    defaults: PolicyPublic
    choices: dict[str, list[str]]


@router.get("/policy/defaults", response_model=PolicyDefaultsPublic, responses=STD_ERRORS)
def policy_defaults(user: CurrentUser) -> PolicyDefaultsPublic:
    """A new project's policy and the values each choice field allows (Settings: default marks, reset)."""
    return PolicyDefaultsPublic(defaults=PolicyPublic(**Policy().to_dict()), choices={
        "algorithm": list(ALGORITHMS), "calibration": list(CALIBRATIONS), "features": list(FEATURES),
        "strategy": sorted(STRATEGIES)})


@router.post("/projects", response_model=ProjectPublic, status_code=201, responses={**STD_ERRORS, **CONFLICT})
def create_project(body: ProjectCreate, user: CurrentUser, session: SessionDep) -> ProjectPublic:
    if user.role not in (Role.admin, Role.manager):
        raise HTTPException(403, "only managers and admins create projects")
    project = crud.create_project(session, data=body, user=user)
    return crud.project_public(session, project, Role.admin if user.role == Role.admin else Role.manager)


@router.get("/projects", response_model=ProjectsPublic, responses=STD_ERRORS)
def list_projects(user: CurrentUser, session: SessionDep) -> ProjectsPublic:
    rows = crud.list_projects(session, user=user)
    return ProjectsPublic(data=[crud.project_public(session, p, r) for p, r in rows], count=len(rows))


@router.get("/projects/{project_id}", response_model=ProjectPublic, responses=STD_ERRORS)
def read_project(project_id: int, user: CurrentUser, session: SessionDep) -> ProjectPublic:
    project = get_project(session, user, project_id)
    return crud.project_public(session, project, role_in_project(session, user, project_id))


@router.patch("/projects/{project_id}", response_model=ProjectPublic, responses={**STD_ERRORS, **CONFLICT})
def update_project(project_id: int, body: ProjectUpdate, user: CurrentUser, session: SessionDep) -> ProjectPublic:
    project = get_project(session, user, project_id, Role.manager)
    crud.update_project(session, project=project, data=body, user=user)
    return crud.project_public(session, project, role_in_project(session, user, project_id))


@router.post("/projects/{project_id}/classes", response_model=LabelClassPublic, status_code=201,
             responses={**STD_ERRORS, **CONFLICT})
def add_class(project_id: int, body: LabelClassCreate, user: CurrentUser, session: SessionDep) -> LabelClassPublic:
    project = get_project(session, user, project_id, Role.manager)
    cls = crud.add_class(session, project=project, data=body, user=user)
    return LabelClassPublic.model_validate(cls, from_attributes=True)


@router.patch("/projects/{project_id}/classes/{class_id}", response_model=LabelClassPublic,
              responses={**STD_ERRORS, **CONFLICT})
def update_class(project_id: int, class_id: int, body: _LCU, user: CurrentUser,
                 session: SessionDep) -> LabelClassPublic:
    project = get_project(session, user, project_id, Role.manager)
    cls = crud.update_class(session, project=project, class_id=class_id, data=body, user=user)
    return LabelClassPublic.model_validate(cls, from_attributes=True)


@router.get("/projects/{project_id}/members", response_model=list[MembershipPublic], responses=STD_ERRORS)
def list_members(project_id: int, user: CurrentUser, session: SessionDep) -> list[MembershipPublic]:
    get_project(session, user, project_id, Role.manager)
    return crud.list_members(session, project_id=project_id)


@router.put("/projects/{project_id}/members", response_model=MembershipPublic, responses=STD_ERRORS)
def set_member(project_id: int, body: MembershipSet, user: CurrentUser, session: SessionDep) -> MembershipPublic:
    project = get_project(session, user, project_id, Role.manager)
    m = crud.set_member(session, project=project, user_name=body.user, role=body.role, by=user)
    return MembershipPublic(user_id=m.user_id, user_name=body.user, role=m.role)


@router.get("/projects/{project_id}/policy", response_model=PolicyPublic, responses=STD_ERRORS)
def read_policy(project_id: int, user: CurrentUser, session: SessionDep) -> PolicyPublic:
    project = get_project(session, user, project_id)
    return crud.policy_of(project)


@router.put("/projects/{project_id}/policy", response_model=PolicyPublic, responses=STD_ERRORS)
def write_policy(project_id: int, user: CurrentUser, session: SessionDep,
                 body: dict[str, Any] = Body(..., examples=[{"algorithm": "precise", "target_precision": 0.95}])
                 ) -> PolicyPublic:
    """Change policy fields (unnamed fields keep their value); unknown keys are refused."""
    project = get_project(session, user, project_id, Role.manager)
    return crud.set_policy(session, project=project, data=body, user=user)
