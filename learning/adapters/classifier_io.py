"""Saving and loading :class:`~learning.adapters.classifier.ClassifierAdapter` directories.

A directory holds ``manifest.json`` (what the model is, where it trained, which runtime
computed its calibration) and ``weights.pt`` (host tensors: a model trained on a GPU loads on
a machine without one, and the reverse). Kept apart from the adapter so that neither module
grows past one idea; this one never imports the adapter (the class comes in as an argument).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import timm
import torch

from learning.adapters.registry import FORMAT_VERSION, MANIFEST, read_manifest
from learning.backbones import feature_dim
from learning.device import DeviceLike
from learning.train import atomic_directory, cpu_state

WEIGHTS = "weights.pt"
__all__ = ["WEIGHTS", "load_classifier", "save_classifier"]


def save_classifier(adapter: Any, path: Path | str) -> None:
    """Write ``adapter`` to the directory ``path`` atomically. The backbone is stored only
    when it differs from its (local) pretrained source."""
    with_backbone = adapter.backbone_tuned or adapter.checkpoint is not None or not adapter.pretrained
    state = {"head": cpu_state(adapter.head)}
    if with_backbone:
        state["backbone"] = cpu_state(adapter.backbone)
    manifest = {
        "adapter": adapter.adapter_key,
        "format_version": FORMAT_VERSION,
        "task": adapter.task,
        "classes": adapter.classes,
        "backbone": adapter.backbone_name,
        "checkpoint": adapter.checkpoint,
        "pretrained": adapter.pretrained,
        "image_size": adapter.image_size,
        "feature_dim": feature_dim(adapter.backbone, adapter.feature_layers),
        "features": adapter.feature_layers,
        "mirror": adapter.mirror,
        "backbone_tuned": adapter.backbone_tuned,
        "includes_backbone": with_backbone,
        "weights_id": adapter.weights_id,
        "feature_version": adapter.feature_version,
        "weights": WEIGHTS,
        "trained_on": adapter.trained_on,
        "runtime": adapter.runtime,
        "precision": adapter.precision,
        "versions": {"torch": torch.__version__, "timm": timm.__version__},
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    with atomic_directory(path) as tmp:
        torch.save(state, tmp / WEIGHTS)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")


def load_classifier(
    cls: Any,
    path: Path | str,
    *,
    device: DeviceLike = "cpu",
    runtime: str | None = None,
    runtime_dir: Path | str | None = None,
    decode_workers: int = 0,
    num_threads: int | None = None,
) -> Any:
    """An instance of ``cls`` restored from ``path`` onto ``device``; ``runtime`` defaults to the
    one it was saved with (its calibration holds there); exports go to ``runtime_dir``
    (default ``<path>/runtime``, beside the model version)."""
    m = read_manifest(path)
    if m.get("adapter") != cls.adapter_key:
        raise ValueError(f"{path} holds a {m.get('adapter')!r} model, not {cls.adapter_key!r}")
    inc = bool(m["includes_backbone"])
    adapter = cls(
        m["classes"],
        m["task"],
        m["backbone"],
        checkpoint=None if inc else m["checkpoint"],
        pretrained=not inc and bool(m["pretrained"]),
        image_size=m["image_size"],
        features=m.get("features", "final"),  # saved before the setting existed
        mirror=m.get("mirror", False),  # likewise
        device=device,
        runtime=runtime or m.get("runtime", "torch"),
        runtime_dir=runtime_dir if runtime_dir is not None else Path(path) / "runtime",
        precision=m.get("precision", "f32"),
        decode_workers=decode_workers,
        num_threads=num_threads,
    )
    state: dict[str, Any] = torch.load(Path(path) / m.get("weights", WEIGHTS), map_location="cpu", weights_only=True)
    if inc:
        adapter.backbone.load_state_dict(state["backbone"])
    adapter.head.load_state_dict(state["head"])
    adapter.checkpoint, adapter.pretrained = m["checkpoint"], bool(m["pretrained"])
    adapter.backbone_tuned, adapter.weights_id = bool(m["backbone_tuned"]), m["weights_id"]
    adapter.trained_on = m.get("trained_on")
    return adapter
