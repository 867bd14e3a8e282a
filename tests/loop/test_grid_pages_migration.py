"""Migration 0006: grid pages move from cluster jobs' result JSON into ``grid_page``, their
state from the audit log into ``confirmed_at`` and ``grid_page_skip``; downgrade puts them back."""

from __future__ import annotations

from typing import Any

import pytest
from alembic import command
from sqlmodel import Session, col, select

from service.config import Settings
from service.db import alembic_config, engine_from_settings
from service.loop.grids import find_page, lease_pages
from service.models import AuditLog, GridPage, GridPageSkip, Item, Job, JobState, Project, Role, User
from tests.conftest import DB_PARAMS


@pytest.fixture(params=DB_PARAMS)
def backend(request: pytest.FixtureRequest) -> str:
    """SQLite, and PostgreSQL where ``LABELLOOP_TEST_DATABASE_URL`` is set (JSON and types differ)."""
    return str(request.param)


def _page(job_id: int, size: int, n: int, item_ids: list[int], **extra: Any) -> dict[str, Any]:
    return {"id": f"{job_id}-{size}-{n}", "cluster": n, "item_ids": item_ids, "cohesion": 0.9 - n / 10,
            "suggested_class": "cat" if n else None, "confidence": 0.8 if n else None,
            "agreement": 1.0 if n else None, "holdout_ids": [], **extra}


def test_pages_and_their_state_move_into_the_table_and_back(settings: Settings) -> None:
    engine = engine_from_settings(settings)
    cfg = alembic_config(str(engine.url.render_as_string(hide_password=False)))

    def migrate(step: Any, target: str) -> None:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            step(cfg, target)

    migrate(command.upgrade, "0005")
    with Session(engine) as s:
        ann, bob = User(name="ann", role=Role.admin), User(name="bob", role=Role.admin)
        project = Project(name="p")
        s.add_all([ann, bob, project])
        s.flush()
        assert project.id is not None
        items = [Item(project_id=project.id, sha256=f"{i:064x}", file_name=f"{i}.png", width=8, height=8,
                      size_bytes=10, queue_rank=i / 100) for i in range(12)]
        s.add_all(items)
        job = Job(kind="cluster", project_id=project.id, state=JobState.succeeded, progress=1.0)
        other = Job(kind="train", project_id=project.id, state=JobState.succeeded, result={"pages": "not grids"})
        s.add_all([job, other])
        s.flush()
        ids = [int(i.id or 0) for i in items]
        jid = int(job.id or 0)
        pages = {"4": [_page(jid, 4, 0, ids[0:4]), _page(jid, 4, 1, ids[4:8], holdout_ids=[99]),
                       _page(jid, 4, 2, ids[8:12])],
                 "6": [_page(jid, 6, 0, ids[0:6]), _page(jid, 6, 1, ids[6:12])], "9": []}
        job.result = {"model_version_id": None, "feature_version": "f1", "n_items": 12, "pages": pages}
        s.add(job)
        s.add_all([  # ann confirmed page 4-0; bob skipped 4-1 (twice) and 6-1; an unrelated entry
            AuditLog(user_id=ann.id, project_id=project.id, action="grid.confirm",
                     detail={"page_id": f"{jid}-4-0", "label": "cat"}),
            AuditLog(user_id=bob.id, project_id=project.id, action="grid.skip", detail={"page_id": f"{jid}-4-1"}),
            AuditLog(user_id=bob.id, project_id=project.id, action="grid.skip", detail={"page_id": f"{jid}-4-1"}),
            AuditLog(user_id=bob.id, project_id=project.id, action="grid.skip", detail={"page_id": f"{jid}-6-1"}),
            AuditLog(user_id=ann.id, project_id=project.id, action="project.create", detail={"page_id": "x"})])
        s.commit()
        users = {"ann": int(ann.id or 0), "bob": int(bob.id or 0)}
        other_id, pid = int(other.id or 0), project.id

    migrate(command.upgrade, "head")
    with Session(engine) as s:
        rows = s.exec(select(GridPage).order_by(col(GridPage.size), col(GridPage.position))).all()
        assert [(r.size, r.position, r.item_ids) for r in rows] == [
            (4, 0, ids[0:4]), (4, 1, ids[4:8]), (4, 2, ids[8:12]), (6, 0, ids[0:6]), (6, 1, ids[6:12])]
        by_id = {r.page_id: r for r in rows}
        assert by_id[f"{jid}-4-0"].confirmed_by == users["ann"] and by_id[f"{jid}-4-0"].confirmed_at is not None
        assert all(r.confirmed_at is None for k, r in by_id.items() if k != f"{jid}-4-0")
        assert by_id[f"{jid}-4-1"].holdout_ids == [99] and by_id[f"{jid}-4-1"].suggested_class == "cat"
        skips = {(r.page_id, k.user_id) for k in s.exec(select(GridPageSkip)).all() for r in rows if r.id == k.page_id}
        assert skips == {(f"{jid}-4-1", users["bob"]), (f"{jid}-6-1", users["bob"])}
        result = s.get(Job, jid).result  # type: ignore[union-attr]
        assert "pages" not in result and result["n_pages"] == {"4": 3, "6": 2, "9": 0}
        assert result["feature_version"] == "f1"
        assert s.get(Job, other_id).result == {"pages": "not grids"}  # type: ignore[union-attr]
        _, page = find_page(s, f"{jid}-4-1")
        assert page == {**pages["4"][1], "size": 4}  # the dict the job result held, and its size
        # the migrated state is the state served: the confirmed page is gone for everyone,
        # the skipped ones for bob only
        project = s.get(Project, pid)
        ann_user, bob_user = s.get(User, users["ann"]), s.get(User, users["bob"])
        assert project is not None and ann_user is not None and bob_user is not None
        for_bob = lease_pages(s, project=project, user=bob_user, size=4, limit=5, ttl_seconds=60)
        assert [p["id"] for p in for_bob["data"]] == [f"{jid}-4-2"]
        s.rollback()
        for_ann = lease_pages(s, project=project, user=ann_user, size=4, limit=5, ttl_seconds=60)
        assert [p["id"] for p in for_ann["data"]] == [f"{jid}-4-1", f"{jid}-4-2"]
        s.rollback()

    migrate(command.downgrade, "0005")
    with Session(engine) as s:
        restored = s.get(Job, jid).result  # type: ignore[union-attr]
    assert restored == {"model_version_id": None, "feature_version": "f1", "n_items": 12, "pages": pages}
    migrate(command.upgrade, "head")  # and up again: the same rows
    with Session(engine) as s:
        assert len(s.exec(select(GridPage)).all()) == 5 and len(s.exec(select(GridPageSkip)).all()) == 2
    engine.dispose()
