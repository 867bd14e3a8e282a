"""Shared column helpers and vocabularies for the tables."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Column
from sqlmodel import Field


def utcnow() -> datetime:
    """Timezone-aware UTC now (SQLModel stores aware datetimes on both databases)."""
    return datetime.now(UTC)


def json_field(default: Any = None, **kw: Any) -> Any:
    """A JSON column; ``default`` is a factory such as ``dict`` or ``list``."""
    if default is None:
        return Field(default=None, sa_column=Column(JSON, nullable=True), **kw)
    return Field(default_factory=default, sa_column=Column(JSON, nullable=False), **kw)


class Task(StrEnum):
    multiclass = "multiclass"
    multilabel = "multilabel"
    detection = "detection"
    segmentation = "segmentation"


class Role(StrEnum):
    labeler = "labeler"
    reviewer = "reviewer"
    manager = "manager"
    admin = "admin"


ROLE_RANK = {Role.labeler: 1, Role.reviewer: 2, Role.manager: 3, Role.admin: 4}


class ItemStatus(StrEnum):
    unlabelled = "unlabelled"
    labelled = "labelled"
    proposed = "proposed"  # a pre-label waits in Pending
    skipped = "skipped"
    review = "review"  # a hard-example flag waits for a reviewer


class Provenance(StrEnum):
    human = "human"
    model = "model"
    model_confirmed = "model-confirmed"
    imported = "import"


class JobState(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


TERMINAL_JOB_STATES = {JobState.succeeded, JobState.failed, JobState.cancelled}


class QueueReason(StrEnum):
    strategy = "strategy"
    holdout = "holdout"
    audit = "audit"
    random = "random"
