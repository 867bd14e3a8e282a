"""Hostile and broken input leaves the database and storage as they were."""

from __future__ import annotations

import io
import json
import struct
import zipfile
import zlib
from pathlib import Path

from tests.conftest import Ctx, make_project, png_bytes


def _bomb_png(width: int = 60_000, height: int = 60_000) -> bytes:
    """A small PNG whose header claims a huge image (decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    raw = zlib.compress(b"\x00" * 1000)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def _state(ctx: Ctx, pid: int, headers: dict) -> tuple[int, list[str]]:
    count = ctx.client.get(f"/api/v1/projects/{pid}/items", headers=headers).json()["count"]
    files = sorted(str(p.relative_to(ctx.settings.storage_dir)) for p in Path(ctx.settings.storage_dir).rglob("*")
                   if p.is_file())
    return count, files


def test_each_bad_file_is_rejected_and_nothing_changes(ctx: Ctx) -> None:
    admin = ctx.user("root", "admin")
    pid = make_project(ctx, admin, n_images=1)["id"]
    before = _state(ctx, pid, admin)
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as z:
        z.writestr("../../etc/evil.png", png_bytes((1, 2, 3)))
        z.writestr("/abs.png", png_bytes((4, 5, 6)))
    cases = {
        "corrupt.png": (png_bytes()[:60], "corrupt"),
        "text.png": (b"just some text, not an image at all", "unsupported_type"),
        "bomb.png": (_bomb_png(), "too_many_pixels"),
        "empty.png": (b"", "empty"),
    }
    files = [("files", (n, d, "image/png")) for n, (d, _) in cases.items()]
    files.append(("files", ("evil.zip", zbuf.getvalue(), "application/zip")))
    r = ctx.client.post(f"/api/v1/projects/{pid}/items", files=files, headers=admin)
    assert r.status_code == 201
    out = r.json()
    assert out["created"] == []
    got = {x["file"]: x["reason"] for x in out["rejected"]}
    for name, (_, reason) in cases.items():
        assert got[name] == reason, (name, got)
    assert sum(1 for k, v in got.items() if v == "unsafe_path") == 2
    assert all(x["message"] for x in out["rejected"])
    assert _state(ctx, pid, admin) == before
    assert not (ctx.settings.data_dir.parent / "etc").exists()


def test_malformed_annotation_files(ctx: Ctx) -> None:
    admin = ctx.user("root", "admin")
    pid = make_project(ctx, admin, n_images=2)["id"]
    before = ctx.client.get(f"/api/v1/projects/{pid}/items", headers=admin).json()
    bad = {
        "coco": b'{"images": [ {"id": 1, "file_name": "img_0000.png"} ], "annotations": [ {"image_id": 1, ',
        "voc": b"<annotation><object><name>cat</name><bndbox><xmin>1</xmin></annotation>",
        "cvat": b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><annotations>&a;</annotations>',
        "labelstudio": b'{"not": "a list"}',
    }
    for fmt, data in bad.items():
        r = ctx.client.post(f"/api/v1/projects/{pid}/import?format={fmt}",
                            files={"file": (f"x.{fmt}", data)}, headers=admin)
        assert r.status_code == 422, (fmt, r.status_code, r.text)
        assert r.json()["detail"]
    after = ctx.client.get(f"/api/v1/projects/{pid}/items", headers=admin).json()
    assert after == before


def test_coco_round_trip_boxes_and_polygons(ctx: Ctx, tmp_path: Path) -> None:
    from pycocotools.coco import COCO

    admin = ctx.user("root", "admin")
    pid = make_project(ctx, admin, classes=["cat", "dog"], task="segmentation", n_images=3)["id"]
    names = [i["file_name"] for i in ctx.client.get(f"/api/v1/projects/{pid}/items", headers=admin).json()["data"]]
    coco = {
        "images": [{"id": k + 1, "file_name": n, "width": 32, "height": 24} for k, n in enumerate(names)],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1.0, 2.0, 10.0, 8.0], "area": 80.0, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [3.0, 3.0, 6.0, 6.0], "area": 18.0, "iscrowd": 0,
             "segmentation": [[3.0, 3.0, 9.0, 3.0, 9.0, 9.0]]},
            {"id": 3, "image_id": 2, "category_id": 2, "bbox": [0.0, 0.0, 5.0, 5.0], "area": 25.0, "iscrowd": 0},
        ],
    }
    r = ctx.client.post(f"/api/v1/projects/{pid}/import?format=coco",
                        files={"file": ("c.json", json.dumps(coco).encode())}, headers=admin)
    assert r.status_code == 200, r.text
    assert r.json()["updated"] == 2
    exp = ctx.client.get(f"/api/v1/projects/{pid}/export?format=coco", headers=admin)
    assert exp.status_code == 200
    path = tmp_path / "export.json"
    path.write_bytes(exp.content)
    c = COCO(str(path))
    assert len(c.getAnnIds()) == 3
    snapshot = {i["file_name"]: i["annotation"] for i in
                ctx.client.get(f"/api/v1/projects/{pid}/items", headers=admin).json()["data"]}
    # re-import of the export changes nothing (idempotent, identical annotations)
    r = ctx.client.post(f"/api/v1/projects/{pid}/import?format=coco", files={"file": ("e.json", exp.content)},
                        headers=admin)
    assert r.status_code == 200 and r.json()["updated"] == 0, r.json()
    again = {i["file_name"]: i["annotation"] for i in
             ctx.client.get(f"/api/v1/projects/{pid}/items", headers=admin).json()["data"]}
    assert again == snapshot
