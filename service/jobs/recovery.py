"""Crash recovery: running jobs whose worker stopped heartbeating.

A job whose heartbeat is older than the timeout belongs to a dead process: it is failed
with a reason, or queued again when its kind is resumable (at most 3 attempts); a
training it left at ``training`` is marked ``failed`` (it never became current).
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from service.models import Job, JobState, ModelVersion, utcnow

log = logging.getLogger("labelloop.jobs")


def recover_stale(engine: Engine, *, timeout_seconds: float) -> list[int]:
    """Fail (or requeue, if resumable) running jobs whose heartbeat stopped."""
    cutoff = utcnow() - timedelta(seconds=timeout_seconds)
    touched: list[int] = []
    with Session(engine) as s:
        stale = s.exec(
            # a job marked running without a first beat (older databases) counts from its start
            select(Job).where(Job.state == JobState.running,
                              func.coalesce(col(Job.heartbeat_at), col(Job.started_at), col(Job.created_at)) < cutoff)
        ).all()
        for job in stale:
            assert job.id is not None
            touched.append(job.id)
            if job.resumable and not job.cancel_requested and job.attempts < 3:
                job.state = JobState.queued
                job.message = f"requeued after its worker {job.worker} stopped heartbeating"
            else:
                job.state = JobState.failed
                job.finished_at = utcnow()
                job.error = (f"worker {job.worker} stopped heartbeating (crashed or was killed); "
                             f"last progress {job.progress:.0%}: {job.message}")
            s.add(job)
            _fail_unfinished_versions(s, job)
        s.commit()
    for jid in touched:
        log.warning("recovered stale job %s", jid)
    return touched


def _fail_unfinished_versions(session: Session, job: Job) -> None:
    """A training that died with its worker leaves its model version at ``training``: mark it
    ``failed`` (it never became current; a requeued run trains a new version)."""
    for mv in session.exec(select(ModelVersion).where(ModelVersion.job_id == job.id,
                                                      ModelVersion.status == "training")).all():
        mv.status = "failed"
        mv.metrics = {**(mv.metrics or {}), "error": f"the training job's worker {job.worker} stopped "
                                                     "(crashed or was killed) before the model was complete"}
        session.add(mv)
