"""Disk full and read-only storage: a clear error (HTTP 507 with a message), never a
corrupted state. Tests run as root, so the faults are injected by monkeypatching
the write paths (``chmod`` would not stop root)."""

from __future__ import annotations

import builtins
import errno
import io
import json
import random
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pytest
from fastapi.testclient import TestClient

import service.ingest.storage as storage
from service.config import get_settings
from service.jobs.runner import ThreadExecutor
from tests.conftest import Ctx, make_project, png_bytes
from tests.system.faults.live import colour_png, label_through_queue

NO_SPACE = OSError(errno.ENOSPC, "No space left on device")
READ_ONLY = OSError(errno.EROFS, "Read-only file system")


def _failing_writes(monkeypatch: pytest.MonkeyPatch, error: OSError) -> None:
    """Every blob/thumbnail write gets a few bytes out, then the disk refuses."""
    real = storage.atomic_write

    def broken(final: Path, write: Any, *, action: str) -> None:
        def half(fh: BinaryIO) -> None:
            fh.write(b"\x89PNG partial")
            raise error

        real(final, half, action=action)

    monkeypatch.setattr(storage, "atomic_write", broken)


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.is_dir() else []


@pytest.mark.parametrize("error,words", [(NO_SPACE, "disk is full"), (READ_ONLY, "read-only")])
def test_upload_when_storage_refuses_is_507_and_leaves_nothing(ctx: Ctx, monkeypatch: pytest.MonkeyPatch,
                                                               error: OSError, words: str) -> None:
    admin = ctx.user("root", "admin")
    pid = make_project(ctx, admin, n_images=2)["id"]
    before = _files(ctx.settings.storage_dir)
    _failing_writes(monkeypatch, error)
    files = [("files", (f"x{i}.png", png_bytes(seed=100 + i), "image/png")) for i in range(3)]
    r = ctx.client.post(f"/api/v1/projects/{pid}/items", files=files, headers=admin)
    assert r.status_code == 507, r.text
    assert words in r.json()["detail"], r.json()
    assert ctx.client.get(f"/api/v1/projects/{pid}/items", headers=admin).json()["count"] == 2
    assert _files(ctx.settings.storage_dir) == before  # not even a temporary file is left
    monkeypatch.undo()
    r = ctx.client.post(f"/api/v1/projects/{pid}/items", files=files, headers=admin)
    assert r.status_code == 201 and len(r.json()["created"]) == 3, r.text


def test_thumbnail_on_read_only_storage_is_507(ctx: Ctx, monkeypatch: pytest.MonkeyPatch) -> None:
    admin = ctx.user("root", "admin")
    pid = make_project(ctx, admin, n_images=1)["id"]
    iid = ctx.client.get(f"/api/v1/projects/{pid}/items", headers=admin).json()["data"][0]["id"]
    for p in (ctx.settings.storage_dir / "thumbs").rglob("*.jpg"):
        p.unlink()  # the thumbnail has to be made again, on a disk that refuses
    _failing_writes(monkeypatch, READ_ONLY)
    client = TestClient(ctx.client.app, raise_server_exceptions=False)
    r = client.get(f"/api/v1/items/{iid}/thumbnail", headers=admin)
    assert r.status_code == 507, (r.status_code, r.text)
    assert "read-only" in r.json()["detail"]
    assert client.get(f"/api/v1/items/{iid}/image", headers=admin).status_code == 200


def _trainable(ctx: Ctx, headers: dict[str, str]) -> int:
    ctx.settings.image_size = 32
    ctx.settings.torch_threads = 1
    r = ctx.client.post("/api/v1/projects", headers=headers, json={
        "name": "disk", "classes": ["red", "blue"], "policy": {
            "min_labels_per_class": 5, "holdout_share": 0.3, "target_precision": 0.8, "delta": 0.2,
            "retrain_every_labels": 100000, "calibration": "pooled"}})
    pid = r.json()["id"]
    rng = random.Random(3)
    files = [("files", (f"c{i:03d}.png", colour_png(i % 2 == 0, rng), "image/png")) for i in range(60)]
    created = ctx.client.post(f"/api/v1/projects/{pid}/items", files=files, headers=headers).json()["created"]
    truth = {x["id"]: "red" if int(x["file"][1:4]) % 2 == 0 else "blue" for x in created}
    assert label_through_queue(TestClient(ctx.client.app, headers=headers), pid, truth, 40) == 40
    return int(pid)


