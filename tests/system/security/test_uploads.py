"""Uploads: content decides the type, names never become paths, bombs are refused cheaply,
and stored images are served so that a browser can never run them."""

from __future__ import annotations

import io
import struct
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import pytest

from tests.conftest import Ctx, make_project, png_bytes

SVG = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><script>alert(2)</script></svg>'
HTML = b"<!doctype html><html><body><script>fetch('/api/v1/auth/tokens')</script></body></html>"


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_with_html_inside() -> bytes:
    """A valid PNG carrying an HTML payload in a text chunk (a polyglot)."""
    png = png_bytes(seed=11)
    end = png.rindex(b"IEND") - 4
    return png[:end] + _png_chunk(b"tEXt", b"Comment\x00" + HTML) + png[end:]


@pytest.mark.parametrize("name,data,ctype", [
    ("x.svg", SVG, "image/svg+xml"),
    ("x.png", SVG, "image/png"),
    ("page.html", HTML, "text/html"),
    ("pic.jpg", HTML, "image/jpeg"),
    ("x.png", b"%PDF-1.7\n" + b"0" * 100, "image/png"),
    ("x.png", b"GIF89a" + b"\0" * 30, "image/gif"),
])
def test_scripts_dressed_as_images_are_rejected(ctx: Ctx, name: str, data: bytes, ctype: str) -> None:
    admin = ctx.user("root", "admin")
    pid = make_project(ctx, admin)["id"]
    r = ctx.client.post(f"/api/v1/projects/{pid}/items", files=[("files", (name, data, ctype))], headers=admin)
    assert r.status_code == 201
    out = r.json()
    assert out["created"] == [] and [x["reason"] for x in out["rejected"]] == ["unsupported_type"]
    objects = ctx.settings.storage_dir / "objects"
    assert not objects.exists() or not [p for p in objects.rglob("*") if p.is_file()]


def test_images_are_served_inert(ctx: Ctx) -> None:
    admin = ctx.user("root", "admin")
    pid = make_project(ctx, admin)["id"]
    poly = _png_with_html_inside()
    r = ctx.client.post(f"/api/v1/projects/{pid}/items", files=[("files", ("a.html", poly, "text/html"))],
                        headers=admin)
    iid = r.json()["created"][0]["id"]
    for path in (f"/api/v1/items/{iid}/image", f"/api/v1/items/{iid}/thumbnail"):
        img = ctx.client.get(path, headers=admin)
        assert img.status_code == 200
        assert img.headers["content-type"] in ("image/png", "image/jpeg", "image/webp"), img.headers
        assert img.headers["X-Content-Type-Options"] == "nosniff"
        csp = img.headers["Content-Security-Policy"]
        assert "sandbox" in csp and "default-src 'none'" in csp
        assert img.headers["Content-Disposition"].startswith("inline")
    assert ctx.client.get(f"/api/v1/items/{iid}/image", headers=admin).content == poly  # bytes kept as sent


def test_client_file_names_never_become_paths(ctx: Ctx) -> None:
    admin = ctx.user("root", "admin")
    pid = make_project(ctx, admin)["id"]
    data = png_bytes(seed=21)
    names = ["../../x.png", "/etc/cron.d/x.png", "..\\..\\win.png", "a/../../../b.png", "~root/.ssh/k.png"]
    files = [("files", (n, png_bytes(seed=30 + i), "image/png")) for i, n in enumerate(names)]
    files.append(("files", ("dup/../../x.png", data, "image/png")))
    r = ctx.client.post(f"/api/v1/projects/{pid}/items", files=files, headers=admin)
    assert r.status_code == 201 and len(r.json()["created"]) == len(files), r.text
    stored = [p for p in ctx.settings.data_dir.rglob("*") if p.is_file()]
    for row in r.json()["created"]:
        sha = row["sha256"]
        assert "/" not in row["file"]  # kept for display and matching only
        assert (ctx.settings.storage_dir / "objects" / sha[:2] / sha[2:4] / sha).is_file()
    # every stored file sits under the data dir and is named by a digest (or is the DB / key)
    for p in stored:
        rel = p.relative_to(ctx.settings.data_dir)
        assert rel.parts[0] in ("storage", "labelloop.db", "labelloop.db-wal", "labelloop.db-shm", "secret_key"), rel
        if rel.parts[0] == "storage":
            assert len(p.name.split(".")[0]) == 64, rel
    data_dir = ctx.settings.data_dir
    for bad in (Path("/etc/cron.d/x.png"), Path.cwd() / "x.png", data_dir.parent / "x.png",
                data_dir.parent.parent / "x.png", data_dir.parent.parent / "b.png"):
        assert not bad.exists(), f"{bad} written outside storage"


def _bomb_png(side: int = 60_000) -> bytes:
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 4096))
            + _png_chunk(b"IEND", b""))


def _zip_bomb(mb: int = 200) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z, z.open("huge.png", "w", force_zip64=True) as f:
        for _ in range(mb):
            f.write(b"\0" * (1 << 20))
    return buf.getvalue()


def test_bombs_are_refused_without_decompressing(ctx: Ctx) -> None:
    admin = ctx.user("root", "admin")
    pid = make_project(ctx, admin)["id"]
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as z:
        z.writestr("a.png", png_bytes(seed=5))
    nested = io.BytesIO()
    with zipfile.ZipFile(nested, "w") as z:
        z.writestr("inner.zip", inner.getvalue())
        z.writestr("../escape.png", png_bytes(seed=6))
    files = [("files", ("bomb.png", _bomb_png(), "image/png")), ("files", ("bomb.zip", _zip_bomb(), "application/zip")),
             ("files", ("nested.zip", nested.getvalue(), "application/zip"))]
    tracemalloc.start()
    try:
        r = ctx.client.post(f"/api/v1/projects/{pid}/items", files=files, headers=admin)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert r.status_code == 201
    got = {x["file"]: x["reason"] for x in r.json()["rejected"]}
    assert got == {"bomb.png": "too_many_pixels", "huge.png": "too_large", "inner.zip": "unsupported_type",
                   "../escape.png": "unsafe_path"}, got
    assert peak < 64 * 2**20, f"peak {peak / 2**20:.0f} MiB while refusing bombs"
    assert ctx.client.get(f"/api/v1/projects/{pid}/items", headers=admin).json()["count"] == 0


def test_oversized_files_and_requests(ctx: Ctx) -> None:
    admin = ctx.user("root", "admin")
    pid = make_project(ctx, admin)["id"]
    ctx.settings.max_upload_bytes = 10_000
    big = b"\x89PNG\r\n\x1a\n" + b"\0" * 20_000
    r = ctx.client.post(f"/api/v1/projects/{pid}/items", files=[("files", ("big.png", big, "image/png"))],
                        headers=admin)
    assert r.status_code == 201 and r.json()["rejected"][0]["reason"] == "too_large"
    ctx.settings.max_request_bytes = 50_000
    r = ctx.client.post(f"/api/v1/projects/{pid}/items", headers=admin,
                        files=[("files", ("big.png", b"\0" * 60_000, "image/png"))])
    assert r.status_code == 413
