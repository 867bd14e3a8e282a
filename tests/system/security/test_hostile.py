"""Hostile input: deep or malformed JSON/XML, non-finite numbers, concurrent edits,
expired leases, odd server paths. Each gets a 4xx with a message, never a 500."""

from __future__ import annotations

import threading
import time

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Ctx, make_project

JSON = {"Content-Type": "application/json"}


def test_deeply_nested_json_bodies_are_refused(ctx: Ctx) -> None:
    admin = ctx.user("root", "admin")
    pid = make_project(ctx, admin, n_images=1)["id"]
    deep = b"[" * 100_000 + b"]" * 100_000
    for path, body in ((f"/api/v1/projects/{pid}/policy", deep), ("/api/v1/projects", b'{"name":' + deep + b"}")):
        method = ctx.client.put if path.endswith("policy") else ctx.client.post
        r = method(path, content=body, headers={**admin, **JSON})
        assert r.status_code in (400, 422), (path, r.status_code, r.text[:200])


@pytest.mark.parametrize("fmt,data,words", [
    ("coco", b"[" * 100_000, "nested too deeply"),
    ("labelstudio", b"[" * 50_000 + b"]" * 50_000, "nested too deeply"),
    ("coco", b'{"images": [', "invalid JSON"),
    ("cvat", b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>'
             b"<annotations>&b;</annotations>", "unsafe XML"),
    ("voc", b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            b"<annotation><filename>&x;</filename></annotation>", "unsafe XML"),
    ("cvat", b"<annotations><image", "invalid XML"),
    ("voc", b"<a>" * 50_000 + b"</a>" * 50_000, "annotation"),
    ("yolo", b"\xff\xfe\x00 not a zip", "zip"),
    ("csv", b"\xff\xfe\x00\x00", "csv"),
])
def test_malformed_annotation_files_get_422_with_a_reason(ctx: Ctx, fmt: str, data: bytes, words: str) -> None:
    admin = ctx.user("root", "admin")
    pid = make_project(ctx, admin, n_images=1)["id"]
    r = ctx.client.post(f"/api/v1/projects/{pid}/import?format={fmt}", files={"file": ("f", data)}, headers=admin)
    assert r.status_code == 422, r.text[:300]
    assert words.lower() in r.json()["detail"].lower(), r.json()
    assert "passwd" not in r.text and "root:" not in r.text


def test_non_finite_numbers_in_bodies_get_422(ctx: Ctx) -> None:
    admin = ctx.user("root", "admin")
    pid = make_project(ctx, admin)["id"]
    client = TestClient(ctx.client.app, raise_server_exceptions=False)
    cases = (("/api/v1/auth/tokens", b'{"ttl_days": NaN}'),
             (f"/api/v1/projects/{pid}/items/server-import", b'{"path": "/tmp", "interval_minutes": Infinity}'))
    for path, body in cases:
        r = client.post(path, content=body, headers={**admin, **JSON})
        assert r.status_code == 422, (path, r.status_code, r.text[:200])


def test_non_finite_coordinates_are_refused(ctx: Ctx) -> None:
    admin = ctx.user("root", "admin")
    pid = make_project(ctx, admin, name="det", task="detection", n_images=2)["id"]
    items = ctx.client.get(f"/api/v1/projects/{pid}/items", headers=admin).json()["data"]
    client = TestClient(ctx.client.app, raise_server_exceptions=False)
    box = b'{"boxes": [{"label": "cat", "bbox": [NaN, 0, 1, 1]}]}'
    poly = b'{"polygons": [{"label": "cat", "points": [0, 0, 1, Infinity, 2, 2]}]}'
    for item, body in zip(items, (box, poly), strict=True):
        r = client.post(f"/api/v1/items/{item['id']}/annotations", content=body, headers={**admin, **JSON})
        assert r.status_code == 422, (r.status_code, r.text[:200])
    assert client.get(f"/api/v1/projects/{pid}/export?format=coco", headers=admin).status_code == 200


def test_server_import_path_with_nul_byte_is_422(ctx: Ctx) -> None:
    admin = ctx.user("root", "admin")
    pid = make_project(ctx, admin)["id"]
    client = TestClient(ctx.client.app, raise_server_exceptions=False)
    r = client.post(f"/api/v1/projects/{pid}/items/server-import", json={"path": "/tmp/\u0000x"}, headers=admin)
    assert r.status_code == 422, (r.status_code, r.text[:200])


def test_server_import_outside_allowed_roots_is_403(ctx: Ctx, tmp_path_factory: pytest.TempPathFactory) -> None:
    admin = ctx.user("root", "admin")
    pid = make_project(ctx, admin)["id"]
    allowed = tmp_path_factory.mktemp("allowed")
    ctx.settings.allow_server_import_roots = [allowed]
    for path in ("/etc", str(allowed / ".." / ".."), "/"):
        r = ctx.client.post(f"/api/v1/projects/{pid}/items/server-import", json={"path": path}, headers=admin)
        assert r.status_code == 403, (path, r.text)
    lab = ctx.user("lab", "labeler")
    ctx.member(pid, "lab", "manager")
    r = ctx.client.post(f"/api/v1/projects/{pid}/items/server-import", json={"path": str(allowed)}, headers=lab)
    assert r.status_code == 403  # admins only, even for a manager of the project


