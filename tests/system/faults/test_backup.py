"""Backup and restore round trip (SQLite always, PostgreSQL where configured), the
empty-target rule, atomic archives, and a backup taken while uploads go on."""

from __future__ import annotations

import argparse
import hashlib
import tarfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from service import backup as bk
from service.config import Settings
from service.main import create_app
from tests.conftest import PG_URL, Ctx, make_project, png_bytes


@pytest.fixture(params=["sqlite"] + (["postgresql"] if PG_URL else []))
def pair(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Settings, Settings]]:
    """Settings of a source and of an empty target deployment (own PostgreSQL databases, never ``test``)."""
    if request.param == "sqlite":
        yield (Settings(data_dir=tmp_path / "src", secret_key="k", scheduler_enabled=False, run_jobs_in_process=False),
               Settings(data_dir=tmp_path / "dst", secret_key="k", scheduler_enabled=False, run_jobs_in_process=False))
        return
    base = make_url(PG_URL)
    names = [f"labelloop_bk_{uuid.uuid4().hex[:10]}_{x}" for x in ("src", "dst")]
    admin = create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for n in names:
            conn.execute(text(f'CREATE DATABASE "{n}"'))
    try:
        yield tuple(Settings(data_dir=tmp_path / side, secret_key="k", scheduler_enabled=False,  # type: ignore[misc]
                             run_jobs_in_process=False,
                             database_url=base.set(database=n).render_as_string(hide_password=False))
                    for side, n in zip(("src", "dst"), names, strict=True))
    finally:
        with admin.connect() as conn:
            for n in names:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{n}" WITH (FORCE)'))
        admin.dispose()


