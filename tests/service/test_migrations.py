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


def test_stored_semi_supervised_false_becomes_the_algorithm_default(settings) -> None:  # type: ignore[no-untyped-def]
    # 0004: the old default false (meaningful for precise only) becomes null, so fast
    # projects get the new default and precise projects stay off; downgrade turns it back
    from alembic import command
    from sqlmodel import Session, select

    from learning.policy import Policy
    from service.db import alembic_config
    from service.models import Project

    engine = engine_from_settings(settings)
    cfg = alembic_config(str(engine.url.render_as_string(hide_password=False)))

    def migrate(step, target: str) -> None:  # type: ignore[no-untyped-def]
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            step(cfg, target)

    def stored() -> dict[str, object]:
        with Session(engine) as s:
            return {p.name: p.policy.get("semi_supervised", "absent") for p in s.exec(select(Project)).all()}

    migrate(command.upgrade, "0003")
    old = {**Policy().to_dict(), "semi_supervised": False}
    with Session(engine) as s:
        s.add(Project(name="fast", policy={**old, "algorithm": "fast"}))
        s.add(Project(name="precise", policy={**old, "algorithm": "precise"}))
        s.add(Project(name="chosen", policy={**old, "algorithm": "precise", "semi_supervised": True}))
        s.commit()
    migrate(command.upgrade, "head")
    assert stored() == {"fast": None, "precise": None, "chosen": True}
    with Session(engine) as s:
        uses = {p.name: Policy.from_dict(p.policy).uses_unlabelled for p in s.exec(select(Project)).all()}
    assert uses == {"fast": True, "precise": False, "chosen": True}
    migrate(command.downgrade, "0003")
    assert stored() == {"fast": False, "precise": False, "chosen": True}
    engine.dispose()
