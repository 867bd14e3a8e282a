"""The adapter contract: what the service may ask of any model, and the data shapes it uses.

Arrays and paths in, arrays and dataclasses out; nothing here knows about the database.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TypeAlias, runtime_checkable

import numpy as np

from learning.data import ImageSource

Task: TypeAlias = Literal["multiclass", "multilabel", "detection", "segmentation"]
Algorithm: TypeAlias = Literal["fast", "precise"]
Progress: TypeAlias = Callable[[float, str], None]
"""``progress(fraction in [0, 1], message)``; may raise :class:`Cancelled` to stop a fit."""

__all__ = [
    "Algorithm",
    "Cancelled",
    "EpochStats",
    "FitConfig",
    "FitEmbeddings",
    "FitReport",
    "ImageSource",
    "LabelledImages",
    "ModelAdapter",
    "Predictions",
    "Progress",
    "Task",
]


class Cancelled(Exception):
    """Raised by a progress callback to cancel a running fit; fit lets it propagate and
    leaves the adapter as it was before the call."""


@dataclass
class LabelledImages:
    """``images[i]`` (path or PIL image) with ``labels[i]``.

    ``labels``: ``[N]`` int class ids (multiclass) or ``[N, C]`` {0, 1} (multilabel).
    """

    images: Sequence[ImageSource]
    labels: np.ndarray

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels)
        if self.labels.ndim not in (1, 2):
            raise ValueError(f"labels must be [N] or [N, C], got shape {self.labels.shape}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, idx: np.ndarray) -> LabelledImages:
        return LabelledImages([self.images[int(i)] for i in idx], self.labels[idx])


@dataclass
class Predictions:
    """``probs``: ``[N, C]`` float32; rows sum to 1 (multiclass) or independent sigmoids
    (multilabel). ``boxes``: per image a list of detections (detection adapters only)."""

    probs: np.ndarray
    boxes: list[list[dict[str, Any]]] | None = None

    def __len__(self) -> int:
        return len(self.probs)


@dataclass
class FitEmbeddings:
    """Precomputed ``embed()`` outputs (``[N, D]`` float32, L2-normalised) for the same items,
    in the same order, as ``train`` / ``holdout`` / ``config.unlabelled``. Only valid for
    the adapter's current ``feature_version``; ``None`` fields are computed by ``fit``."""

    train: np.ndarray | None = None
    holdout: np.ndarray | None = None
    unlabelled: np.ndarray | None = None


@dataclass
class FitConfig:
    """How to train. ``fast``: head on frozen features (seconds). ``precise``: fine-tune the
    top of the backbone with augmentation, early stopping on a split carved from train
    (never the hold-out), optionally with FixMatch-style pseudo-labels."""

    algorithm: Algorithm = "fast"
    epochs: int = 12  # precise: maximum fine-tuning epochs
    lr: float = 3e-4  # precise: AdamW rate, cosine decay (1e-3 undid the pretrained features)
    backbone_lr_mult: float = 1.0  # precise: backbone rate = lr * this (1.0 measured best)
    weight_decay: float = 1e-4
    batch_size: int = 32
    image_size: int | None = None  # None: the adapter's; 64-96 px for small images
    seed: int = 0
    num_threads: int | None = None  # torch.set_num_threads; None keeps the process setting
    patience: int = 3  # precise: epochs without a better validation loss before stopping
    val_fraction: float = 0.15  # precise: share of train held for early stopping (N >= 20)
    unfreeze_stages: int = 7  # precise: top backbone stages trained (plus conv_head); 7: all of Lite0's
    ema_decay: float | None = 0.98  # precise: weight averaging (timm ModelEmaV3); None: off
    head_l2: float = 30.0  # logistic-regression penalty, sklearn's 1 / C
    head_max_iter: int = 300  # L-BFGS iterations for the head
    use_unlabelled: bool = False
    unlabelled: Sequence[ImageSource] = field(default_factory=list)  # images without labels to learn from
    max_unlabelled: int = 2000  # seeded sample of ``unlabelled`` used per fit
    pseudo_label_threshold: float = 0.95  # confidence (weak view) to accept a pseudo-label
    pseudo_label_warmup: int = 1  # precise: epochs before pseudo-labels are used
    unlabelled_weight: float = 1.0  # loss weight of a pseudo-labelled item

    def __post_init__(self) -> None:
        if self.algorithm not in ("fast", "precise"):
            raise ValueError(f"algorithm must be 'fast' or 'precise', got {self.algorithm!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError("val_fraction must be in [0, 1)")
        if not 0.5 <= self.pseudo_label_threshold <= 1.0:
            raise ValueError("pseudo_label_threshold must be in [0.5, 1]")
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1:
            raise ValueError("epochs, batch_size and patience must be >= 1")


@dataclass
class EpochStats:
    """One epoch of training. ``val_*`` are ``None`` without a validation split."""

    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float | None = None
    val_accuracy: float | None = None
    pseudo_labelled: int = 0


@dataclass
class FitReport:
    """What a fit did. ``holdout_probs`` ``[H, C]``: the final model's predictions on the
    hold-out set (for calibration; the hold-out set never influences training), computed
    on ``runtime`` as the model's later predictions are."""

    algorithm: Algorithm
    epochs_run: int
    history: list[EpochStats]
    stopped_early: bool
    best_epoch: int
    seconds: float
    n_train: int
    n_val: int
    n_unlabelled: int = 0
    embed_seconds: float = 0.0
    holdout_probs: np.ndarray | None = None
    holdout_accuracy: float | None = None
    device: str = "cpu"  # where it trained (``str(torch.device)``); the model version records it
    runtime: str = "torch"  # what computed ``holdout_probs``: calibration holds for that runtime only


@runtime_checkable
class ModelAdapter(Protocol):
    """What every model (classifier, detector, external) offers the service."""

    task: Task
    classes: list[str]

    def fit(
        self,
        train: LabelledImages,
        holdout: LabelledImages | None,
        *,
        config: FitConfig,
        progress: Progress | None = None,
    ) -> FitReport: ...

    def predict(self, images: Sequence[ImageSource], *, batch_size: int = 32) -> Predictions:
        """``probs [N, C]`` (and ``boxes`` for detection)."""
        ...

    def embed(self, images: Sequence[ImageSource], *, batch_size: int = 32) -> np.ndarray:
        """``[N, D]`` float32, each row L2-normalised."""
        ...

    def save(self, path: Path | str) -> None:
        """Write a self-describing directory atomically (``manifest.json`` + weights)."""
        ...

    @classmethod
    def load(cls, path: Path | str) -> ModelAdapter: ...
