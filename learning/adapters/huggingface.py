"""Hugging Face ``transformers`` image classifiers from a local directory (predict only).

A team brings a model the ecosystem publishes (``AutoModelForImageClassification``: ViT,
ConvNeXt, Swin, EfficientNet, ... fine-tuned on their classes) as the folder
``save_pretrained`` writes, or a repo already in the local Hugging Face cache. Nothing is
downloaded: offline mode is forced and every load is ``local_files_only``. Weights must be
``safetensors`` (a pickled ``pytorch_model.bin`` can run code when loaded) and no code from
the folder runs (``trust_remote_code=False``). The model's labels are its ``id2label``; its
input size and preprocessing are its image processor's.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from learning.adapters.base import Predictions
from learning.adapters.external import ExternalModelError
from learning.data import ImageSource, load_rgb
from learning.device import DeviceLike, resolve_device

KIND = "huggingface"
#: files whose content identifies a model folder (a change to any of them is a different model)
IDENTITY = ("config.json", "preprocessor_config.json", "model.safetensors", "model.safetensors.index.json")


def offline() -> None:
    """Force the Hugging Face libraries offline in this process (never a download)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


def resolve_folder(ref: str, roots: Sequence[Path], cache: Path | None = None) -> Path:
    """The model folder ``ref`` names: a directory, or a repo id (``org/name``) already in the
    local Hugging Face cache ``cache``; it must lie inside one of ``roots`` (the folders the
    server lets users read)."""
    offline()
    if not ref or "\x00" in ref or len(ref) > 4096:
        raise ExternalModelError("path must name a model folder or a cached repo id")
    path = Path(ref).expanduser()
    if not path.is_absolute() and not path.exists() and ref.count("/") == 1:
        try:
            from huggingface_hub import snapshot_download

            path = Path(snapshot_download(ref, local_files_only=True, cache_dir=cache))
        except Exception:  # noqa: BLE001 (not in the cache: said below)
            raise ExternalModelError(f"{ref!r} is neither a model folder nor a repo in the local Hugging Face "
                                     "cache (nothing is downloaded: copy the model to the server first)") from None
    try:
        real = path.resolve()
    except (OSError, RuntimeError) as exc:
        raise ExternalModelError(f"{ref!r} cannot be read: {type(exc).__name__}") from None
    if not any(real == r.resolve() or r.resolve() in real.parents for r in roots):
        raise ExternalModelError(f"{ref!r} is outside the folders this server reads models from "
                                 f"(LABELLOOP_HF_MODEL_DIRS): {', '.join(str(r) for r in roots)}")
    if not real.is_dir():
        raise ExternalModelError(f"{ref!r} is not a folder")
    return real


def folder_digest(folder: Path) -> str:
    """sha256 over the folder's identifying files (names and contents)."""
    h = hashlib.sha256()
    for name in IDENTITY:
        p = folder / name
        if p.is_file():
            h.update(name.encode())
            with p.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
    for p in sorted(folder.glob("model-*.safetensors")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


class HuggingFaceAdapter:
    """A ``transformers`` image-classification model in ``folder`` (see the module doc).
    ``sha256``, when given, must match :func:`folder_digest` (the folder is the registered one)."""

    adapter_key = KIND
    task = "multiclass"

    def __init__(self, folder: str | Path, *, device: DeviceLike = "cpu", num_threads: int | None = None,
                 sha256: str | None = None) -> None:
        offline()
        self.path = Path(folder)
        if not (self.path / "config.json").is_file():
            raise ExternalModelError("not a Hugging Face model folder: it has no config.json")
        if sha256 is not None and folder_digest(self.path) != sha256:
            raise ExternalModelError("the model folder changed since it was registered: register it again")
        if not any(self.path.glob("*.safetensors")):
            raise ExternalModelError("the folder has no .safetensors weights (pickled weights can run code when "
                                     "loaded): save the model with safe_serialization=True")
        try:
            import torch
            from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification
        except ImportError as exc:
            raise ExternalModelError("Hugging Face models need transformers: pip install 'labelloop[huggingface]'"
                                     ) from exc
        try:
            config = AutoConfig.from_pretrained(self.path, local_files_only=True, trust_remote_code=False)
        except Exception as exc:  # noqa: BLE001 (one sentence for the user)
            raise ExternalModelError(f"not a loadable Hugging Face model: {type(exc).__name__}: {exc}") from None
        archs = list(getattr(config, "architectures", None) or [])
        if not any(a.endswith("ForImageClassification") for a in archs):
            raise ExternalModelError(f"labelloop can use Hugging Face image-classification models; this folder holds "
                                     f"{', '.join(archs) or config.model_type!r}")
        try:
            self.model = AutoModelForImageClassification.from_pretrained(
                self.path, local_files_only=True, trust_remote_code=False, use_safetensors=True)
            self.processor = AutoImageProcessor.from_pretrained(self.path, local_files_only=True)
        except Exception as exc:  # noqa: BLE001
            raise ExternalModelError(f"not a loadable Hugging Face model: {type(exc).__name__}: {exc}") from None
        labels = getattr(self.model.config, "id2label", None) or {}
        n = int(self.model.config.num_labels)
        self.classes = [str(labels.get(i, labels.get(str(i), f"LABEL_{i}"))) for i in range(n)]
        if len(set(self.classes)) != n:
            raise ExternalModelError(f"the model's labels are not distinct: {self.classes}")
        self.device = resolve_device(device)
        self.model.eval().to(self.device)
        if num_threads:
            torch.set_num_threads(int(num_threads))

    def input_spec(self) -> dict[str, Any]:
        """What registration records: the processor and the input size it makes."""
        size = getattr(self.processor, "size", None)
        items = size.items() if isinstance(size, dict) else vars(size).items() if size is not None else []
        return {"processor": type(self.processor).__name__,
                "size": {str(k): int(v) for k, v in items if isinstance(v, int | float) and v is not None},
                "architecture": type(self.model).__name__}

    def predict(self, images: Sequence[ImageSource], *, batch_size: int = 16, **_: Any) -> Predictions:
        """``probs [N, C]`` (softmax of the logits; a multi-label head: sigmoids)."""
        import torch

        out = []
        multi = getattr(self.model.config, "problem_type", None) == "multi_label_classification"
        for start in range(0, len(images), max(1, batch_size)):
            batch = [load_rgb(s) for s in images[start:start + batch_size]]
            x = self.processor(images=batch, return_tensors="pt")
            with torch.inference_mode():
                logits = self.model(**{k: v.to(self.device) for k, v in x.items()}).logits.float()
            out.append((logits.sigmoid() if multi else logits.softmax(-1)).cpu().numpy())
        probs = np.concatenate(out) if out else np.zeros((0, len(self.classes)), dtype=np.float32)
        return Predictions(probs=probs.astype(np.float32))

    def close(self) -> None:
        return None

    def embed(self, images: Sequence[ImageSource], *, batch_size: int = 32) -> np.ndarray:
        raise NotImplementedError("external models are used for prediction only")

    def fit(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("external models are not trained by labelloop")
