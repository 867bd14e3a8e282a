"""Role x route matrix: what each role may do in its project, and nothing across projects."""

from __future__ import annotations

import pytest

from tests.conftest import Ctx, make_project

# (method, path template, body, minimum role); {p} = project, {i} = item, {c} = class
ROUTES = [
    ("GET", "/api/v1/projects/{p}", None, "labeler"),
    ("GET", "/api/v1/projects/{p}/items", None, "labeler"),
    ("GET", "/api/v1/items/{i}", None, "labeler"),
    ("GET", "/api/v1/items/{i}/image", None, "labeler"),
    ("GET", "/api/v1/items/{i}/history", None, "labeler"),
    ("POST", "/api/v1/projects/{p}/queue/next", None, "labeler"),
    ("GET", "/api/v1/projects/{p}/policy", None, "labeler"),
    ("PATCH", "/api/v1/projects/{p}", {"instructions": "x"}, "manager"),
    ("PUT", "/api/v1/projects/{p}/policy", {"retrain_every_labels": 50}, "manager"),
    ("POST", "/api/v1/projects/{p}/classes", {"name": "new"}, "manager"),
    ("PATCH", "/api/v1/projects/{p}/classes/{c}", {"color": "#fff"}, "manager"),
    ("GET", "/api/v1/projects/{p}/members", None, "manager"),
    ("GET", "/api/v1/projects/{p}/export?format=coco", None, "manager"),
]
RANK = {"labeler": 1, "reviewer": 2, "manager": 3}


@pytest.fixture
def world(ctx: Ctx) -> dict:
    admin = ctx.user("root", "admin")
    p1 = make_project(ctx, admin, name="one", n_images=2)
    p2 = make_project(ctx, admin, name="two", n_images=2)
    heads = {}
    for role in RANK:
        heads[role] = ctx.user(f"u_{role}", "labeler")
        ctx.member(p1["id"], f"u_{role}", role)
    item1 = ctx.client.get(f"/api/v1/projects/{p1['id']}/items", headers=admin).json()["data"][0]["id"]
    item2 = ctx.client.get(f"/api/v1/projects/{p2['id']}/items", headers=admin).json()["data"][0]["id"]
    return {"heads": heads, "p1": p1, "p2": p2, "item1": item1, "item2": item2}


@pytest.mark.parametrize("method,path,body,need", ROUTES)
@pytest.mark.parametrize("role", list(RANK))
def test_matrix(ctx: Ctx, world: dict, role: str, method: str, path: str, body: dict | None, need: str) -> None:
    h = world["heads"][role]
    url = path.format(p=world["p1"]["id"], i=world["item1"], c=world["p1"]["classes"][0]["id"])
    r = ctx.client.request(method, url, json=body, headers=h)
    if RANK[role] >= RANK[need]:
        assert r.status_code < 400 or r.status_code == 204, (role, url, r.status_code, r.text)
    else:
        assert r.status_code == 403, (role, url, r.status_code, r.text)
    # never across projects: the other project's ids are invisible (404)
    url2 = path.format(p=world["p2"]["id"], i=world["item2"], c=world["p2"]["classes"][0]["id"])
    r2 = ctx.client.request(method, url2, json=body, headers=h)
    assert r2.status_code == 404, (role, url2, r2.status_code)


def test_labeler_cannot_create_projects_or_users(ctx: Ctx, world: dict) -> None:
    h = world["heads"]["labeler"]
    assert ctx.client.post("/api/v1/projects", json={"name": "z"}, headers=h).status_code == 403
    assert ctx.client.post("/api/v1/users", json={"name": "z"}, headers=h).status_code == 403
    assert ctx.client.get("/api/v1/audit", headers=h).status_code == 403
    projects = ctx.client.get("/api/v1/projects", headers=h).json()
    assert [p["name"] for p in projects["data"]] == ["one"]
