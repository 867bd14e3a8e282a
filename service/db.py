"""Database engine and sessions.

SQLite (default) runs in WAL mode with a busy timeout and foreign keys on;
PostgreSQL is used when ``LABELLOOP_DATABASE_URL`` says so. Engines are built
by :func:`make_engine` from a :class:`Settings`, never at import time.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import Engine
from sqlalchemy.pool import StaticPool
from sqlmodel import Session, create_engine

from service.config import Settings

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"  # package data: shipped in the wheel


class NulInText(ValueError):
    """A row to be written holds a NUL character in its text (PostgreSQL cannot store one,
    SQLite can): refused alike on every database."""

    def __init__(self, where: str) -> None:
        super().__init__(f"{where}: text cannot hold NUL characters")


def _find_nul(value: Any, depth: int = 0) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if depth > 32:
        return False
    if isinstance(value, dict):
        return any(_find_nul(k, depth + 1) or _find_nul(v, depth + 1) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_find_nul(v, depth + 1) for v in value)
    return False


@event.listens_for(Session, "before_flush")
def _refuse_nul(session: Session, _ctx: Any, _instances: Any) -> None:
    """Every row written through a session: a NUL in a text or JSON column is a
    :class:`NulInText` (the API answers 422) on SQLite as on PostgreSQL."""
    for obj in (*session.new, *session.dirty):
        table = getattr(obj, "__table__", None)
        if table is None:
            continue
        for column in table.columns:
            if _find_nul(getattr(obj, column.key, None)):
                raise NulInText(f"{table.name}.{column.key}")


def make_engine(url: str, *, echo: bool = False) -> Engine:
    """Create an engine for ``url`` with the pragmas/pool labelloop relies on."""
    kwargs: dict[str, Any] = {"echo": echo}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        if url in ("sqlite://", "sqlite:///:memory:"):
            kwargs["poolclass"] = StaticPool
        engine = create_engine(url, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy issue BEGIN itself so that BEGIN IMMEDIATE works.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA busy_timeout=30000")
            _wal(cur)
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # Writers serialise at BEGIN instead of failing on a lock upgrade;
            # read-only sessions (see ``read_only``) take a deferred BEGIN.
            if conn.get_execution_options().get("labelloop_read_only"):
                conn.exec_driver_sql("BEGIN")
            else:
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    kwargs.update(pool_size=20, max_overflow=20, pool_pre_ping=True)
    return create_engine(url, **kwargs)


def _wal(cur: Any, wait_s: float = 30.0) -> None:
    """Switch to WAL. On a fresh file, processes starting together (``serve --workers N``,
    an API and a worker) race for the switch, and SQLite answers the loser "database is
    locked" at once, without its busy timeout; so wait here as the busy timeout would."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def read_only(engine: Engine) -> Engine:
    """The same engine (same pool) for sessions that only read."""
    return engine.execution_options(labelloop_read_only=True)


def engine_from_settings(settings: Settings) -> Engine:
    if settings.is_sqlite:
        settings.ensure_dirs()
    return make_engine(settings.database_url)


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


SCHEMA_LOCK_KEY = 0x6C6C_0001  # "ll", 1: the advisory lock key of schema upgrades


def upgrade_schema(engine: Engine) -> None:
    """Bring the schema to the migration head (run at every start)."""
    from alembic import command

    cfg = alembic_config(str(engine.url.render_as_string(hide_password=False)))
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            # processes starting together on a fresh database (``serve --workers N``, an API
            # and a worker) take turns: the first migrates, the others then find the head.
            # (SQLite serialises on its BEGIN IMMEDIATE already.)
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": SCHEMA_LOCK_KEY})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def schema_version(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


@contextmanager
def session_scope(engine: Engine, *, read: bool = False) -> Iterator[Session]:
    """A session that commits on success and rolls back on error.

    ``read=True``: a read-only session (deferred BEGIN on SQLite). Rows it was asked to
    write on the side (``session.info["after_read"]``, e.g. an export's audit row) are
    written once the read has ended, in a write transaction of their own that waits for
    the lock like any writer."""
    with Session(read_only(engine) if read else engine, expire_on_commit=False) as session:
        session.info["read_only"] = read
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        later = session.info.pop("after_read", [])
    if later:
        with Session(engine) as writer:
            writer.add_all(later)
            writer.commit()
