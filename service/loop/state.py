"""Readiness and retraining: build a ``learning.policy.ProjectState`` from the database and
enqueue a ``train`` job when the policy says so (the scheduler's check over every project
is :func:`service.pipelines.jobs.retraining_check`)."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, col, func, select

from learning.policy import Decision, Policy, ProjectState, Readiness, next_training_progress, readiness, should_retrain
from service.crud.classes import class_names
from service.jobs.registry import kind_names
from service.jobs.runner import JobConflict, enqueue
from service.loop.data import label_counts
from service.models import Item, ItemStatus, Job, JobState, ModelVersion, Project, utcnow


def project_state(session: Session, project: Project) -> ProjectState:
    assert project.id is not None
    counted, hold, total = label_counts(session, project.id)
    train = {c: counted.get(c, 0) for c in class_names(session, project.id)}
    unlabelled = session.exec(select(func.count()).select_from(Item).where(
        Item.project_id == project.id,
        col(Item.status).in_([ItemStatus.unlabelled, ItemStatus.skipped, ItemStatus.proposed]))).one()
    running = session.exec(select(Job.id).where(
        Job.project_id == project.id, col(Job.kind).in_(kind_names("train")),
        col(Job.state).in_([JobState.queued, JobState.running]))).first() is not None
    has_model = session.exec(select(ModelVersion.id).where(
        ModelVersion.project_id == project.id, col(ModelVersion.is_current).is_(True))).first() is not None
    minutes = None
    if project.last_trained_at is not None:
        minutes = (utcnow() - project.last_trained_at).total_seconds() / 60
    return ProjectState(train_counts=train, holdout_counts=hold, unlabelled=int(unlabelled),
                        labels_since_training=max(0, total - project.labels_at_last_training),
                        minutes_since_training=minutes, training_running=running, has_model=has_model)


def decide(session: Session, project: Project) -> tuple[ProjectState, Policy, Readiness, Decision]:
    policy = Policy.from_dict(project.policy or {})
    state = project_state(session, project)
    return state, policy, readiness(state, policy), should_retrain(state, policy)


def readiness_report(session: Session, project: Project) -> dict[str, Any]:
    state, policy, ready, decision = decide(session, project)
    return {"ready": ready.ready, "reasons": ready.reasons, "notes": ready.notes,
            "retrain_now": decision.train, "decision": decision.reason,
            "next_training": next_training_progress(state, policy),
            "human_labels": state.train_counts, "holdout_labels": state.holdout_counts,
            "unlabelled": state.unlabelled}


def maybe_train(session: Session, project: Project) -> int | None:
    """Enqueue a training when the policy says so; returns the job id."""
    _, _, _, decision = decide(session, project)
    if not decision.train:
        return None
    try:
        job = enqueue(session, kind="train", project_id=project.id, payload={"reason": decision.reason})
    except JobConflict:
        return None
    session.commit()
    return job.id
