"""Undo in Pending and Grids: the last confirm, correction, rejection or page confirm comes
back through the annotation versions (a new version, history kept), the proposal or the
page is open again, and an item changed since is left alone."""

from __future__ import annotations

from sqlmodel import Session, col, select

from service.models import Annotation, Item, ItemStatus, ModelVersion, Prediction
from tests.conftest import Ctx, make_project
from tests.factories import cluster_job


def _setup(ctx: Ctx, n: int = 6) -> tuple[int, dict[str, str], list[int]]:
    admin = ctx.user("boss", "admin")
    pid = make_project(ctx, admin, classes=["cat", "dog"], n_images=n)["id"]
    with Session(ctx.engine) as s:
        ids = [i for i in s.exec(select(Item.id).where(Item.project_id == pid).order_by(col(Item.id))).all()]
    return pid, admin, [int(i) for i in ids if i is not None]


def _propose(ctx: Ctx, pid: int, items: list[int], label: str = "cat") -> list[int]:
    with Session(ctx.engine) as s:
        mv = ModelVersion(project_id=pid, version=1, status="ready", is_current=True, classes=["cat", "dog"])
        s.add(mv)
        s.flush()
        assert mv.id is not None
        preds = []
        for k, iid in enumerate(items):
            p = Prediction(item_id=iid, project_id=pid, model_version_id=mv.id, label=label, score=0.9 - k / 100,
                           state="proposed", data={"labels": [label]})
            s.add(p)
            item = s.get(Item, iid)
            assert item is not None
            item.status = ItemStatus.proposed
            s.add(item)
            preds.append(p)
        s.commit()
        return [int(p.id or 0) for p in preds]


def _pending_ids(ctx: Ctx, pid: int, headers: dict[str, str]) -> set[int]:
    r = ctx.client.get(f"/api/v1/projects/{pid}/pending", headers=headers)
    assert r.status_code == 200, r.text
    return {p["prediction_id"] for p in r.json()["data"]}


def _state(ctx: Ctx, iid: int) -> tuple[str, list[tuple[str, list[str]]]]:
    """The item's status and its versions (origin, labels), oldest first."""
    with Session(ctx.engine) as s:
        item = s.get(Item, iid)
        assert item is not None
        anns = s.exec(select(Annotation).where(Annotation.item_id == iid).order_by(col(Annotation.version))).all()
        return item.status.value, [(a.origin, list(a.data.get("labels", []))) for a in anns]


def _post(ctx: Ctx, path: str, body: dict, headers: dict[str, str], code: int = 200) -> dict:
    r = ctx.client.post(f"/api/v1{path}", json=body, headers=headers)
    assert r.status_code == code, r.text
    return r.json()


def test_undo_confirm_correct_and_reject_in_pending(ctx: Ctx) -> None:
    pid, admin, items = _setup(ctx)
    preds = _propose(ctx, pid, items[:5])
    # confirm two at once (a page confirm), then undo both
    _post(ctx, f"/projects/{pid}/pending/confirm", {"ids": preds[:2]}, admin)
    assert _state(ctx, items[0]) == ("labelled", [("pending", ["cat"])])
    out = _post(ctx, f"/projects/{pid}/pending/undo", {"ids": preds[:2]}, admin)
    assert out == {"done": 2, "item_ids": items[:2]}
    assert _state(ctx, items[0]) == ("proposed", [("pending", ["cat"]), ("undo", [])])
    assert set(preds[:2]) <= _pending_ids(ctx, pid, admin)
    stats = ctx.client.get(f"/api/v1/projects/{pid}/stats", headers=admin)
    if stats.status_code == 200 and "pending" in stats.json():
        assert stats.json()["pending"] == len(_pending_ids(ctx, pid, admin))
    # a correction: a human label, undone
    _post(ctx, f"/projects/{pid}/pending/correct", {"id": preds[2], "labels": ["dog"]}, admin)
    assert _state(ctx, items[2])[1][-1] == ("pending", ["dog"])
    _post(ctx, f"/projects/{pid}/pending/undo", {"ids": [preds[2]]}, admin)
    assert _state(ctx, items[2]) == ("proposed", [("pending", ["dog"]), ("undo", [])])
    assert preds[2] in _pending_ids(ctx, pid, admin)
    # a rejection: the proposal is open again, the image out of the queue
    _post(ctx, f"/projects/{pid}/pending/reject", {"ids": [preds[3]]}, admin)
    assert _state(ctx, items[3])[0] == "unlabelled" and preds[3] not in _pending_ids(ctx, pid, admin)
    _post(ctx, f"/projects/{pid}/pending/undo", {"ids": [preds[3]]}, admin)
    assert _state(ctx, items[3]) == ("proposed", [])
    assert preds[3] in _pending_ids(ctx, pid, admin)
    # an undone proposal can be decided again
    _post(ctx, f"/projects/{pid}/pending/confirm", {"ids": [preds[0]]}, admin)
    assert _state(ctx, items[0])[0] == "labelled"
    # nothing left to undo on an open proposal
    assert ctx.client.post(f"/api/v1/projects/{pid}/pending/undo", json={"ids": [preds[1]]},
                           headers=admin).status_code == 409


