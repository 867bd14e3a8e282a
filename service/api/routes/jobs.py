"""Jobs: read, list, progress by Server-Sent Events, cancel."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import StreamingResponse
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from service.api.deps import STD_ERRORS, CurrentUser, SessionDep, get_project, role_in_project
from service.jobs.runner import request_cancel
from service.models import TERMINAL_JOB_STATES, Job, JobPublic, JobsPublic, Role, User

router = APIRouter(tags=["jobs"])


def _job_for(session: Session, user: User, job_id: int, need: Role = Role.labeler) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise HTTPException(404, "job not found")
    if job.project_id is None:
        if user.role != Role.admin:
            raise HTTPException(404, "job not found")
        return job
    get_project(session, user, job.project_id, need)
    return job


@router.get("/jobs/{job_id}", response_model=JobPublic, responses=STD_ERRORS)
def read_job(job_id: int, user: CurrentUser, session: SessionDep) -> JobPublic:
    return JobPublic.model_validate(_job_for(session, user, job_id), from_attributes=True)


@router.get("/projects/{project_id}/jobs", response_model=JobsPublic, responses=STD_ERRORS)
def list_jobs(project_id: int, user: CurrentUser, session: SessionDep, limit: int = 50) -> JobsPublic:
    get_project(session, user, project_id)
    rows = session.exec(select(Job).where(Job.project_id == project_id).order_by(col(Job.id).desc())
                        .limit(min(max(limit, 1), 500))).all()
    return JobsPublic(data=[JobPublic.model_validate(j, from_attributes=True) for j in rows], count=len(rows))


@router.post("/jobs/{job_id}/cancel", response_model=JobPublic, responses=STD_ERRORS)
def cancel_job(job_id: int, user: CurrentUser, session: SessionDep) -> JobPublic:
    job = _job_for(session, user, job_id)
    if job.project_id is not None and job.created_by != user.id:
        role = role_in_project(session, user, job.project_id)
        if role not in (Role.manager, Role.admin):
            raise HTTPException(403, "only the job's creator or a manager can cancel it")
    request_cancel(session, job)
    return JobPublic.model_validate(job, from_attributes=True)


def _snapshot(engine: Engine, job_id: int) -> dict | None:
    with Session(engine.execution_options(labelloop_read_only=True)) as s:
        job = s.get(Job, job_id)
        if job is None:
            return None
        return json.loads(JobPublic.model_validate(job, from_attributes=True).model_dump_json())


@router.get("/jobs/{job_id}/events", response_class=StreamingResponse, responses={**STD_ERRORS, 200: {
    "content": {"text/event-stream": {}}, "description": "progress events until the job ends"}})
async def job_events(job_id: int, request: Request, user: CurrentUser, session: SessionDep) -> StreamingResponse:
    """Server-Sent Events: one ``progress`` event per change, then ``end``."""
    _job_for(session, user, job_id)
    engine: Engine = request.app.state.engine

    async def stream() -> AsyncIterator[str]:
        last = None
        while True:
            if await request.is_disconnected():
                return
            snap = await asyncio.to_thread(_snapshot, engine, job_id)
            if snap is None:
                yield "event: end\ndata: {}\n\n"
                return
            key = (snap["state"], snap["progress"], snap["message"])
            if key != last:
                last = key
                yield f"event: progress\ndata: {json.dumps(snap)}\n\n"
            if snap["state"] in {s.value for s in TERMINAL_JOB_STATES}:
                yield f"event: end\ndata: {json.dumps(snap)}\n\n"
                return
            await asyncio.sleep(0.5)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
