"""Request dependencies: settings, sessions, the caller, and scoped look-ups.

Every look-up by id goes through :func:`get_project` / :func:`get_item`, which
answer 404 for what the caller may not see (no existence leak) and 403 for what
they may see but not do.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from sqlalchemy import and_, bindparam
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from service.config import Settings
from service.db import session_scope
from service.models import ROLE_RANK, ApiToken, Item, Membership, Project, Role, User
from service.security import hash_token, user_for_token

SESSION_COOKIE = "labelloop_session"
CSRF_COOKIE = "labelloop_csrf"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


class ErrorOut(Exception):
    """Marker for OpenAPI docs only."""


def _err(desc: str) -> dict[str, Any]:
    return {"description": desc, "content": {"application/json": {"example": {"detail": desc}}}}


AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: _err("not signed in, or the token is invalid, expired or revoked"),
    403: _err("signed in but the role does not allow this (or CSRF token missing)"),
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: _err("not found, or not visible to the caller")}
CONFLICT: dict[int | str, dict[str, Any]] = {409: _err("conflicts with the current state")}
PRECONDITION: dict[int | str, dict[str, Any]] = {
    412: _err("stale If-Match: the item changed since it was read"),
    428: _err("If-Match is required to update an item that already has labels"),
}
TOO_LARGE: dict[int | str, dict[str, Any]] = {413: _err("request or file too large")}
STD_ERRORS: dict[int | str, dict[str, Any]] = {**AUTH_ERRORS, **NOT_FOUND}


def get_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def get_engine(request: Request) -> Engine:
    return request.app.state.engine  # type: ignore[no-any-return]


def get_session(request: Request) -> Iterator[Session]:
    engine: Engine = request.app.state.engine
    with session_scope(engine, read=request.method in SAFE_METHODS) as session:  # commits before the reply is sent
        yield session


# scope="function": commit (or fail) before the reply is sent. With FastAPI's default
# ("request") the commit would run after the client already got its 2xx: a failed
# commit would be a silently lost write, and the client's next request could run
# before this one's commit.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
SettingsDep = Annotated[Settings, Depends(get_settings)]


def _bearer(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return None


def current_user(request: Request, session: SessionDep) -> User:
    token = _bearer(request)
    if token:
        found = user_for_token(session, token)
        if found is None:
            raise HTTPException(401, "invalid, expired or revoked token",
                                headers={"WWW-Authenticate": "Bearer"})
        request.state.token = found[1]
        return found[0]
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        found = user_for_token(session, cookie, kind="session")
        if found is None:
            raise HTTPException(401, "session expired; sign in again")
        user, row = found
        if request.method not in SAFE_METHODS:
            _check_csrf(request, row)
        request.state.token = row
        return user
    raise HTTPException(401, "sign in, or send Authorization: Bearer <token>",
                        headers={"WWW-Authenticate": "Bearer"})


def _check_csrf(request: Request, row: ApiToken) -> None:
    sent = request.headers.get(CSRF_HEADER, "")
    if not sent or row.csrf_hash is None or hash_token(sent) != row.csrf_hash:
        raise HTTPException(403, f"missing or wrong {CSRF_HEADER} header for a cookie-signed request")


CurrentUser = Annotated[User, Depends(current_user)]


def require_admin(user: CurrentUser) -> User:
    if user.role != Role.admin:
        raise HTTPException(403, "admins only")
    return user


AdminUser = Annotated[User, Depends(require_admin)]


def role_in_project(session: Session, user: User, project_id: int) -> Role | None:
    if user.role == Role.admin:
        return Role.admin
    m = session.exec(
        select(Membership).where(Membership.project_id == project_id, Membership.user_id == user.id)
    ).first()
    return m.role if m else None


def check_role(have: Role | None, need: Role) -> None:
    if have is None:
        raise HTTPException(404, "project not found")
    if ROLE_RANK[have] < ROLE_RANK[need]:
        raise HTTPException(403, f"needs role {need.value} or higher in this project (you are {have.value})")


def _role(value: str | None) -> Role | None:
    return None if value is None else Role(value)


# the statements every labeler request runs are built once (building one costs more CPU than
# running it); their values are bound per request
@functools.cache
def _project_with_role() -> Any:
    return select(Project, Membership.role).outerjoin(Membership, and_(
        col(Membership.project_id) == Project.id, col(Membership.user_id) == bindparam("user_id"))).where(
        Project.id == bindparam("project_id"))


@functools.cache
def _item_with_role() -> Any:
    return (select(Item, Project, Membership.role).join(Project, col(Project.id) == Item.project_id)
            .outerjoin(Membership, and_(col(Membership.project_id) == Item.project_id,
                                        col(Membership.user_id) == bindparam("user_id")))
            .where(Item.id == bindparam("item_id")))


def get_project(session: Session, user: User, project_id: int, need: Role = Role.labeler) -> Project:
    """The project if the caller may act on it with role ``need``; else 404/403."""
    # one round trip for the project and the caller's membership: every labeler request pays it
    found = session.exec(_project_with_role(), params={"project_id": project_id, "user_id": user.id}).first()
    if found is None:
        raise HTTPException(404, "project not found")
    project, member_role = found
    check_role(Role.admin if user.role == Role.admin else _role(member_role), need)
    return project


def get_item(session: Session, user: User, item_id: int, need: Role = Role.labeler) -> tuple[Item, Project]:
    found = session.exec(_item_with_role(), params={"item_id": item_id, "user_id": user.id}).first()
    if found is None:
        raise HTTPException(404, "item not found")
    item, project, member_role = found
    role = Role.admin if user.role == Role.admin else _role(member_role)
    if role is None:
        raise HTTPException(404, "item not found")
    check_role(role, need)
    return item, project
