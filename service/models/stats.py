"""The dashboard's numbers (``GET /projects/{id}/stats``, :func:`service.loop.stats.project_stats`)
and the readiness report (``GET /projects/{id}/readiness``, :func:`service.loop.state.readiness_report`).

Read-only shapes, no table. Timestamps stay the ISO strings the dashboard has always had;
``counts`` holds one entry per item status plus ``total`` and ``pending``.
"""

from __future__ import annotations

from typing import Any

from sqlmodel import Field, SQLModel


class QueueMakeup(SQLModel):
    holdout_labels: int
    holdout_calibrating: int
    holdout_taken_by: dict[str, int]  # route -> hold-out items it took (service/crud/holdout.py)
    human_labels_by_origin: dict[str, int]
    audit_open: int
    unlabelled_pool: int


class ModelSummary(SQLModel):
    id: int
    version: int
    algorithm: str
    created_at: str
    metrics: dict[str, Any]
    n_train: int
    n_holdout: int


class ReadinessSummary(SQLModel):
    ready: bool
    reasons: list[str]


class NextTraining(SQLModel):
    """Progress toward the next training (:func:`learning.policy.next_training_progress`)."""

    labels: int
    labels_needed: int | None
    labels_share: float | None
    minutes: float | None
    minutes_needed: float | None
    minutes_share: float | None
    training_running: bool
    ready: bool
    will_train: bool
    reason: str


class ReadinessPublic(SQLModel):
    """Whether the project can train, and why not (``GET /projects/{id}/readiness``)."""

    ready: bool
    reasons: list[str] = Field(description="why it cannot train yet, one sentence each")
    notes: list[str] = Field(description="worth showing even when ready (e.g. classes still short)")
    retrain_now: bool
    decision: str
    next_training: NextTraining
    human_labels: dict[str, int] = Field(description="training labels per class")
    holdout_labels: dict[str, int] = Field(description="calibrating hold-out labels per class")
    unlabelled: int


class RunSummary(SQLModel):
    id: int
    kind: str
    state: str
    progress: float
    message: str
    created_at: str
    finished_at: str | None


class RealisedPrecision(SQLModel):
    """Per model version: decided proposals (audits included) and the share people found right,
    with its two-sided 95% Clopper-Pearson interval (``[None, None]`` before any decision)."""

    model_version_id: int
    version: int | None
    decided: int
    right: int
    wrong: int
    open: int
    auto_accepted: int
    precision: float | None
    interval: list[float | None]
    target: float


class ProjectStats(SQLModel):
    project_id: int
    counts: dict[str, int]
    queue: QueueMakeup
    label_distribution: dict[str, int]
    provenance: dict[str, int]
    model: ModelSummary | None
    readiness: ReadinessSummary
    next_training: NextTraining
    runs: list[RunSummary]
    precision: list[RealisedPrecision]
    target_precision: float
    coverage: float
