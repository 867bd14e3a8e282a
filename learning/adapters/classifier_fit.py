"""Training algorithms of :class:`~learning.adapters.classifier.ClassifierAdapter`.

* ``fast``: the backbone stays frozen; embeddings are computed once (or passed in) and
  a logistic-regression head is fit by full-batch L-BFGS. With ``use_unlabelled`` it
  learns from the unlabelled embeddings too: (multiclass) the labels are weighted so that
  each class counts as often as a first, class-balanced fit finds it among the unlabelled
  images (a query strategy over-samples the classes it finds hard, and a head fit on
  that mix is confidently wrong where the easy classes meet), then one round of
  self-training adds the confident unlabelled embeddings as pseudo-labels.
* ``precise``: head first on frozen features (L-BFGS), then the top ``unfreeze_stages``
  stages and the final conv are fine-tuned with the head: AdamW at ``lr`` (a fine-tuning
  rate, cosine decay; ``backbone_lr_mult`` scales the backbone's rate), BatchNorm
  statistics frozen, augmentation, timm's moving average of the weights (``ema_decay``:
  validation, pseudo-labels and the result use the average), early stopping on a
  validation split carved from train (never the hold-out). With ``use_unlabelled``, FixMatch-lite:
  from epoch ``pseudo_label_warmup`` on, the unlabelled sample is predicted on a weak view
  at the start of each epoch; images whose confidence is >= ``pseudo_label_threshold``
  are trained with that hard label on a strong view (weight ``unlabelled_weight``).

Both run on ``model.device``: head fits, targets and weights live there; on CUDA the
fine-tuning runs in mixed precision (bf16, or fp16 with a gradient scaler) on
channels-last batches from pinned memory. The algorithms see the adapter only through
:class:`ClassifierModel` (no import of the adapter module: no cycle).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from timm.utils import ModelEmaV3
from torch import nn

from learning.adapters.base import (
    EpochStats,
    FitConfig,
    FitEmbeddings,
    FitReport,
    LabelledImages,
    Progress,
    Task,
)
from learning.backbones import make_transform
from learning.data import TensorBatches, load_thumbnails, stratified_split
from learning.device import autocast, grad_scaler, to_device
from learning.train import LinearHead, fit_linear_head, notify, run_epochs, scaled, snapshot, soft_target_loss

__all__ = [
    "ClassifierModel",
    "accuracy",
    "fit_fast",
    "fit_precise",
    "label_targets",
    "pseudo_targets",
    "tail_modules",
]


class ClassifierModel(Protocol):
    """What the two algorithms use of :class:`~learning.adapters.classifier.ClassifierAdapter`."""

    task: Task
    device: torch.device
    backbone: Any
    head: LinearHead
    net: nn.ModuleDict
    image_size: int
    mirror: bool
    backbone_tuned: bool
    weights_id: str

    def features(self, x: torch.Tensor) -> torch.Tensor: ...

    def probs(self, logits: torch.Tensor) -> torch.Tensor: ...

    def run_features(
        self,
        sources: Sequence[Any],
        *,
        transform: Callable[[Any], torch.Tensor] | None = None,
        loader: Callable[[Any], Any] | None = None,
        batch_size: int = 32,
        progress: Progress | None = None,
    ) -> torch.Tensor: ...


def label_targets(task: Task, labels: np.ndarray, c: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels ``[N]`` ints or ``[N, C]`` {0, 1} -> (targets ``[N, C]`` float, mask ``[N, C]``)."""
    if task == "multiclass":
        if labels.ndim != 1 or (labels.size and (labels.min() < 0 or labels.max() >= c)):
            raise ValueError(f"multiclass labels must be [N] ints in [0, {c})")
        y = F.one_hot(torch.as_tensor(labels, dtype=torch.long), c).float()
    else:
        if labels.ndim != 2 or labels.shape[1] != c or not np.isin(labels, (0, 1)).all():
            raise ValueError(f"multilabel labels must be [N, {c}] with values 0/1")
        y = torch.as_tensor(labels, dtype=torch.float32)
    return y, torch.ones_like(y)


