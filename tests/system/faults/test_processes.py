"""A deployment of several processes on one database: ``labelloop serve --workers 2``
(two API processes) with jobs in a separate ``labelloop worker``.

Checks what that layout promises: exactly one process runs the scheduler (the
others find its lock taken), the scheduler's retraining is picked up and finished
by the worker (never by the API processes, which run no jobs here), the worker runs
at the lower CPU priority it was given, and labelers served by either API process
never get one item twice.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import httpx
import pytest

from service.config import Settings
from service.db import make_engine, upgrade_schema
from service.jobs.scheduler import start_scheduler
from tests.conftest import PG_URL, reset_postgres
from tests.system.faults.live import JOB_SECONDS, LiveServer, add_colours, label_through_queue, wait_for


def test_one_scheduler_per_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", secret_key="x", scheduler_interval_seconds=3600)
    settings.ensure_dirs()
    engine = make_engine(settings.database_url)
    upgrade_schema(engine)
    first = start_scheduler(engine, settings)
    assert first is not None
    try:
        assert start_scheduler(engine, settings) is None  # another process of this deployment has it
    finally:
        first.stop()
    again = start_scheduler(engine, settings)  # the lock went with the scheduler that held it
    assert again is not None
    again.stop()
    engine.dispose()


@pytest.mark.slow
def test_two_api_processes_and_a_worker(tmp_path: Path) -> None:
    if PG_URL:
        reset_postgres(PG_URL)
    srv = LiveServer(tmp_path / "data", database_url=PG_URL, serve_args=("--workers", "2"),
                     scheduler_enabled="true", scheduler_interval_seconds=1, run_jobs_in_process="false",
                     max_request_bytes=2_000_000)
    srv.start()
    headers = srv.admin()
    try:
        worker = srv.start_worker("--nice", "7")
        with httpx.Client(base_url=srv.url, headers=headers, timeout=60) as c:
            r = c.post("/api/v1/projects", json={"name": "procs", "classes": ["red", "blue"], "policy": {
                "min_labels_per_class": 5, "holdout_share": 0.3, "target_precision": 0.8, "delta": 0.2,
                "retrain_every_labels": 100000, "calibration": "pooled", "algorithm": "fast"}})
            assert r.status_code == 201, r.text
            pid = r.json()["id"]
            truth = add_colours(c, pid, 80, seed=3)
            leased = []
            for _ in range(30):  # new connections: the two processes share the labelling
                with httpx.Client(base_url=srv.url, headers=headers, timeout=60) as one:
                    lease = one.post(f"/api/v1/projects/{pid}/queue/next").json()
                    leased.append(lease["item"]["id"])
                    r = one.post(f"/api/v1/items/{lease['item']['id']}/annotations",
                                 json={"labels": [truth[lease["item"]["id"]]], "lease_id": lease["lease_id"]})
                    assert r.status_code == 201, r.text
            assert not [k for k, n in Counter(leased).items() if n > 1]
            label_through_queue(c, pid, truth, 10)

            def trained() -> dict | None:  # the scheduler saw the project ready and enqueued a training
                jobs = c.get(f"/api/v1/projects/{pid}/jobs").json()["data"]
                return next((j for j in jobs if j["kind"] == "train" and j["state"] == "succeeded"), None)

            job = wait_for(trained, timeout=JOB_SECONDS, every=0.5, what="the worker to finish the scheduled training")
            assert job["worker"] and job["worker"].split(":")[1] == str(worker.pid), job
            trains = [j for j in c.get(f"/api/v1/projects/{pid}/jobs").json()["data"] if j["kind"] == "train"]
            assert len(trains) == 1, trains  # one scheduler: never two trainings enqueued at once
            _hostile_inputs(c, pid)
        assert os.getpriority(os.PRIO_PROCESS, worker.pid) == os.getpriority(os.PRIO_PROCESS, 0) + 7
        log = srv.log.read_text()
        assert "serving with 2 processes" in log
        assert log.count("scheduler runs in another process") == 1, log[-3000:]
    finally:
        srv.kill()


def _hostile_inputs(c: httpx.Client, pid: int) -> None:
    """The hostile inputs of tests/system/security against this deployment (either API process may
    answer; the worker runs the jobs meanwhile): the same answers as one process gives."""
    boundary = "hostile-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + b"\0" * 3_000_000 + f"\r\n--{boundary}--\r\n".encode()
    chunks = (body[i:i + 65536] for i in range(0, len(body), 65536))
    r = c.post(f"/api/v1/projects/{pid}/items", content=chunks,
               headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 413, r.text  # chunked, no Content-Length: counted as it streams
    for name in ('"\\ud800"', '"a\\u0000b"'):  # a lone surrogate, a NUL: 422 on every database
        r = c.post("/api/v1/projects", content=f'{{"name": {name}, "classes": ["x", "y"]}}',
                   headers={"Content-Type": "application/json"})
        assert r.status_code == 422, r.text
    for fmt in ("csv", "coco", "labelstudio"):  # exports while the worker and the scheduler write
        assert c.get(f"/api/v1/projects/{pid}/export", params={"format": fmt}).status_code == 200


def test_a_running_job_that_never_beat_is_recovered(tmp_path: Path) -> None:
    # a process that died after claiming a job and before its first heartbeat (older
    # databases have such rows) must not leave the job ``running`` for ever
    from datetime import timedelta

    from sqlmodel import Session

    from service.jobs.runner import recover_stale
    from service.models import Job, JobState, utcnow

    settings = Settings(data_dir=tmp_path / "data", secret_key="x")
    settings.ensure_dirs()
    engine = make_engine(settings.database_url)
    upgrade_schema(engine)
    with Session(engine) as s:
        old = utcnow() - timedelta(minutes=10)
        stuck = Job(kind="sleep", state=JobState.running, worker="gone:1:1", started_at=old, created_at=old)
        fresh = Job(kind="sleep", state=JobState.running, worker="alive:2:2", started_at=utcnow())
        s.add(stuck)
        s.add(fresh)
        s.commit()
        ids = (stuck.id, fresh.id)
    assert recover_stale(engine, timeout_seconds=60) == [ids[0]]
    with Session(engine) as s:
        assert s.get(Job, ids[0]).state == JobState.failed  # type: ignore[union-attr]
        assert s.get(Job, ids[1]).state == JobState.running  # type: ignore[union-attr]
    engine.dispose()
