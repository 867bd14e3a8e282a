"""GET /projects/{id}/activity: labels over time, people's pace, agreement and model versions,
checked number by number on saves with known timestamps (SQLite, and PostgreSQL when set)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlmodel import Session, select

from service.crud.annotations import write_version
from service.models import Item, Job, JobState, ModelVersion, Prediction, Project, Provenance, Role, User
from tests.conftest import Ctx, make_project

T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)  # project created; day 1 is 2026-01-05, day 2 the 6th


def at(day: int, hh: int, mm: int, ss: int = 0) -> datetime:
    return datetime(2026, 1, 4 + day, hh, mm, ss, tzinfo=UTC)


class Builder:
    """Writes a project's history with set timestamps (``engine``: the app's)."""

    def __init__(self, engine: Any, pid: int) -> None:
        self.engine, self.pid = engine, pid
        with Session(engine) as s:
            self.items = list(s.exec(select(Item.id).where(Item.project_id == pid).order_by(Item.id)).all())
            self.users = {u.name: u.id for u in s.exec(select(User)).all()}

    def save(self, n: int, who: str | None, labels: list[str], when: datetime, *,
             provenance: Provenance = Provenance.human, origin: str = "queue:random",
             mv: int | None = None) -> None:
        """Item ``n``'s next version, written as the service writes one, saved at ``when``."""
        with Session(self.engine) as s:
            item = s.get(Item, self.items[n])
            user = s.get(User, self.users[who]) if who else None
            assert item is not None
            ann = write_version(s, item=item, data={"labels": labels, "boxes": [], "polygons": []},
                                provenance=provenance, origin=origin, author=user, model_version_id=mv)
            ann.created_at = when
            s.add(ann)
            s.commit()

    def version(self, version: int, when: datetime) -> int:
        with Session(self.engine) as s:
            mv = ModelVersion(project_id=self.pid, version=version, status="ready", is_current=False,
                              classes=["cat", "dog"], created_at=when)
            s.add(mv)
            s.commit()
            assert mv.id is not None
            return mv.id

    def predict(self, mv: int, n: int, state: str, audit_correct: bool | None = None) -> None:
        with Session(self.engine) as s:
            s.add(Prediction(item_id=self.items[n], project_id=self.pid, model_version_id=mv, label="cat",
                             score=0.9, state=state, audit=audit_correct is not None, audit_correct=audit_correct,
                             data={"labels": ["cat"]}))
            s.commit()

    def infer_job(self, mv: int, result: dict[str, Any], state: JobState = JobState.succeeded) -> None:
        with Session(self.engine) as s:
            s.add(Job(project_id=self.pid, kind="infer", state=state, payload={"model_version_id": mv},
                      result={"model_version_id": mv, **result}))
            s.commit()


def setup_project(c: Ctx, *, created: datetime = T0, n_images: int = 16) -> tuple[dict[str, str], int, Builder]:
    boss = c.user("boss", "manager")
    c.user("ann")
    c.user("bob")
    pid = make_project(c, boss, n_images=n_images)["id"]
    for name in ("ann", "bob"):
        c.member(pid, name, "labeler")
    with Session(c.engine) as s:
        p = s.get(Project, pid)
        assert p is not None
        p.created_at = created
        s.add(p)
        s.commit()
    return boss, pid, Builder(c.engine, pid)


