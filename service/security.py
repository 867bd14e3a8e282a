"""Passwords (argon2), API tokens and sessions (random, stored as sha256), rate limits."""

from __future__ import annotations

import functools
import hashlib
import secrets
import threading
import time
from collections import deque
from datetime import timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import bindparam
from sqlmodel import Session, col, select

from service.models import ApiToken, AuditLog, User, utcnow

_hasher = PasswordHasher()
TOKEN_PREFIX = "ll_"


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password: str, hashed: str | None) -> bool:
    if not hashed:
        return False
    try:
        return _hasher.verify(hashed, password)
    except (VerificationError, InvalidHashError):
        return False


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def issue_token(session: Session, user: User, *, kind: str = "api", name: str = "",
                ttl: timedelta | None = None) -> tuple[ApiToken, str, str | None]:
    """Create a token row; returns (row, secret, csrf secret for sessions)."""
    assert user.id is not None
    secret = new_token()
    csrf = secrets.token_urlsafe(24) if kind == "session" else None
    row = ApiToken(
        user_id=user.id,
        kind=kind,
        name=name,
        token_hash=hash_token(secret),
        csrf_hash=hash_token(csrf) if csrf else None,
        expires_at=(utcnow() + ttl) if ttl else None,
    )
    session.add(row)
    session.flush()
    if kind == "api":
        audit(session, user.id, "token.create", detail={"token_id": row.id, "name": name})
    return row, secret, csrf


@functools.cache
def _token_with_user() -> Any:
    """Built once: every request runs it (building a statement costs more CPU than running it)."""
    return select(ApiToken, User).join(User, col(User.id) == ApiToken.user_id).where(
        ApiToken.token_hash == bindparam("token_hash"))


def user_for_token(session: Session, secret: str, *, kind: str | None = None) -> tuple[User, ApiToken] | None:
    found = session.exec(_token_with_user(), params={"token_hash": hash_token(secret)}).first()
    if found is None:
        return None
    row, user = found
    if row.revoked_at is not None or (kind is not None and row.kind != kind):
        return None
    if row.expires_at is not None and row.expires_at <= utcnow():
        return None
    if user.disabled:
        return None
    return user, row


def audit(session: Session, user_id: int | None, action: str, *, project_id: int | None = None,
          detail: dict | None = None) -> None:
    """Record an action. In a read-only session (a GET's) the row is kept aside and written
    after the read ends, in a transaction of its own (see ``service.db.session_scope``): on
    SQLite a write inside a read transaction fails at once ("database is locked") whenever
    another writer committed since the read began, and the busy timeout never applies."""
    row = AuditLog(user_id=user_id, project_id=project_id, action=action, detail=detail or {})
    if session.info.get("read_only"):
        session.info.setdefault("after_read", []).append(row)
    else:
        session.add(row)


class RateLimiter:
    """Sliding-window limiter keyed by a string (e.g. client address + user name)."""

    def __init__(self, limit: int, window_seconds: float = 60.0) -> None:
        self.limit = limit
        self.window = window_seconds
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def hit(self, key: str) -> bool:
        """Record one attempt; False when over the limit."""
        now = time.monotonic()
        with self._lock:
            q = self._hits.setdefault(key, deque())
            while q and now - q[0] > self.window:
                q.popleft()
            if len(q) >= self.limit:
                return False
            q.append(now)
            return True