def _snapshot(c: TestClient, headers: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {"projects": c.get("/api/v1/projects", headers=headers).json()}
    for p in out["projects"]["data"]:
        items = c.get(f"/api/v1/projects/{p['id']}/items?limit=500", headers=headers).json()["data"]
        out[p["name"]] = {
            it["id"]: (it["sha256"], it["status"], it["version"],
                       [h["data"] for h in c.get(f"/api/v1/items/{it['id']}/history", headers=headers).json()],
                       hashlib.sha256(c.get(f"/api/v1/items/{it['id']}/image", headers=headers).content).hexdigest())
            for it in items}
    return out


def _seed(ctx: Ctx) -> dict[str, str]:
    admin = ctx.user("root", "admin")
    p = make_project(ctx, admin, name="backed-up", n_images=6)
    items = ctx.client.get(f"/api/v1/projects/{p['id']}/items", headers=admin).json()["data"]
    for it, lab in zip(items[:3], ("cat", "dog", "cat"), strict=True):
        assert ctx.client.post(f"/api/v1/items/{it['id']}/annotations", json={"labels": [lab]},
                               headers=admin).status_code == 201
    model = ctx.settings.models_dir / f"project-{p['id']}" / "v1"
    model.mkdir(parents=True)
    (model / "weights.pt").write_bytes(b"w" * 1000)
    (ctx.settings.data_dir / "embeddings").mkdir(exist_ok=True)
    (ctx.settings.data_dir / "embeddings" / "cache.npy").write_bytes(b"e" * 100)
    return admin


def test_round_trip_restores_everything(pair: tuple[Settings, Settings], tmp_path: Path) -> None:
    src, dst = pair
    with TestClient(create_app(src, background=False)) as client:
        ctx = Ctx(client, src)
        admin = _seed(ctx)
        before = _snapshot(client, admin)
        info = bk.backup(src, tmp_path / "out" / "b.tar.gz")
    assert info.path.is_file() and info.files >= 6 + 1 + 1 and info.schema_version
    assert oct(info.path.stat().st_mode & 0o777) == "0o600"
    assert not [p for p in info.path.parent.iterdir() if p.name != "b.tar.gz"], "temporary files left"
    manifest = bk.restore(dst, info.path)
    assert manifest["backend"] == info.backend
    assert (dst.models_dir / "project-1" / "v1" / "weights.pt").read_bytes() == b"w" * 1000
    assert (dst.data_dir / "embeddings" / "cache.npy").is_file()
    with TestClient(create_app(dst, background=False)) as client:
        assert _snapshot(client, admin) == before  # same rows, labels, history and image bytes; token works
        r = client.post("/api/v1/projects/1/items", files=[("files", ("new.png", png_bytes(seed=99), "image/png"))],
                        headers=admin)
        assert r.status_code == 201  # the restored deployment takes new work (sequences restored too)
    with pytest.raises(bk.BackupError, match="not empty"):
        bk.restore(dst, info.path)
    bk.restore(dst, info.path, force=True)
    with TestClient(create_app(dst, background=False)) as client:
        assert _snapshot(client, admin) == before


def test_cli_and_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    bk.register(parser.add_subparsers(dest="cmd"))
    src = Settings(data_dir=tmp_path / "src", secret_key="k", scheduler_enabled=False, run_jobs_in_process=False)
    with TestClient(create_app(src, background=False)) as client:
        _seed(Ctx(client, src))
    out = tmp_path / "cli.tar.gz"
    args = parser.parse_args(["backup", "--out", str(out)])
    assert args.func(args, src) == 0 and "wrote" in capsys.readouterr().out
    dst = Settings(data_dir=tmp_path / "dst", secret_key="k")
    args = parser.parse_args(["restore", str(out)])
    assert args.func(args, dst) == 0 and "restored" in capsys.readouterr().out
    assert args.func(args, dst) == 1 and "not empty" in capsys.readouterr().err
    args = parser.parse_args(["restore", "--force", str(out)])
    assert args.func(args, dst) == 0
    # not an archive; an archive that escapes; a backup of the other backend
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not a tar")
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        (tmp_path / "m.json").write_text('{"format": 1, "backend": "sqlite"}')
        tar.add(tmp_path / "m.json", arcname="manifest.json")
        tar.add(tmp_path / "m.json", arcname="data/../../escaped.json")
    empty = Settings(data_dir=tmp_path / "empty", secret_key="k")
    for archive, words in ((junk, "not a readable"), (evil, "refusing archive member")):
        with pytest.raises(bk.BackupError, match=words):
            bk.restore(empty, archive)
    assert not (tmp_path / "escaped.json").exists()
    pg = Settings(data_dir=tmp_path / "pg", database_url="postgresql+psycopg://u@127.0.0.1:1/none")
    with pytest.raises(bk.BackupError, match="sqlite backup"):
        bk.restore(pg, out)


def test_archive_is_written_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = Settings(data_dir=tmp_path / "src", secret_key="k", scheduler_enabled=False, run_jobs_in_process=False)
    with TestClient(create_app(src, background=False)) as client:
        _seed(Ctx(client, src))
    out = tmp_path / "out" / "b.tar.gz"
    good = bk.backup(src, out)
    original = out.read_bytes()
    real_add = tarfile.TarFile.add
    calls = {"n": 0}

    def crash_midway(self: tarfile.TarFile, name: Any, *args: Any, **kwargs: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError(28, "No space left on device")
        real_add(self, name, *args, **kwargs)

    monkeypatch.setattr(tarfile.TarFile, "add", crash_midway)
    with pytest.raises(OSError):
        bk.backup(src, out)
    assert out.read_bytes() == original and good.path == out  # the previous archive is untouched
    assert sorted(p.name for p in out.parent.iterdir()) == ["b.tar.gz"]  # no temp archive, no work dir


def test_backup_while_uploads_go_on_is_consistent(tmp_path: Path) -> None:
    src = Settings(data_dir=tmp_path / "src", secret_key="k", scheduler_enabled=False, run_jobs_in_process=False)
    dst = Settings(data_dir=tmp_path / "dst", secret_key="k", scheduler_enabled=False, run_jobs_in_process=False)
    stop = threading.Event()
    with TestClient(create_app(src, background=False)) as client:
        ctx = Ctx(client, src)
        admin = ctx.user("root", "admin")
        pid = make_project(ctx, admin, n_images=2)["id"]

        def upload() -> None:
            c = TestClient(client.app)
            i = 0
            while not stop.is_set():
                i += 1
                c.post(f"/api/v1/projects/{pid}/items", headers=admin,
                       files=[("files", (f"u{i}.png", png_bytes(seed=1000 + i), "image/png"))])

        t = threading.Thread(target=upload)
        t.start()
        try:
            archives = [bk.backup(src, tmp_path / f"live{k}.tar.gz") for k in range(3)]
        finally:
            stop.set()
            t.join()
    bk.restore(dst, archives[-1].path)
    with TestClient(create_app(dst, background=False)) as client:
        items = client.get(f"/api/v1/projects/{pid}/items?limit=500", headers=admin).json()["data"]
        assert len(items) >= 2
        for it in items:  # every restored row finds its image
            assert client.get(f"/api/v1/items/{it['id']}/image", headers=admin).status_code == 200
