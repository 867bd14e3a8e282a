"""Defects an outside attack found (size caps that chunked bodies bypassed, exports that
failed while others wrote, replies that could not encode, one odd name failing a batch),
each with the test that failed before its fix."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator

import httpx
import pytest
from sqlmodel import Session

from tests.conftest import DB_PARAMS, Ctx, make_project, png_bytes


def _multipart(name: str, payload: bytes, boundary: str) -> bytes:
    return (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + payload + f"\r\n--{boundary}--\r\n".encode()


def _chunks(body: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for i in range(0, len(body), size):
        yield body[i:i + size]


def test_chunked_upload_over_the_cap_is_refused(ctx: Ctx, live: str) -> None:
    admin = ctx.user("root", "admin")
    pid = make_project(ctx, admin)["id"]
    ctx.settings.max_request_bytes = 300_000
    boundary = uuid.uuid4().hex
    # a real image followed by padding inside the same part: 400 kB, no Content-Length
    body = _multipart("big.png", png_bytes(seed=3) + b"\0" * 400_000, boundary)
    headers = {**admin, "Content-Type": f"multipart/form-data; boundary={boundary}"}
    r = httpx.post(f"{live}/api/v1/projects/{pid}/items", content=_chunks(body), headers=headers, timeout=60)
    assert "content-length" not in r.request.headers and r.request.headers["transfer-encoding"] == "chunked"
    assert r.status_code == 413, r.text
    assert ctx.client.get(f"/api/v1/projects/{pid}/items", headers=admin).json()["count"] == 0
    # under the cap, the same chunked way still works
    small = _multipart("ok.png", png_bytes(seed=4), boundary)
    r = httpx.post(f"{live}/api/v1/projects/{pid}/items", content=_chunks(small, 100), headers=headers, timeout=60)
    assert r.status_code == 201 and len(r.json()["created"]) == 1, r.text


def test_unauthenticated_bodies_are_capped_small(ctx: Ctx, live: str) -> None:
    junk = b'{"name": "' + b"a" * 2_000_000 + b'", "password": "x"}'
    r = httpx.post(f"{live}/api/v1/auth/login", content=_chunks(junk), timeout=60,
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 413, r.text
    # JSON bodies elsewhere are capped at max_json_request_bytes, chunked or not
    admin = ctx.user("root", "admin")
    ctx.settings.max_json_request_bytes = 100_000
    big = b'{"name": "p", "classes": ["' + b"c" * 200_000 + b'"]}'
    r = httpx.post(f"{live}/api/v1/projects", content=_chunks(big), timeout=60,
                   headers={**admin, "Content-Type": "application/json"})
    assert r.status_code == 413, r.text


def test_exports_never_fail_while_others_write(ctx: Ctx) -> None:
    """SQLite: an export's audit row used to be written inside the GET's read transaction,
    whose lock upgrade fails at once when another writer committed meanwhile (500)."""
    from service.security import audit

    admin = ctx.user("root", "admin")
    pid = make_project(ctx, admin, n_images=20)["id"]
    stop = threading.Event()
    writes = 0

    def writer() -> None:
        nonlocal writes
        while not stop.is_set():
            with Session(ctx.engine) as s:
                audit(s, None, "noise", project_id=pid)
                s.commit()
            writes += 1

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    try:
        codes = [ctx.client.get(f"/api/v1/projects/{pid}/export", params={"format": fmt}, headers=admin).status_code
                 for _ in range(10) for fmt in ("csv", "coco", "labelstudio")]
    finally:
        stop.set()
        t.join(timeout=30)
    assert writes > 10
    assert codes == [200] * len(codes)
    from sqlmodel import func, select

    from service.models import AuditLog

    with Session(ctx.engine) as s:  # every export's audit row was written, after its read
        n = s.exec(select(func.count()).select_from(AuditLog).where(AuditLog.action == "export")).one()
    assert n == len(codes)


SURROGATE = "\ud800"


def _post_escaped(ctx: Ctx, path: str, body: dict, headers: dict[str, str]) -> httpx.Response:
    """POST ``body`` as JSON with ``\\u`` escapes (how a client sends a lone surrogate)."""
    return ctx.client.post(path, content=json.dumps(body), headers={**headers, "Content-Type": "application/json"})


@pytest.mark.parametrize("path,body", [
    ("/api/v1/projects", {"name": SURROGATE * 300, "task": "multiclass", "classes": ["a", "b"]}),
    ("/api/v1/projects", {"name": "p", "task": SURROGATE, "classes": ["a", "b"]}),
    ("/api/v1/users", {"name": SURROGATE * 300, "role": "labeler", "password": "longenough-pw"}),
])
def test_lone_surrogates_in_bad_fields_answer_422(ctx: Ctx, path: str, body: dict) -> None:
    admin = ctx.user("root", "admin")
    r = _post_escaped(ctx, path, body, admin)
    assert r.status_code == 422, r.text
    assert r.json()["detail"]


def test_lone_surrogate_in_a_valid_field_answers_422(ctx: Ctx) -> None:
    admin = ctx.user("root", "admin")
    r = _post_escaped(ctx, "/api/v1/projects", {"name": "x" + SURROGATE, "task": "multiclass",
                                                "classes": ["a", "b"]}, admin)
    assert r.status_code == 422, r.text
    pid = make_project(ctx, admin)["id"]
    r = _post_escaped(ctx, f"/api/v1/projects/{pid}/classes", {"name": SURROGATE}, admin)
    assert r.status_code in (404, 405, 422), r.text


def test_a_name_with_nul_never_fails_the_batch(ctx: Ctx, backend: str) -> None:
    from service.crud.items import ingest
    from service.models import Project

    admin = ctx.user("root", "admin")
    pid = make_project(ctx, admin)["id"]
    with Session(ctx.engine) as s:
        project = s.get(Project, pid)
        assert project is not None
        out = ingest(s, project=project, settings=ctx.settings, files=[
            ("bad\x00name\x07.png", png_bytes(seed=1)), ("good.png", png_bytes(seed=2)),
            ("dir\\sub/\x00", png_bytes(seed=3))])
        s.commit()
    assert sorted(x["file"] for x in out.created) == ["badname.png", "good.png", "unnamed"]
    items = ctx.client.get(f"/api/v1/projects/{pid}/items", headers=admin).json()
    assert items["count"] == 3


@pytest.fixture(params=DB_PARAMS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_nul_in_names_is_refused_alike_on_every_database(ctx: Ctx) -> None:
    """SQLite stored a NUL in a project, class or user name, PostgreSQL answered a generic
    'out of range' 422: now both refuse it, naming the field."""
    admin = ctx.user("root", "admin")
    r = _post_escaped(ctx, "/api/v1/projects", {"name": "a\x00b", "task": "multiclass", "classes": ["x", "y"]}, admin)
    assert r.status_code == 422 and "NUL" in r.json()["detail"], r.text
    r = _post_escaped(ctx, "/api/v1/projects", {"name": "p", "task": "multiclass", "classes": ["x\x00", "y"]}, admin)
    assert r.status_code == 422 and "NUL" in r.json()["detail"], r.text
    r = _post_escaped(ctx, "/api/v1/users", {"name": "u\x00", "role": "labeler", "password": "longenough-pw"}, admin)
    assert r.status_code == 422, r.text
    projects = ctx.client.get("/api/v1/projects", headers=admin).json()
    assert not any("\x00" in p["name"] for p in projects.get("data", projects) if isinstance(p, dict))