def test_pending_undo_refuses_what_changed_or_is_not_yours(ctx: Ctx) -> None:
    pid, admin, items = _setup(ctx)
    ctx.user("lab")
    lab = ctx.user("lab2")
    ctx.member(pid, "lab2", "labeler")
    preds = _propose(ctx, pid, items[:3])
    _post(ctx, f"/projects/{pid}/pending/confirm", {"ids": [preds[0]]}, admin)
    # someone else's decision
    assert ctx.client.post(f"/api/v1/projects/{pid}/pending/undo", json={"ids": [preds[0]]},
                           headers=lab).status_code == 403
    # labelled again since: the history on the Data page undoes that, not Pending
    item = ctx.client.get(f"/api/v1/items/{items[0]}", headers=admin)
    r = ctx.client.post(f"/api/v1/items/{items[0]}/annotations", json={"labels": ["dog"]},
                        headers={**admin, "If-Match": item.headers["ETag"]})
    assert r.status_code == 201, r.text
    again = ctx.client.post(f"/api/v1/projects/{pid}/pending/undo", json={"ids": [preds[0]]}, headers=admin)
    assert again.status_code == 409 and "since" in again.text
    assert _state(ctx, items[0]) == ("labelled", [("pending", ["cat"]), ("edit", ["dog"])])
    # an unknown id
    assert ctx.client.post(f"/api/v1/projects/{pid}/pending/undo", json={"ids": [999999]},
                           headers=admin).status_code == 404


def test_pending_undo_restores_an_earlier_label(ctx: Ctx) -> None:
    pid, admin, items = _setup(ctx, n=2)
    r = ctx.client.post(f"/api/v1/items/{items[0]}/annotations", json={"labels": ["dog"]}, headers=admin)
    assert r.status_code == 201
    [pred] = _propose(ctx, pid, items[:1], label="cat")
    _post(ctx, f"/projects/{pid}/pending/confirm", {"ids": [pred]}, admin)
    _post(ctx, f"/projects/{pid}/pending/undo", {"ids": [pred]}, admin)
    status, versions = _state(ctx, items[0])
    assert status == "labelled" and versions[-1] == ("undo", ["dog"])
    with Session(ctx.engine) as s:
        p = s.get(Prediction, pred)
        assert p is not None and p.state == "superseded"  # a labelled image keeps no open proposal


