"""Job states, claiming, progress/heartbeat, cancel, and the thread executor.

A job row moves ``queued -> running -> succeeded | failed | cancelled``. Any
process (the API's in-process executor or ``labelloop worker``) may claim a
queued job: on PostgreSQL with ``FOR UPDATE SKIP LOCKED``, on SQLite inside a
``BEGIN IMMEDIATE`` write transaction. A running job heartbeats from a side
thread; a job whose heartbeat stopped is recovered by :mod:`service.jobs.recovery`.
Job functions are listed in :mod:`service.jobs.registry` and see a :class:`JobContext`;
their compute steps see only :class:`service.jobs.executor.ComputeContext`.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import traceback
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from learning.adapters.base import Cancelled as LearningCancelled
from service.config import Settings
from service.jobs.executor import Executor, LocalContext, MapProgress, map_in_process
from service.jobs.recovery import recover_stale
from service.jobs.registry import UnknownJob, canonical_kind, job_spec
from service.models import TERMINAL_JOB_STATES, Job, JobState, utcnow

log = logging.getLogger("labelloop.jobs")
__all__ = ["Cancelled", "JobConflict", "JobContext", "ThreadExecutor", "claim_next", "enqueue", "recover_stale",
           "request_cancel", "run_job", "worker_name"]  # recover_stale: service.jobs.recovery
S = TypeVar("S")
R = TypeVar("R")


class Cancelled(LearningCancelled):
    """Raised inside a task when its job was asked to stop (adapters let it through)."""


class JobConflict(Exception):
    """A job of this kind is already active for the project."""


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


class JobContext:
    """What a task sees: its payload, progress reporting and cancellation."""

    def __init__(self, engine: Engine, settings: Settings, job: Job, executor: Executor | None = None) -> None:
        assert job.id is not None
        self.engine = engine
        self.executor = executor
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

    def compute_context(self) -> LocalContext:
        """The context a compute step gets: this job's progress, its executor's ``map`` and
        ``run``, and the shard size (``LABELLOOP_SHARD_SIZE``)."""
        ex = self.executor
        return LocalContext(report=self.progress, mapper=ex.map if ex else map_in_process,
                            runner=ex.run if ex else None, shard_size=self.settings.shard_size)

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
    """Add a queued job. Raises :class:`JobConflict` for a second active one-per-project job and
    :class:`service.jobs.registry.UnknownJob` for a kind the registry does not list."""
    spec = job_spec(kind)
    kind = canonical_kind(kind)
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


def run_job(engine: Engine, settings: Settings, job_id: int, executor: Executor | None = None) -> JobState:
    """Run one claimed job to a terminal state (never raises for task errors)."""
    with Session(engine) as s:
        job = s.get(Job, job_id)
        if job is None:
            return JobState.failed
        ctx = JobContext(engine, settings, job, executor)
    try:
        fn = job_spec(ctx.kind).function()
    except (UnknownJob, ImportError) as exc:  # a kind this process cannot run
        _finish(engine, job_id, JobState.failed, error=f"{type(exc).__name__}: {exc}",
                message=f"failed: {exc}")
        return JobState.failed
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(engine, job_id, stop), daemon=True)
    beat.start()
    try:
        result = fn(ctx) or {}
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
    """Runs queued jobs on background threads of this process: the API's default, and
    ``labelloop worker``'s. An :class:`service.jobs.executor.Executor`; its ``map`` runs
    shards in order on the calling thread."""

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

    def submit(self, job_id: int | None = None) -> None:
        """A job was queued (committed): look for work now instead of at the next tick."""
        self.wake()

    def cancel(self, job_id: int) -> None:
        with Session(self.engine) as s:
            job = s.get(Job, job_id)
            if job is not None:
                request_cancel(s, job)
                s.commit()

    def map(self, fn: Any, shards: Sequence[Any], progress: MapProgress | None = None) -> list:
        return map_in_process(fn, shards, progress)

    def run(self, fn: Callable[[Any, Any], R], inputs: Any, ctx: LocalContext, *, gpu: bool = False) -> R:
        """``fn(inputs, ctx)`` in this thread (``gpu``: the device setting already says where)."""
        return fn(inputs, ctx)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the job threads (those :meth:`start` started; an executor never started, as a
        script's that only calls :meth:`run_pending`, has none to wait for)."""
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            if t.ident is not None:
                t.join(timeout=timeout)

    def run_pending(self) -> int:
        """Run queued jobs until none is left (used by tests and the worker)."""
        n = 0
        while (jid := claim_next(self.engine, worker_name(), self.kinds)) is not None:
            run_job(self.engine, self.settings, jid, self)
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

