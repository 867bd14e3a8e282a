"""Projects, uploads, labels with ETags, undo, skip, history, queue leases."""

from __future__ import annotations

import io
import zipfile

from tests.conftest import Ctx, make_project, png_bytes


def test_health_and_docs(ctx: Ctx) -> None:
    r = ctx.client.get("/api/v1/health")
    assert r.status_code == 200
    assert r.json()["status"] == "ok" and r.json()["schema_version"]
    assert r.json()["device"].startswith(("cpu", "cuda"))  # where the jobs compute
    assert ctx.client.get("/openapi.json").status_code == 200
    assert ctx.client.get("/docs").status_code == 200


def test_auth_required(ctx: Ctx) -> None:
    assert ctx.client.get("/api/v1/projects").status_code == 401
    assert ctx.client.get("/api/v1/projects", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_project_and_classes(ctx: Ctx) -> None:
    admin = ctx.user("root", "admin")
    p = make_project(ctx, admin, classes=["cat", "dog"])
    assert [c["name"] for c in p["classes"]] == ["cat", "dog"]
    assert p["policy"]["min_labels_per_class"] == 5
    pid = p["id"]
    r = ctx.client.post(f"/api/v1/projects/{pid}/classes", json={"name": "bird", "position": 0}, headers=admin)
    assert r.status_code == 201
    got = ctx.client.get(f"/api/v1/projects/{pid}", headers=admin).json()
    assert [c["name"] for c in got["classes"]] == ["bird", "cat", "dog"]
    cat = next(c for c in got["classes"] if c["name"] == "cat")
    r = ctx.client.patch(f"/api/v1/projects/{pid}/classes/{cat['id']}", json={"name": "kitty"}, headers=admin)
    assert r.status_code == 200 and r.json()["name"] == "kitty"
    assert ctx.client.post(f"/api/v1/projects/{pid}/classes", json={"name": "dog"}, headers=admin).status_code == 409
    assert ctx.client.post("/api/v1/projects", json={"name": "p"}, headers=admin).status_code == 409
    r = ctx.client.put(f"/api/v1/projects/{pid}/policy", json={"algorithm": "precise"}, headers=admin)
    assert r.status_code == 200 and r.json()["algorithm"] == "precise"
    assert ctx.client.put(f"/api/v1/projects/{pid}/policy", json={"bogus": 1}, headers=admin).status_code == 422


def test_upload_batch_reports_each_file(ctx: Ctx) -> None:
    admin = ctx.user("root", "admin")
    pid = make_project(ctx, admin)["id"]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("in_zip.png", png_bytes((0, 0, 255)))
        z.writestr("../evil.png", png_bytes((0, 255, 0)))
    files = [
        ("files", ("a.png", png_bytes(), "image/png")),
        ("files", ("a_again.png", png_bytes(), "image/png")),
        ("files", ("fake.jpg", b"<html>not an image</html>", "image/jpeg")),
        ("files", ("broken.png", png_bytes()[:40], "image/png")),
        ("files", ("batch.zip", buf.getvalue(), "application/zip")),
    ]
    r = ctx.client.post(f"/api/v1/projects/{pid}/items", files=files, headers=admin)
    assert r.status_code == 201, r.text
    out = r.json()
    assert sorted(c["file"] for c in out["created"]) == ["a.png", "in_zip.png"]
    assert [d["file"] for d in out["duplicates"]] == ["a_again.png"]
    reasons = {x["file"]: x["reason"] for x in out["rejected"]}
    assert reasons["fake.jpg"] == "unsupported_type"
    assert reasons["broken.png"] == "corrupt"
    assert any(v == "unsafe_path" for k, v in reasons.items() if "evil" in k)
    # re-upload: all duplicates, nothing created
    r = ctx.client.post(f"/api/v1/projects/{pid}/items", files=files[:1], headers=admin)
    assert r.json()["created"] == [] and len(r.json()["duplicates"]) == 1
    items = ctx.client.get(f"/api/v1/projects/{pid}/items", headers=admin).json()
    assert items["count"] == 2
    iid = items["data"][0]["id"]
    img = ctx.client.get(f"/api/v1/items/{iid}/image", headers=admin)
    assert img.status_code == 200 and img.headers["content-type"] == "image/png"
    assert img.headers["x-content-type-options"] == "nosniff"
    th = ctx.client.get(f"/api/v1/items/{iid}/thumbnail", headers=admin)
    assert th.status_code == 200 and "max-age" in th.headers["cache-control"]


def test_oversize_request_is_413(ctx: Ctx) -> None:
    admin = ctx.user("root", "admin")
    pid = make_project(ctx, admin)["id"]
    ctx.settings.max_request_bytes = 10_000
    big = b"\x89PNG" + b"0" * 20_000
    r = ctx.client.post(f"/api/v1/projects/{pid}/items", files=[("files", ("big.png", big, "image/png"))],
                        headers=admin)
    assert r.status_code == 413
    assert ctx.client.get(f"/api/v1/projects/{pid}/items", headers=admin).json()["count"] == 0


def test_cursor_pagination(ctx: Ctx) -> None:
    admin = ctx.user("root", "admin")
    pid = make_project(ctx, admin, n_images=7)["id"]
    seen, cursor = [], None
    while True:
        url = f"/api/v1/projects/{pid}/items?limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = ctx.client.get(url, headers=admin).json()
        seen += [i["id"] for i in page["data"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == 7 == len(set(seen))
    assert ctx.client.get(f"/api/v1/projects/{pid}/items?cursor=zzz", headers=admin).status_code == 422


def test_label_etag_undo_history(ctx: Ctx) -> None:
    admin = ctx.user("root", "admin")
    pid = make_project(ctx, admin, n_images=2)["id"]
    iid = ctx.client.get(f"/api/v1/projects/{pid}/items", headers=admin).json()["data"][0]["id"]
    url = f"/api/v1/items/{iid}/annotations"
    r = ctx.client.post(url, json={"labels": ["cat"]}, headers=admin)
    assert r.status_code == 201 and r.headers["etag"] == '"v1"'
    assert ctx.client.post(url, json={"labels": ["dog"]}, headers=admin).status_code == 428
    assert ctx.client.post(url, json={"labels": ["dog"]}, headers={**admin, "If-Match": '"v0"'}).status_code == 412
    assert ctx.client.post(url, json={"labels": ["cow"]}, headers={**admin, "If-Match": '"v1"'}).status_code == 422
    assert ctx.client.post(url, json={"labels": ["cat", "dog"]},
                           headers={**admin, "If-Match": '"v1"'}).status_code == 422
    r = ctx.client.post(url, json={"labels": ["dog"]}, headers={**admin, "If-Match": '"v1"'})
    assert r.status_code == 201 and r.json()["version"] == 2
    r = ctx.client.post(f"/api/v1/items/{iid}/undo", headers={**admin, "If-Match": '"v2"'})
    assert r.status_code == 201 and r.json()["data"]["labels"] == ["cat"] and r.json()["version"] == 3
    hist = ctx.client.get(f"/api/v1/items/{iid}/history", headers=admin).json()
    assert [h["data"]["labels"] for h in hist] == [["cat"], ["dog"], ["cat"]]
    assert [h["origin"] for h in hist][-1] == "undo"
    item = ctx.client.get(f"/api/v1/items/{iid}", headers=admin)
    assert item.json()["annotation"]["labels"] == ["cat"] and item.headers["etag"] == '"v3"'


def test_queue_lease_skip_and_drain(ctx: Ctx) -> None:
    admin = ctx.user("root", "admin")
    pid = make_project(ctx, admin, n_images=3)["id"]
    ctx.user("ann", "labeler")
    ctx.member(pid, "ann", "labeler")
    ann = ctx.user("bob", "labeler")
    ctx.member(pid, "bob", "labeler")
    r = ctx.client.post(f"/api/v1/projects/{pid}/queue/next", headers=ann)
    assert r.status_code == 200, r.text
    first = r.json()
    assert first["reason"] in {"random", "holdout"}
    # asking again returns the same lease (renewed)
    again = ctx.client.post(f"/api/v1/projects/{pid}/queue/next", headers=ann).json()
    assert again["item"]["id"] == first["item"]["id"] and again["renewed"]
    hb = ctx.client.post(f"/api/v1/leases/{first['lease_id']}/heartbeat", headers=ann)
    assert hb.status_code == 200
    labelled = set()
    for _ in range(3):
        r = ctx.client.post(f"/api/v1/projects/{pid}/queue/next", headers=ann)
        assert r.status_code == 200
        got = r.json()
        r = ctx.client.post(f"/api/v1/items/{got['item']['id']}/annotations",
                            json={"labels": ["cat"], "lease_id": got["lease_id"]}, headers=ann)
        assert r.status_code == 201, r.text
        labelled.add(got["item"]["id"])
    assert len(labelled) == 3
    assert ctx.client.post(f"/api/v1/projects/{pid}/queue/next", headers=ann).status_code == 204


def test_skip_moves_on(ctx: Ctx) -> None:
    admin = ctx.user("root", "admin")
    pid = make_project(ctx, admin, n_images=2)["id"]
    a = ctx.client.post(f"/api/v1/projects/{pid}/queue/next", headers=admin).json()
    assert ctx.client.post(f"/api/v1/items/{a['item']['id']}/skip", headers=admin).status_code == 204
    b = ctx.client.post(f"/api/v1/projects/{pid}/queue/next", headers=admin).json()
    assert b["item"]["id"] != a["item"]["id"]
    assert ctx.client.get(f"/api/v1/items/{a['item']['id']}", headers=admin).json()["status"] == "skipped"


def test_lease_blocks_other_labeler(ctx: Ctx) -> None:
    admin = ctx.user("root", "admin")
    pid = make_project(ctx, admin, n_images=1)["id"]
    bob = ctx.user("bob", "labeler")
    ctx.member(pid, "bob", "labeler")
    got = ctx.client.post(f"/api/v1/projects/{pid}/queue/next", headers=admin).json()
    assert ctx.client.post(f"/api/v1/projects/{pid}/queue/next", headers=bob).status_code == 204
    r = ctx.client.post(f"/api/v1/items/{got['item']['id']}/annotations", json={"labels": ["cat"]}, headers=bob)
    assert r.status_code == 409


def test_sessions_and_csrf(ctx: Ctx) -> None:
    ctx.user("root", "admin", password="correct horse")
    r = ctx.client.post("/api/v1/auth/login", json={"name": "root", "password": "wrong"})
    assert r.status_code == 401
    r = ctx.client.post("/api/v1/auth/login", json={"name": "root", "password": "correct horse"})
    assert r.status_code == 200
    csrf = r.json()["csrf_token"]
    assert ctx.client.get("/api/v1/auth/me").json()["name"] == "root"
    assert ctx.client.post("/api/v1/projects", json={"name": "x"}).status_code == 403
    r = ctx.client.post("/api/v1/projects", json={"name": "x"}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 201
    ctx.client.post("/api/v1/auth/logout", headers={"X-CSRF-Token": csrf})
    assert ctx.client.get("/api/v1/auth/me").status_code == 401


def test_token_revocation_and_rate_limit(ctx: Ctx) -> None:
    admin = ctx.user("root", "admin", password="pw-12345678")
    r = ctx.client.post("/api/v1/auth/tokens", json={"name": "script"}, headers=admin)
    assert r.status_code == 201
    tok, tid = r.json()["token"], r.json()["id"]
    h = {"Authorization": f"Bearer {tok}"}
    assert ctx.client.get("/api/v1/auth/me", headers=h).status_code == 200
    assert ctx.client.delete(f"/api/v1/auth/tokens/{tid}", headers=admin).status_code == 204
    assert ctx.client.get("/api/v1/auth/me", headers=h).status_code == 401
    codes = [ctx.client.post("/api/v1/auth/login", json={"name": "root", "password": "bad"}).status_code
             for _ in range(12)]
    assert codes.count(429) >= 1
    log = ctx.client.get("/api/v1/audit", headers=admin).json()
    assert {"token.create", "token.revoke", "login.failed"} <= {e["action"] for e in log}


def test_policy_defaults_are_a_new_projects_policy(ctx: Ctx) -> None:
    """Settings marks each knob's default and resets to them: the route answers Policy()'s values."""
    from learning.policy import Policy

    r = ctx.client.get("/api/v1/policy/defaults", headers=ctx.user("lab1"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["defaults"] == Policy().to_dict()
    assert body["defaults"]["calibration"] == "auto"
    assert "auto" in body["choices"]["calibration"] and "margin" in body["choices"]["strategy"]
    assert ctx.client.get("/api/v1/policy/defaults").status_code == 401
