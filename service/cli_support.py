"""What the CLI's command modules share: an upgraded engine, and a project by name or id.
(Beside :mod:`service.cli` rather than in it, so that command modules need not import the
CLI that registers them.)"""

from __future__ import annotations

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from service.config import Settings
from service.db import engine_from_settings, upgrade_schema
from service.models import Project


def cli_engine(settings: Settings) -> Engine:
    """The deployment's engine, its schema migrated to the head."""
    engine = engine_from_settings(settings)
    upgrade_schema(engine)
    return engine


def project_named(session: Session, name: str) -> Project:
    """The project called ``name`` (or with id ``name``); exits with a message when there is none."""
    project = session.exec(select(Project).where(Project.name == name)).first()
    if project is None and name.isdigit():
        project = session.get(Project, int(name))
    if project is None:
        raise SystemExit(f"error: no project {name!r}")
    return project
