"""Users (CLI and admin API), sign-in, personal API tokens and the audit log."""

from __future__ import annotations

from sqlmodel import Session, col, select

from service.errors import Conflict, NotFound
from service.models import ApiToken, AuditLog, Role, User, utcnow
from service.security import audit, hash_password, verify_password


def create_user(session: Session, *, name: str, role: Role, password: str | None,
                by: User | None = None) -> User:
    if session.exec(select(User).where(User.name == name)).first():
        raise Conflict(f"a user named {name!r} exists")
    user = User(name=name, role=role, password_hash=hash_password(password) if password else None)
    session.add(user)
    session.flush()
    audit(session, by.id if by else None, "user.create", detail={"name": name, "role": role.value})
    return user


def authenticate(session: Session, *, name: str, password: str, client: str) -> User | None:
    """The enabled user ``name`` whose password is ``password``, else None (the failure is
    audited; the caller commits it before refusing)."""
    user = session.exec(select(User).where(User.name == name)).first()
    if user is None or user.disabled or not verify_password(password, user.password_hash):
        audit(session, user.id if user else None, "login.failed", detail={"name": name, "client": client})
        return None
    return user


def api_tokens(session: Session, *, user: User) -> list[ApiToken]:
    """The user's personal API tokens (revoked ones too), oldest first."""
    return list(session.exec(select(ApiToken).where(ApiToken.user_id == user.id, ApiToken.kind == "api")
                             .order_by(col(ApiToken.id))).all())


def revoke_token(session: Session, *, token_id: int, user: User) -> None:
    """Revoke one of the user's tokens (an admin: anyone's); revoking twice changes nothing."""
    row = session.get(ApiToken, token_id)
    if row is None or (row.user_id != user.id and user.role != Role.admin):
        raise NotFound("token not found")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.add(row)
        audit(session, user.id, "token.revoke", detail={"token_id": token_id})


def audit_entries(session: Session, *, limit: int = 200) -> list[AuditLog]:
    """The newest ``limit`` audit-log rows (clamped to 1..1000), newest first."""
    return list(session.exec(select(AuditLog).order_by(col(AuditLog.id).desc())
                             .limit(min(max(limit, 1), 1000))).all())
