"""The data browser (issue #25): items filtered by status, class, provenance, model version,
score, labeller, flag; paged with a count; one item's timeline; reject to the queue; export
of the selection. SQLite always, PostgreSQL where configured (the class filter reads JSON
with each database's own functions)."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest
from sqlmodel import Session, select

from service.crud.annotations import write_version
from service.models import (
    Item,
    ItemStatus,
    ModelVersion,
    Prediction,
    Provenance,
    ReviewFlag,
    User,
)
from tests.conftest import Ctx, make_project

API = "/api/v1"


def _items(ctx: Ctx, headers: dict[str, str], pid: int, **params: Any) -> dict:
    r = ctx.client.get(f"{API}/projects/{pid}/items", params=params, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def _ids(out: dict) -> list[int]:
    return [row["id"] for row in out["data"]]


def _label(ctx: Ctx, headers: dict[str, str], item_id: int, labels: list[str]) -> None:
    etag = ctx.client.get(f"{API}/items/{item_id}", headers=headers).headers["ETag"]
    r = ctx.client.post(f"{API}/items/{item_id}/annotations", json={"labels": labels},
                        headers={**headers, "If-Match": etag})
    assert r.status_code == 201, r.text


@pytest.fixture
def world(ctx: Ctx) -> dict[str, Any]:
    """Seven items: 0 cat by admin, 1 dog by ann (open label-error flag), 2 cat imported,
    3 proposed cat (model v1, 0.97), 4 auto-labelled dog (model v1, 0.99, hold-out), 5 and 6
    unlabelled."""
    admin = ctx.user("admin", "admin")
    ann = ctx.user("ann", "labeler")
    p = make_project(ctx, admin, name="browse", classes=["cat", "dog"], n_images=7)
    pid = p["id"]
    ctx.member(pid, "ann", "labeler")
    ids = _ids(_items(ctx, admin, pid))
    _label(ctx, admin, ids[0], ["cat"])
    _label(ctx, ann, ids[1], ["dog"])
    with Session(ctx.engine) as s:
        mv = ModelVersion(project_id=pid, version=1, status="ready", classes=["cat", "dog"], is_current=True)
        s.add(mv)
        s.flush()
        items = {i.id: i for i in s.exec(select(Item).where(Item.project_id == pid)).all()}
        write_version(s, item=items[ids[2]], data={"labels": ["cat"], "boxes": [], "polygons": []},
                      provenance=Provenance.imported, origin="import", author=None)
        s.add(Prediction(item_id=ids[3], project_id=pid, model_version_id=mv.id, label="cat", score=0.97,
                         data={"labels": ["cat"]}, state="proposed"))
        items[ids[3]].status = ItemStatus.proposed
        s.add(items[ids[3]])
        write_version(s, item=items[ids[4]], data={"labels": ["dog"], "boxes": [], "polygons": []},
                      provenance=Provenance.model, origin="auto", author=None, model_version_id=mv.id, score=0.99)
        items[ids[4]].is_holdout = True
        s.add(ReviewFlag(project_id=pid, item_id=ids[1], model_version_id=mv.id, kind="label error", score=0.8))
        s.commit()
        ann_id = s.exec(select(User.id).where(User.name == "ann")).one()
        mv_id = mv.id
    return {"pid": pid, "ids": ids, "admin": admin, "ann": ann, "ann_id": ann_id, "mv_id": mv_id}


def test_each_filter_selects_its_items(ctx: Ctx, world: dict[str, Any]) -> None:
    pid, ids, admin = world["pid"], world["ids"], world["admin"]
    cases: list[tuple[dict[str, Any], list[int]]] = [
        ({}, ids),
        ({"status": "labelled"}, [ids[0], ids[1], ids[2], ids[4]]),
        ({"status": "proposed"}, [ids[3]]),
        ({"status": "unlabelled"}, [ids[5], ids[6]]),
        ({"label": "cat"}, [ids[0], ids[2]]),
        ({"label": "dog"}, [ids[1], ids[4]]),
        ({"label": "cow"}, []),
        ({"provenance": "human"}, [ids[0], ids[1]]),
        ({"provenance": "import"}, [ids[2]]),
        ({"provenance": "model"}, [ids[4]]),
        ({"model_version_id": world["mv_id"]}, [ids[3], ids[4]]),
        ({"score_min": 0.98}, [ids[4]]),
        ({"score_min": 0.9, "score_max": 0.98}, [ids[3]]),
        ({"labeller_id": world["ann_id"]}, [ids[1]]),
        ({"flag": "any"}, [ids[1]]),
        ({"flag": "label error"}, [ids[1]]),
        ({"flag": "unstable"}, []),
        ({"holdout": "true"}, [ids[4]]),
        ({"label": "dog", "provenance": "human"}, [ids[1]]),
    ]
    for params, want in cases:
        out = _items(ctx, admin, pid, **params)
        assert _ids(out) == want, params
        assert out["count"] == len(want), params


def test_rows_say_who_or_what_made_the_labels(ctx: Ctx, world: dict[str, Any]) -> None:
    ids = world["ids"]
    rows = {r["id"]: r for r in _items(ctx, world["admin"], world["pid"])["data"]}
    assert rows[ids[0]]["labels"] == ["cat"] and rows[ids[0]]["labeller"] == "admin"
    assert rows[ids[0]]["provenance"] == "human" and rows[ids[0]]["model_version"] is None
    assert rows[ids[1]]["labeller"] == "ann" and rows[ids[1]]["flag"] == "label error"
    assert rows[ids[2]]["provenance"] == "import" and rows[ids[2]]["labeller"] is None
    proposed = rows[ids[3]]
    assert proposed["status"] == "proposed" and proposed["labels"] == [] and proposed["proposal"] == "cat"
    assert proposed["model_version"] == 1 and proposed["score"] == pytest.approx(0.97)
    auto = rows[ids[4]]
    assert auto["provenance"] == "model" and auto["model_version"] == 1 and auto["score"] == pytest.approx(0.99)
    assert rows[ids[5]]["labels"] == [] and rows[ids[5]]["provenance"] is None
    assert rows[ids[5]]["thumbnail_url"] == f"/api/v1/items/{ids[5]}/thumbnail"
    assert ctx.client.get(rows[ids[5]]["thumbnail_url"], headers=world["admin"]).status_code == 200


def test_pages_by_offset_and_cursor_with_the_full_count(ctx: Ctx, world: dict[str, Any]) -> None:
    pid, ids, admin = world["pid"], world["ids"], world["admin"]
    page = _items(ctx, admin, pid, limit=3, offset=3)
    assert _ids(page) == ids[3:6] and page["count"] == 7
    first = _items(ctx, admin, pid, limit=4)
    assert _ids(first) == ids[:4] and first["next_cursor"]
    rest = _items(ctx, admin, pid, limit=4, cursor=first["next_cursor"])
    assert _ids(rest) == ids[4:] and rest["next_cursor"] is None
    labelled = _items(ctx, admin, pid, status="labelled", limit=2)
    assert len(labelled["data"]) == 2 and labelled["count"] == 4


def test_bad_filters_are_422(ctx: Ctx, world: dict[str, Any]) -> None:
    base = f"{API}/projects/{world['pid']}/items"
    for params in ({"score_min": 0.9, "score_max": 0.1}, {"status": "done"}, {"provenance": "robot"},
                   {"offset": -1}, {"cursor": "nonsense"}, {"label": "c\x00t"}, {"flag": "\x00"}):
        assert ctx.client.get(base, params=params, headers=world["admin"]).status_code == 422, params


def test_class_filter_reads_boxes_and_polygons(ctx: Ctx) -> None:
    admin = ctx.user("admin", "admin")
    pid = make_project(ctx, admin, name="det", classes=["car", "bus"], task="detection", n_images=3)["id"]
    ids = _ids(_items(ctx, admin, pid))
    for item_id, body in ((ids[0], {"boxes": [{"label": "car", "bbox": [1, 1, 5, 5]}]}),
                          (ids[1], {"polygons": [{"label": "bus", "points": [1, 1, 8, 1, 8, 8]}]})):
        r = ctx.client.post(f"{API}/items/{item_id}/annotations", json=body, headers=admin)
        assert r.status_code == 201, r.text
    assert _ids(_items(ctx, admin, pid, label="car")) == [ids[0]]
    assert _ids(_items(ctx, admin, pid, label="bus")) == [ids[1]]
    assert _items(ctx, admin, pid, label="bus")["data"][0]["labels"] == ["bus"]


def test_edit_then_reject_to_the_queue_keeps_the_history(ctx: Ctx, world: dict[str, Any]) -> None:
    pid, ids, admin, ann = world["pid"], world["ids"], world["admin"], world["ann"]
    item = ids[1]
    _label(ctx, admin, item, ["cat"])  # the browser's edit is the annotation route
    admin_id = ctx.client.get(f"{API}/auth/me", headers=admin).json()["id"]
    row = _items(ctx, admin, pid, label="cat", labeller_id=admin_id)["data"]
    assert [r["id"] for r in row] == [ids[0], item] and row[1]["labeller"] == "admin"
    reviewer = ctx.user("rev", "labeler")
    ctx.member(pid, "rev", "reviewer")
    assert ctx.client.post(f"{API}/items/{item}/reject", headers={**ann, "If-Match": "*"}).status_code == 403
    assert ctx.client.post(f"{API}/items/{item}/reject", headers=reviewer).status_code == 428
    assert ctx.client.post(f"{API}/items/{item}/reject", headers={**reviewer, "If-Match": '"v1"'}).status_code == 412
    etag = ctx.client.get(f"{API}/items/{item}", headers=admin).headers["ETag"]
    r = ctx.client.post(f"{API}/items/{item}/reject", json={"reason": "blurry"},
                        headers={**reviewer, "If-Match": etag})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "unlabelled" and r.json()["labels"] == [] and r.headers["ETag"] != etag
    assert ctx.client.post(f"{API}/items/{item}/reject", headers={**reviewer, "If-Match": "*"}).status_code == 409
    history = ctx.client.get(f"{API}/items/{item}/history", headers=admin).json()
    assert [h["data"]["labels"] for h in history] == [["dog"], ["cat"], []]
    assert history[-1]["origin"] == "reject"
    tl = ctx.client.get(f"{API}/items/{item}/timeline", headers=ann)
    assert tl.status_code == 200, tl.text
    entries = tl.json()["entries"]
    assert [e["labels"] for e in entries if e["kind"] == "version"] == [["dog"], ["cat"], []]
    assert [(e["user"], e["what"]) for e in entries if e["kind"] == "version"] == [
        ("ann", "edit"), ("admin", "edit"), ("rev", "reject")]
    rejects = [e for e in entries if e["kind"] == "audit"]
    assert len(rejects) == 1 and rejects[0]["what"] == "item.reject" and rejects[0]["user"] == "rev"
    assert rejects[0]["detail"]["labels"] == ["cat"] and rejects[0]["detail"]["reason"] == "blurry"
    assert [e["what"] for e in entries if e["kind"] == "flag"] == ["label error: open"]
    assert tl.json()["item"]["status"] == "unlabelled" and tl.json()["etag"] == tl.headers["ETag"]


def test_reject_closes_the_proposal_and_leaves_the_holdout(ctx: Ctx, world: dict[str, Any]) -> None:
    ids, admin = world["ids"], world["admin"]
    r = ctx.client.post(f"{API}/items/{ids[3]}/reject", headers=admin)  # version 0: no If-Match needed
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "unlabelled" and r.json()["proposal"] is None
    r = ctx.client.post(f"{API}/items/{ids[4]}/reject", headers={**admin, "If-Match": "*"})
    assert r.status_code == 200 and r.json()["is_holdout"] is False
    with Session(ctx.engine) as s:
        states = s.exec(select(Prediction.state).where(Prediction.item_id == ids[3])).all()
        assert states == ["superseded"]
    pending = ctx.client.get(f"{API}/projects/{world['pid']}/items", params={"status": "proposed"}, headers=admin)
    assert pending.json()["count"] == 0
    tl = ctx.client.get(f"{API}/items/{ids[3]}/timeline", headers=admin).json()["entries"]
    assert [(e["kind"], e["what"], e["model_version"]) for e in tl if e["kind"] == "proposal"] == [
        ("proposal", "superseded", 1)]


def test_export_of_the_selection(ctx: Ctx, world: dict[str, Any]) -> None:
    pid, admin, ann = world["pid"], world["admin"], world["ann"]
    url = f"{API}/projects/{pid}/items/export"
    r = ctx.client.get(url, params={"format": "csv", "label": "cat"}, headers=admin)
    assert r.status_code == 200, r.text
    rows = list(csv.DictReader(io.StringIO(r.text)))
    files = {it["id"]: it["file_name"] for it in _items(ctx, admin, pid)["data"]}
    want = {files[world["ids"][0]], files[world["ids"][2]]}
    assert {row[next(k for k in row if "file" in k)] for row in rows} == want
    every = ctx.client.get(f"{API}/projects/{pid}/export", params={"format": "csv"}, headers=admin)
    assert len(list(csv.DictReader(io.StringIO(every.text)))) == 4  # the unfiltered export is unchanged
    human = ctx.client.get(url, params={"format": "csv", "provenance": "human"}, headers=admin)
    assert len(list(csv.DictReader(io.StringIO(human.text)))) == 2
    assert ctx.client.get(url, params={"format": "csv"}, headers=ann).status_code == 403
    assert ctx.client.get(url, params={"format": "nope"}, headers=admin).status_code == 422


def test_other_projects_items_are_404(ctx: Ctx, world: dict[str, Any]) -> None:
    other = ctx.user("bob", "manager")
    theirs = make_project(ctx, other, name="bobs", n_images=1)
    item = world["ids"][0]
    assert ctx.client.get(f"{API}/projects/{world['pid']}/items", headers=other).status_code == 404
    assert ctx.client.get(f"{API}/projects/{world['pid']}/items/export", params={"format": "csv"},
                          headers=other).status_code == 404
    assert ctx.client.get(f"{API}/items/{item}/timeline", headers=other).status_code == 404
    assert ctx.client.post(f"{API}/items/{item}/reject", headers={**other, "If-Match": "*"}).status_code == 404
    # a manager's own project does not open another project's items
    own = _items(ctx, other, theirs["id"])
    assert own["count"] == 1 and item not in _ids(own)
