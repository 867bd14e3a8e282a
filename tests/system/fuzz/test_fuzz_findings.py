"""Each failure class the schemathesis run found, pinned by one deterministic test.

They are strict xfails until the patches in the reliability issue's report are
applied; then they pass, the xfail marks go, and ``KNOWN_CLASSES`` in
test_schemathesis.py is emptied so the fuzzing holds the fix in place.
"""

from __future__ import annotations

from typing import Any

import jsonschema_rs
from fastapi.testclient import TestClient

from tests.conftest import Ctx, make_project

BIG = 2**63  # past SQLite's INTEGER; 2**31 is already past PostgreSQL's


def _resolve(spec: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """``node`` with every local ``$ref`` inlined (enough for these small schemas)."""
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[1]
        return _resolve(spec, spec["components"]["schemas"][name])
    out: dict[str, Any] = {}
    for k, v in node.items():
        if isinstance(v, dict):
            out[k] = _resolve(spec, v)
        elif isinstance(v, list):
            out[k] = [_resolve(spec, x) if isinstance(x, dict) else x for x in v]
        else:
            out[k] = v
    return out


def _documented(spec: dict[str, Any], path: str, method: str, status: int, body: Any) -> bool:
    responses = spec["paths"][path][method]["responses"]
    entry = responses.get(str(status))
    if entry is None:
        return False
    schema = (entry.get("content", {}).get("application/json", {}) or {}).get("schema")
    return schema is None or jsonschema_rs.is_valid(_resolve(spec, schema), body)


def test_malformed_json_gets_a_documented_400(ctx: Ctx) -> None:
    admin = ctx.user("root", "admin")
    r = ctx.client.post("/api/v1/projects", content=b"\xff\x1c{", headers={**admin, "Content-Type": "application/json"})
    assert r.status_code == 400
    assert _documented(ctx.client.app.openapi(), "/api/v1/projects", "post", 400, r.json())  # type: ignore[attr-defined]


def test_route_422_sentences_match_the_documented_schema(ctx: Ctx) -> None:
    admin = ctx.user("root", "admin")
    pid = make_project(ctx, admin)["id"]
    r = ctx.client.get(f"/api/v1/projects/{pid}/items?cursor=garbage", headers=admin)
    assert r.status_code == 422 and isinstance(r.json()["detail"], str)
    spec = ctx.client.app.openapi()  # type: ignore[attr-defined]
    assert _documented(spec, "/api/v1/projects/{project_id}/items", "get", 422, r.json())


def test_ids_out_of_the_database_range_are_4xx(ctx: Ctx) -> None:
    admin = ctx.user("root", "admin")
    pid = make_project(ctx, admin)["id"]
    client = TestClient(ctx.client.app, raise_server_exceptions=False)
    for method, path, body in (("get", f"/api/v1/projects/{BIG}", None), ("get", f"/api/v1/items/{BIG}", None),
                               ("post", f"/api/v1/projects/{pid}/pending/confirm", {"ids": [BIG]}),
                               ("post", f"/api/v1/projects/{pid}/pending/correct", {"id": BIG, "labels": ["cat"]})):
        r = getattr(client, method)(path, headers=admin, **({"json": body} if body else {}))
        assert 400 <= r.status_code < 500, (path, r.status_code)


def test_null_fields_in_updates_are_not_500(ctx: Ctx) -> None:
    admin = ctx.user("root", "admin")
    p = make_project(ctx, admin)
    client = TestClient(ctx.client.app, raise_server_exceptions=False)
    for path, body in ((f"/api/v1/projects/{p['id']}", {"instructions": None}),
                       (f"/api/v1/projects/{p['id']}", {"name": None}),
                       (f"/api/v1/projects/{p['id']}/classes/{p['classes'][0]['id']}", {"name": None})):
        r = client.patch(path, json=body, headers=admin)
        assert r.status_code in (200, 422), (path, body, r.status_code)
    assert client.get(f"/api/v1/projects/{p['id']}", headers=admin).json()["name"] == p["name"]
    r = client.patch(f"/api/v1/projects/{p['id']}/classes/{p['classes'][0]['id']}", json={"name": "  "}, headers=admin)
    assert r.status_code == 422  # a blank class name is refused, like on create
