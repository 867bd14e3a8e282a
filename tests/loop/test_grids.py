"""Grid pages of look-alike items: pure pages, one-click confirm, leases per person."""

from __future__ import annotations

import numpy as np
from sqlmodel import Session, col, select

from learning.policy import Policy
from service.loop.clusters import clusters_check, on_pages
from service.loop.grids import pages_of
from service.models import AuditLog, Item, ItemStatus, Job, Lease, Prediction
from tests.conftest import Ctx
from tests.loop.helpers import colour_project, label, run_jobs, start_job, user_id

GROUPS = {"red": 30, "green": 30, "blue": 30}
SIZE = 64  # at 32 px the pretrained features put a few blue squares nearer the green centroid


def grids(ctx: Ctx, pid: int, headers: dict[str, str], size: int = 9, limit: int = 20) -> dict:
    r = ctx.client.get(f"/api/v1/projects/{pid}/grids?size={size}&limit={limit}", headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def test_pages_are_pure_and_suggest_the_model_class(ctx: Ctx) -> None:
    admin = ctx.user("root", "admin")
    pid, truth = colour_project(ctx, admin, GROUPS, image_size=SIZE)
    assert grids(ctx, pid, admin)["data"] == []  # nothing clustered yet
    clusters_check(ctx.engine, ctx.settings)  # new items: cluster without a model
    assert run_jobs(ctx) == 1
    for size in (4, 6, 9):
        got = grids(ctx, pid, admin, size=size)
        assert got["count"] >= 3 and got["model_version_id"] is None
        for page in got["data"]:
            assert len(page["item_ids"]) <= size and page["suggested_class"] is None
            assert len({truth[i] for i in page["item_ids"]}) == 1, page
    # a model: people label 6 per colour, train -> infer -> the check re-clusters with suggestions
    for colour in GROUPS:
        for iid in [i for i, c in truth.items() if c == colour][:6]:
            label(ctx, admin, iid, colour)
    start_job(ctx, "train", pid)
    run_jobs(ctx)  # train, infer
    clusters_check(ctx.engine, ctx.settings)
    assert run_jobs(ctx) == 1
    got = grids(ctx, pid, admin, size=9)
    assert got["model_version_id"] is not None and got["count"] >= 3
    for page in got["data"]:
        colours = {truth[i] for i in page["item_ids"]}
        assert colours == {page["suggested_class"]} and page["confidence"] > 0.5, page
    clusters_check(ctx.engine, ctx.settings)  # nothing new since: no second clustering
    assert run_jobs(ctx) == 0


def test_items_the_model_cannot_place_stay_off_the_pages(ctx: Ctx) -> None:
    admin = ctx.user("root", "admin")
    pid, truth = colour_project(ctx, admin, GROUPS, image_size=SIZE)
    for colour in GROUPS:
        for iid in [i for i, c in truth.items() if c == colour][:6]:
            label(ctx, admin, iid, colour)
    start_job(ctx, "train", pid)
    run_jobs(ctx)  # train, infer
    with Session(ctx.engine) as s:  # the job reads the stored top classes (5 decimals), not the score
        score = {p.item_id: p.data["top"][0][1] for p in s.exec(select(Prediction)).all()}
    pool = {i for i in truth if i in score}
    floor = float(np.median([score[i] for i in pool]))  # half the pool falls below it
    r = ctx.client.put(f"/api/v1/projects/{pid}/policy", json={"grid_min_confidence": floor, "grid_purity": None},
                       headers=admin)
    assert r.status_code == 200, r.text
    bad = ctx.client.put(f"/api/v1/projects/{pid}/policy", json={"grid_min_confidence": 1.5}, headers=admin)
    assert bad.status_code == 422 and "grid_min_confidence" in bad.text
    job = start_job(ctx, "cluster", pid)
    run_jobs(ctx)
    with Session(ctx.engine) as s:
        result = s.get(Job, job).result  # type: ignore[union-attr]
        pages = {size: pages_of(s, job, size) for size in (4, 6, 9)}
    below = {i for i in pool if score[i] < floor}
    assert below and result["n_uncertain"] == len(below)
    assert result["n_pages"] == {str(size): len(listed) for size, listed in pages.items()}
    paged = {i for listed in pages.values() for p in listed for i in p["item_ids"]}
    assert paged and not paged & below and paged == pool - below


def test_pages_keep_the_classes_the_hold_out_shows_are_right() -> None:
    """Two classes scored alike; the hold-out shows class ``b`` right only 65% of the time:
    its pool items (and hold-out items like them) go to single labels, ``a``'s stay on pages."""
    rng = np.random.default_rng(0)
    n_pool, n_hold = 400, 200
    top = rng.uniform(0.8, 1.0, size=n_pool + n_hold)
    pred = rng.integers(0, 2, size=n_pool + n_hold)
    probs = np.column_stack([np.where(pred == 0, top, 1 - top), np.where(pred == 1, top, 1 - top)])
    right = np.where(pred == 0, rng.random(len(pred)) < 0.98, rng.random(len(pred)) < 0.65)
    truth = np.where(right, pred, 1 - pred)
    labels = [[("a", "b")[t]] for t in truth[n_pool:]]
    unknown = np.zeros(len(pred), dtype=bool)
    policy = Policy(grid_min_confidence=0.5, grid_purity=0.9)
    placed, info = on_pages(probs, unknown, n_pool=n_pool, labels=labels, classes=["a", "b"], policy=policy)
    assert info["likelihood"] == "hold-out" and info["evidence"] == n_hold and info["expected_purity"] >= 0.9
    pool, hold = slice(0, n_pool), slice(n_pool, None)
    assert placed[pool][pred[pool] == 0].mean() > 0.95 and placed[pool][pred[pool] == 1].mean() < 0.5
    assert right[pool][placed[pool]].mean() >= 0.88
    assert placed[hold][pred[hold] == 0].mean() > 0.95 and placed[hold][pred[hold] == 1].mean() < 0.5
    # the raw score (what grid_min_confidence alone goes by) keeps both classes alike
    off, _ = on_pages(probs, unknown, n_pool=n_pool, labels=labels, classes=["a", "b"],
                      policy=Policy(grid_min_confidence=0.5, grid_purity=None))
    assert off.all()
    # without hold-out evidence the score stands in for the likelihood
    placed, info = on_pages(probs, unknown, n_pool=n_pool, labels=labels[:10], classes=["a", "b"],
                            policy=Policy(grid_min_confidence=0.5, grid_purity=0.95))
    assert info["likelihood"] == "score" and info["expected_purity"] >= 0.95
    cut = top[pool][placed[pool]].min()
    assert 0.88 < cut < 0.92 and (placed[pool] == (top[pool] >= cut)).all()  # mean of U(0.9, 1) is 0.95


def test_confirm_nine_with_two_excluded(ctx: Ctx) -> None:
    admin = ctx.user("root", "admin")
    pid, truth = colour_project(ctx, admin, GROUPS, image_size=SIZE)
    start_job(ctx, "cluster", pid)
    run_jobs(ctx)
    page = next(p for p in grids(ctx, pid, admin, limit=20)["data"] if len(p["item_ids"]) == 9)
    colour = truth[page["item_ids"][0]]
    keep, excluded = page["item_ids"][:7], page["item_ids"][7:]
    url = f"/api/v1/grids/{page['id']}/confirm"
    assert ctx.client.post(url, json={"label": "purple", "exclude": []}, headers=admin).status_code == 422
    assert ctx.client.post(url, json={"label": colour, "exclude": [10**6]}, headers=admin).status_code == 422
    r = ctx.client.post(url, json={"label": colour, "exclude": excluded}, headers=admin)
    assert r.status_code == 200, r.text
    body = r.json()
    assert sorted(body["labelled"]) == sorted(keep) and sorted(body["released"]) == sorted(excluded)
    assert body["unavailable"] == []
    for iid in keep:
        hist = ctx.client.get(f"/api/v1/items/{iid}/history", headers=admin).json()
        assert hist[-1]["provenance"] == "human" and hist[-1]["origin"] == "grid"
        assert hist[-1]["data"]["labels"] == [colour] and hist[-1]["author_id"] == user_id(ctx, "root")
    with Session(ctx.engine) as s:
        assert not s.exec(select(Lease).where(col(Lease.item_id).in_(page["item_ids"]))).all()  # released
        for iid in excluded:
            item = s.get(Item, iid)
            assert item is not None and item.status == ItemStatus.unlabelled and item.version == 0
    assert ctx.client.post(url, json={"label": colour}, headers=admin).status_code == 409
    # the page is done for everyone; its two leftovers went back to the queue
    listed = {i for p in grids(ctx, pid, admin, limit=20)["data"] for i in p["item_ids"]}
    assert not listed & set(page["item_ids"])
    lab = ctx.user("lab")
    ctx.member(pid, "lab", "labeler")
    seen = set()
    for _ in range(len(truth)):
        lease = ctx.client.post(f"/api/v1/projects/{pid}/queue/next", headers=lab)
        if lease.status_code == 204:
            break
        iid = lease.json()["item"]["id"]
        seen.add(iid)
        assert ctx.client.post(f"/api/v1/items/{iid}/skip", headers=lab).status_code in (200, 204)
    assert set(excluded) <= seen and not set(keep) & seen
    assert ctx.client.post("/api/v1/grids/999-9-0/confirm", json={"label": "red"}, headers=admin).status_code == 404
    assert ctx.client.post("/api/v1/grids/nonsense/skip", headers=admin).status_code == 404


def test_confirm_with_corrections_labels_the_look_alikes_too(ctx: Ctx) -> None:
    """A left-out image given its own class is labelled with it on the same page (one action
    each, no second look); a plainly excluded one goes back to the queue."""
    admin = ctx.user("root", "admin")
    pid, truth = colour_project(ctx, admin, GROUPS, image_size=SIZE)
    start_job(ctx, "cluster", pid)
    run_jobs(ctx)
    page = next(p for p in grids(ctx, pid, admin, limit=20)["data"] if len(p["item_ids"]) == 9)
    ids = page["item_ids"]
    colour = truth[ids[0]]
    other = next(c for c in GROUPS if c != colour)
    fixed, left = ids[7], ids[8]
    url = f"/api/v1/grids/{page['id']}/confirm"
    for bad in ({"corrections": {str(10**6): other}},  # not on the page
                {"corrections": {str(fixed): other}, "exclude": [fixed]},  # both
                {"corrections": {str(fixed): "purple"}}):  # not a class
        r = ctx.client.post(url, json={"label": colour, **bad}, headers=admin)
        assert r.status_code == 422, (bad, r.text)
    with Session(ctx.engine) as s:  # nothing was written by the refused requests
        assert all(s.get(Item, i).version == 0 for i in ids)  # type: ignore[union-attr]
    r = ctx.client.post(url, json={"label": colour, "exclude": [left], "corrections": {str(fixed): other}},
                        headers=admin)
    assert r.status_code == 200, r.text
    body = r.json()
    assert sorted(body["labelled"]) == sorted(ids[:7]) and body["corrected"] == [fixed]
    assert body["released"] == [left]
    hist = ctx.client.get(f"/api/v1/items/{fixed}/history", headers=admin).json()
    assert [(v["data"]["labels"], v["provenance"], v["origin"]) for v in hist] == [([other], "human", "grid")]
    assert ctx.client.get(f"/api/v1/items/{ids[0]}/history", headers=admin).json()[-1]["data"]["labels"] == [colour]
    with Session(ctx.engine) as s:
        fixed_item, left_item = s.get(Item, fixed), s.get(Item, left)
        assert fixed_item is not None and fixed_item.status == ItemStatus.labelled
        assert left_item is not None and left_item.status == ItemStatus.unlabelled and left_item.version == 0
        [entry] = s.exec(select(AuditLog).where(AuditLog.action == "grid.confirm")).all()
        assert entry.detail["corrected"] == {str(fixed): other} and entry.detail["excluded"] == [left]


def test_two_users_never_get_the_same_page(ctx: Ctx) -> None:
    admin = ctx.user("root", "admin")
    pid, _ = colour_project(ctx, admin, GROUPS, image_size=SIZE)
    heads = {}
    for name in ("ann", "bob", "cat"):
        heads[name] = ctx.user(name)
        ctx.member(pid, name, "labeler")
    outsider = ctx.user("eve")
    start_job(ctx, "cluster", pid)
    run_jobs(ctx)
    assert ctx.client.get(f"/api/v1/projects/{pid}/grids", headers=outsider).status_code == 404
    a = grids(ctx, pid, heads["ann"], size=9, limit=3)
    b = grids(ctx, pid, heads["bob"], size=9, limit=20)
    assert a["count"] == 3 and b["count"] >= 3
    items_a = {i for p in a["data"] for i in p["item_ids"]}
    items_b = {i for p in b["data"] for i in p["item_ids"]}
    assert not items_a & items_b and not {p["id"] for p in a["data"]} & {p["id"] for p in b["data"]}
    again = grids(ctx, pid, heads["ann"], size=9, limit=3)  # asking again renews the same pages
    assert [p["id"] for p in again["data"]] == [p["id"] for p in a["data"]]
    # someone else's page cannot be confirmed from under them
    r = ctx.client.post(f"/api/v1/grids/{a['data'][0]['id']}/confirm", json={"label": "red"}, headers=heads["bob"])
    assert r.status_code == 409
    assert [p["id"] for p in grids(ctx, pid, heads["ann"], size=9, limit=3)["data"]] == [p["id"] for p in a["data"]]
    # bob skips a page: released, never offered to bob again, free for cat
    skipped = b["data"][0]
    r = ctx.client.post(f"/api/v1/grids/{skipped['id']}/skip", headers=heads["bob"])
    assert r.status_code == 200 and sorted(r.json()["released"]) == sorted(skipped["item_ids"])
    assert skipped["id"] not in {p["id"] for p in grids(ctx, pid, heads["bob"], limit=20)["data"]}
    assert skipped["id"] in {p["id"] for p in grids(ctx, pid, heads["cat"], limit=20)["data"]}
    # a labeler's queue never hands out items of someone's grid page
    with Session(ctx.engine) as s:
        held = {le.item_id for le in s.exec(select(Lease).where(Lease.reason == "grid")).all()}
    lease = ctx.client.post(f"/api/v1/projects/{pid}/queue/next", headers=outsider)
    assert lease.status_code == 404
    ctx.member(pid, "eve", "labeler")
    for _ in range(5):
        r = ctx.client.post(f"/api/v1/projects/{pid}/queue/next", headers=outsider)
        if r.status_code == 204:
            break
        assert r.json()["item"]["id"] not in held
        ctx.client.post(f"/api/v1/items/{r.json()['item']['id']}/skip", headers=outsider)


def test_queue_does_not_hand_a_labeler_their_own_grid_items(ctx: Ctx) -> None:
    admin = ctx.user("root", "admin")
    pid, _ = colour_project(ctx, admin, {"red": 12, "blue": 12})
    start_job(ctx, "cluster", pid)
    run_jobs(ctx)
    got = grids(ctx, pid, admin, size=4, limit=1)
    r = ctx.client.post(f"/api/v1/projects/{pid}/queue/next", headers=admin)
    assert r.json()["reason"] != "grid" and r.json()["item"]["id"] not in got["data"][0]["item_ids"]
