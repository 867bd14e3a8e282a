"""Migration 0005: the detection jobs' old kinds become ``train`` / ``infer`` (and back)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic import command

from service.config import Settings
from service.db import alembic_config, engine_from_settings
from tests.conftest import DB_PARAMS

PROJECT = sa.table("project", sa.column("id", sa.Integer), sa.column("name", sa.String),
                   sa.column("task", sa.String), sa.column("policy", sa.JSON))
JOB = sa.table("job", sa.column("id", sa.Integer), sa.column("kind", sa.String), sa.column("project_id", sa.Integer))


@pytest.fixture(params=DB_PARAMS)
def backend(request: pytest.FixtureRequest) -> str:
    """Both databases (the rest of tests/loop runs on SQLite only)."""
    return str(request.param)


def test_old_job_kinds_are_renamed_and_restored(settings: Settings) -> None:
    engine = engine_from_settings(settings)
    cfg = alembic_config(str(engine.url.render_as_string(hide_password=False)))

    def migrate(step, target: str) -> None:  # type: ignore[no-untyped-def]
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            step(cfg, target)

    def kinds() -> dict[int, str]:
        with engine.connect() as conn:
            return dict(conn.execute(sa.select(JOB.c.id, JOB.c.kind)).all())  # type: ignore[arg-type]

    migrate(command.upgrade, "0004")
    with engine.begin() as conn:
        pids = {}
        for name, task in (("boxes", "detection"), ("colours", "multiclass")):
            conn.execute(sa.text("INSERT INTO project (name, task, instructions, policy, created_at, stream_counter, "
                                 "labels_at_last_training) VALUES (:n, :t, '', '{}', CURRENT_TIMESTAMP, 0, 0)"),
                         {"n": name, "t": task})
            pids[name] = conn.execute(sa.select(PROJECT.c.id).where(PROJECT.c.name == name)).scalar_one()
        for kind, pid in (("train_detector", "boxes"), ("infer_detector", "boxes"), ("hard_examples", "boxes"),
                          ("train", "colours"), ("infer", "colours")):
            conn.execute(sa.text("INSERT INTO job (kind, project_id, state, progress, message, payload, result, "
                                 "cancel_requested, resumable, attempts, created_at) VALUES (:k, :p, 'succeeded', "
                                 "1.0, '', '{}', '{}', false, false, 1, CURRENT_TIMESTAMP)"),
                         {"k": kind, "p": pids[pid]})
    before = kinds()
    migrate(command.upgrade, "0005")
    after = kinds()
    assert sorted(after.values()) == ["hard_examples", "infer", "infer", "train", "train"]
    migrate(command.downgrade, "0004")
    assert kinds() == before
    migrate(command.upgrade, "head")
    engine.dispose()
