"""Shared fixtures: settings on a temporary data dir, the app on SQLite (and on
PostgreSQL when ``LABELLOOP_TEST_DATABASE_URL`` is set), users with tokens."""

from __future__ import annotations

import io
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads (see README)
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import text
from sqlmodel import Session

from service.config import Settings
from service.main import create_app

PG_URL = os.environ.get("LABELLOOP_TEST_DATABASE_URL", "")
DB_PARAMS = ["sqlite"] + (["postgresql"] if PG_URL else [])


def reset_postgres(url: str) -> None:
    from sqlalchemy import create_engine

    eng = create_engine(url)
    with eng.begin() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    eng.dispose()


def make_settings(tmp_path: Path, backend: str = "sqlite", **kw: object) -> Settings:
    data = tmp_path / "data"
    url = f"sqlite:///{data / 'labelloop.db'}" if backend == "sqlite" else PG_URL
    if backend == "postgresql":
        reset_postgres(url)
    return Settings(data_dir=data, database_url=url, secret_key="test-secret", scheduler_enabled=False,
                    run_jobs_in_process=False, **kw)  # type: ignore[arg-type]


@pytest.fixture(params=["sqlite"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def settings(tmp_path: Path, backend: str) -> Settings:
    return make_settings(tmp_path, backend)


@dataclass
class Ctx:
    client: TestClient
    settings: Settings

    @property
    def engine(self):  # type: ignore[no-untyped-def]
        return self.client.app.state.engine  # type: ignore[attr-defined]

    def user(self, name: str, role: str = "labeler", password: str | None = None) -> dict[str, str]:
        """Create a user; return Authorization headers for it."""
        from service.crud.users import create_user
        from service.models import Role
        from service.security import issue_token

        with Session(self.engine) as s:
            u = create_user(s, name=name, role=Role(role), password=password)
            _, tok, _ = issue_token(s, u, name="test")
            s.commit()
        return {"Authorization": f"Bearer {tok}"}

    def member(self, project_id: int, name: str, role: str) -> None:
        from service.crud.projects import set_member
        from service.models import Project, Role

        with Session(self.engine) as s:
            p = s.get(Project, project_id)
            assert p is not None
            set_member(s, project=p, user_name=name, role=Role(role), by=None)  # type: ignore[arg-type]
            s.commit()


@contextmanager
def serve_app(app: Any) -> Iterator[str]:
    """``app`` under a real uvicorn on 127.0.0.1 (a thread); yields its base URL."""
    import threading
    import time

    import uvicorn

    from tests.system.faults.live import STARTUP_SECONDS, free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    deadline = time.time() + STARTUP_SECONDS
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        t.join(timeout=30)


@pytest.fixture
def live(ctx: Ctx) -> Iterator[str]:
    """The ``ctx`` app under a real uvicorn; yields its base URL."""
    with serve_app(create_app(ctx.settings, background=False)) as url:
        yield url


@pytest.fixture
def ctx(settings: Settings) -> Iterator[Ctx]:
    app = create_app(settings, background=False)
    with TestClient(app) as client:
        yield Ctx(client, settings)


@pytest.fixture
def seeded_streams(ctx: Ctx, monkeypatch: pytest.MonkeyPatch) -> Ctx:
    """``ctx`` with the queue's randomness seeded: items' random order (``random_seed``) and
    each draw's stream (hold-out or strategy). For tests whose few dozen labels would
    otherwise pass or fail by which items happened to be held out."""
    import random

    import service.crud.queue

    ctx.settings.random_seed = 0
    monkeypatch.setattr(service.crud.queue, "_rng", random.Random(0))
    return ctx


@pytest.fixture
def fake_adapter(monkeypatch: pytest.MonkeyPatch) -> str:
    """New models of this process are :mod:`tests.fakes`' colour adapter instead of the real
    classifier (for job tests that need *a* model, not a good one: milliseconds, no torch).
    Models it saves load through the registry as usual. Returns the adapter key.

    Patches the two places the service creates a classifier; a ``Settings`` knob naming the
    adapter key would replace this (and reach subprocess servers too)."""
    import service.loop.clusters
    import service.pipelines.classification
    from tests.fakes import ColourAdapter, register

    key = register()

    def fake(*args: Any, **kwargs: Any) -> ColourAdapter:
        classes = kwargs.get("classes", args[1] if len(args) > 1 else None)
        task = kwargs.get("task", args[2] if len(args) > 2 else "multiclass")
        return ColourAdapter(list(classes) if classes else ["_0", "_1"], str(getattr(task, "value", task)))

    monkeypatch.setattr(service.pipelines.classification, "classifier", fake)
    monkeypatch.setattr(service.loop.clusters, "pretrained_features",
                        lambda *args, **kwargs: ColourAdapter(["_0", "_1"]))
    return key


def png_bytes(color: tuple[int, int, int] = (255, 0, 0), size: tuple[int, int] = (32, 24),
              fmt: str = "PNG", seed: int = 0) -> bytes:
    im = Image.new("RGB", size, color)
    im.putpixel((seed % size[0], (seed // size[0]) % size[1]), (seed % 256, 7, 9))
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


def make_project(c: Ctx, headers: dict[str, str], name: str = "p", classes: list[str] | None = None,
                 task: str = "multiclass", n_images: int = 0) -> dict:
    r = c.client.post("/api/v1/projects", json={"name": name, "task": task,
                                                "classes": classes or ["cat", "dog"]}, headers=headers)
    assert r.status_code == 201, r.text
    project = r.json()
    if n_images:
        files = [("files", (f"img_{i:04d}.png", png_bytes(seed=i + 1), "image/png")) for i in range(n_images)]
        r = c.client.post(f"/api/v1/projects/{project['id']}/items", files=files, headers=headers)
        assert r.status_code == 201, r.text
        assert len(r.json()["created"]) == n_images, r.json()
    return project
