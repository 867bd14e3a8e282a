"""Tiny colour-group images and project set-up for the grid / review / audit tests."""

from __future__ import annotations

import io
import random

import numpy as np
from PIL import Image
from sqlmodel import Session

from service.jobs.runner import ThreadExecutor, enqueue
from tests.conftest import Ctx

COLOURS = {"red": (200, 30, 30), "green": (30, 190, 40), "blue": (30, 40, 200)}


def colour_png(colour: str, rng: random.Random, size: int = 24) -> bytes:
    """A ``size`` x ``size`` image of one colour group with a little noise."""
    base = np.array(COLOURS[colour], dtype=np.int16) + np.array([rng.randint(-10, 10) for _ in range(3)])
    noise = np.random.default_rng(rng.randint(0, 10**6)).integers(-10, 10, size=(size, size, 3))
    buf = io.BytesIO()
    Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def colour_project(ctx: Ctx, headers: dict[str, str], counts: dict[str, int], *, seed: int = 0,
                   policy: dict | None = None, name: str = "colours", image_size: int = 32
                   ) -> tuple[int, dict[int, str]]:
    """A multiclass project with classes red/green/blue and ``counts[colour]`` images each.
    Returns ``(project id, {item id: true colour})``."""
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


def run_jobs(ctx: Ctx) -> int:
    return ThreadExecutor(ctx.engine, ctx.settings).run_pending()


def start_job(ctx: Ctx, kind: str, project_id: int) -> int:
    with Session(ctx.engine) as s:
        job = enqueue(s, kind=kind, project_id=project_id)
        s.commit()
        assert job.id is not None
        return job.id


def label(ctx: Ctx, headers: dict[str, str], item_id: int, colour: str) -> None:
    r = ctx.client.post(f"/api/v1/items/{item_id}/annotations", json={"labels": [colour]}, headers=headers)
    assert r.status_code == 201, r.text


def user_id(ctx: Ctx, name: str) -> int:
    from sqlmodel import select

    from service.models import User

    with Session(ctx.engine) as s:
        u = s.exec(select(User).where(User.name == name)).one()
        assert u.id is not None
        return u.id
