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
