"""Model versions, predictions (pre-labels), hard-example flags and jobs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Index
from sqlmodel import Field, SQLModel

from service.models.common import JobState, json_field, utcnow


class ModelVersion(SQLModel, table=True):
    """A trained model. ``status`` becomes ``ready`` only once its files are complete."""

    __tablename__ = "model_version"
    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", index=True, ondelete="CASCADE")
    version: int
    name: str = ""
    kind: str = Field(default="trained", description="trained | external")
    algorithm: str = "fast"
    status: str = Field(default="training", description="training | ready | failed")
    path: str | None = None
    classes: list[str] = json_field(list)
    policy: dict[str, Any] = json_field(dict)
    metrics: dict[str, Any] = json_field(dict)
    thresholds: dict[str, Any] = json_field(dict)
    risk_coverage: dict[str, Any] = json_field(dict)
    n_train: int = 0
    n_holdout: int = 0
    is_current: bool = False
    job_id: int | None = None
    created_at: datetime = Field(default_factory=utcnow)


class ModelVersionPublic(SQLModel):
    id: int
    project_id: int
    version: int
    name: str
    kind: str
    algorithm: str
    status: str
    classes: list[str]
    policy: dict[str, Any]
    metrics: dict[str, Any]
    thresholds: dict[str, Any]
    risk_coverage: dict[str, Any]
    n_train: int
    n_holdout: int
    is_current: bool
    created_at: datetime


class Prediction(SQLModel, table=True):
    """A model's output on an item; ``state='proposed'`` makes it a pre-label in Pending."""

    __table_args__ = (Index("ix_prediction_item_model", "item_id", "model_version_id"),
                      # the queue's audit stream: open audits of a project (0002)
                      Index("ix_prediction_open_audit", "project_id", "audit", "audit_correct"))
    id: int | None = Field(default=None, primary_key=True)
    item_id: int = Field(foreign_key="item.id", index=True, ondelete="CASCADE")
    project_id: int = Field(foreign_key="project.id", index=True, ondelete="CASCADE")
    model_version_id: int = Field(foreign_key="model_version.id", index=True, ondelete="CASCADE")
    data: dict[str, Any] = json_field(dict)
    label: str | None = Field(default=None, description="proposed class (classification)")
    score: float = 0.0
    state: str = Field(
        default="none",
        index=True,
        description="none | proposed | confirmed | corrected | rejected | superseded | auto | holdout "
                    "(a hold-out item's prediction: service/crud/holdout.py)",
    )
    audit: bool = Field(default=False, description="auto-accepted item drawn for a human audit")
    audit_correct: bool | None = None
    created_at: datetime = Field(default_factory=utcnow)
    decided_at: datetime | None = None
    decided_by: int | None = None


class ReviewFlag(SQLModel, table=True):
    """A hard example waiting for a reviewer."""

    __tablename__ = "review_flag"
    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", index=True, ondelete="CASCADE")
    item_id: int = Field(foreign_key="item.id", index=True, ondelete="CASCADE")
    model_version_id: int | None = Field(default=None, foreign_key="model_version.id")
    kind: str = Field(description="label error | unstable | false detection | missed detection")
    score: float = 0.0
    detail: dict[str, Any] = json_field(dict)
    state: str = Field(default="open", index=True, description="open | confirmed | fixed | dismissed")
    resolved_by: int | None = None
    resolved_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)


class Job(SQLModel, table=True):
    __table_args__ = (Index("ix_job_state_created", "state", "created_at"),)
    id: int | None = Field(default=None, primary_key=True)
    project_id: int | None = Field(default=None, foreign_key="project.id", index=True, ondelete="CASCADE")
    kind: str = Field(index=True)
    state: JobState = JobState.queued
    progress: float = 0.0
    message: str = ""
    payload: dict[str, Any] = json_field(dict)
    result: dict[str, Any] = json_field(dict)
    error: str | None = None
    cancel_requested: bool = False
    resumable: bool = False
    attempts: int = 0
    worker: str | None = None
    created_by: int | None = None
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    heartbeat_at: datetime | None = None


class JobPublic(SQLModel):
    id: int
    project_id: int | None
    kind: str
    state: JobState
    progress: float
    message: str
    payload: dict[str, Any]
    result: dict[str, Any]
    error: str | None
    cancel_requested: bool
    attempts: int
    worker: str | None = Field(default=None, description="host:pid:thread of the process that ran it last")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None


class JobsPublic(SQLModel):
    data: list[JobPublic]
    count: int


class RegisteredModel(SQLModel, table=True):
    """An external model (ONNX, TorchScript, or a Hugging Face folder) registered for automatic annotation."""

    __tablename__ = "registered_model"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True, min_length=1, max_length=200)
    kind: str = Field(description="onnx | torchscript | huggingface")
    task: str = Field(default="detection", description="multiclass | multilabel | detection | segmentation")
    labels: list[str] = json_field(list)
    input_spec: dict[str, Any] = json_field(dict)
    default_threshold: float = 0.5
    path: str = ""
    sha256: str = ""
    created_by: int | None = None
    created_at: datetime = Field(default_factory=utcnow)


class RegisteredModelPublic(SQLModel):
    id: int
    name: str
    kind: str
    task: str
    labels: list[str]
    input_spec: dict[str, Any]
    default_threshold: float
    created_at: datetime
