"""External models for automatic annotation: register (multipart, checked by running it) and list."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import APIRouter, File, Form, HTTPException, UploadFile
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel
from sqlmodel import col, func, select

from learning.adapters.external import KINDS, TASKS, ExternalModelError, check_labels, validate_model
from learning.adapters.huggingface import KIND as HF_KIND
from learning.adapters.sandbox import scrub_paths
from service.api.deps import AUTH_ERRORS, TOO_LARGE, CurrentUser, SessionDep, SettingsDep, _err
from service.config import Settings
from service.models import ROLE_RANK, RegisteredModel, RegisteredModelPublic, Role

router = APIRouter(tags=["models"])
CODE_KINDS = ("torchscript",)  # formats that carry code: admins only, and only with allow_code_models


ModelOut = RegisteredModelPublic


class ModelsOut(BaseModel):
    data: list[ModelOut]
    count: int


def _json(value: str, field: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise HTTPException(422, f"{field} must be JSON: {exc.msg}") from None


def _store(settings: Settings, data: bytes, kind: str) -> tuple[str, str]:
    """Write the file content-addressed under models_dir/external (atomic); (path, sha256)."""
    sha = hashlib.sha256(data).hexdigest()
    folder = settings.models_dir / "external"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{sha}.{'onnx' if kind == 'onnx' else 'pt'}"
    if not path.exists():
        tmp = folder / f".{sha}.{uuid.uuid4().hex}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return str(path), sha


def _check(settings: Settings, data: bytes, kind: str, task: str, labels: list[str], spec: dict) -> dict:
    """Run the model (from its bytes: no path to leak) on a sample image; the checked input spec."""
    try:
        checked = validate_model(data, kind, task, labels, spec, num_threads=settings.torch_threads)  # type: ignore[arg-type]
    except ExternalModelError as exc:
        raise HTTPException(422, scrub_paths(str(exc), limit=600)) from None
    return checked.to_dict()


@router.post("/models", response_model=ModelOut, status_code=201,
             responses={**AUTH_ERRORS, **TOO_LARGE, 409: _err("a model with this name exists"),
                        422: _err("not a model file, input mismatch, or a bad label list / input spec")})
async def register_model(user: CurrentUser, session: SessionDep, settings: SettingsDep,
                         file: UploadFile | None = File(None, description="ONNX file (TorchScript: admins, if "
                                                                          "allowed); not with kind huggingface"),
                         name: str = Form(..., min_length=1, max_length=200),
                         kind: str = Form(..., description="onnx | torchscript | huggingface"),
                         task: str = Form("detection", description="multiclass|multilabel|detection|segmentation"),
                         labels: str | None = Form(None, description='JSON list of label names, e.g. ["cat", "dog"] '
                                                                     "(huggingface: the model's own)"),
                         input_spec: str | None = Form(None, description='JSON {"size": 224, "mean": [...], '
                                                                         '"std": [...], "layout": "NCHW"} '
                                                                         "(huggingface: the model's processor)"),
                         path: str | None = Form(None, description="huggingface: a model folder on the server, or "
                                                                   "a repo id already in its Hugging Face cache"),
                         default_threshold: float = Form(0.5, ge=0.0, le=1.0)) -> ModelOut:
    """Admins and managers (ONNX, Hugging Face); TorchScript: admins, when the server allows code
    models. The model is run on a sample image (TorchScript: in a sandbox child) before it is
    stored. A Hugging Face image classifier is registered from a folder the server may read
    (``LABELLOOP_HF_MODEL_DIRS``, the local Hugging Face cache, ``<data dir>/models/huggingface``),
    offline, safetensors weights only; its labels and input size are its own."""
    if ROLE_RANK[user.role] < ROLE_RANK[Role.manager]:
        raise HTTPException(403, "registering models needs the manager or admin role")
    if session.exec(select(RegisteredModel.id).where(RegisteredModel.name == name)).first() is not None:
        raise HTTPException(409, f"a model named {name!r} is already registered")
    if kind == HF_KIND:
        if file is not None or not path:
            raise HTTPException(422, "kind huggingface takes a path (a model folder or a cached repo id), not a file")
        folder, names, spec, sha, hf_task = await run_in_threadpool(_check_hf, settings, path)
        rm = RegisteredModel(name=name, kind=kind, task=hf_task, labels=names, input_spec=spec,
                             default_threshold=default_threshold, path=str(folder), sha256=sha, created_by=user.id)
        session.add(rm)
        session.flush()
        return ModelOut.model_validate(rm, from_attributes=True)
    if kind not in KINDS or task not in TASKS:
        raise HTTPException(422, f"kind must be one of {[*KINDS, HF_KIND]} and task one of {list(TASKS)}")
    if kind in CODE_KINDS and not (settings.allow_code_models and user.role == Role.admin):
        raise HTTPException(403, f"a {kind} model is code, not a graph: registering one needs the admin role and "
                                 "LABELLOOP_ALLOW_CODE_MODELS=true on the server; export the model to ONNX instead")
    if file is None or labels is None or input_spec is None:
        raise HTTPException(422, f"kind {kind} needs a file, labels and input_spec")
    try:
        names = check_labels(_json(labels, "labels"))
    except ExternalModelError as exc:
        raise HTTPException(422, str(exc)) from None
    spec = _json(input_spec, "input_spec")
    if not isinstance(spec, dict):
        raise HTTPException(422, "input_spec must be a JSON object")
    data = await file.read(settings.max_upload_bytes + 1)
    if len(data) > settings.max_upload_bytes:
        raise HTTPException(413, f"model file over {settings.max_upload_bytes} bytes")
    checked = await run_in_threadpool(_check, settings, data, kind, task, names, spec)
    path, sha = _store(settings, data, kind)
    rm = RegisteredModel(name=name, kind=kind, task=task, labels=names, input_spec=checked,
                         default_threshold=default_threshold, path=path, sha256=sha, created_by=user.id)
    session.add(rm)
    session.flush()
    return ModelOut.model_validate(rm, from_attributes=True)


def _check_hf(settings: Settings, ref: str) -> tuple[Path, list[str], dict, str, str]:
    """Load the Hugging Face model ``ref`` and run it on a sample image: (folder, labels, spec,
    digest, task); 422 with one sentence when it cannot be used."""
    from PIL import Image

    from learning.adapters.huggingface import HuggingFaceAdapter, folder_digest, resolve_folder

    try:
        folder = resolve_folder(ref, settings.hf_roots, settings.hf_cache)
        adapter = HuggingFaceAdapter(folder, num_threads=settings.torch_threads)
        probs = adapter.predict([Image.new("RGB", (64, 48), (127, 127, 127))]).probs
    except ExternalModelError as exc:
        raise HTTPException(422, scrub_paths(str(exc), limit=600)) from None
    if probs.shape != (1, len(adapter.classes)) or not np.isfinite(probs).all():
        raise HTTPException(422, f"the model gave {probs.shape} scores for one image and {len(adapter.classes)} labels")
    multi = getattr(adapter.model.config, "problem_type", None) == "multi_label_classification"
    return folder, adapter.classes, adapter.input_spec(), folder_digest(folder), "multilabel" if multi else "multiclass"


@router.get("/models", response_model=ModelsOut, responses=AUTH_ERRORS)
def list_models(user: CurrentUser, session: SessionDep) -> ModelsOut:
    """All registered models (any signed-in user: the annotate dialog lists them)."""
    rows = session.exec(select(RegisteredModel).order_by(col(RegisteredModel.name))).all()
    count = session.exec(select(func.count()).select_from(RegisteredModel)).one()
    return ModelsOut(data=[ModelOut.model_validate(r, from_attributes=True) for r in rows], count=int(count))
