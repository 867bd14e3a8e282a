"""Users (CLI and admin API)."""

from __future__ import annotations

from sqlmodel import Session, select

from service.errors import Conflict
from service.models import Role, User
from service.security import audit, hash_password


def create_user(session: Session, *, name: str, role: Role, password: str | None,
                by: User | None = None) -> User:
    if session.exec(select(User).where(User.name == name)).first():
        raise Conflict(f"a user named {name!r} exists")
    user = User(name=name, role=role, password_hash=hash_password(password) if password else None)
    session.add(user)
    session.flush()
    audit(session, by.id if by else None, "user.create", detail={"name": name, "role": role.value})
    return user
