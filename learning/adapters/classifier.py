"""Image classifier adapter (multiclass and multilabel) on a timm backbone.

Model: ``image -> backbone (num_classes=0) -> pooled features [N, D] -> L2-normalise
(= embed()) -> LinearHead -> logits [N, C] -> softmax (multiclass) / sigmoid (multilabel)``.
With ``features="stages"`` (the default) the features also pool three feature stages
below the top (:func:`learning.backbones.pooled_features`). With ``mirror=True`` (the
default) an image's features are the mean of its own and its mirror image's (left-right
flip), renormalised: the head, the grids and the embedding cache see a view that does
not depend on which way an item faces.
The two training algorithms live in :mod:`learning.adapters.classifier_fit`.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from PIL import Image
from torch import nn

from learning.adapters import classifier_fit
from learning.adapters.base import (
    FitConfig,
    FitEmbeddings,
    FitReport,
    LabelledImages,
    Predictions,
    Progress,
    Task,
)
from learning.adapters.registry import FORMAT_VERSION, MANIFEST, read_manifest, register_adapter
from learning.backbones import (
    DEFAULT_BACKBONE,
    check_layers,
    create_backbone,
    data_config,
    feature_dim,
    make_transform,
    pooled_features,
    set_num_threads,
)
from learning.data import ImageSource, TensorBatches, load_rgb
from learning.train import LinearHead, atomic_directory, notify, scaled, snapshot

WEIGHTS = "weights.pt"
__all__ = ["ClassifierAdapter"]


@register_adapter("classifier")
class ClassifierAdapter:
    """``create_adapter("classifier", classes=[...], task="multiclass"|"multilabel", ...)``.

    ``image_size`` defaults to the backbone's (224); 64-128 px suits small images and is
    far faster on CPU. ``mirror``: classes do not change under a left-right flip, so
    ``embed()`` averages each image with its mirror image while the backbone is frozen,
    and ``precise`` trains on flipped copies; ``False`` for classes told apart by the way
    they face (arrows, some road signs). ``feature_version`` names the feature space of ``embed()``: cached
    embeddings are valid only while it is unchanged (a ``precise`` fit changes it, and so
    does ``FitConfig.image_size`` when it differs from the adapter's).
    """

    adapter_key = "classifier"

    def __init__(
        self,
        classes: Sequence[str],
        task: Task = "multiclass",
        backbone: str = DEFAULT_BACKBONE,
        *,
        checkpoint: Path | str | None = None,
        pretrained: bool = True,
        image_size: int | None = None,
        num_threads: int | None = None,
        features: str = "stages",
        mirror: bool = True,
    ) -> None:
        if task not in ("multiclass", "multilabel"):
            raise ValueError(f"classifier supports multiclass and multilabel, not {task!r}")
        if len(classes) < (2 if task == "multiclass" else 1) or len(set(classes)) != len(classes):
            raise ValueError(f"need distinct class names (>= 2 for multiclass), got {classes!r}")
        self.task: Task = task
        self.classes = [str(c) for c in classes]
        self.backbone_name = backbone
        self.checkpoint = None if checkpoint is None else str(checkpoint)
        self.pretrained = pretrained
        self.num_threads = num_threads
        self.backbone: Any = create_backbone(backbone, checkpoint=checkpoint, pretrained=pretrained)
        self.backbone.requires_grad_(False)  # only fit_precise unfreezes its top stages
        check_layers(self.backbone, features)
        self.feature_layers = features
        self.mirror = bool(mirror)
        self.image_size = int(image_size or data_config(self.backbone)["input_size"][-1])
        self.head = LinearHead(feature_dim(self.backbone, features), len(self.classes))
        self.net = nn.ModuleDict({"backbone": self.backbone, "head": self.head})
        self.backbone_tuned = False
        frozen = checkpoint is not None or pretrained
        self.weights_id = "frozen" if frozen else uuid.uuid4().hex[:12]

    @property
    def feature_version(self) -> str:
        """E.g. ``tf_efficientnet_lite0/pretrained/64px/frozen/stages/mirror``."""
        source = Path(self.checkpoint).name if self.checkpoint else "pretrained"
        layers = "" if self.feature_layers == "final" else f"/{self.feature_layers}"
        mirror = "/mirror" if self.mirrored else ""
        return f"{self.backbone_name}/{source}/{self.image_size}px/{self.weights_id}{layers}{mirror}"

    @property
    def mirrored(self) -> bool:
        """Whether ``embed()`` averages each image with its mirror image: with ``mirror`` on,
        while the backbone is frozen (a ``precise`` model predicts from one view, as it trained)."""
        return self.mirror and not self.backbone_tuned

    # ---------------------------------------------------------------- inference
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, 3, S, S]`` -> L2-normalised pooled features ``[B, D]`` (keeps autograd)."""
        return pooled_features(self.backbone, x, self.feature_layers)

    def run_features(
        self,
        sources: Sequence[Any],
        *,
        transform: Callable[[Image.Image], torch.Tensor] | None = None,
        loader: Callable[[Any], Image.Image] = load_rgb,
        batch_size: int = 32,
        progress: Progress | None = None,
    ) -> torch.Tensor:
        """Features ``[N, D]`` of ``sources`` without gradients, backbone in eval mode.

        Without a ``transform`` these are ``embed()``'s: averaged with the mirror image's when
        :attr:`mirrored`. A given ``transform`` gives one view per image."""
        both = transform is None and self.mirrored
        tf = transform or make_transform(self.backbone, image_size=self.image_size, train=False)
        set_num_threads(self.num_threads)
        self.backbone.eval()
        out = torch.zeros(len(sources), feature_dim(self.backbone, self.feature_layers))
        batches = TensorBatches(sources, tf, batch_size=batch_size, loader=loader)
        with torch.inference_mode():
            for i, (x, idx) in enumerate(batches):
                f = self.features(x)
                out[idx] = nn.functional.normalize(f + self.features(x.flip(-1)), dim=1) if both else f
                notify(progress, (i + 1) / len(batches), f"embedded {int(idx[-1]) + 1}")
        return out

    def embed(self, images: Sequence[ImageSource], *, batch_size: int = 32) -> np.ndarray:
        """``[N, D]`` float32, rows L2-normalised (the head's input; FAISS-ready)."""
        return self.run_features(images, batch_size=batch_size).numpy().astype(np.float32)

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, C]`` -> softmax rows (multiclass) or sigmoids (multilabel)."""
        return logits.softmax(dim=1) if self.task == "multiclass" else logits.sigmoid()

    def predict_embeddings(self, embeddings: np.ndarray) -> Predictions:
        """Predictions from ``embed()`` outputs ``[N, D]`` (same numbers as ``predict``)."""
        with torch.inference_mode():
            logits = self.head(torch.as_tensor(np.asarray(embeddings, dtype=np.float32)))
            return Predictions(probs=self.probs(logits).numpy().astype(np.float32))

    def predict(self, images: Sequence[ImageSource], *, batch_size: int = 32) -> Predictions:
        """``probs [N, C]``: softmax rows (multiclass) or independent sigmoids (multilabel)."""
        return self.predict_embeddings(self.embed(images, batch_size=batch_size))

    # ---------------------------------------------------------------- training
    def fit(
        self,
        train: LabelledImages,
        holdout: LabelledImages | None,
        *,
        config: FitConfig,
        progress: Progress | None = None,
        embeddings: FitEmbeddings | None = None,
    ) -> FitReport:
        """Train on ``train``; ``holdout`` is only predicted afterwards
        (``report.holdout_probs [H, C]``) for calibration.

        ``embeddings``: precomputed ``embed()`` rows for train / holdout /
        ``config.unlabelled`` (all items, same order), valid for this adapter's current
        ``feature_version``. Raises :class:`~learning.adapters.base.Cancelled` when
        ``progress`` does, leaving the adapter exactly as it was.
        """
        if len(train) == 0:
            raise ValueError("cannot fit on an empty training set")
        emb = embeddings or FitEmbeddings()
        n_holdout = len(holdout) if holdout is not None else 0
        for name, arr, n in (("train", emb.train, len(train)), ("holdout", emb.holdout, n_holdout)):
            if arr is not None and len(arr) != n:
                raise ValueError(f"embeddings.{name} has {len(arr)} rows for {n} items")
        y, mask = classifier_fit.label_targets(self.task, train.labels, len(self.classes))
        start = time.perf_counter()
        saved = (snapshot(self.net), self.image_size, self.weights_id, self.backbone_tuned)
        set_num_threads(config.num_threads or self.num_threads)
        torch.manual_seed(config.seed)
        self.image_size = int(config.image_size or self.image_size)
        try:
            if config.algorithm == "fast":
                report = classifier_fit.fit_fast(self, train, y, mask, config, progress, emb)
            else:
                inner = scaled(progress, 0.0, 0.95)
                report = classifier_fit.fit_precise(self, train, y, mask, config, inner, emb)
            if holdout is not None and n_holdout:
                self._predict_holdout(holdout, emb.holdout, report)
            notify(progress, 1.0, "done")
        except BaseException:
            self.net.load_state_dict(saved[0])
            self.image_size, self.weights_id, self.backbone_tuned = saved[1:]
            self.backbone.requires_grad_(False)
            self.backbone.eval()
            raise
        report.seconds = time.perf_counter() - start
        return report

    def _predict_holdout(self, holdout: LabelledImages, cached: np.ndarray | None, report: FitReport) -> None:
        if report.algorithm == "fast" and cached is not None:
            preds = self.predict_embeddings(cached)
        else:
            preds = self.predict(holdout.images)
        y, mask = classifier_fit.label_targets(self.task, holdout.labels, len(self.classes))
        report.holdout_probs = preds.probs
        scores = torch.as_tensor(preds.probs) - 0.5  # argmax / sign behave like logits
        report.holdout_accuracy = classifier_fit.accuracy(self.task, scores, y, mask)

    # ---------------------------------------------------------------- persistence
    def save(self, path: Path | str) -> None:
        """Directory ``path`` with ``manifest.json`` and ``weights.pt``, written atomically.
        The backbone is stored only when it differs from its (local) pretrained source."""
        with_backbone = self.backbone_tuned or self.checkpoint is not None or not self.pretrained
        state = {"head": self.head.state_dict()}
        if with_backbone:
            state["backbone"] = self.backbone.state_dict()
        manifest = {
            "adapter": self.adapter_key,
            "format_version": FORMAT_VERSION,
            "task": self.task,
            "classes": self.classes,
            "backbone": self.backbone_name,
            "checkpoint": self.checkpoint,
            "pretrained": self.pretrained,
            "image_size": self.image_size,
            "feature_dim": feature_dim(self.backbone, self.feature_layers),
            "features": self.feature_layers,
            "mirror": self.mirror,
            "backbone_tuned": self.backbone_tuned,
            "includes_backbone": with_backbone,
            "weights_id": self.weights_id,
            "feature_version": self.feature_version,
            "weights": WEIGHTS,
            "versions": {"torch": torch.__version__, "timm": timm.__version__},
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        with atomic_directory(path) as tmp:
            torch.save(state, tmp / WEIGHTS)
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")

    @classmethod
    def load(cls, path: Path | str) -> ClassifierAdapter:
        """Restore a directory written by :meth:`save` (predictions are identical)."""
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
        )
        weights = Path(path) / m.get("weights", WEIGHTS)
        state: dict[str, Any] = torch.load(weights, map_location="cpu", weights_only=True)
        if inc:
            adapter.backbone.load_state_dict(state["backbone"])
        adapter.head.load_state_dict(state["head"])
        adapter.checkpoint, adapter.pretrained = m["checkpoint"], bool(m["pretrained"])
        adapter.backbone_tuned, adapter.weights_id = bool(m["backbone_tuned"]), m["weights_id"]
        return adapter
