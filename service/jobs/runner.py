"""Job states, claiming, progress/heartbeat, cancel and crash recovery.

A job row moves ``queued -> running -> succeeded | failed | cancelled``. Any
process (the API's in-process executor or ``labelloop worker``) may claim a
queued job: on PostgreSQL with ``FOR UPDATE SKIP LOCKED``, on SQLite inside a
``BEGIN IMMEDIATE`` write transaction. A running job heartbeats from a side
thread; a job whose heartbeat is older than the timeout belongs to a dead
process and is failed with a reason, or requeued when its task can resume.
Task functions only see a :class:`JobContext`, so another engine could run
the same functions elsewhere.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from learning.adapters.base import Cancelled as LearningCancelled
from service.config import Settings
from service.models import TERMINAL_JOB_STATES, Job, JobState, ModelVersion, utcnow

log = logging.getLogger("labelloop.jobs")


class Cancelled(LearningCancelled):
    """Raised inside a task when its job was asked to stop (adapters let it through)."""


class JobConflict(Exception):
    """A job of this kind is already active for the project."""


@dataclass
class TaskSpec:
    fn: Callable[[JobContext], dict[str, Any] | None]
    resumable: bool = False
    one_per_project: bool = False


TASKS: dict[str, TaskSpec] = {}


def task(name: str, *, resumable: bool = False, one_per_project: bool = False) -> Callable:
    """Register a job function ``fn(ctx) -> result dict`` under ``name``."""

    def deco(fn: Callable[[JobContext], dict[str, Any] | None]) -> Callable:
        TASKS[name] = TaskSpec(fn, resumable, one_per_project)
        return fn

    return deco


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


class JobContext:
    """What a task sees: its payload, progress reporting and cancellation."""

    def __init__(self, engine: Engine, settings: Settings, job: Job) -> None:
        assert job.id is not None
        self.engine = engine
        self.settings = settings
        self.job_id: int = job.id
        self.project_id = job.project_id
        self.payload: dict[str, Any] = dict(job.payload or {})
        self.kind = job.kind
        self._last_cancel_check = 0.0

    def progress(self, fraction: float, message: str = "") -> None:
        """Record progress (0..1) and raise :class:`Cancelled` if a cancel was asked."""
        with Session(self.engine) as s:
            job = s.get(Job, self.job_id)
            if job is None:
                raise Cancelled("job row disappeared")
            job.progress = float(min(max(fraction, 0.0), 1.0))
            if message:
                job.message = message[:500]
            job.heartbeat_at = utcnow()
            cancel = job.cancel_requested
            s.add(job)
            s.commit()
        if cancel:
            raise Cancelled("cancelled by request")

    def cancelled(self) -> bool:
        with Session(self.engine) as s:
            job = s.get(Job, self.job_id)
            return job is None or job.cancel_requested

    def check_cancel(self) -> None:
        if self.cancelled():
            raise Cancelled("cancelled by request")

    def save_state(self, **state: Any) -> None:
        """Persist resume state in the payload (for resumable tasks)."""
        with Session(self.engine) as s:
            job = s.get(Job, self.job_id)
            if job is not None:
                job.payload = {**(job.payload or {}), **state}
                s.add(job)
                s.commit()
        self.payload.update(state)


def enqueue(session: Session, *, kind: str, project_id: int | None, payload: dict[str, Any] | None = None,
            user_id: int | None = None) -> Job:
    """Add a queued job. Raises :class:`JobConflict` for a second active one-per-project job."""
    spec = TASKS.get(kind)
    if spec is None:
        raise KeyError(f"unknown job kind {kind!r}; known: {sorted(TASKS)}")
    if spec.one_per_project and project_id is not None:
        active = session.exec(
            select(Job).where(Job.project_id == project_id, Job.kind == kind,
                              col(Job.state).in_([JobState.queued, JobState.running]))
        ).first()
        if active is not None:
            raise JobConflict(f"a {kind} job (#{active.id}) is already {active.state.value} for this project")
    job = Job(kind=kind, project_id=project_id, payload=payload or {}, created_by=user_id,
              resumable=spec.resumable)
    session.add(job)
    session.flush()
    return job


def claim_next(engine: Engine, worker: str, kinds: list[str] | None = None) -> int | None:
    """Atomically move the oldest queued job to running; return its id or None."""
    with Session(engine) as s:
        q = select(Job).where(Job.state == JobState.queued).order_by(col(Job.created_at), col(Job.id))
        if kinds:
            q = q.where(col(Job.kind).in_(kinds))
        if engine.dialect.name == "postgresql":
            q = q.with_for_update(skip_locked=True)
        job = s.exec(q.limit(1)).first()
        if job is None:
            return None
        now = utcnow()
        job.state = JobState.running
        job.started_at = job.started_at or now
        job.heartbeat_at = now
        job.worker = worker
        job.attempts += 1
        s.add(job)
        s.commit()
        return job.id


def _finish(engine: Engine, job_id: int, state: JobState, *, result: dict | None = None,
            error: str | None = None, message: str | None = None) -> None:
    with Session(engine) as s:
        job = s.get(Job, job_id)
        if job is None:
            return
        job.state = state
        job.finished_at = utcnow()
        job.heartbeat_at = job.finished_at
        if result is not None:
            job.result = result
        if state == JobState.succeeded:
            job.progress = 1.0
        if error is not None:
            job.error = error[:4000]
        if message is not None:
            job.message = message[:500]
        s.add(job)
        s.commit()


def run_job(engine: Engine, settings: Settings, job_id: int) -> JobState:
    """Run one claimed job to a terminal state (never raises for task errors)."""
    with Session(engine) as s:
        job = s.get(Job, job_id)
        if job is None:
            return JobState.failed
        spec = TASKS.get(job.kind)
        ctx = JobContext(engine, settings, job)
    if spec is None:
        _finish(engine, job_id, JobState.failed, error=f"no task named {ctx.kind!r} in this process")
        return JobState.failed
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(engine, job_id, stop), daemon=True)
    beat.start()
    try:
        result = spec.fn(ctx) or {}
    except LearningCancelled as exc:
        _finish(engine, job_id, JobState.cancelled, message=f"cancelled: {exc}")
        return JobState.cancelled
    except Exception as exc:  # a task failure ends the job, never the worker
        log.exception("job %s (%s) failed", job_id, ctx.kind)
        tb = traceback.format_exc(limit=5)
        _finish(engine, job_id, JobState.failed, error=f"{type(exc).__name__}: {exc}\n{tb}",
                message=f"failed: {exc}")
        return JobState.failed
    finally:
        stop.set()
        beat.join(timeout=5)
    _finish(engine, job_id, JobState.succeeded, result=result)
    return JobState.succeeded


def _heartbeat(engine: Engine, job_id: int, stop: threading.Event, every: float = 5.0) -> None:
    while not stop.wait(every):
        try:
            with Session(engine) as s:
                job = s.get(Job, job_id)
                if job is None or job.state != JobState.running:
                    return
                job.heartbeat_at = utcnow()
                s.add(job)
                s.commit()
        except Exception:  # a missed beat is retried on the next tick
            log.warning("heartbeat for job %s failed", job_id, exc_info=True)


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


def request_cancel(session: Session, job: Job) -> Job:
    if job.state in TERMINAL_JOB_STATES:
        return job
    job.cancel_requested = True
    if job.state == JobState.queued:
        job.state = JobState.cancelled
        job.finished_at = utcnow()
        job.message = "cancelled before it started"
    session.add(job)
    return job


class ThreadExecutor:
    """Runs queued jobs on background threads of this process (the default)."""

    def __init__(self, engine: Engine, settings: Settings, *, threads: int = 1,
                 kinds: list[str] | None = None) -> None:
        self.engine = engine
        self.settings = settings
        self.kinds = kinds
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, name=f"labelloop-job-{i}", daemon=True)
                         for i in range(max(1, threads))]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            t.join(timeout=timeout)

    def run_pending(self) -> int:
        """Run queued jobs until none is left (used by tests and the worker)."""
        n = 0
        while (jid := claim_next(self.engine, worker_name(), self.kinds)) is not None:
            run_job(self.engine, self.settings, jid)
            n += 1
        return n

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_pending()
            except Exception:  # keep the loop alive; the error is logged
                log.exception("job loop error")
            self._wake.wait(timeout=1.0)
            self._wake.clear()
