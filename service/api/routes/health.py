"""Liveness and schema version."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel

from service.db import schema_version

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str
    schema_version: str | None
    version: str


@router.get("/health", response_model=Health)
def health(request: Request) -> Health:
    from importlib.metadata import version

    return Health(status="ok", schema_version=schema_version(request.app.state.engine),
                  version=version("labelloop"))
