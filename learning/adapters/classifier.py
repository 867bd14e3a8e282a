"""Image classifier adapter (multiclass and multilabel) on a timm backbone.

Model: ``image -> backbone (num_classes=0) -> pooled features [N, D] -> L2-normalise
(= embed()) -> LinearHead -> logits [N, C] -> softmax (multiclass) / sigmoid (multilabel)``.
With ``features="stages"`` (the default) the features also pool three feature stages
below the top (:func:`learning.backbones.pooled_features`). With ``mirror=True`` (the
default) an image's features are the mean of its own and its mirror image's (left-right
flip), renormalised: the head, the grids and the embedding cache see a view that does
not depend on which way an item faces.
The two training algorithms live in :mod:`learning.adapters.classifier_fit`.

Device: ``device`` (a ``torch.device`` or ``"cpu"`` / ``"cuda[:N]"`` / ``"auto"``) holds the
net; on CUDA inference and fine-tuning run in mixed precision (:mod:`learning.device`).
``runtime`` (``torch``, ``openvino``, ``onnxruntime``, ``auto``) picks the CPU path of
``embed()`` / ``predict()`` while no weight is being trained: anything but ``torch`` runs an
export of the frozen backbone (:mod:`learning.runtime`) cached in ``runtime_dir``, and
names itself in :attr:`ClassifierAdapter.feature_version`, so cached embeddings, hold-out
predictions (calibration) and predictions always come from one runtime. Saved weights
are CPU tensors: a model trained on a GPU loads on a CPU-only machine and the reverse.
"""

from __future__ import annotations

import functools
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from learning.adapters import classifier_fit, classifier_io
from learning.adapters.base import (
    FitConfig,
    FitEmbeddings,
    FitReport,
    LabelledImages,
    Predictions,
    Progress,
    Task,
)
from learning.adapters.registry import register_adapter
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
from learning.data import ImageSource, load_rgb
from learning.device import DeviceLike, autocast, resolve_device, to_device
from learning.runtime import RUNTIMES, FastFeatures, RuntimeUnavailable, best_runtime, load_or_export
from learning.runtime_batches import ParallelBatches
from learning.train import LinearHead, notify, scaled, snapshot

