"""Users, project memberships, API tokens / sessions, and the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel

from service.models.common import Role, json_field, utcnow


class UserBase(SQLModel):
    name: str = Field(index=True, unique=True, min_length=1, max_length=100)
    role: Role = Field(default=Role.labeler, description="global role; admin sees everything")


class User(UserBase, table=True):
    id: int | None = Field(default=None, primary_key=True)
    password_hash: str | None = None
    disabled: bool = False
    created_at: datetime = Field(default_factory=utcnow)


class UserCreate(UserBase):
    password: str | None = Field(default=None, min_length=8, max_length=200)


class UserUpdate(SQLModel):
    role: Role | None = None
    disabled: bool | None = Field(default=None, description="a disabled user cannot sign in or use tokens")


class UserPublic(UserBase):
    id: int
    created_at: datetime
    disabled: bool = False


class UsersPublic(SQLModel):
    data: list[UserPublic]
    count: int


class InviteBase(SQLModel):
    role: Role = Field(default=Role.labeler, description="the global role of the user who accepts")


class Invite(InviteBase, table=True):
    """A one-time sign-up link; only the sha256 of its token is stored."""

    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(index=True, unique=True, max_length=64)
    created_by: int | None = Field(default=None, foreign_key="user.id", ondelete="SET NULL")
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime
    used_at: datetime | None = None
    used_by: int | None = Field(default=None, foreign_key="user.id", ondelete="SET NULL")


class InviteCreate(InviteBase):
    ttl_hours: float = Field(default=72.0, gt=0, le=24 * 30, description="how long the link works")


class InvitePublic(InviteBase):
    id: int
    created_by: int | None
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None
    used_by: int | None


class InvitesPublic(SQLModel):
    data: list[InvitePublic]
    count: int


class InviteCreated(InvitePublic):
    token: str = Field(description="shown once: the link is `/#/invite/<token>`")
    link: str = Field(description="the path of the web page that accepts it")


class InviteAccept(SQLModel):
    name: str = Field(min_length=1, max_length=100)
    password: str = Field(min_length=8, max_length=200)


class Membership(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("project_id", "user_id"),)
    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", index=True, ondelete="CASCADE")
    user_id: int = Field(foreign_key="user.id", index=True, ondelete="CASCADE")
    role: Role = Role.labeler


class MembershipPublic(SQLModel):
    user_id: int
    user_name: str
    role: Role


class MembershipSet(SQLModel):
    user: str = Field(description="user name")
    role: Role


class ApiToken(SQLModel, table=True):
    """A personal API token or a browser session; only the sha256 is stored."""

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="user.id", index=True, ondelete="CASCADE")
    kind: str = Field(default="api", description="api | session")
    name: str = ""
    token_hash: str = Field(index=True, unique=True)
    csrf_hash: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None


class TokenPublic(SQLModel):
    id: int
    name: str
    kind: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class TokenCreate(SQLModel):
    name: str = Field(default="", max_length=100)
    ttl_days: float | None = Field(default=None, gt=0, le=3650)


class TokenCreated(TokenPublic):
    token: str = Field(description="shown once; store it now")


class AuditLog(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, index=True)
    user_id: int | None = Field(default=None, index=True)
    project_id: int | None = Field(default=None, index=True)
    action: str = Field(index=True)
    detail: dict[str, Any] = json_field(dict)


class AuditPublic(SQLModel):
    id: int
    at: datetime
    user_id: int | None
    project_id: int | None
    action: str
    detail: dict[str, Any]


class Login(SQLModel):
    name: str = Field(min_length=1, max_length=100)
    password: str = Field(min_length=1, max_length=200)


class LoginPublic(SQLModel):
    user: UserPublic
    csrf_token: str = Field(description="send it as X-CSRF-Token on cookie-signed writes (labelloop_csrf)")
    expires_at: str
