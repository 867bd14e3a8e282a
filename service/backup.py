"""Backup and restore: the database and the data dir (storage, models, embeddings) in one tar.gz.

Archive layout::

    manifest.json        format, backend, schema version, labelloop version, member count
    db/labelloop.db      SQLite, taken with the online backup API (consistent while serving)
    db/dump.sql          PostgreSQL, ``pg_dump --no-owner --no-privileges`` (plain SQL)
    data/...             everything else under the data dir (storage/, models/, embeddings/, secret_key)

The database is copied first, then the files. Blobs and model folders are
written before the rows that point at them commit and are never rewritten, so
every row in the snapshot finds its files in the archive (later files are
harmless orphans). The archive is written to a temporary sibling, fsynced and
renamed: a crash leaves no half archive at ``out_path``.

``restore`` unpacks into an empty data dir / database and refuses a non-empty
one unless ``force=True`` (then the old database and data files are replaced).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url

from service.config import Settings
from service.db import make_engine, schema_version

FORMAT = 1
SQLITE_MEMBER = "db/labelloop.db"
PG_MEMBER = "db/dump.sql"
_PARTIAL_MARKERS = (".tmp-", ".part")


class BackupError(Exception):
    """A backup or restore that cannot go on; the message says why, for people."""


@dataclass
class BackupInfo:
    path: Path
    backend: str
    files: int
    bytes: int
    schema_version: str | None


def sqlite_path(settings: Settings) -> Path:
    database = make_url(settings.database_url).database
    if not database or database == ":memory:":
        raise BackupError("an in-memory SQLite database cannot be backed up")
    return Path(database)


def _libpq_url(settings: Settings) -> str:
    """The SQLAlchemy URL as libpq understands it (no ``+driver``)."""
    url = make_url(settings.database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def _data_files(settings: Settings) -> list[Path]:
    """Files under the data dir that belong in a backup (not the live SQLite files, not partial writes)."""
    root = settings.data_dir
    if not root.is_dir():
        return []
    skip: set[Path] = set()
    if settings.is_sqlite:
        db = sqlite_path(settings).resolve()
        skip = {db, Path(f"{db}-wal"), Path(f"{db}-shm"), Path(f"{db}-journal")}
    out = []
    for p in sorted(root.rglob("*")):
        if not p.is_file() or p.resolve() in skip:
            continue
        if any(m in p.name for m in _PARTIAL_MARKERS) or any(x.startswith(".labelloop-") for x in p.parts):
            continue  # partial writes, and a backup's or restore's own work folder
        out.append(p)
    return out


def _run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
    tool = shutil.which(cmd[0])
    if tool is None:
        raise BackupError(f"{cmd[0]} is not installed (it comes with the PostgreSQL client tools)")
    done = subprocess.run([tool, *cmd[1:]], capture_output=True, check=False, **kwargs)
    if done.returncode != 0:
        raise BackupError(f"{cmd[0]} failed: {done.stderr.decode(errors='replace').strip()[-2000:]}")
    return done


def _dump_database(settings: Settings, work: Path) -> tuple[Path, str]:
    """Copy the database into ``work``; returns (file, archive member name)."""
    if settings.is_sqlite:
        src_path = sqlite_path(settings)
        if not src_path.is_file():
            raise BackupError(f"no SQLite database at {src_path}")
        dst_path = work / "labelloop.db"
        src = sqlite3.connect(f"file:{src_path}?mode=ro", uri=True, timeout=30)
        dst = sqlite3.connect(dst_path)
        try:
            with dst:
                src.backup(dst)  # a consistent snapshot, even while the server writes
        finally:
            src.close()
            dst.close()
        return dst_path, SQLITE_MEMBER
    dump = work / "dump.sql"
    _run(["pg_dump", "--no-owner", "--no-privileges", "--format=plain", "--file", str(dump), _libpq_url(settings)])
    return dump, PG_MEMBER


def backup(settings: Settings, out_path: Path) -> BackupInfo:
    """Write one tar.gz with the database and the data dir to ``out_path`` (atomically)."""
    out_path = Path(out_path)
    engine = make_engine(settings.database_url)
    try:
        version = schema_version(engine)
    finally:
        engine.dispose()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp-{uuid.uuid4().hex}")
    try:
        with tempfile.TemporaryDirectory(prefix=".labelloop-backup-", dir=out_path.parent) as work:
            db_file, db_member = _dump_database(settings, Path(work))
            files = _data_files(settings)  # listed after the database snapshot: see the module doc
            backend = "sqlite" if settings.is_sqlite else "postgresql"
            manifest = {"format": FORMAT, "backend": backend,
                        "schema_version": version, "labelloop_version": _version(),
                        "created_at": datetime.now(UTC).isoformat(), "files": len(files)}
            (Path(work) / "manifest.json").write_text(json.dumps(manifest, indent=2))
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # it holds the secret key
            with os.fdopen(fd, "wb") as raw:
                with tarfile.open(fileobj=raw, mode="w:gz") as tar:
                    tar.add(Path(work) / "manifest.json", arcname="manifest.json")
                    tar.add(db_file, arcname=db_member)
                    for p in files:
                        with contextlib.suppress(FileNotFoundError):  # swept meanwhile: not referenced
                            tar.add(p, arcname=f"data/{p.relative_to(settings.data_dir).as_posix()}")
                raw.flush()
                os.fsync(raw.fileno())
        os.replace(tmp, out_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return BackupInfo(out_path, backend, len(files), out_path.stat().st_size, version)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("labelloop")
    except PackageNotFoundError:
        return "unknown"


def _database_has_data(settings: Settings) -> bool:
    engine = make_engine(settings.database_url)
    try:
        tables = set(inspect(engine).get_table_names())
        with engine.connect() as conn:
            for table in ("user", "project", "item", "job"):
                if table in tables and conn.execute(text(f'SELECT 1 FROM "{table}" LIMIT 1')).first():
                    return True
        return False
    finally:
        engine.dispose()


def _target_files(settings: Settings) -> list[Path]:
    return [p for p in _data_files(settings) if p.name != "secret_key"]


def _safe_members(tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    members = tar.getmembers()
    for m in members:
        parts = Path(m.name).parts
        if m.name.startswith("/") or ".." in parts or not (m.isfile() or m.isdir()):
            raise BackupError(f"refusing archive member {m.name!r} (outside the archive, or a link/device)")
    return members


def restore(settings: Settings, archive_path: Path, *, force: bool = False) -> dict[str, Any]:
    """Restore ``archive_path`` into the settings' database and data dir; returns the manifest."""
    archive_path = Path(archive_path)
    backend = "sqlite" if settings.is_sqlite else "postgresql"
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".labelloop-restore-", dir=settings.data_dir.parent) as work_s:
        work = Path(work_s)
        try:
            with tarfile.open(archive_path, "r:gz") as tar:
                tar.extractall(work, members=_safe_members(tar), filter="data")
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise BackupError(f"{archive_path} is not a readable labelloop backup: {exc}") from exc
        try:
            manifest = json.loads((work / "manifest.json").read_text())
        except (OSError, ValueError) as exc:
            raise BackupError(f"{archive_path} has no manifest.json: not a labelloop backup") from exc
        if manifest.get("format") != FORMAT:
            raise BackupError(f"backup format {manifest.get('format')!r} is not supported (expected {FORMAT})")
        if manifest.get("backend") != backend:
            raise BackupError(f"this is a {manifest.get('backend')} backup; the target database is {backend}")
        if not force and (_database_has_data(settings) or _target_files(settings)):
            raise BackupError("the target database or data dir is not empty; restore into an empty one, "
                              "or pass --force to replace what is there")
        _restore_database(settings, work)
        _restore_files(settings, work / "data")
    return dict(manifest)