def activity(c: Ctx, pid: int, headers: dict[str, str]) -> dict[str, Any]:
    r = c.client.get(f"/api/v1/projects/{pid}/activity", headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def when(s: str) -> datetime:
    return datetime.fromisoformat(s)


def seed_history(b: Builder, cat: str = "cat", dog: str = "dog") -> None:
    """Two days of a team's work (users ``ann``, ``bob`` and ``boss`` must exist, 16 images):
    the numbers :func:`test_activity_numbers` checks."""
    # day 1: ann labels 7 images; gaps 30, 60, 30 s, then 28 min (a new session: ignored),
    # 30 min 10 s (ignored), 45 s
    for n, (label, t) in enumerate([(cat, at(1, 9, 0, 0)), (cat, at(1, 9, 0, 30)), (dog, at(1, 9, 1, 30)),
                                    (cat, at(1, 9, 2, 0)), (dog, at(1, 9, 30, 0)), (cat, at(1, 10, 0, 10)),
                                    (dog, at(1, 10, 0, 55))]):
        b.save(n, "ann", [label], t)
    b.save(11, "boss", [dog], at(1, 11, 0), provenance=Provenance.imported, origin="import")  # not counted
    v1 = b.version(1, at(1, 12, 0))
    v2 = b.version(2, at(2, 11, 0))
    b.version(3, at(2, 16, 0))
    # day 2: model v2 auto-accepts two images; bob labels three images ann labelled (agrees on the
    # first and third, not the second), then confirms v1's proposal on item 8: gaps 20, 30, 20 s
    b.save(9, None, [cat], at(2, 12, 0), provenance=Provenance.model, origin="auto", mv=v2)
    b.save(10, None, [cat], at(2, 12, 0, 5), provenance=Provenance.model, origin="auto", mv=v2)
    b.save(0, "bob", [cat], at(2, 14, 0, 0))
    b.save(1, "bob", [dog], at(2, 14, 0, 20))
    b.save(2, "bob", [dog], at(2, 14, 0, 50))
    b.save(8, "bob", [cat], at(2, 14, 1, 10), provenance=Provenance.model_confirmed, origin="pending", mv=v1)
    b.save(2, "bob", [dog], at(2, 14, 5, 0), origin="undo")  # an undo is no label (nor a save)
    b.save(0, "ann", [dog], at(2, 15, 0, 0), origin="edit")  # ann changes her mind: her first label stays
    # v1: an inference job (pool 10, 3 proposed + 1 auto-accepted); one proposal confirmed, one corrected
    b.infer_job(v1, {"pool": 10, "proposed": 3, "auto_accepted": 1, "coverage": 0.4})
    b.infer_job(v1, {"pool": 99, "proposed": 99, "auto_accepted": 0}, state=JobState.failed)  # not counted
    b.predict(v1, 8, "confirmed")
    b.predict(v1, 7, "corrected")
    # v2: no job; its predictions: 2 auto (one audited right), 1 proposed, 2 none, 1 hold-out
    b.predict(v2, 9, "auto", audit_correct=True)
    b.predict(v2, 10, "auto")
    b.predict(v2, 12, "proposed")
    b.predict(v2, 13, "none")
    b.predict(v2, 14, "none")
    b.predict(v2, 15, "holdout")


def test_activity_numbers(ctx: Ctx) -> None:
    boss, pid, b = setup_project(ctx)
    seed_history(b)
    a = activity(ctx, pid, boss)
    assert a["project_id"] == pid
    assert a["bucket"] == "day"
    assert a["session_gap_seconds"] == 600

    # labels over time: every day from the project's first to today, oldest first
    days = [when(r["start"]) for r in a["labels"]]
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    assert days[0] == datetime(2026, 1, 5, tzinfo=UTC)
    assert days[-1] == today
    assert days == [days[0] + timedelta(days=i) for i in range(len(days))]
    by_day = {when(r["start"]): {k: r[k] for k in ("human", "confirmed", "auto_accepted", "total")}
              for r in a["labels"]}
    assert by_day.pop(datetime(2026, 1, 5, tzinfo=UTC)) == {"human": 7, "confirmed": 0, "auto_accepted": 0,
                                                            "total": 7}
    assert by_day.pop(datetime(2026, 1, 6, tzinfo=UTC)) == {"human": 4, "confirmed": 1, "auto_accepted": 2,
                                                            "total": 7}
    assert all(v["total"] == 0 for v in by_day.values())
    assert a["totals"] == {"human": 11, "confirmed": 1, "auto_accepted": 2, "total": 14}

    # people: ann 8 labels in 3 clock hours, median of 30, 30, 45, 60 s; bob 4 in 1, median of 20, 20, 30
    people = {p["name"]: p for p in a["people"]}
    assert [p["name"] for p in a["people"]] == ["ann", "bob"]
    assert set(people) == {"ann", "bob"}
    ann, bob = people["ann"], people["bob"]
    assert (ann["labels"], ann["active_hours"], ann["timed_saves"]) == (8, 3, 4)
    assert ann["labels_per_hour"] == pytest.approx(8 / 3)
    assert ann["median_seconds"] == pytest.approx(37.5, abs=1e-3)
    assert (bob["labels"], bob["active_hours"], bob["timed_saves"]) == (4, 1, 3)
    assert bob["labels_per_hour"] == pytest.approx(4.0)
    assert bob["median_seconds"] == pytest.approx(20.0, abs=1e-3)

    # agreement: items 0, 1, 2 have two people's labels; first labels agree on 0 and 2
    assert a["agreement"]["images"] == 3
    assert a["agreement"]["agreeing"] == 2
    assert a["agreement"]["share"] == pytest.approx(2 / 3)

    # model versions, oldest first
    [r1, r2, r3] = a["versions"]
    assert (r1["version"], when(r1["created_at"])) == (1, at(1, 12, 0))
    assert (r1["pool"], r1["proposed"], r1["coverage_from"]) == (10, 4, "inference")
    assert r1["coverage"] == pytest.approx(0.4)
    assert (r1["decided"], r1["right"]) == (2, 1)
    assert r1["precision"] == pytest.approx(0.5)
    assert (r2["version"], when(r2["created_at"])) == (2, at(2, 11, 0))
    assert (r2["pool"], r2["proposed"], r2["coverage_from"]) == (5, 3, "predictions")
    assert r2["coverage"] == pytest.approx(0.6)
    assert (r2["decided"], r2["right"], r2["precision"]) == (1, 1, 1.0)
    assert (r3["version"], r3["pool"], r3["coverage"], r3["coverage_from"]) == (3, 0, None, None)
    assert (r3["decided"], r3["precision"]) == (0, None)


def test_young_project_counts_per_hour(ctx: Ctx) -> None:
    now = datetime.now(UTC)
    boss, pid, b = setup_project(ctx, created=now - timedelta(hours=5))
    hour = now.replace(minute=0, second=0, microsecond=0)
    t1 = hour - timedelta(hours=3) + timedelta(minutes=10)
    b.save(0, "ann", ["cat"], t1)
    b.save(1, "ann", ["dog"], t1 + timedelta(seconds=12))
    b.save(2, "bob", ["cat"], hour - timedelta(hours=1) + timedelta(minutes=5), provenance=Provenance.model_confirmed,
           origin="pending")
    a = activity(ctx, pid, boss)
    assert a["bucket"] == "hour"
    starts = [when(r["start"]) for r in a["labels"]]
    first = (now - timedelta(hours=5)).replace(minute=0, second=0, microsecond=0)
    assert starts == [first + timedelta(hours=i) for i in range(6)]
    counts = {when(r["start"]): (r["human"], r["confirmed"], r["auto_accepted"]) for r in a["labels"]}
    assert counts.pop(hour - timedelta(hours=3)) == (2, 0, 0)
    assert counts.pop(hour - timedelta(hours=1)) == (0, 1, 0)
    assert set(counts.values()) == {(0, 0, 0)}
    people = {p["name"]: p for p in a["people"]}
    assert (people["ann"]["labels"], people["ann"]["active_hours"], people["ann"]["labels_per_hour"]) == (2, 1, 2.0)
    assert people["ann"]["median_seconds"] == pytest.approx(12.0, abs=1e-3)
    assert (people["bob"]["labels"], people["bob"]["median_seconds"], people["bob"]["timed_saves"]) == (1, None, 0)
    assert a["agreement"] == {"images": 0, "agreeing": 0, "share": None}


def test_empty_project(ctx: Ctx) -> None:
    boss, pid, _ = setup_project(ctx, created=datetime.now(UTC), n_images=2)
    a = activity(ctx, pid, boss)
    assert a["bucket"] == "hour"
    assert len(a["labels"]) == 1 and a["labels"][0]["total"] == 0
    assert a["totals"] == {"human": 0, "confirmed": 0, "auto_accepted": 0, "total": 0}
    assert a["people"] == [] and a["versions"] == []
    assert a["agreement"] == {"images": 0, "agreeing": 0, "share": None}


def test_activity_is_for_managers(ctx: Ctx) -> None:
    boss, pid, _ = setup_project(ctx, n_images=1)
    ann = ctx.user("ann2")
    ctx.member(pid, "ann2", Role.labeler.value)
    reviewer = ctx.user("rita")
    ctx.member(pid, "rita", Role.reviewer.value)
    stranger = ctx.user("zed")
    assert ctx.client.get(f"/api/v1/projects/{pid}/activity", headers=ann).status_code == 403
    assert ctx.client.get(f"/api/v1/projects/{pid}/activity", headers=reviewer).status_code == 403
    assert ctx.client.get(f"/api/v1/projects/{pid}/activity", headers=stranger).status_code == 404
    assert ctx.client.get(f"/api/v1/projects/{pid}/activity").status_code == 401
    admin = ctx.user("root", "admin")
    assert ctx.client.get(f"/api/v1/projects/{pid}/activity", headers=admin).status_code == 200
    assert ctx.client.get("/api/v1/projects/999999/activity", headers=boss).status_code == 404
