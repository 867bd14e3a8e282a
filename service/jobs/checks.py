"""Periodic checks every deployment runs: crash recovery and lease expiry (listed in
:data:`service.jobs.registry.CHECKS`)."""

from __future__ import annotations

from sqlalchemy.engine import Engine
from sqlmodel import Session

from service.config import Settings
from service.crud.queue import expire_leases
from service.jobs.recovery import recover_stale


def recover(engine: Engine, settings: Settings) -> None:
    recover_stale(engine, timeout_seconds=settings.job_heartbeat_timeout_seconds)


def leases(engine: Engine, settings: Settings) -> None:
    with Session(engine) as s:
        expire_leases(s)
        s.commit()