def _restore_database(settings: Settings, work: Path) -> None:
    if settings.is_sqlite:
        target = sqlite_path(settings)
        target.parent.mkdir(parents=True, exist_ok=True)
        staged = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex}")
        shutil.copyfile(work / SQLITE_MEMBER, staged)
        for side in (Path(f"{target}-wal"), Path(f"{target}-shm"), Path(f"{target}-journal")):
            side.unlink(missing_ok=True)
        os.replace(staged, target)
        return
    engine = make_engine(settings.database_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    finally:
        engine.dispose()
    _run(["psql", "--quiet", "--no-psqlrc", "-v", "ON_ERROR_STOP=1", "--single-transaction",
          "--file", str(work / PG_MEMBER), _libpq_url(settings)])


def _restore_files(settings: Settings, src: Path) -> None:
    root = settings.data_dir
    for name in ("storage", "models", "embeddings"):
        shutil.rmtree(root / name, ignore_errors=True)
    if not src.is_dir():
        return
    for p in sorted(src.rglob("*")):
        if p.is_file():
            dst = root / p.relative_to(src)
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(p, dst)


def register(sub: argparse._SubParsersAction) -> None:
    """``labelloop backup --out PATH`` and ``labelloop restore PATH [--force]``."""
    bk = sub.add_parser("backup", help="write the database and the data dir into one tar.gz")
    bk.add_argument("--out", required=True, type=Path, help="archive to write (e.g. labelloop-backup.tar.gz)")
    bk.set_defaults(func=cmd_backup)
    rs = sub.add_parser("restore", help="restore a backup into an empty data dir and database")
    rs.add_argument("archive", type=Path)
    rs.add_argument("--force", action="store_true", help="replace a non-empty database and data dir")
    rs.set_defaults(func=cmd_restore)


def cmd_backup(args: argparse.Namespace, settings: Settings) -> int:
    try:
        info = backup(settings, args.out)
    except (BackupError, OSError, sqlite3.Error) as exc:
        sys.stderr.write(f"error: backup failed: {exc}\n")
        return 1
    sys.stdout.write(f"wrote {info.path} ({info.bytes} bytes, {info.backend}, {info.files} files, "
                     f"schema {info.schema_version})\n")
    return 0


def cmd_restore(args: argparse.Namespace, settings: Settings) -> int:
    try:
        manifest = restore(settings, args.archive, force=args.force)
    except (BackupError, OSError, sqlite3.Error) as exc:
        sys.stderr.write(f"error: restore failed: {exc}\n")
        return 1
    sys.stdout.write(f"restored {args.archive} ({manifest['backend']}, schema {manifest['schema_version']}, "
                     f"{manifest['files']} files, taken {manifest['created_at']})\n")
    return 0