def test_model_save_on_full_disk_fails_the_job_and_keeps_the_current_model(
        ctx: Ctx, monkeypatch: pytest.MonkeyPatch, fake_adapter: str) -> None:
    # any model will do: the fake adapter (tests/fakes.py) writes its weights with np.savez
    admin = ctx.user("root", "admin")
    pid = _trainable(ctx, admin)
    executor = ThreadExecutor(ctx.engine, ctx.settings)
    assert ctx.client.post(f"/api/v1/projects/{pid}/train", headers=admin).status_code == 202
    executor.run_pending()
    first = ctx.client.get(f"/api/v1/projects/{pid}/model-versions", headers=admin).json()
    assert [m["status"] for m in first] == ["ready"] and first[0]["is_current"]

    def no_space(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez", no_space)
    r = ctx.client.post(f"/api/v1/projects/{pid}/train", headers=admin)
    assert r.status_code == 202, r.text
    executor.run_pending()
    job = ctx.client.get(f"/api/v1/jobs/{r.json()['id']}", headers=admin).json()
    assert job["state"] == "failed" and "No space left" in job["error"], job
    mvs = {m["version"]: m for m in ctx.client.get(f"/api/v1/projects/{pid}/model-versions", headers=admin).json()}
    assert mvs[2]["status"] == "failed" and not mvs[2]["is_current"]
    assert mvs[1]["status"] == "ready" and mvs[1]["is_current"]
    model_dir = ctx.settings.models_dir / f"project-{pid}"
    assert sorted(p.name for p in model_dir.iterdir()) == ["v1"], "a failed save left files behind"
    assert json.loads((model_dir / "v1" / "manifest.json").read_text())["adapter"] == fake_adapter


def _cli_export(ctx: Ctx, monkeypatch: pytest.MonkeyPatch, out: Path) -> int:
    from service.cli import main

    monkeypatch.setenv("LABELLOOP_DATA_DIR", str(ctx.settings.data_dir))
    monkeypatch.setenv("LABELLOOP_DATABASE_URL", ctx.settings.database_url)
    monkeypatch.setenv("LABELLOOP_SECRET_KEY", "test-secret")
    get_settings.cache_clear()
    try:
        return main(["export", "p", "--format", "coco", "--out", str(out)])
    finally:
        get_settings.cache_clear()


def _labelled(ctx: Ctx) -> None:
    admin = ctx.user("root", "admin")
    pid = make_project(ctx, admin, n_images=3)["id"]
    for it in ctx.client.get(f"/api/v1/projects/{pid}/items", headers=admin).json()["data"]:
        ctx.client.post(f"/api/v1/items/{it['id']}/annotations", json={"labels": ["cat"]}, headers=admin)


class _FullDisk:
    """A file on a disk that fills up: half of the first write lands, then ENOSPC."""

    def __init__(self, real: Any) -> None:
        self.real = real

    def write(self, data: bytes) -> int:
        self.real.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def __enter__(self) -> _FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.real.close()


def _half_writes(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """Writes opened (``open``, ``Path.open``, ``Path.write_bytes``) under ``folder`` hit a full disk."""
    real_open = builtins.open

    def full_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        fh = real_open(file, mode, *args, **kwargs)
        if any(m in mode for m in "wax+") and Path(str(file)).resolve().is_relative_to(folder.resolve()):
            return _FullDisk(fh)
        return fh

    monkeypatch.setattr(builtins, "open", full_open)
    monkeypatch.setattr(io, "open", full_open)


def test_cli_export_crash_mid_write_never_leaves_a_partial_output(ctx: Ctx, monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    _labelled(ctx)
    out = tmp_path / "out.json"
    assert _cli_export(ctx, monkeypatch, out) == 0
    whole = json.loads(out.read_text())
    _half_writes(monkeypatch, tmp_path)
    with pytest.raises((OSError, SystemExit)):
        if _cli_export(ctx, monkeypatch, out) != 0:
            raise SystemExit(1)
    monkeypatch.undo()
    assert json.loads(out.read_text()) == whole  # the old export is untouched, never half of a new one


def test_cli_export_on_full_disk_is_a_clear_error(ctx: Ctx, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    _labelled(ctx)
    out = tmp_path / "out.json"
    _half_writes(monkeypatch, tmp_path)
    try:
        code = _cli_export(ctx, monkeypatch, out)
    except OSError:
        code = -1
    monkeypatch.undo()
    assert code not in (0, -1), "an OSError escaped as a traceback"
    assert "No space left" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "out.json.part").exists()
