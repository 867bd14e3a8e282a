"""Items (images), append-only annotation versions, leases and skips."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from service.models.common import ItemStatus, Provenance, json_field, utcnow


class Item(SQLModel, table=True):
    __table_args__ = (
        UniqueConstraint("project_id", "sha256"),
        Index("ix_item_queue", "project_id", "status", "queue_rank"),
        # the strategy stream: highest query_score first, read backwards (0002)
        Index("ix_item_strategy", "project_id", "status", "query_score", "queue_rank"),
        # the hold-out stream: random order over several statuses (0002)
        Index("ix_item_rank", "project_id", "queue_rank"),
    )
    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", index=True, ondelete="CASCADE")
    sha256: str = Field(max_length=64)
    file_name: str = Field(max_length=1000, description="client's name, for display and matching only")
    media_type: str = "image/png"
    width: int
    height: int
    size_bytes: int
    status: ItemStatus = Field(default=ItemStatus.unlabelled, index=True)
    queue_rank: float = Field(description="uniform random: the random/hold-out stream order")
    query_score: float | None = Field(default=None, description="strategy score, higher = ask first")
    is_holdout: bool = Field(default=False, index=True)
    holdout_taken_by: str | None = Field(
        default=None, max_length=20,
        description="strategy | grid | pending | auto: the route that would have taken this hold-out item "
                    "out of the pool had no one labelled it; it then trains instead of calibrating "
                    "(service/crud/holdout.py)")
    version: int = Field(default=0, description="current annotation version (ETag)")
    created_at: datetime = Field(default_factory=utcnow)


class ItemPublic(SQLModel):
    id: int
    project_id: int
    file_name: str
    media_type: str
    width: int
    height: int
    size_bytes: int
    sha256: str
    status: ItemStatus
    is_holdout: bool
    version: int
    created_at: datetime
    annotation: dict[str, Any] | None = None
    provenance: Provenance | None = None


class UploadedFile(SQLModel):
    file: str
    id: int
    sha256: str


class DuplicateFile(SQLModel):
    file: str
    sha256: str
    of: str | None = Field(description="file name of the item it duplicates")


class RejectedFile(SQLModel):
    file: str
    reason: str
    message: str


class ItemBatchPublic(SQLModel):
    """What an upload or a server-folder import did with each file."""

    created: list[UploadedFile]
    duplicates: list[DuplicateFile]
    rejected: list[RejectedFile]


class ServerImport(SQLModel):
    path: str = Field(description="folder on the server")
    watch: bool = Field(default=False, description="re-scan on a schedule for new files")
    interval_minutes: float = Field(default=10.0, ge=0.5, le=7 * 24 * 60)


class ItemsPublic(SQLModel):
    data: list[ItemPublic]
    count: int
    next_cursor: str | None = None


class Annotation(SQLModel, table=True):
    """One version of an item's labels. Never updated: a change is a new row."""

    __table_args__ = (UniqueConstraint("item_id", "version"),)
    id: int | None = Field(default=None, primary_key=True)
    item_id: int = Field(foreign_key="item.id", index=True, ondelete="CASCADE")
    project_id: int = Field(foreign_key="project.id", index=True, ondelete="CASCADE")
    version: int
    data: dict[str, Any] = json_field(dict)
    provenance: Provenance = Provenance.human
    origin: str = Field(default="queue", description="queue:<stream> | grid | pending | import | undo | review | edit")
    author_id: int | None = Field(default=None, foreign_key="user.id", ondelete="SET NULL")
    model_version_id: int | None = Field(default=None, foreign_key="model_version.id")
    score: float | None = None
    created_at: datetime = Field(default_factory=utcnow)


class AnnotationPublic(SQLModel):
    id: int
    item_id: int
    version: int
    data: dict[str, Any]
    provenance: Provenance
    origin: str
    author_id: int | None
    model_version_id: int | None
    score: float | None
    created_at: datetime


class RejectedShapePublic(SQLModel):
    """A shape of an imported file that was left out: where it was and why."""

    file_name: str
    shape: int = Field(description="index in the image's shapes as loaded")
    label: str
    reason: str


class LabelImportPublic(SQLModel):
    """What an annotation import did (``POST /projects/{id}/import``); the lists hold at most
    the first 1,000 entries (``service.crud.transfer.MAX_LISTED``), the counts all of them."""

    format: str
    updated: int
    unchanged: int
    unmatched: list[str]
    unmatched_count: int
    classes_added: list[str]
    clipped: int
    rejected: list[RejectedShapePublic]
    rejected_count: int


class Lease(SQLModel, table=True):
    """An item handed to one labeler until ``expires_at`` (unique per item)."""

    id: int | None = Field(default=None, primary_key=True)
    item_id: int = Field(foreign_key="item.id", unique=True, ondelete="CASCADE")
    project_id: int = Field(foreign_key="project.id", index=True, ondelete="CASCADE")
    user_id: int = Field(foreign_key="user.id", index=True, ondelete="CASCADE")
    reason: str = "random"
    expires_at: datetime = Field(index=True)
    created_at: datetime = Field(default_factory=utcnow)


class LeasePublic(SQLModel):
    """The next item for a labeler, held for them until ``expires_at``."""

    lease_id: int
    expires_at: datetime
    reason: str = Field(description="why this item: strategy | holdout | audit | random")
    renewed: bool = Field(description="true when this is the lease the caller already held")
    etag: str
    item: ItemPublic


class LeaseRenewed(SQLModel):
    lease_id: int
    expires_at: datetime


class Skip(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("item_id", "user_id"),)
    id: int | None = Field(default=None, primary_key=True)
    item_id: int = Field(foreign_key="item.id", index=True, ondelete="CASCADE")
    user_id: int = Field(foreign_key="user.id", index=True, ondelete="CASCADE")
    reason: str = ""
    created_at: datetime = Field(default_factory=utcnow)


class SkipCreate(SQLModel):
    reason: str = Field(default="", max_length=500)
