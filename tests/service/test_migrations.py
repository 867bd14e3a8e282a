"""The models and the migration head agree (autogenerate finds nothing to do)."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlmodel import SQLModel

import service.models  # noqa: F401
from service.db import engine_from_settings, upgrade_schema


def test_models_match_migrations(settings) -> None:  # type: ignore[no-untyped-def]
    engine = engine_from_settings(settings)
    upgrade_schema(engine)
    with engine.connect() as conn:
        mc = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(mc, SQLModel.metadata)
    engine.dispose()
    assert diff == [], diff


def test_processes_starting_together_on_a_fresh_database(settings) -> None:  # type: ignore[no-untyped-def]
    # `serve --workers N`, or an API and a worker started together, all upgrade the schema
    # at start; on an empty PostgreSQL database they raced to create alembic_version
    import threading

    from service.db import schema_version

    engines = [engine_from_settings(settings) for _ in range(3)]
    start = threading.Barrier(len(engines))
    errors: list[BaseException] = []

    def up(engine) -> None:  # type: ignore[no-untyped-def]
        start.wait()
        try:
            upgrade_schema(engine)
        except BaseException as exc:  # noqa: BLE001  (collected and asserted below)
            errors.append(exc)

    threads = [threading.Thread(target=up, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert len({schema_version(e) for e in engines}) == 1 and schema_version(engines[0]) is not None
    for e in engines:
        e.dispose()