def test_pending_undo_of_a_confirm_that_closed_two_proposals_of_one_image(ctx: Ctx) -> None:
    pid, admin, items = _setup(ctx, n=2)
    [old] = _propose(ctx, pid, items[:1], label="dog")
    [new] = _propose(ctx, pid, items[:1], label="cat")
    out = _post(ctx, f"/projects/{pid}/pending/confirm", {"ids": [new, old]}, admin)
    assert out["done"] == 2
    undone = _post(ctx, f"/projects/{pid}/pending/undo", {"ids": [new, old]}, admin)
    assert undone == {"done": 1, "item_ids": [items[0]]}
    status, versions = _state(ctx, items[0])
    assert status == "proposed" and versions[-1] == ("undo", []) and len(versions) == 2
    assert _pending_ids(ctx, pid, admin) == {new, old}  # both open again, as before the confirm


def _page(ctx: Ctx, pid: int, items: list[int]) -> str:
    with Session(ctx.engine) as s:
        job = cluster_job(s, pid, {4: [{"item_ids": items}]})
        s.commit()
    return f"{job}-4-0"


def test_undo_a_grid_page_confirm(ctx: Ctx) -> None:
    pid, admin, items = _setup(ctx)
    page_id = _page(ctx, pid, items[:4])
    got = ctx.client.get(f"/api/v1/projects/{pid}/grids", params={"size": 4}, headers=admin).json()
    assert [p["id"] for p in got["data"]] == [page_id]
    out = _post(ctx, f"/grids/{page_id}/confirm",
                {"label": "cat", "exclude": [items[3]], "corrections": {str(items[2]): "dog"}}, admin)
    assert sorted(out["labelled"]) == items[:2] and out["corrected"] == [items[2]]
    assert ctx.client.get(f"/api/v1/projects/{pid}/grids", params={"size": 4}, headers=admin).json()["count"] == 0
    undone = _post(ctx, f"/grids/{page_id}/undo", {}, admin)
    assert sorted(undone["restored"]) == items[:3] and undone["unavailable"] == []
    for iid, lab in ((items[0], "cat"), (items[2], "dog")):
        assert _state(ctx, iid) == ("unlabelled", [("grid", [lab]), ("undo", [])])
    # the page is open again, and the caller's: served first, with all four items
    again = ctx.client.get(f"/api/v1/projects/{pid}/grids", params={"size": 4}, headers=admin).json()
    assert [p["id"] for p in again["data"]] == [page_id] and sorted(again["data"][0]["item_ids"]) == items[:4]
    # nothing to undo on an open page; it can be confirmed again
    assert ctx.client.post(f"/api/v1/grids/{page_id}/undo", headers=admin).status_code == 409
    _post(ctx, f"/grids/{page_id}/confirm", {"label": "dog"}, admin)
    assert _state(ctx, items[0])[1][-1] == ("grid", ["dog"])


def test_grid_undo_leaves_changed_items_and_others_pages(ctx: Ctx) -> None:
    pid, admin, items = _setup(ctx)
    ctx.user("lab")
    lab = ctx.user("lab2")
    ctx.member(pid, "lab2", "labeler")
    page_id = _page(ctx, pid, items[:3])
    ctx.client.get(f"/api/v1/projects/{pid}/grids", params={"size": 4}, headers=admin)
    _post(ctx, f"/grids/{page_id}/confirm", {"label": "cat"}, admin)
    assert ctx.client.post(f"/api/v1/grids/{page_id}/undo", headers=lab).status_code == 403
    item = ctx.client.get(f"/api/v1/items/{items[1]}", headers=admin)
    r = ctx.client.post(f"/api/v1/items/{items[1]}/annotations", json={"labels": ["dog"]},
                        headers={**lab, "If-Match": item.headers["ETag"]})
    assert r.status_code == 201, r.text
    undone = _post(ctx, f"/grids/{page_id}/undo", {}, admin)
    assert undone["unavailable"] == [items[1]] and sorted(undone["restored"]) == [items[0], items[2]]
    assert _state(ctx, items[1]) == ("labelled", [("grid", ["cat"]), ("edit", ["dog"])])
    again = ctx.client.get(f"/api/v1/projects/{pid}/grids", params={"size": 4}, headers=admin).json()
    assert sorted(again["data"][0]["item_ids"]) == [items[0], items[2]]
