"""Items (images), append-only annotation versions, leases and skips."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import field_validator
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


class ItemFilter(SQLModel):
    """The data browser's selection (``GET /projects/{id}/items`` and its export); every
    field left out matches everything, the fields given all have to match."""

    status: ItemStatus | None = None
    label: str | None = Field(default=None, max_length=200,
                              description="a class in the current labels (classes, boxes or polygons)")
    provenance: Provenance | None = Field(default=None, description="of the current labels")
    model_version_id: int | None = Field(
        default=None, description="the model version that made the current labels or the open proposal")
    score_min: float | None = Field(default=None, description="open proposal's score, else the model label's")
    score_max: float | None = None
    labeller_id: int | None = Field(default=None, description="author of the current labels")
    flag: str | None = Field(default=None, max_length=40,
                             description="an open review flag: `any` or its kind (`label error`, ...)")
    holdout: bool | None = Field(default=None, description="hold-out items only (true) or none (false)")

    @field_validator("label", "flag")
    @classmethod
    def _no_nul(cls, v: str | None) -> str | None:
        if v is not None and "\x00" in v:  # refused alike on every database (PostgreSQL text cannot hold it)
            raise ValueError("must not contain NUL characters")
        return v


class ItemRowPublic(ItemPublic):
    """One row of the data browser: the item, its current labels and who / what made them."""

    thumbnail_url: str
    labels: list[str] = Field(default_factory=list, description="every class in the current labels")
    labeller_id: int | None = None
    labeller: str | None = Field(default=None, description="the current labels' author")
    model_version_id: int | None = None
    model_version: int | None = Field(default=None, description="number of that model version")
    score: float | None = None
    proposal: str | None = Field(default=None, description="class of the open proposal, if any")
    flag: str | None = Field(default=None, description="kind of the oldest open review flag, if any")


class ItemsPublic(SQLModel):
    data: list[ItemRowPublic]
    count: int = Field(description="items matching the filters (all pages)")
    next_cursor: str | None = None


class ItemReject(SQLModel):
    reason: str = Field(default="", max_length=500)


class TimelineEntry(SQLModel):
    """One event in an item's life: a label version, a proposal, a review flag, an audit row."""

    at: datetime
    kind: Literal["version", "proposal", "flag", "audit"]
    what: str = Field(description="origin of a version, state of a proposal / flag, audit action")
    version: int | None = None
    labels: list[str] = Field(default_factory=list)
    provenance: Provenance | None = None
    user_id: int | None = None
    user: str | None = None
    model_version_id: int | None = None
    model_version: int | None = None
    score: float | None = None
    detail: dict[str, Any] = Field(default_factory=dict)


class ItemTimelinePublic(SQLModel):
    item: ItemRowPublic
    etag: str
    entries: list[TimelineEntry] = Field(description="oldest first")


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
