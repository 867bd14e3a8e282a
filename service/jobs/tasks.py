"""Small job functions of the service itself (``scan_folder``, ``sleep``); every job kind
is listed in :mod:`service.jobs.registry`, which imports this module when one runs."""

from __future__ import annotations

import time
from typing import Any

from sqlmodel import Session

from service.crud.folders import scan
from service.jobs.runner import JobContext
from service.models import Project, WatchedFolder


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


def sleep_task(ctx: JobContext) -> dict[str, Any]:
    """A job that only reports progress (used to check progress, SSE and cancel)."""
    steps = int(ctx.payload.get("steps", 10))
    for i in range(steps):
        ctx.progress(i / steps, f"step {i + 1} of {steps}")
        time.sleep(float(ctx.payload.get("seconds", 0.1)))
    return {"steps": steps}
