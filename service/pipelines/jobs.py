"""The learning jobs, the same for every task: ``train``, ``infer``, ``hard_examples``, and
the scheduler's retraining and hard-example checks. Each dispatches on the project's task
through :func:`service.pipelines.get_pipeline` and runs its steps as prepare (read the
database into plain inputs) -> compute (no database; :class:`service.jobs.executor.ComputeContext`)
-> commit (write the outputs in one transaction).

A model version row is created as ``training`` before the fit and becomes ``ready``
(and the project's current model) only after its files are written completely and its
thresholds computed; a failed or cancelled fit is marked ``failed`` and the previous
current model stays in place (:func:`service.loop.train.publish_version`, ``fail_version``).
"""

from __future__ import annotations

import random
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from learning.policy import Policy
from service.config import Settings
from service.jobs.executor import ComputeContext, LocalContext
from service.jobs.runner import JobConflict, JobContext, enqueue
from service.loop.clusters import due_after_infer
from service.loop.data import label_counts
from service.loop.infer import current_model, job_rng, model_to_run
from service.loop.review import close_stale, release_unheld
from service.loop.state import maybe_train
from service.loop.train import fail_version, next_version, publish_version
from service.models import ModelVersion, Project
from service.pipelines import PIPELINES, get_pipeline
from service.pipelines.base import Progress, TrainResult


def train_project(session: Session, *, project: Project, settings: Settings, compute: ComputeContext,
                  job_id: int | None = None) -> tuple[ModelVersion, TrainResult]:
    """Fit, calibrate and publish a new version of ``project``'s model; returns it (``ready``)."""
    assert project.id is not None
    pipe = get_pipeline(project.task)
    policy = Policy.from_dict(project.policy or {})
    labels_at = label_counts(session, project.id)[2]  # what this training saw: later labels count for the next
    version = next_version(session, project.id)
    path = settings.models_dir / f"project-{project.id}" / f"v{version}"
    plan = pipe.prepare_train(session, project=project, settings=settings, policy=policy, version=version, path=path)
    mv = ModelVersion(project_id=project.id, version=version, name=f"v{version}", algorithm=plan.algorithm,
                      status="training", classes=plan.classes, policy=policy.to_dict(), n_train=plan.n_train,
                      n_holdout=plan.n_holdout, job_id=job_id)
    session.add(mv)
    session.commit()  # no transaction (SQLite write lock) while training
    try:
        out = pipe.compute_train(plan.inputs, compute)
    except BaseException as exc:
        fail_version(session, mv, path, exc)
        raise
    publish_version(session, project, mv, out.model_path, thresholds=out.thresholds, metrics=out.metrics,
                    risk_coverage=out.risk_coverage, labels_at=labels_at)
    quality = pipe.after_train(session, project=project, mv=mv, plan=plan, outputs=out)
    return mv, TrainResult(model_version_id=mv.id, version=mv.version, n_train=mv.n_train, n_holdout=mv.n_holdout,
                           quality=quality)


def infer_project(session: Session, *, project: Project, settings: Settings, progress: Progress,
                  model_version_id: int | None = None, rng: random.Random | None = None,
                  compute: ComputeContext | None = None) -> dict[str, Any]:
    """Predict the open pool with a ready model version (default: the current one), score it
    for the queue and propose pre-labels. ``rng``: the audit draws (and the query scores'
    tie-breaking seed); ``compute``: where the compute step reports (default: ``progress``)."""
    assert project.id is not None
    rng = rng or random.Random()
    mv = model_to_run(session, project.id, model_version_id)
    if not mv.is_current:
        return {"skipped": f"model v{mv.version} is no longer current"}
    pipe = get_pipeline(project.task)
    policy = Policy.from_dict(project.policy or {})
    plan = pipe.prepare_infer(session, project=project, mv=mv, settings=settings, policy=policy, rng=rng)
    session.commit()  # end the read transaction: SQLite must not hold its lock while we predict
    outputs = pipe.compute_infer(plan.inputs, compute or LocalContext(report=progress))
    return pipe.commit_infer(session, project=project, mv=mv, policy=policy, plan=plan, outputs=outputs, rng=rng,
                             progress=progress)


