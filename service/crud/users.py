"""Users (CLI and admin API), sign-in, personal API tokens and the audit log."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

from sqlmodel import Session, col, func, select

from service.errors import Conflict, Gone, Invalid, NotFound
from service.models import ApiToken, AuditLog, Membership, Project, Role, User, utcnow
from service.models.users import Invite, UserUpdate
from service.security import audit, hash_password, hash_token, verify_password


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


def list_users(session: Session) -> list[User]:
    return list(session.exec(select(User).order_by(col(User.id))).all())


def update_user(session: Session, *, user_id: int, data: UserUpdate, by: User) -> User:
    """Change a user's global role or disable them; an admin cannot demote or disable
    themselves (the last way back in would go with it)."""
    user = session.get(User, user_id)
    if user is None:
        raise NotFound("user not found")
    changes = {k: v for k, v in data.model_dump(exclude_unset=True).items() if v is not None}
    if user.id == by.id and (changes.get("role", Role.admin) != Role.admin or changes.get("disabled")):
        raise Conflict("you cannot demote or disable yourself; ask another admin")
    for k, v in changes.items():
        setattr(user, k, v)
    session.add(user)
    audit(session, by.id, "user.update", detail={"id": user_id, **{k: str(v) for k, v in changes.items()}})
    return user


def _aware(when: datetime) -> datetime:
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def create_invite(session: Session, *, role: Role, ttl_hours: float, by: User) -> tuple[Invite, str]:
    """A one-time sign-up link for ``role``; returns the row and its token (stored hashed)."""
    token = secrets.token_urlsafe(32)
    invite = Invite(role=role, token_hash=hash_token(token), created_by=by.id,
                    expires_at=utcnow() + timedelta(hours=ttl_hours))
    session.add(invite)
    session.flush()
    audit(session, by.id, "invite.create", detail={"id": invite.id, "role": role.value,
                                                   "expires_at": invite.expires_at.isoformat()})
    return invite, token


def list_invites(session: Session) -> list[Invite]:
    """Every invite, newest first (tokens are not kept, so none can be shown again)."""
    return list(session.exec(select(Invite).order_by(col(Invite.id).desc())).all())


def revoke_invite(session: Session, *, invite_id: int, by: User) -> None:
    """An unused invite stops working now (a used one is left as it is)."""
    invite = session.get(Invite, invite_id)
    if invite is None:
        raise NotFound("invite not found")
    if invite.used_at is None and _aware(invite.expires_at) > utcnow():
        invite.expires_at = utcnow()
        session.add(invite)
        audit(session, by.id, "invite.revoke", detail={"id": invite_id})


def accept_invite(session: Session, *, token: str, name: str, password: str) -> User:
    """Create the invited user (name and password of their choosing) and use the invite up:
    an unknown token is a 404, a used or expired one a 410, a taken name a 409 (the invite
    then still works)."""
    invite = session.exec(select(Invite).where(Invite.token_hash == hash_token(token))
                          .with_for_update()).first()
    if invite is None:
        raise NotFound("no such invite")
    if invite.used_at is not None:
        raise Gone("this invite was used already; ask an admin for a new one")
    if _aware(invite.expires_at) <= utcnow():
        raise Gone("this invite has expired; ask an admin for a new one")
    if not name.strip():
        raise Invalid("the name must not be empty")
    user = create_user(session, name=name.strip(), role=invite.role, password=password)
    invite.used_at, invite.used_by = utcnow(), user.id
    session.add(invite)
    audit(session, user.id, "invite.accept", detail={"id": invite.id, "role": invite.role.value})
    session.flush()
    return user


def remove_member(session: Session, *, project: Project, user_id: int, by: User) -> None:
    """Take a user out of a project. A project keeps at least one manager (an admin can
    always act on it, but the managers' page would be empty)."""
    m = session.exec(select(Membership).where(Membership.project_id == project.id,
                                              Membership.user_id == user_id)).first()
    if m is None:
        raise NotFound("that user is not a member of this project")
    if m.role == Role.manager:
        managers = session.exec(select(func.count()).select_from(Membership).where(
            Membership.project_id == project.id, Membership.role == Role.manager)).one()
        if managers <= 1:
            raise Conflict("a project keeps at least one manager: make someone else manager first")
    session.delete(m)
    audit(session, by.id, "member.remove", project_id=project.id, detail={"user_id": user_id})
