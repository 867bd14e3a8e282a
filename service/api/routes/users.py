"""People: users (admin), one-time invite links, project members leaving, classes deleted.

Creating a user is ``POST /users`` (:mod:`service.api.routes.auth`); adding a member or
changing their role is ``PUT /projects/{id}/members`` and archiving a class ``PATCH
/projects/{id}/classes/{cid}`` (:mod:`service.api.routes.projects`).
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Path, Request, Response

from service.api.deps import CONFLICT, STD_ERRORS, AdminUser, CurrentUser, SessionDep, _err, get_project
from service.crud import classes, users
from service.models import Role, UserPublic
from service.models.users import (
    InviteAccept,
    InviteCreate,
    InviteCreated,
    InvitePublic,
    InvitesPublic,
    UsersPublic,
    UserUpdate,
)

router = APIRouter(tags=["people"])
INVITE_PAGE = "/#/invite/"


@router.get("/users", response_model=UsersPublic, responses=STD_ERRORS)
def list_users(admin: AdminUser, session: SessionDep) -> UsersPublic:
    rows = users.list_users(session)
    return UsersPublic(data=[UserPublic.model_validate(u, from_attributes=True) for u in rows], count=len(rows))


@router.patch("/users/{user_id}", response_model=UserPublic, responses={**STD_ERRORS, **CONFLICT})
def update_user(user_id: int, body: UserUpdate, admin: AdminUser, session: SessionDep) -> UserPublic:
    """Change a user's global role, or disable / enable them."""
    user = users.update_user(session, user_id=user_id, data=body, by=admin)
    return UserPublic.model_validate(user, from_attributes=True)


@router.post("/invites", response_model=InviteCreated, status_code=201, responses=STD_ERRORS)
def create_invite(body: InviteCreate, admin: AdminUser, session: SessionDep) -> InviteCreated:
    """A one-time sign-up link: whoever opens it picks a name and a password and gets ``role``.
    The token is shown only in this reply."""
    invite, token = users.create_invite(session, role=body.role, ttl_hours=body.ttl_hours, by=admin)
    public = InvitePublic.model_validate(invite, from_attributes=True)
    return InviteCreated(**public.model_dump(), token=token, link=INVITE_PAGE + token)


@router.get("/invites", response_model=InvitesPublic, responses=STD_ERRORS)
def list_invites(admin: AdminUser, session: SessionDep) -> InvitesPublic:
    rows = users.list_invites(session)
    return InvitesPublic(data=[InvitePublic.model_validate(i, from_attributes=True) for i in rows], count=len(rows))


@router.delete("/invites/{invite_id}", status_code=204, responses=STD_ERRORS)
def revoke_invite(invite_id: int, admin: AdminUser, session: SessionDep) -> Response:
    users.revoke_invite(session, invite_id=invite_id, by=admin)
    return Response(status_code=204)


@router.post("/invites/{token}/accept", response_model=UserPublic, status_code=201, responses={
    404: _err("no such invite"), 409: _err("a user with that name exists"), 429: _err("too many attempts"),
    410: _err("the invite was used already or has expired")})
def accept_invite(body: InviteAccept, request: Request, session: SessionDep,
                  token: str = Path(min_length=10, max_length=200)) -> UserPublic:
    """No sign-in needed: the token is the permission. Then sign in with the new name.
    Tries count against the sign-in limit of the caller's address (429 past it)."""
    client = request.client.host if request.client else "?"
    if not request.app.state.login_limiter.hit(f"{client}|invite"):
        raise HTTPException(429, "too many attempts; wait a minute", headers={"Retry-After": "60"})
    user = users.accept_invite(session, token=token, name=body.name, password=body.password)
    return UserPublic.model_validate(user, from_attributes=True)


@router.delete("/projects/{project_id}/members/{user_id}", status_code=204, responses={**STD_ERRORS, **CONFLICT})
def remove_member(project_id: int, user_id: int, user: CurrentUser, session: SessionDep) -> Response:
    """Managers: take someone out of the project (their labels stay)."""
    project = get_project(session, user, project_id, Role.manager)
    users.remove_member(session, project=project, user_id=user_id, by=user)
    return Response(status_code=204)


@router.delete("/projects/{project_id}/classes/{class_id}", status_code=204, responses={**STD_ERRORS, 409: _err(
    "labels or predictions use the class: archive it instead")})
def delete_class(project_id: int, class_id: int, user: CurrentUser, session: SessionDep) -> Response:
    """Managers: delete a class nothing uses yet (a used one is archived instead)."""
    project = get_project(session, user, project_id, Role.manager)
    assert project.id is not None
    classes.delete_class(session, project_id=project.id, class_id=class_id, user=user)
    return Response(status_code=204)
