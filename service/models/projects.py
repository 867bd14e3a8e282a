"""Projects, their label classes, and watched server folders."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel

from service.models.common import Task, json_field, utcnow


class ProjectBase(SQLModel):
    name: str = Field(index=True, unique=True, min_length=1, max_length=200)
    task: Task = Task.multiclass
    instructions: str = Field(default="", max_length=20_000)


class Project(ProjectBase, table=True):
    id: int | None = Field(default=None, primary_key=True)
    policy: dict[str, Any] = json_field(dict)
    created_at: datetime = Field(default_factory=utcnow)
    created_by: int | None = Field(default=None, foreign_key="user.id", ondelete="SET NULL")
    stream_counter: int = Field(default=0, description="queue draws so far (drives stream mixing)")
    last_trained_at: datetime | None = None
    labels_at_last_training: int = 0


class ProjectCreate(ProjectBase):
    classes: list[str] = Field(default_factory=list, max_length=1000)
    policy: dict[str, Any] | None = None


class ProjectUpdate(SQLModel):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    instructions: str | None = Field(default=None, max_length=20_000)


class LabelClassBase(SQLModel):
    name: str = Field(min_length=1, max_length=200)
    color: str | None = Field(default=None, max_length=32)


class LabelClass(LabelClassBase, table=True):
    __tablename__ = "label_class"
    __table_args__ = (UniqueConstraint("project_id", "name"),)
    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", index=True, ondelete="CASCADE")
    position: int = Field(default=0, description="hotkey order: positions 0-8 are keys 1-9")
    archived: bool = Field(default=False, description="hidden from labelling; labels that use it keep it")


class LabelClassCreate(LabelClassBase):
    position: int | None = None


class LabelClassUpdate(SQLModel):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    color: str | None = Field(default=None, max_length=32)
    position: int | None = Field(default=None, ge=0)
    archived: bool | None = Field(default=None, description="true hides the class from labelling")


class LabelClassPublic(LabelClassBase):
    id: int
    position: int
    archived: bool = False


class PolicyPublic(SQLModel):
    """A project's full retraining / labelling policy, defaults filled in: the fields of
    :class:`learning.policy.Policy`, which checks them (and documents each)."""

    min_labels_per_class: int
    retrain_every_labels: int | None
    retrain_every_minutes: float | None
    algorithm: Literal["fast", "precise"]
    target_precision: float
    delta: float
    holdout_share: float
    holdout_min: int
    strategy: str
    auto_accept: bool
    audit_share: float
    batch_size: int
    calibration: Literal["auto", "per_class", "pooled"]
    epochs: int
    semi_supervised: bool | None
    image_size: int | None
    features: Literal["stages", "final"]
    mirror: bool
    grid_purity: float | None
    grid_min_confidence: float
    tile_size: int
    tile_overlap: float
    background_share: float


class ProjectPublic(ProjectBase):
    id: int
    created_at: datetime
    classes: list[LabelClassPublic]
    policy: PolicyPublic
    my_role: str | None = None


class ProjectsPublic(SQLModel):
    data: list[ProjectPublic]
    count: int


class WatchedFolder(SQLModel, table=True):
    __tablename__ = "watched_folder"
    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", index=True, ondelete="CASCADE")
    path: str
    interval_minutes: float = 10.0
    last_scan_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)


class ImportedFile(SQLModel, table=True):
    """A server file already imported (so a re-scan only takes new files)."""

    __tablename__ = "imported_file"
    __table_args__ = (UniqueConstraint("folder_id", "rel_path"),)
    id: int | None = Field(default=None, primary_key=True)
    folder_id: int = Field(foreign_key="watched_folder.id", index=True, ondelete="CASCADE")
    rel_path: str
    item_id: int | None = None
