"""Sign-in (cookie session), sign-out, whoami, personal API tokens, users (admin)."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, HTTPException, Request, Response

from service.api.deps import (
    AUTH_ERRORS,
    CSRF_COOKIE,
    NOT_FOUND,
    SESSION_COOKIE,
    AdminUser,
    CurrentUser,
    SessionDep,
    SettingsDep,
    _err,
)
from service.crud import users
from service.models import (
    AuditPublic,
    Login,
    LoginPublic,
    TokenCreate,
    TokenCreated,
    TokenPublic,
    UserCreate,
    UserPublic,
    utcnow,
)
from service.security import audit, issue_token

router = APIRouter(tags=["auth"])


@router.post("/auth/login", response_model=LoginPublic,
             responses={401: _err("wrong name or password"), 429: _err("too many sign-in attempts")})
def login(body: Login, request: Request, response: Response, session: SessionDep,
          settings: SettingsDep) -> LoginPublic:
    limiter = request.app.state.login_limiter
    client = request.client.host if request.client else "?"
    if not limiter.hit(f"{client}|{body.name}"):
        raise HTTPException(429, "too many sign-in attempts; wait a minute", headers={"Retry-After": "60"})
    user = users.authenticate(session, name=body.name, password=body.password, client=client)
    if user is None:
        session.commit()
        raise HTTPException(401, "wrong name or password")
    ttl = timedelta(hours=settings.session_ttl_hours)
    row, secret, csrf = issue_token(session, user, kind="session", ttl=ttl)
    audit(session, user.id, "login", detail={"client": client})
    assert csrf is not None and row.expires_at is not None
    max_age = int(ttl.total_seconds())
    response.set_cookie(SESSION_COOKIE, secret, max_age=max_age, httponly=True, samesite="strict",
                        secure=settings.cookie_secure, path="/")
    response.set_cookie(CSRF_COOKIE, csrf, max_age=max_age, httponly=False, samesite="strict",
                        secure=settings.cookie_secure, path="/")
    return LoginPublic(user=UserPublic.model_validate(user, from_attributes=True), csrf_token=csrf,
                    expires_at=row.expires_at.isoformat())


@router.post("/auth/logout", status_code=204, responses=AUTH_ERRORS)
def logout(request: Request, response: Response, user: CurrentUser, session: SessionDep) -> Response:
    row = getattr(request.state, "token", None)
    if row is not None and row.kind == "session":
        row.revoked_at = utcnow()
        session.add(row)
    audit(session, user.id, "logout")
    response.status_code = 204
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.delete_cookie(CSRF_COOKIE, path="/")
    return response


@router.get("/auth/me", response_model=UserPublic, responses=AUTH_ERRORS)
def me(user: CurrentUser) -> UserPublic:
    return UserPublic.model_validate(user, from_attributes=True)


@router.post("/auth/tokens", response_model=TokenCreated, status_code=201, responses=AUTH_ERRORS)
def create_token(body: TokenCreate, user: CurrentUser, session: SessionDep) -> TokenCreated:
    ttl = timedelta(days=body.ttl_days) if body.ttl_days else None
    row, secret, _ = issue_token(session, user, kind="api", name=body.name, ttl=ttl)
    return TokenCreated(**TokenPublic.model_validate(row, from_attributes=True).model_dump(), token=secret)


@router.get("/auth/tokens", response_model=list[TokenPublic], responses=AUTH_ERRORS)
def list_tokens(user: CurrentUser, session: SessionDep) -> list[TokenPublic]:
    return [TokenPublic.model_validate(r, from_attributes=True) for r in users.api_tokens(session, user=user)]


@router.delete("/auth/tokens/{token_id}", status_code=204, responses={**AUTH_ERRORS, **NOT_FOUND})
def revoke_token(token_id: int, user: CurrentUser, session: SessionDep) -> Response:
    users.revoke_token(session, token_id=token_id, user=user)
    return Response(status_code=204)


@router.post("/users", response_model=UserPublic, status_code=201,
             responses={**AUTH_ERRORS, 409: _err("a user with that name exists")})
def add_user(body: UserCreate, admin: AdminUser, session: SessionDep) -> UserPublic:
    user = users.create_user(session, name=body.name, role=body.role, password=body.password, by=admin)
    return UserPublic.model_validate(user, from_attributes=True)


@router.get("/audit", response_model=list[AuditPublic], responses=AUTH_ERRORS)
def audit_log(admin: AdminUser, session: SessionDep, limit: int = 200) -> list[AuditPublic]:
    return [AuditPublic.model_validate(r, from_attributes=True) for r in users.audit_entries(session, limit=limit)]
