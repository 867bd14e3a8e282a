"""Liveness, schema version, and the device the jobs use."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel

from service.api.deps import SettingsDep
from service.db import schema_version

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str
    schema_version: str | None
    version: str
    device: str  # where jobs run, e.g. "cpu (2 threads, openvino)" or "cuda:0 (NVIDIA H100 80GB HBM3, bfloat16)"
    cpu_runtime: str  # the CPU inference path setting (auto, torch, openvino, onnxruntime)


@router.get("/health", response_model=Health)
def health(request: Request, settings: SettingsDep) -> Health:
    from importlib.metadata import version

    return Health(status="ok", schema_version=schema_version(request.app.state.engine),
                  version=version("labelloop"), device=settings.device_description,
                  cpu_runtime=settings.cpu_runtime)