WEIGHTS = classifier_io.WEIGHTS
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
        device: DeviceLike = "cpu",
        runtime: str = "torch",
        runtime_dir: Path | str | None = None,
        precision: str = "f32",
        decode_workers: int = 0,
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
        self.device = resolve_device(device)
        if runtime not in (*RUNTIMES, "auto"):
            raise ValueError(f"runtime must be auto or one of {', '.join(RUNTIMES)}, got {runtime!r}")
        self.runtime = best_runtime(self.device) if runtime == "auto" else runtime
        if self.device.type != "cpu":
            self.runtime = "torch"  # the exported graphs are a CPU path
        self.runtime_dir = Path(runtime_dir) if runtime_dir is not None else None
        self.precision = precision
        self.decode_workers = int(decode_workers)
        self._fast: tuple[tuple[Any, ...], FastFeatures] | None = None
        self.backbone: Any = create_backbone(backbone, checkpoint=checkpoint, pretrained=pretrained)
        self.backbone.requires_grad_(False)  # only fit_precise unfreezes its top stages
        check_layers(self.backbone, features)
        self.feature_layers = features
        self.mirror = bool(mirror)
        self.image_size = int(image_size or data_config(self.backbone)["input_size"][-1])
        self.head = LinearHead(feature_dim(self.backbone, features), len(self.classes))
        self.net = nn.ModuleDict({"backbone": self.backbone, "head": self.head})
        self.net.to(self.device)
        self.backbone.to(memory_format=torch.channels_last)
        self.trained_on: str | None = None  # the device of the last fit (saved in the manifest)
        self.backbone_tuned = False
        frozen = checkpoint is not None or pretrained
        self.weights_id = "frozen" if frozen else uuid.uuid4().hex[:12]

    @property
    def feature_version(self) -> str:
        """E.g. ``tf_efficientnet_lite0/pretrained/64px/frozen/stages/mirror``."""
        source = Path(self.checkpoint).name if self.checkpoint else "pretrained"
        layers = "" if self.feature_layers == "final" else f"/{self.feature_layers}"
        mirror = "/mirror" if self.mirrored else ""
        runtime = "" if self.runtime == "torch" else f"/{self.runtime}-{self.precision}"
        return f"{self.backbone_name}/{source}/{self.image_size}px/{self.weights_id}{layers}{mirror}{runtime}"

    @property
    def mirrored(self) -> bool:
        """Whether ``embed()`` averages each image with its mirror image: with ``mirror`` on,
        while the backbone is frozen (a ``precise`` model predicts from one view, as it trained)."""
        return self.mirror and not self.backbone_tuned

    # ---------------------------------------------------------------- inference
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, 3, S, S]`` -> L2-normalised pooled features ``[B, D]`` (keeps autograd)."""
        return pooled_features(self.backbone, x, self.feature_layers)

    def fast_features(self) -> FastFeatures | None:
        """The compiled CPU graph of :meth:`embed` (exported on first use, then cached), or
        ``None`` for eager PyTorch: runtime ``torch``, or a weight is being trained."""
        if self.runtime == "torch" or any(p.requires_grad for p in self.backbone.parameters()):
            return None
        key = (self.weights_id, self.image_size, self.feature_layers, self.mirrored, self.runtime, self.precision)
        if self._fast is not None and self._fast[0] == key:
            return self._fast[1]
        folder = self.runtime_dir or Path(tempfile.gettempdir()) / "labelloop-runtime"
        try:
            fast = load_or_export(
                self.backbone, backbone_name=self.backbone_name, layers=self.feature_layers,
                mirror=self.mirrored, image_size=self.image_size, runtime=self.runtime, cache_dir=folder,
                precision=self.precision, threads=self.num_threads,
            )
        except RuntimeUnavailable:
            self.runtime = "torch"  # the fallback; feature_version says so from now on
            return None
        self._fast = (key, fast)
        return fast

    def run_features(
        self,
        sources: Sequence[Any],
        *,
        transform: Callable[[Image.Image], torch.Tensor] | None = None,
        loader: Callable[[Any], Image.Image] | None = None,
        batch_size: int = 32,
        progress: Progress | None = None,
    ) -> torch.Tensor:
        """Features ``[N, D]`` of ``sources`` without gradients, backbone in eval mode.

        Without a ``transform`` these are ``embed()``'s: averaged with the mirror image's when
        :attr:`mirrored`. A given ``transform`` gives one view per image. The default ``loader``
        decodes only as large as the input needs (JPEG draft mode: shorter side ``image_size``,
        which the eval transform would resize to anyway)."""
        both = transform is None and self.mirrored
        tf = transform or make_transform(self.backbone, image_size=self.image_size, train=False)
        set_num_threads(self.num_threads)
        self.backbone.eval()
        fast = self.fast_features() if transform is None else None
        if loader is None:
            loader = functools.partial(load_rgb, max_side=self.image_size) if transform is None else load_rgb
        out = torch.zeros(len(sources), feature_dim(self.backbone, self.feature_layers))
        batches = ParallelBatches(sources, tf, batch_size=batch_size, loader=loader, workers=self.decode_workers,
                                  pin_memory=self.device.type == "cuda")
        with torch.inference_mode():
            for i, (x, idx) in enumerate(batches):
                if fast is not None:
                    out[idx] = torch.from_numpy(fast(x.numpy()))
                else:
                    out[idx] = self._eager_features(x, both)
                notify(progress, (i + 1) / len(batches), f"embedded {int(idx[-1]) + 1}")
        return out

    def _eager_features(self, x: torch.Tensor, both: bool) -> torch.Tensor:
        """``x [B, 3, S, S]`` (host) -> features ``[B, D]`` float32 on the host (autocast on CUDA)."""
        xd = to_device(x, self.device, image=True)
        with autocast(self.device):
            f = self.features(xd).float()
            if both:
                f = nn.functional.normalize(f + self.features(xd.flip(-1)).float(), dim=1)
        return f.to("cpu")

    def embed(self, images: Sequence[ImageSource], *, batch_size: int = 32) -> np.ndarray:
        """``[N, D]`` float32, rows L2-normalised (the head's input; FAISS-ready)."""
        return self.run_features(images, batch_size=batch_size).numpy().astype(np.float32)

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, C]`` -> softmax rows (multiclass) or sigmoids (multilabel)."""
        return logits.softmax(dim=1) if self.task == "multiclass" else logits.sigmoid()

    def predict_embeddings(self, embeddings: np.ndarray) -> Predictions:
        """Predictions from ``embed()`` outputs ``[N, D]`` (same numbers as ``predict``)."""
        with torch.inference_mode():
            x = torch.as_tensor(np.asarray(embeddings, dtype=np.float32)).to(self.device)
            logits = self.head(x)
            return Predictions(probs=self.probs(logits).float().cpu().numpy().astype(np.float32))

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
        saved = (snapshot(self.net), self.image_size, self.weights_id, self.backbone_tuned, self.trained_on)
        set_num_threads(config.num_threads or self.num_threads)
        torch.manual_seed(config.seed)
        self.image_size = int(config.image_size or self.image_size)
        try:
            if config.algorithm == "fast":
                report = classifier_fit.fit_fast(self, train, y, mask, config, progress, emb)
            else:
                inner = scaled(progress, 0.0, 0.95)
                report = classifier_fit.fit_precise(self, train, y, mask, config, inner, emb)
            self.trained_on = str(self.device)
            if holdout is not None and n_holdout:
                self._predict_holdout(holdout, emb.holdout, report)
            notify(progress, 1.0, "done")
        except BaseException:
            self.net.load_state_dict(saved[0])
            self.image_size, self.weights_id, self.backbone_tuned, self.trained_on = saved[1:]
            self.backbone.requires_grad_(False)
            self.backbone.eval()
            raise
        report.seconds = time.perf_counter() - start
        report.device, report.runtime = str(self.device), self.runtime
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
        """Directory ``path`` with ``manifest.json`` and ``weights.pt`` (host tensors), written
        atomically; see :mod:`learning.adapters.classifier_io`."""
        classifier_io.save_classifier(self, path)

    @classmethod
    def load(
        cls,
        path: Path | str,
        *,
        device: DeviceLike = "cpu",
        runtime: str | None = None,
        runtime_dir: Path | str | None = None,
        decode_workers: int = 0,
        num_threads: int | None = None,
    ) -> ClassifierAdapter:
        """Restore a directory written by :meth:`save` onto ``device`` (any device, whichever
        trained it). ``runtime`` defaults to the one it was saved with, so predictions match
        its calibration; exports are cached in ``runtime_dir`` (default ``<path>/runtime``)."""
        adapter: ClassifierAdapter = classifier_io.load_classifier(
            cls, path, device=device, runtime=runtime, runtime_dir=runtime_dir, decode_workers=decode_workers,
            num_threads=num_threads,
        )
        return adapter
