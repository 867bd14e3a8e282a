"""Shared test factories: colour images, a colour-group project, jobs run in-process, grid pages.

One copy of each helper for the test packages (``tests/loop/helpers.py`` and
``tests/system/faults/live.py`` re-export what they used to define). Images of a few clearly
different colours are what every loop test learns from: a real backbone separates them
at once and :mod:`tests.fakes` learns them from their mean colour.
"""

from __future__ import annotations

import io
import random
from typing import Any

import numpy as np
from PIL import Image
from sqlmodel import Session, select

COLOURS = {"red": (200, 30, 30), "green": (30, 190, 40), "blue": (30, 40, 200)}


def colour_png(rgb: tuple[int, int, int] | str, rng: random.Random, *, size: int = 24, jitter: int = 10,
               noise: int = 10, seed_range: int = 10**6) -> bytes:
    """A ``size`` x ``size`` PNG of colour ``rgb`` (or a name in :data:`COLOURS`): the colour
    moved by up to ``jitter`` per channel for the whole image (no draw when 0), then pixel
    noise in ``[-noise, noise)`` from a generator seeded by ``rng.randint(0, seed_range)``."""
    base = np.array(COLOURS[rgb] if isinstance(rgb, str) else rgb, dtype=np.int16)
    if jitter:
        base = base + np.array([rng.randint(-jitter, jitter) for _ in range(3)])
    pixels = np.random.default_rng(rng.randint(0, seed_range)).integers(-noise, noise, size=(size, size, 3))
    buf = io.BytesIO()
    Image.fromarray(np.clip(base + pixels, 0, 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def colour_project(ctx: Any, headers: dict[str, str], counts: dict[str, int], *, seed: int = 0,
                   policy: dict | None = None, name: str = "colours", image_size: int = 32
                   ) -> tuple[int, dict[int, str]]:
    """A multiclass project (``ctx``: :class:`tests.conftest.Ctx`) with classes red/green/blue
    and ``counts[colour]`` images each. Returns ``(project id, {item id: true colour})``."""
    ctx.settings.image_size = image_size
    rng = random.Random(seed)
    r = ctx.client.post("/api/v1/projects", json={"name": name, "classes": list(COLOURS),
                                                  "policy": policy or {}}, headers=headers)
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    files, names = [], {}
    for colour, n in counts.items():
        for i in range(n):
            fname = f"{colour}_{i:03d}.png"
            names[fname] = colour
            files.append(("files", (fname, colour_png(colour, rng), "image/png")))
    rng.shuffle(files)
    r = ctx.client.post(f"/api/v1/projects/{pid}/items", files=files, headers=headers)
    assert r.status_code == 201, r.text
    truth = {c["id"]: names[c["file"]] for c in r.json()["created"]}
    assert len(truth) == sum(counts.values())
    return pid, truth


def run_jobs(ctx: Any) -> int:
    """Run every queued job of ``ctx``'s app in this thread (and those they enqueue); how many ran."""
    from service.jobs.runner import ThreadExecutor

    return int(ThreadExecutor(ctx.engine, ctx.settings).run_pending())


def start_job(ctx: Any, kind: str, project_id: int) -> int:
    """Enqueue a ``kind`` job for ``project_id``; its id."""
    from service.jobs.runner import enqueue

    with Session(ctx.engine) as s:
        job = enqueue(s, kind=kind, project_id=project_id)
        s.commit()
        assert job.id is not None
        return job.id


def label(ctx: Any, headers: dict[str, str], item_id: int, colour: str) -> None:
    """Label ``item_id`` with ``colour`` through the API."""
    r = ctx.client.post(f"/api/v1/items/{item_id}/annotations", json={"labels": [colour]}, headers=headers)
    assert r.status_code == 201, r.text


def user_id(ctx: Any, name: str) -> int:
    from service.models import User

    with Session(ctx.engine) as s:
        u = s.exec(select(User).where(User.name == name)).one()
        assert u.id is not None
        return u.id


def cluster_job(session: Session, project_id: int, pages: dict[int, list[dict[str, Any]]]) -> int:
    """A succeeded ``cluster`` job that cut ``pages`` (by size; each needs ``item_ids``, other
    :class:`~service.models.GridPage` fields default), flushed but not committed; its id."""
    from service.models import GridPage, Job, JobState

    job = Job(kind="cluster", project_id=project_id, state=JobState.succeeded, progress=1.0,
              result={"model_version_id": None, "n_items": 0,
                      "n_pages": {str(size): len(pages.get(size, [])) for size in (4, 6, 9)}})
    session.add(job)
    session.flush()
    assert job.id is not None
    for size, listed in pages.items():
        for n, page in enumerate(listed):
            fields = {"cluster": n, "cohesion": 0.8, **{k: v for k, v in page.items() if k != "id"}}
            session.add(GridPage(job_id=job.id, project_id=project_id, size=size, position=n, **fields))
    session.flush()
    return job.id