def pseudo_targets(
    task: Task, probs: torch.Tensor, threshold: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Confident rows of ``probs [U, C]`` -> (row indices ``[K]``, hard targets ``[K, C]``,
    mask ``[K, C]``). Multilabel: only the classes with p >= t or p <= 1 - t count."""
    if task == "multiclass":
        conf, cls = probs.max(dim=1)
        rows = torch.nonzero(conf >= threshold).flatten()
        y = F.one_hot(cls[rows], probs.shape[1]).float()
        return rows, y, torch.ones_like(y)
    sure = (probs >= threshold) | (probs <= 1.0 - threshold)
    rows = torch.nonzero(sure.any(dim=1)).flatten()
    return rows, (probs[rows] >= 0.5).float(), sure[rows].float()


def accuracy(task: Task, logits: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> float:
    """Top-1 accuracy (multiclass) or per-label accuracy at logit 0 (multilabel)."""
    if len(y) == 0:
        return 0.0
    if task == "multiclass":
        return float((logits.argmax(1) == y.argmax(1)).float().mean())
    hits = ((logits > 0).float() == y).float() * mask
    return float(hits.sum() / mask.sum().clamp_min(1.0))


def tail_modules(backbone: nn.Module, stages: int) -> list[nn.Module]:
    """The top ``stages`` stages of a timm backbone plus the layers after them
    (EfficientNet/MobileNet: ``blocks[-k:]``, ``conv_head``, ``bn2``; ConvNeXt-style:
    ``stages[-k:]``, ``norm_pre``); otherwise its last ``stages`` parametrised children."""
    for attr, after in (("blocks", ("conv_head", "bn2")), ("stages", ("norm_pre",))):
        blocks = getattr(backbone, attr, None)
        if isinstance(blocks, nn.Sequential) and len(blocks):
            extra = [getattr(backbone, n) for n in after if hasattr(backbone, n)]
            return list(blocks[-stages:]) + [m for m in extra if isinstance(m, nn.Module)]
    children = [m for m in backbone.children() if any(True for _ in m.parameters())]
    return children[-max(1, stages) :]


def _head(
    model: ClassifierModel,
    feats: torch.Tensor,
    y: torch.Tensor,
    mask: torch.Tensor,
    config: FitConfig,
    weight: torch.Tensor | None = None,
) -> float:
    return fit_linear_head(
        model.head,
        feats,
        y,
        model.task,
        mask=mask,
        weight=weight,
        l2=config.head_l2,
        max_iter=config.head_max_iter,
    )


def class_weights(y: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """``[N]`` weights for one-hot labels ``y [N, C]`` that give each class ``c`` a share of the
    total weight proportional to ``prior[c]`` (classes without labels get none); mean 1."""
    counts = y.sum(dim=0)
    per_class = torch.where(counts > 0, prior.clamp_min(1e-6) / counts.clamp_min(1.0), torch.zeros_like(counts))
    w = y @ per_class
    return w / w.mean().clamp_min(1e-12)


def _unlabelled(config: FitConfig, emb: FitEmbeddings) -> tuple[list[Any], np.ndarray | None]:
    """A seeded sample of at most ``max_unlabelled`` unlabelled items (and their embeddings)."""
    if not config.use_unlabelled or not len(config.unlabelled):
        return [], None
    n = len(config.unlabelled)
    if emb.unlabelled is not None and len(emb.unlabelled) != n:
        raise ValueError(f"embeddings.unlabelled has {len(emb.unlabelled)} rows for {n} items")
    idx = np.sort(np.random.default_rng(config.seed).permutation(n)[: config.max_unlabelled])
    pool_emb = None if emb.unlabelled is None else np.asarray(emb.unlabelled)[idx]
    return [config.unlabelled[int(i)] for i in idx], pool_emb


def fit_fast(
    model: ClassifierModel,
    train: LabelledImages,
    y: torch.Tensor,
    mask: torch.Tensor,
    config: FitConfig,
    progress: Progress | None,
    emb: FitEmbeddings,
) -> FitReport:
    """Logistic-regression head on frozen, L2-normalised embeddings (one "epoch")."""
    t0 = time.perf_counter()
    dev = model.device
    y, mask = y.to(dev), mask.to(dev)
    pool, pool_emb = _unlabelled(config, emb)
    bs = max(64, config.batch_size)
    split = 0.9 * len(train) / (len(train) + len(pool))
    if emb.train is not None:
        feats = torch.as_tensor(np.asarray(emb.train, dtype=np.float32))
    else:
        feats = model.run_features(train.images, batch_size=bs, progress=scaled(progress, 0, split))
    feats = feats.to(dev)
    if pool and pool_emb is None:
        inner = scaled(progress, split, 0.9)
        pool_emb = model.run_features(pool, batch_size=bs, progress=inner).numpy()
    embed_s = time.perf_counter() - t0
    notify(progress, 0.9, "fitting head")
    n_pseudo = 0
    if pool_emb is None or not len(pool_emb):
        loss = _head(model, feats, y, mask, config)
    else:
        u = torch.as_tensor(np.asarray(pool_emb, dtype=np.float32)).to(dev)
        weight = None
        if model.task == "multiclass":
            # active selection skews the labels' class mix; weight them to the mix the model
            # finds among the unlabelled images (first fit: every class counts alike)
            _head(model, feats, y, mask, config, weight=class_weights(y, torch.ones(y.shape[1], device=dev)))
            with torch.no_grad():
                weight = class_weights(y, model.probs(model.head(u)).mean(dim=0))
        loss = _head(model, feats, y, mask, config, weight=weight)
        with torch.no_grad():
            probs = model.probs(model.head(u))
        rows, yp, mp = pseudo_targets(model.task, probs, config.pseudo_label_threshold)
        n_pseudo = len(rows)
        if n_pseudo:
            w = torch.cat([torch.ones(len(feats), device=dev) if weight is None else weight,
                           torch.full((n_pseudo,), config.unlabelled_weight, device=dev)])
            _head(model, torch.cat([feats, u[rows]]), torch.cat([y, yp]), torch.cat([mask, mp]), config, weight=w)
            with torch.no_grad():
                loss = float(soft_target_loss(model.head(feats), y, model.task, mask=mask))
    with torch.no_grad():
        acc = accuracy(model.task, model.head(feats), y, mask)
    stats = EpochStats(epoch=0, train_loss=loss, train_accuracy=acc, pseudo_labelled=n_pseudo)
    return FitReport(
        algorithm="fast",
        epochs_run=1,
        history=[stats],
        stopped_early=False,
        best_epoch=0,
        seconds=0.0,
        n_train=len(train),
        n_val=0,
        n_unlabelled=len(pool),
        embed_seconds=embed_s,
    )


def _identity(item: Any) -> Any:
    return item


def fit_precise(
    model: ClassifierModel,
    train: LabelledImages,
    y: torch.Tensor,
    mask: torch.Tensor,
    config: FitConfig,
    progress: Progress | None,
    emb: FitEmbeddings,
) -> FitReport:
    """Head on frozen features, then fine-tune the backbone's top stages (see module doc)."""
    task, dev = model.task, model.device
    y, mask = y.to(dev), mask.to(dev)
    keep_np, val_np = stratified_split(train.labels, config.val_fraction, seed=config.seed)
    keep, val = torch.as_tensor(keep_np), torch.as_tensor(val_np)
    t0 = time.perf_counter()
    thumbs: list[Image.Image] = load_thumbnails(train.images, model.image_size)
    pool, _ = _unlabelled(config, emb)
    pool_thumbs = load_thumbnails(pool, model.image_size)
    notify(progress, 0.02, f"loaded {len(thumbs) + len(pool_thumbs)} images")
    bs = max(64, config.batch_size)

    def features_of(images: Sequence[Image.Image], transform: Any = None, prog: Any = None) -> torch.Tensor:
        out = model.run_features(images, transform=transform, loader=_identity, batch_size=bs, progress=prog)
        return out.to(dev)

    size = model.image_size
    weak = make_transform(model.backbone, image_size=size, train=True, flip=model.mirror)
    strong = make_transform(model.backbone, image_size=size, train=True, strong=True, flip=model.mirror)
    evalt = make_transform(model.backbone, image_size=size, train=False)
    # the head starts on one view per image, as fine-tuning trains it (given embeddings are embed()'s)
    if emb.train is not None:
        feats = torch.as_tensor(np.asarray(emb.train, dtype=np.float32))[keep].to(dev)
    else:
        feats = features_of([thumbs[int(i)] for i in keep], evalt, prog=scaled(progress, 0.02, 0.15))
    embed_s = time.perf_counter() - t0
    _head(model, feats, y[keep], mask[keep], config)

    tail = tail_modules(model.backbone, config.unfreeze_stages)
    tail_params = [p for m in tail for p in m.parameters()]
    for p in tail_params:
        p.requires_grad_(True)
    groups = [
        {"params": list(model.head.linear.parameters()), "lr": config.lr},
        {"params": tail_params, "lr": config.lr * config.backbone_lr_mult},
    ]
    optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    scaler = grad_scaler(dev)  # active only for fp16 autocast
    # Exponential moving average of the weights (timm's ModelEmaV3): validation, pseudo-labels
    # and the final model use the average, which is far steadier than the live weights on a
    # few hundred labels. ``live`` holds the weights training goes on from between epochs.
    ema = ModelEmaV3(model.net, decay=config.ema_decay, use_warmup=True) if config.ema_decay else None
    live: dict[str, torch.Tensor] | None = None
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: 0.5 * (1 + math.cos(math.pi * e / config.epochs)))
    epochs_progress = scaled(progress, 0.15, 1.0)
    val_images = [thumbs[int(i)] for i in val]

    def train_epoch(epoch: int) -> EpochStats:
        nonlocal live
        inner = scaled(epochs_progress, epoch / config.epochs, (epoch + 1) / config.epochs)
        items = [(thumbs[int(i)], False) for i in keep]
        ys, ms, ws = [y[keep]], [mask[keep]], [torch.ones(len(keep), device=dev)]
        if pool_thumbs and epoch >= config.pseudo_label_warmup:
            with torch.no_grad():  # the averaged weights label (a mean teacher) when EMA is on
                probs = model.probs(model.head(features_of(pool_thumbs, weak)))
            rows, yp, mp = pseudo_targets(task, probs, config.pseudo_label_threshold)
            items += [(pool_thumbs[int(r)], True) for r in rows]
            ys, ms = ys + [yp], ms + [mp]
            ws.append(torch.full((len(rows),), config.unlabelled_weight, device=dev))
        if live is not None:
            model.net.load_state_dict(live)
        ye, me, we = torch.cat(ys), torch.cat(ms), torch.cat(ws)
        batches = TensorBatches(
            items,
            lambda it: (strong if it[1] else weak)(it[0]),
            batch_size=config.batch_size,
            shuffle=True,
            seed=config.seed + epoch,
            loader=_identity,
        )
        model.backbone.eval()  # BatchNorm keeps its running statistics: small batches
        total, correct, seen = 0.0, 0.0, 0
        for i, (x, idx) in enumerate(batches):
            with autocast(dev):
                logits = model.head(model.features(to_device(x, dev, image=True))).float()
            idx = idx.to(dev)
            loss = soft_target_loss(logits, ye[idx], task, mask=me[idx], weight=we[idx])
            optimizer.zero_grad()
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if ema is not None:
                ema.update(model.net)
            total += float(loss.detach()) * len(idx)
            correct += accuracy(task, logits.detach(), ye[idx], me[idx]) * len(idx)
            seen += len(idx)
            notify(inner, (i + 1) / len(batches), f"epoch {epoch + 1}: batch {i + 1}/{len(batches)}")
        schedule.step()
        if ema is not None:  # evaluate (and keep, if best) the averaged weights
            live = snapshot(model.net)
            model.net.load_state_dict(ema.module.state_dict())
        stats = EpochStats(
            epoch=epoch,
            train_loss=total / max(1, seen),
            train_accuracy=correct / max(1, seen),
            pseudo_labelled=len(items) - len(keep),
        )
        if len(val):
            with torch.no_grad():
                logits = model.head(features_of(val_images, evalt))
            stats.val_loss = float(soft_target_loss(logits, y[val], task, mask=mask[val]))
            stats.val_accuracy = accuracy(task, logits, y[val], mask[val])
        return stats

    history, best, stopped = run_epochs(
        epochs=config.epochs,
        patience=config.patience,
        train_epoch=train_epoch,
        module=model.net,
        progress=epochs_progress,
    )
    model.backbone.requires_grad_(False)
    model.backbone.eval()
    model.backbone_tuned = True
    model.weights_id = f"tuned-{time.time_ns():x}"
    return FitReport(
        algorithm="precise",
        epochs_run=len(history),
        history=history,
        stopped_early=stopped,
        best_epoch=best,
        seconds=0.0,
        n_train=len(keep),
        n_val=len(val),
        n_unlabelled=len(pool),
        embed_seconds=embed_s,
    )
