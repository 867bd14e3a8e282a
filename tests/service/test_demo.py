"""``labelloop demo``: a project on which the loop has visibly run, built with the real
jobs and the bundled weights (nothing downloads), and reused on a second run."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, col, func, select

from service.config import Settings
from service.db import engine_from_settings, upgrade_schema
from service.demo import LABELLER, NAME, DemoPlan, ensure_demo
from service.main import create_app
from service.models import Annotation, Item, Job, ModelVersion, Project, Provenance, User
from service.security import issue_token
from tests.conftest import make_settings


@pytest.fixture
def backend() -> str:
    """SQLite only: the demo is what a first ``labelloop demo`` makes (a minute of CPU)."""
    return "sqlite"


@pytest.fixture
def built(settings: Settings) -> Iterator[tuple[Settings, list[str]]]:
    engine = engine_from_settings(settings)
    upgrade_schema(engine)
    lines: list[str] = []
    with Session(engine) as s:
        name, password = ensure_demo(s, settings, say=lines.append)
    assert name == "admin" and password
    engine.dispose()
    yield settings, lines


def _counts(settings: Settings) -> dict[str, int]:
    engine = engine_from_settings(settings)
    with Session(engine) as s:
        out = {t.__name__: int(s.exec(select(func.count()).select_from(t)).one())
               for t in (Item, Annotation, Job, ModelVersion, Project, User)}
    engine.dispose()
    return out


def test_demo_shows_the_loop_and_is_reused(built: tuple[Settings, list[str]]) -> None:
    settings, lines = built
    assert any(line.startswith("demo: training model v2") for line in lines), lines
    assert lines[-1].startswith("demo: built in"), lines
    plan = DemoPlan()
    app = create_app(settings, background=False)
    with TestClient(app) as client, Session(app.state.engine) as s:
        admin = s.exec(select(User).where(User.name == "admin")).one()
        _, token, _ = issue_token(s, admin, name="test")
        s.commit()
        headers = {"Authorization": f"Bearer {token}"}
        project = s.exec(select(Project).where(Project.name == NAME)).one()
        pid = project.id
        s.commit()  # no read transaction open across requests (SQLite begins each one IMMEDIATE)

        # Pending: proposals of the current model, which holds a certificate
        pending = client.get(f"/api/v1/projects/{pid}/pending", headers=headers)
        assert pending.status_code == 200, pending.text
        assert pending.json()["count"] > 0
        versions = client.get(f"/api/v1/projects/{pid}/model-versions", headers=headers).json()
        assert len(versions) >= 2 and all(v["status"] == "ready" for v in versions)
        current = next(v for v in versions if v["is_current"])
        assert current["version"] == len(plan.rounds)
        mv = s.get(ModelVersion, current["id"])
        assert mv is not None and mv.thresholds["pooled"]["threshold"] is not None, mv.thresholds
        s.commit()
        assert {p["model_version_id"] for p in pending.json()["data"]} == {current["id"]}

        # Grids: pages over the batch that arrived after the last model
        grids = client.get(f"/api/v1/projects/{pid}/grids", params={"size": 9}, headers=headers)
        assert grids.status_code == 200, grids.text
        assert grids.json()["count"] >= 1 and len(grids.json()["data"][0]["item_ids"]) >= 2

        # Review: open label-error flags, and most of them on the imports that are wrong on purpose
        review = client.get(f"/api/v1/projects/{pid}/review", params={"kind": "label error"}, headers=headers)
        assert review.status_code == 200, review.text
        flags = review.json()["data"]
        assert flags, review.json()
        first_origin = {iid: origin for iid, origin in s.exec(
            select(Annotation.item_id, Annotation.origin).where(Annotation.version == 1)).all()}
        assert sum(first_origin[f["item_id"]] == "import" for f in flags) >= len(flags) / 2, flags

        # Labels: imports (provenance import) and the labeller's answers to the real queue
        provenances = dict(s.exec(select(Annotation.provenance, func.count()).group_by(
            col(Annotation.provenance))).all())
        assert provenances[Provenance.imported] == plan.n_imported
        labeller = s.exec(select(User).where(User.name == LABELLER)).one()
        queue_labels = s.exec(select(Annotation).where(Annotation.author_id == labeller.id)).all()
        assert len(queue_labels) == sum(plan.rounds)
        assert all(a.origin.startswith("queue:") and a.provenance == Provenance.human for a in queue_labels)

        # the hold-out is exactly what the queue's random stream drew: no import, no hand-picking
        held = s.exec(select(Item).where(Item.project_id == pid, col(Item.is_holdout).is_(True))).all()
        drawn = {a.item_id for a in queue_labels if a.origin == "queue:holdout" and a.version == 1}
        assert {i.id for i in held} == drawn
        # at the defaults the first 300 hold-out labels are drawn at 1.5 x 20% = 30% of queue draws
        assert 0.2 * len(queue_labels) <= len(held) <= 0.4 * len(queue_labels)
        assert mv.n_holdout == len([i for i in held if i.holdout_taken_by is None])

    before = _counts(settings)
    engine = engine_from_settings(settings)
    upgrade_schema(engine)
    again: list[str] = []
    with Session(engine) as s:
        name, password = ensure_demo(s, settings, say=again.append)
    engine.dispose()
    assert (name, password) == ("admin", None)
    assert again and again[0].startswith("demo: reusing"), again
    assert _counts(settings) == before


def test_empty_demo_keeps_the_small_unlabelled_project(tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(tmp_path)
    engine = engine_from_settings(settings)
    upgrade_schema(engine)
    with Session(engine) as s:
        ensure_demo(s, settings, empty=True)
        ensure_demo(s, settings, empty=True)
        project = s.exec(select(Project).where(Project.name == NAME)).one()
        assert s.exec(select(func.count()).select_from(Item).where(Item.project_id == project.id)).one() == 60
        assert s.exec(select(func.count()).select_from(Annotation)).one() == 0
        assert s.exec(select(func.count()).select_from(Job)).one() == 0
    engine.dispose()
