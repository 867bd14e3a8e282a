"""One fake per seam (STYLE rule 9): a deterministic model adapter for job and loop tests.

:class:`ColourAdapter` honours the adapter contract (:mod:`learning.adapters.base`) in
milliseconds and without torch: it learns one prototype colour per class (the mean RGB
of that class's training images) and predicts from the distance of an image's mean RGB
to each prototype; its embedding is a colour histogram that also carries the mean colour,
so predictions from cached embeddings (the service's fast path) are the same. Images of
clearly different colours (:mod:`tests.factories`' colour groups) are therefore learnt
from a few labels, and the same inputs always give the same outputs.

Importing this module registers the adapter as ``"fake-colour"`` through the public
registry; :func:`register` is the explicit form. It takes the classifier's keyword
arguments (``backbone``, ``image_size``, ...) and ignores the ones it does not need, so it
can stand wherever the service creates a ``"classifier"``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from learning.adapters import (
    FitConfig,
    FitEmbeddings,
    FitReport,
    LabelledImages,
    Predictions,
    Progress,
    Task,
    read_manifest,
    register_adapter,
)
from learning.adapters.base import EpochStats
from learning.adapters.registry import FORMAT_VERSION, MANIFEST, get_adapter_class
from learning.data import ImageSource, load_rgb

KEY = "fake-colour"
BINS = 4  # per channel: a 4 x 4 x 4 joint histogram, 64 dimensions
MEAN_WEIGHT = 0.25  # the mean colour rides on the embedding at this weight (histogram mass 1)
THUMB = 16  # images are shrunk to at most this side before anything is measured
TEMPERATURE = 0.1  # softmax over squared RGB distances in [0, 3]: sure of clear colours, never exactly 1
WEIGHTS = "prototypes.npz"


def colour_embedding(images: Sequence[ImageSource]) -> np.ndarray:
    """``[N, BINS**3 + 3]`` float32, each row L2-normalised: the joint RGB histogram (as shares,
    summing to 1) followed by ``MEAN_WEIGHT`` times the mean RGB in ``[0, 1]``, so that
    :func:`mean_from_embedding` recovers the mean colour exactly."""
    out = np.zeros((len(images), BINS**3 + 3), dtype=np.float64)
    for n, source in enumerate(images):
        arr = np.asarray(load_rgb(source, max_side=THUMB).resize((THUMB, THUMB)), dtype=np.int64)
        idx = arr // (256 // BINS)  # [H, W, 3] bin per channel
        flat = (idx[..., 0] * BINS + idx[..., 1]) * BINS + idx[..., 2]
        out[n, : BINS**3] = np.bincount(flat.ravel(), minlength=BINS**3) / flat.size
        out[n, BINS**3 :] = MEAN_WEIGHT * arr.reshape(-1, 3).mean(axis=0) / 255.0
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out.astype(np.float32)


def mean_from_embedding(vecs: np.ndarray) -> np.ndarray:
    """``[N, 3]`` mean RGB in ``[0, 1]`` from :func:`colour_embedding` rows ``[N, BINS**3 + 3]``."""
    vecs = np.asarray(vecs, dtype=np.float64)
    return vecs[:, BINS**3 :] / (MEAN_WEIGHT * vecs[:, : BINS**3].sum(axis=1, keepdims=True))


class ColourAdapter:
    """Prototype colours per class. ``multiclass``: softmax of ``-d^2 / TEMPERATURE`` over
    the squared distances ``d^2`` of the mean RGB to each class prototype. ``multilabel``:
    per class a sigmoid of (distance to the class's negatives' prototype minus distance to
    its positives' prototype). Untrained: uniform (multiclass) or 0.5 (multilabel)."""

    adapter_key = KEY
    feature_version = f"{KEY}-hist{BINS}-mean"

    def __init__(self, classes: Sequence[str], task: Task = "multiclass", **_ignored: Any) -> None:
        if task not in ("multiclass", "multilabel"):
            raise ValueError(f"{KEY} handles multiclass and multilabel, not {task!r}")
        self.classes = list(classes)
        self.task: Task = task
        # multiclass: [C, 3] class colours; multilabel: [C, 2, 3] (negatives, positives)
        self.prototypes: np.ndarray | None = None

    # ---------------------------------------------------------------- prediction
    def _probs(self, rgb: np.ndarray) -> np.ndarray:
        n, c = len(rgb), len(self.classes)
        if self.prototypes is None:
            return np.full((n, c), 1.0 / c if self.task == "multiclass" else 0.5, dtype=np.float32)
        if self.task == "multiclass":
            d2 = ((rgb[:, None, :] - self.prototypes[None, :, :]) ** 2).sum(axis=2)  # [N, C]
            logits = -d2 / TEMPERATURE
            logits -= logits.max(axis=1, keepdims=True)
            e = np.exp(logits)
            return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
        neg = np.sqrt(((rgb[:, None, :] - self.prototypes[None, :, 0, :]) ** 2).sum(axis=2))
        pos = np.sqrt(((rgb[:, None, :] - self.prototypes[None, :, 1, :]) ** 2).sum(axis=2))
        return (1.0 / (1.0 + np.exp(-(neg - pos) / TEMPERATURE))).astype(np.float32)

    def predict(self, images: Sequence[ImageSource], *, batch_size: int = 32) -> Predictions:
        """``probs [N, C]`` float32 from each image's mean colour (batch size has no effect)."""
        return self.predict_embeddings(self.embed(images))

    def predict_embeddings(self, embeddings: np.ndarray) -> Predictions:
        """``probs [N, C]`` from :meth:`embed` rows (the service's fast path: cached embeddings)."""
        return Predictions(probs=self._probs(mean_from_embedding(embeddings)))

    def embed(self, images: Sequence[ImageSource], *, batch_size: int = 32) -> np.ndarray:
        """``[N, 67]`` float32, L2-normalised: colour histogram and mean colour (:func:`colour_embedding`)."""
        return colour_embedding(images)

    # ---------------------------------------------------------------- training
    def fit(self, train: LabelledImages, holdout: LabelledImages | None, *, config: FitConfig,
            progress: Progress | None = None, embeddings: FitEmbeddings | None = None) -> FitReport:
        """One pass: class prototypes from ``train``; ``holdout`` is only predicted.
        A classless prototype (no training image) sits at mid-grey."""
        start = time.perf_counter()
        rgb = mean_from_embedding(embeddings.train if embeddings is not None and embeddings.train is not None
                                  else self.embed(train.images))
        labels = np.asarray(train.labels)
        c = len(self.classes)
        if self.task == "multiclass":
            protos = np.full((c, 3), 0.5)
            for k in range(c):
                if (labels == k).any():
                    protos[k] = rgb[labels == k].mean(axis=0)
        else:
            protos = np.full((c, 2, 3), 0.5)
            for k in range(c):
                for side in (0, 1):
                    mask = labels[:, k].astype(bool) == bool(side)
                    if mask.any():
                        protos[k, side] = rgb[mask].mean(axis=0)
        if progress is not None:
            progress(0.5, "prototypes computed")  # may raise Cancelled: nothing changed yet
        self.prototypes = protos
        train_probs = self._probs(rgb)
        acc = float(_accuracy(self.task, train_probs, labels))
        report = FitReport(algorithm=config.algorithm, epochs_run=1,
                           history=[EpochStats(epoch=1, train_loss=0.0, train_accuracy=acc)],
                           stopped_early=False, best_epoch=1, seconds=0.0, n_train=len(train), n_val=0)
        if holdout is not None:
            report.holdout_probs = self.predict(holdout.images).probs
            report.holdout_accuracy = float(_accuracy(self.task, report.holdout_probs, np.asarray(holdout.labels)))
        if progress is not None:
            progress(1.0, "fitted")
        report.seconds = max(time.perf_counter() - start, 1e-9)
        return report

    # ---------------------------------------------------------------- persistence
    def save(self, path: Path | str) -> None:
        """``manifest.json`` and ``prototypes.npz`` in directory ``path``, written atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
        tmp.mkdir()
        try:
            manifest = {"adapter": KEY, "format_version": FORMAT_VERSION, "task": self.task,
                        "classes": self.classes, "feature_version": self.feature_version,
                        "trained": self.prototypes is not None, "weights": WEIGHTS}
            np.savez(tmp / WEIGHTS, prototypes=self.prototypes if self.prototypes is not None else np.zeros(0))
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
            if path.exists():
                shutil.rmtree(path)
            os.replace(tmp, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    @classmethod
    def load(cls, path: Path | str, *, device: Any = "cpu", **_: Any) -> ColourAdapter:
        """Restore a saved fake (``device`` and runtime options accepted as the real adapters do)."""
        m = read_manifest(path)
        if m.get("adapter") != KEY:
            raise ValueError(f"{path} holds a {m.get('adapter')!r} model, not {KEY!r}")
        adapter = cls(m["classes"], m["task"])
        if m.get("trained"):
            with np.load(Path(path) / WEIGHTS) as npz:
                adapter.prototypes = np.asarray(npz["prototypes"])
        return adapter


def _accuracy(task: Task, probs: np.ndarray, labels: np.ndarray) -> float:
    if len(labels) == 0:
        return 0.0
    if task == "multiclass":
        return float((probs.argmax(axis=1) == labels).mean())
    return float(((probs >= 0.5) == labels.astype(bool)).mean())


def register() -> str:
    """Register :class:`ColourAdapter` under ``"fake-colour"`` (idempotent); returns the key."""
    try:
        if get_adapter_class(KEY) is ColourAdapter:
            return KEY
    except KeyError:
        pass
    register_adapter(KEY)(ColourAdapter)
    return KEY


register()
