"""Audits of auto-accepted pre-labels: served by the queue, answered by a person, counted."""

from __future__ import annotations

from sqlmodel import Session, select

from service.crud.annotations import write_version
from service.crud.audit import record_audit
from service.models import Item, ModelVersion, Prediction, Provenance, User
from tests.conftest import Ctx, make_project

AUTO = {"labels": ["cat"], "boxes": [], "polygons": []}


def auto_accept(ctx: Ctx, pid: int, item_ids: list[int], *, audit: bool = True) -> int:
    """What ``infer`` does with ``auto_accept``: a model label plus an audit draw."""
    with Session(ctx.engine) as s:
        mv = ModelVersion(project_id=pid, version=1, status="ready", is_current=True, classes=["cat", "dog"])
        s.add(mv)
        s.flush()
        assert mv.id is not None
        for iid in item_ids:
            item = s.get(Item, iid)
            assert item is not None
            write_version(s, item=item, data=AUTO, provenance=Provenance.model, origin="auto", author=None,
                          model_version_id=mv.id, score=0.99)
            s.add(Prediction(item_id=iid, project_id=pid, model_version_id=mv.id, label="cat", score=0.99,
                             state="auto", audit=audit, data={"labels": ["cat"]}))
        s.commit()
        return mv.id


def items_of(ctx: Ctx, pid: int) -> list[int]:
    with Session(ctx.engine) as s:
        return sorted(int(i) for i in s.exec(select(Item.id).where(Item.project_id == pid)).all() if i is not None)


def test_record_audit_sets_the_verdict_and_the_realised_precision(ctx: Ctx) -> None:
    admin = ctx.user("root", "admin")
    pid = make_project(ctx, admin, n_images=3)["id"]
    a, b, c = items_of(ctx, pid)
    auto_accept(ctx, pid, [a, b])
    with Session(ctx.engine) as s:
        user = s.exec(select(User).where(User.name == "root")).one()
        items = {i: s.get(Item, i) for i in (a, b, c)}
        assert record_audit(s, items[a], {"labels": ["cat"]}, user) == 1  # the person agrees
        assert record_audit(s, items[b], {"labels": ["dog"]}, user) == 1  # the person disagrees
        assert record_audit(s, items[c], {"labels": ["dog"]}, user) == 0  # not under audit
        s.commit()
        assert record_audit(s, items[a], {"labels": ["dog"]}, user) == 0  # only the first answer counts
        got = {p.item_id: p for p in s.exec(select(Prediction).where(Prediction.project_id == pid))}
        assert got[a].audit_correct is True and got[b].audit_correct is False
        assert got[a].decided_by == user.id and got[b].decided_at is not None
    stats = ctx.client.get(f"/api/v1/projects/{pid}/stats", headers=admin).json()
    row = stats["precision"][0]
    assert row["right"] == 1 and row["wrong"] == 1 and row["auto_accepted"] == 2 and row["precision"] == 0.5
    lo, hi = row["interval"]
    assert 0 < lo < 0.5 < hi < 1
    assert stats["queue"]["audit_open"] == 0


def test_queue_serves_audit_items_first(ctx: Ctx) -> None:
    admin = ctx.user("root", "admin")
    pid = make_project(ctx, admin, n_images=4)["id"]
    first = items_of(ctx, pid)[2]
    auto_accept(ctx, pid, [first])
    r = ctx.client.post(f"/api/v1/projects/{pid}/queue/next", headers=admin)
    assert r.status_code == 200 and r.json()["reason"] == "audit" and r.json()["item"]["id"] == first
    assert r.json()["item"]["provenance"] == "model" and r.json()["item"]["annotation"]["labels"] == ["cat"]
    lease = r.json()
    r = ctx.client.post(f"/api/v1/items/{first}/annotations", json={"labels": ["dog"], "lease_id": lease["lease_id"]},
                        headers={**admin, "If-Match": lease["etag"]})
    assert r.status_code == 201, r.text
    hist = ctx.client.get(f"/api/v1/items/{first}/history", headers=admin).json()
    assert [h["provenance"] for h in hist] == ["model", "human"]


def test_a_submitted_label_answers_the_audit(ctx: Ctx) -> None:
    admin = ctx.user("root", "admin")
    pid = make_project(ctx, admin, n_images=4)["id"]
    first = items_of(ctx, pid)[0]
    auto_accept(ctx, pid, [first])
    lease = ctx.client.post(f"/api/v1/projects/{pid}/queue/next", headers=admin).json()
    assert lease["reason"] == "audit"
    r = ctx.client.post(f"/api/v1/items/{first}/annotations", json={"labels": ["cat"], "lease_id": lease["lease_id"]},
                        headers={**admin, "If-Match": lease["etag"]})
    assert r.status_code == 201, r.text
    with Session(ctx.engine) as s:
        p = s.exec(select(Prediction).where(Prediction.item_id == first)).one()
        assert p.audit_correct is True
    nxt = ctx.client.post(f"/api/v1/projects/{pid}/queue/next", headers=admin).json()
    assert nxt["reason"] != "audit" and nxt["item"]["id"] != first  # the audit is over
    stats = ctx.client.get(f"/api/v1/projects/{pid}/stats", headers=admin).json()
    assert stats["precision"][0]["right"] == 1 and stats["precision"][0]["decided"] == 1
