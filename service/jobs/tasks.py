"""Job functions. Importing this module registers them with the runner."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session

import service.jobs.checks  # noqa: F401  (registers recovery and lease expiry)
import service.loop.annotate
import service.loop.audit  # noqa: F401  (registers the audit job)
import service.loop.clusters  # noqa: F401  (registers the cluster job and check)
import service.loop.detect  # noqa: F401  (registers train_detector / infer_detector)
import service.loop.infer  # noqa: F401  (registers the infer job)
import service.loop.review  # noqa: F401  (registers the hard-example scan)
import service.loop.state  # noqa: F401  (registers the retraining check)
import service.loop.train  # noqa: F401  (registers the train job)
from service.crud.folders import rescan_due, scan
from service.jobs.runner import JobContext, task
from service.jobs.scheduler import periodic
from service.models import Project, WatchedFolder


@task("scan_folder")
def scan_folder_task(ctx: JobContext) -> dict[str, Any]:
    with Session(ctx.engine) as s:
        folder = s.get(WatchedFolder, int(ctx.payload["folder_id"]))
        if folder is None:
            raise ValueError("watched folder was deleted")
        project = s.get(Project, folder.project_id)
        assert project is not None
        ctx.progress(0.0, f"scanning {folder.path}")
        res = scan(s, folder=folder, project=project, settings=ctx.settings)
        s.commit()
    return {k: len(v) for k, v in res.as_dict().items()}


@task("sleep")
def sleep_task(ctx: JobContext) -> dict[str, Any]:
    """A job that only reports progress (used to check progress, SSE and cancel)."""
    import time

    steps = int(ctx.payload.get("steps", 10))
    for i in range(steps):
        ctx.progress(i / steps, f"step {i + 1} of {steps}")
        time.sleep(float(ctx.payload.get("seconds", 0.1)))
    return {"steps": steps}


periodic("watched-folders")(rescan_due)

# the job layer's other modules (each registers its jobs and periodic checks on import)
service.loop.annotate.register_job()  # annotate, and through service.loop.detect the detection jobs