def hard_examples(session: Session, *, project: Project, settings: Settings, progress: Progress,
                  seed: int = 0, compute: ComputeContext | None = None) -> dict[str, Any]:
    """Close flags that no longer apply, then the task's hard-example scan
    (``prepare_scan`` -> ``compute_scan`` -> ``commit_scan``); ``seed``: its fold draws."""
    assert project.id is not None
    pipe = get_pipeline(project.task)
    closed = close_stale(session, project.id)
    released = release_unheld(session, project.id)
    session.commit()
    out: dict[str, Any] = {"closed_stale": closed, "released": released}
    plan = pipe.prepare_scan(session, project=project, settings=settings, seed=seed)
    session.commit()  # no transaction (SQLite write lock) while embedding, cross-fitting, predicting
    if plan is not None:
        outputs = pipe.compute_scan(plan.inputs, compute or LocalContext(report=progress))
        out |= pipe.commit_scan(session, project=project, plan=plan, outputs=outputs)
    mv = current_model(session, project.id)
    out["model_version_id"] = mv.id if mv else None
    session.commit()  # progress() writes the job row: hold no transaction here (SQLite)
    progress(1.0, pipe.hard_examples_summary(out))
    return out


def _project(ctx: JobContext, session: Session) -> Project:
    project = session.get(Project, ctx.project_id)
    if project is None:
        raise ValueError("project was deleted")
    return project


def train_job(ctx: JobContext) -> dict[str, Any]:
    """``train``: a new model version; then (payload ``infer``, default true) an ``infer`` job."""
    with Session(ctx.engine, expire_on_commit=False) as s:
        project = _project(ctx, s)
        mv, result = train_project(s, project=project, settings=ctx.settings, compute=ctx.compute_context(),
                                   job_id=ctx.job_id)
        if ctx.payload.get("infer", True):
            enqueue(s, kind="infer", project_id=project.id, payload={"model_version_id": mv.id})
            s.commit()
        return result.to_dict()


def infer_job(ctx: JobContext) -> dict[str, Any]:
    """``infer``: proposals and query scores from a model version (payload ``model_version_id``)."""
    with Session(ctx.engine, expire_on_commit=False) as s:
        return infer_project(s, project=_project(ctx, s), settings=ctx.settings, progress=ctx.progress,
                             model_version_id=ctx.payload.get("model_version_id"),
                             rng=job_rng(ctx.settings, ctx.job_id), compute=ctx.compute_context())


def hard_examples_job(ctx: JobContext) -> dict[str, Any]:
    """``hard_examples``: the review scan (seeded by the job id)."""
    with Session(ctx.engine, expire_on_commit=False) as s:
        return hard_examples(s, project=_project(ctx, s), settings=ctx.settings, progress=ctx.progress,
                             seed=ctx.job_id, compute=ctx.compute_context())


def retraining_check(engine: Engine, settings: Settings) -> None:
    """Enqueue a ``train`` job for every project whose retraining policy says so."""
    with Session(engine) as session:
        for project in session.exec(select(Project)).all():
            if project.task in PIPELINES:
                maybe_train(session, project)


def hard_examples_check(engine: Engine, settings: Settings) -> None:
    """After each inference: scan again for hard examples in the projects whose pipeline scans."""
    with Session(engine) as s:
        for project in s.exec(select(Project)).all():
            if project.id is None or project.task not in PIPELINES:
                continue
            if get_pipeline(project.task).scans_hard_examples and due_after_infer(s, project.id, "hard_examples"):
                try:
                    enqueue(s, kind="hard_examples", project_id=project.id, payload={"reason": "scheduled"})
                except JobConflict:
                    continue
                s.commit()
