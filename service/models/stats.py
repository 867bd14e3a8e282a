"""The dashboard's numbers (``GET /projects/{id}/stats``, :func:`service.loop.stats.project_stats`),
the readiness report (``GET /projects/{id}/readiness``, :func:`service.loop.state.readiness_report`)
and the manager's activity (``GET /projects/{id}/activity``, :func:`service.loop.activity.project_activity`).

Read-only shapes, no table. Timestamps of ``/stats`` stay the ISO strings the dashboard has always had (``/activity``'s
are datetimes);
``counts`` holds one entry per item status plus ``total`` and ``pending``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

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


class LabelsInBucket(SQLModel):
    """Labels made in one UTC day (or hour) of ``GET /projects/{id}/activity``."""

    start: datetime = Field(description="start of the day or hour (UTC)")
    human: int = Field(description="labels people made themselves")
    confirmed: int = Field(description="model proposals a person confirmed")
    auto_accepted: int = Field(description="model labels accepted without a person")
    total: int


class LabelTotals(SQLModel):
    human: int
    confirmed: int
    auto_accepted: int
    total: int


class PersonActivity(SQLModel):
    """One labeller's throughput and pace (their own labels and confirmed proposals)."""

    user_id: int
    name: str
    labels: int = Field(description="labels this person made, confirmations in Pending included")
    active_hours: int = Field(description="UTC clock hours in which this person saved at least one label")
    labels_per_hour: float | None = Field(description="labels per active hour")
    median_seconds: float | None = Field(
        description="median seconds between this person's consecutive saves within one working session: "
                    "a gap over 10 minutes (session_gap_seconds) ends a session and is ignored; "
                    "null before two saves close together")
    timed_saves: int = Field(description="saves the median is taken over (gaps of 10 minutes or less)")


class AgreementSummary(SQLModel):
    """Images labelled by two or more people, and how often their first labels agree."""

    images: int = Field(description="images with labels from two or more people")
    agreeing: int = Field(description="of those, images where every person's first label is the same "
                                      "(the classes; the whole shapes for detection and segmentation)")
    share: float | None = Field(description="agreeing / images; null when no image has two people's labels")


class VersionActivity(SQLModel):
    """One model version's certified coverage and realised precision."""

    model_version_id: int
    version: int
    created_at: datetime
    is_current: bool
    status: str
    pool: int = Field(description="unlabelled images the version predicted on")
    proposed: int = Field(description="of those, images it proposed or auto-accepted (certified)")
    coverage: float | None = Field(description="proposed / pool; null when the version predicted nothing")
    coverage_from: str | None = Field(
        description="`inference`: its newest finished inference job; `predictions`: counted from its "
                    "stored predictions; null when there are neither")
    decided: int = Field(description="proposals people decided (confirmed, corrected, rejected, audited)")
    right: int = Field(description="decided proposals people found right")
    precision: float | None = Field(description="right / decided; null before any decision")


class ProjectActivity(SQLModel):
    """The manager's dashboard numbers (``GET /projects/{id}/activity``,
    :func:`service.loop.activity.project_activity`). Imported labels, undos, class renames
    and rejects back to the queue are not counted as labels."""

    project_id: int
    bucket: Literal["day", "hour"] = Field(description="`hour` while the project is younger than 2 days")
    labels: list[LabelsInBucket] = Field(description="oldest first, every bucket up to now (empty ones too)")
    totals: LabelTotals
    people: list[PersonActivity] = Field(description="most labels first")
    agreement: AgreementSummary
    versions: list[VersionActivity] = Field(description="oldest first")
    session_gap_seconds: int = Field(description="a longer gap between two saves ends a working session")