def test_concurrent_edits_with_one_etag_let_exactly_one_through(ctx: Ctx) -> None:
    admin = ctx.user("root", "admin")
    pid = make_project(ctx, admin, n_images=1)["id"]
    iid = ctx.client.get(f"/api/v1/projects/{pid}/items", headers=admin).json()["data"][0]["id"]
    r = ctx.client.post(f"/api/v1/items/{iid}/annotations", json={"labels": ["cat"]}, headers=admin)
    assert r.status_code == 201
    tag = ctx.client.get(f"/api/v1/items/{iid}", headers=admin).headers["ETag"]
    codes: list[int] = []
    barrier = threading.Barrier(8)

    def edit(i: int) -> None:
        c = TestClient(ctx.client.app)
        barrier.wait()
        r = c.post(f"/api/v1/items/{iid}/annotations", json={"labels": ["dog" if i % 2 else "cat"]},
                   headers={**admin, "If-Match": tag})
        codes.append(r.status_code)

    threads = [threading.Thread(target=edit, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [201] + [412] * 7, codes
    hist = ctx.client.get(f"/api/v1/items/{iid}/history", headers=admin).json()
    assert [h["version"] for h in hist] == [1, 2]
    r = ctx.client.post(f"/api/v1/items/{iid}/annotations", json={"labels": ["cat"]}, headers=admin)
    assert r.status_code == 428  # an update without If-Match is refused, not applied blindly


def test_expired_leases(ctx: Ctx) -> None:
    admin = ctx.user("root", "admin")
    pid = make_project(ctx, admin, n_images=1)["id"]
    alice, bob = ctx.user("alice"), ctx.user("bob")
    ctx.member(pid, "alice", "labeler")
    ctx.member(pid, "bob", "labeler")
    ctx.settings.lease_ttl_seconds = 1
    a = ctx.client.post(f"/api/v1/projects/{pid}/queue/next", headers=alice).json()
    assert ctx.client.post(f"/api/v1/projects/{pid}/queue/next", headers=bob).status_code == 204
    assert ctx.client.post(f"/api/v1/leases/{a['lease_id']}/heartbeat", headers=bob).status_code == 404
    time.sleep(1.2)
    assert ctx.client.post(f"/api/v1/leases/{a['lease_id']}/heartbeat", headers=alice).status_code == 410
    ctx.settings.lease_ttl_seconds = 300
    b = ctx.client.post(f"/api/v1/projects/{pid}/queue/next", headers=bob).json()
    assert b["item"]["id"] == a["item"]["id"]  # the expired lease went back to the queue
    r = ctx.client.post(f"/api/v1/items/{a['item']['id']}/annotations",
                        json={"labels": ["cat"], "lease_id": a["lease_id"]}, headers=alice)
    assert r.status_code == 409 and "another labeler" in r.json()["detail"]
    r = ctx.client.post(f"/api/v1/items/{b['item']['id']}/annotations",
                        json={"labels": ["dog"], "lease_id": b["lease_id"]}, headers=bob)
    assert r.status_code == 201


def test_wrong_types_and_ranges_are_422(ctx: Ctx) -> None:
    admin = ctx.user("root", "admin")
    pid = make_project(ctx, admin, name="det", task="detection", n_images=1)["id"]
    iid = ctx.client.get(f"/api/v1/projects/{pid}/items", headers=admin).json()["data"][0]["id"]
    cases = [
        ("post", f"/api/v1/items/{iid}/annotations", {"labels": "cat"}),
        ("post", f"/api/v1/items/{iid}/annotations", {"boxes": [{"label": "cat", "bbox": [1e9, 0, 5, 5]}]}),
        ("post", f"/api/v1/items/{iid}/annotations", {"boxes": [{"label": "cat", "bbox": [0, 0, -1, 5]}]}),
        ("post", f"/api/v1/items/{iid}/annotations", {"boxes": [{"label": "zebra", "bbox": [0, 0, 1, 1]}]}),
        ("post", f"/api/v1/items/{iid}/annotations", {"polygons": [{"label": "cat", "points": [0, 0, 1]}]}),
        ("put", f"/api/v1/projects/{pid}/policy", {"target_precision": 7}),
        ("put", f"/api/v1/projects/{pid}/policy", {"__class__": 1}),
        ("get", f"/api/v1/projects/{pid}/items?cursor=%25%25%25", None),
        ("get", f"/api/v1/projects/{pid}/items?limit=100000", None),
        ("get", "/api/v1/items/abc", None),
        ("post", "/api/v1/projects", {"name": "", "classes": ["a"]}),
        ("post", "/api/v1/projects", {"name": "x", "task": "rm -rf"}),
    ]
    for method, path, body in cases:
        r = getattr(ctx.client, method)(path, headers=admin, **({"json": body} if body is not None else {}))
        assert r.status_code == 422, (method, path, body, r.status_code, r.text[:200])
