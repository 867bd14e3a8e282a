"""Training pieces shared by adapters: progress helpers, the linear head and its
full-batch fit, the soft-target loss, the epoch loop with early stopping, and atomic writes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from learning.adapters.base import EpochStats, Progress, Task

__all__ = [
    "LinearHead",
    "atomic_directory",
    "atomic_save",
    "cpu_state",
    "fit_linear_head",
    "notify",
    "run_epochs",
    "scaled",
    "snapshot",
    "soft_target_loss",
]


def notify(progress: Progress | None, fraction: float, message: str) -> None:
    """Call ``progress`` (if any) with ``fraction`` clipped to [0, 1]; it may raise Cancelled."""
    if progress is not None:
        progress(min(1.0, max(0.0, fraction)), message)


def scaled(progress: Progress | None, lo: float, hi: float) -> Progress | None:
    """A callback mapping a sub-task's [0, 1] onto ``[lo, hi]`` of ``progress``."""
    if progress is None:
        return None
    outer = progress

    def inner(fraction: float, message: str) -> None:
        outer(lo + (hi - lo) * min(1.0, max(0.0, fraction)), message)

    return inner


def cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """``module.state_dict()`` as host tensors: what is saved, so that a model trained on a
    GPU loads on a machine without one (and loading uses ``map_location="cpu"`` anyway)."""
    return {k: v.detach().to("cpu") for k, v in module.state_dict().items()}


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of ``module.state_dict()`` (to restore the best epoch, or on cancel)."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


class LinearHead(nn.Module):
    """Embeddings ``[N, D]`` (L2-normalised) -> logits ``[N, C]``.

    ``logits = ((x - mean) * scale) @ weight.T + bias``: centring with a single pooled
    scale keeps logistic-regression regularisation meaningful without per-dimension
    division by near-zero variances.
    """

    mean: torch.Tensor
    scale: torch.Tensor

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(in_features))
        self.register_buffer("scale", torch.ones(()))
        self.linear = nn.Linear(in_features, num_classes)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def set_standardisation(self, features: torch.Tensor) -> None:
        """Centre on ``features [N, D]`` and scale so that per-dimension variance averages 1."""
        mean = features.mean(dim=0)
        var = features.var(dim=0, unbiased=False).mean() if len(features) > 1 else torch.tensor(1.0)
        self.mean.copy_(mean)
        self.scale.copy_(torch.rsqrt(var.clamp_min(1e-12)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.linear((x - self.mean) * self.scale)
        return out


def soft_target_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    task: Task,
    *,
    mask: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean loss over items. ``logits, targets, mask``: ``[N, C]``; ``weight``: ``[N]``.

    multiclass: cross-entropy against (one-hot or soft) ``targets``; multilabel: binary
    cross-entropy per class, averaged over the classes where ``mask`` is 1.
    """
    if task == "multiclass":
        per_item = -(targets * F.log_softmax(logits, dim=1)).sum(dim=1)
    else:
        elementwise = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        m = torch.ones_like(elementwise) if mask is None else mask
        per_item = (elementwise * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)
    if weight is None:
        return per_item.mean()
    return (per_item * weight).sum() / weight.sum().clamp_min(1e-12)


def fit_linear_head(
    head: LinearHead,
    features: torch.Tensor,
    targets: torch.Tensor,
    task: Task,
    *,
    mask: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    l2: float = 1.0,
    max_iter: int = 300,
) -> float:
    """Logistic regression on ``features [N, D]`` by full-batch L-BFGS, in place; returns
    the final data loss. Objective ``mean loss + l2 * (|W|^2 + |b|^2) / (2N)`` (sklearn's
    with ``C = 1 / l2``); multinomial for multiclass, one-vs-rest sigmoids for multilabel.
    Deterministic: no randomness involved.
    """
    head.set_standardisation(features)
    with torch.no_grad():
        head.linear.weight.zero_()
        head.linear.bias.zero_()
    params = list(head.linear.parameters())
    optimizer = torch.optim.LBFGS(
        params,
        lr=1.0,
        max_iter=max_iter,
        history_size=20,
        tolerance_grad=1e-6,
        tolerance_change=1e-10,
        line_search_fn="strong_wolfe",
    )
    reg = l2 / (2.0 * max(1, len(features)))

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        data = soft_target_loss(head(features), targets, task, mask=mask, weight=weight)
        loss = data + reg * sum((p * p).sum() for p in params)
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():
        return float(soft_target_loss(head(features), targets, task, mask=mask, weight=weight))


def run_epochs(
    *,
    epochs: int,
    patience: int,
    train_epoch: Callable[[int], EpochStats],
    module: nn.Module,
    progress: Progress | None = None,
) -> tuple[list[EpochStats], int, bool]:
    """Run ``train_epoch(epoch)`` up to ``epochs`` times.

    With validation (``val_loss`` set) keep an in-memory copy of ``module``'s best state,
    stop after ``patience`` epochs without improvement and restore the best state at the
    end; without validation the last state stands. Returns ``(history, best_epoch,
    stopped_early)``. ``progress`` is told after each epoch (it may raise Cancelled).
    """
    history: list[EpochStats] = []
    best_loss, best_epoch, best_state = float("inf"), 0, None
    stopped_early = False
    for epoch in range(epochs):
        stats = train_epoch(epoch)
        history.append(stats)
        if stats.val_loss is None:
            best_epoch = epoch
        elif stats.val_loss < best_loss - 1e-6:
            best_loss, best_epoch, best_state = stats.val_loss, epoch, snapshot(module)
        notify(
            progress,
            (epoch + 1) / epochs,
            f"epoch {epoch + 1}/{epochs}: train loss {stats.train_loss:.4f}"
            + ("" if stats.val_loss is None else f", val loss {stats.val_loss:.4f}"),
        )
        if stats.val_loss is not None and epoch - best_epoch >= patience:
            stopped_early = epoch + 1 < epochs
            break
    if best_state is not None:
        module.load_state_dict(best_state)
    return history, best_epoch, stopped_early


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_save(obj: Any, path: Path | str) -> None:
    """``torch.save(obj)`` to ``path`` atomically: temp file in the same folder, fsync,
    ``os.replace``. A crash leaves either the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
    try:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_directory(path: Path | str) -> Iterator[Path]:
    """Yield an empty temp folder next to ``path``; when the block succeeds it becomes
    ``path`` (an existing ``path`` is swapped out and removed); when it fails it is
    deleted and ``path`` is untouched. Replacing an existing directory takes two renames
    (POSIX cannot rename over a non-empty one): a crash between them leaves the old
    version as ``.<name>.old-*`` beside a missing ``path``; new paths per model version
    avoid that window entirely."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
    tmp.mkdir()
    try:
        yield tmp
        for file in tmp.rglob("*"):
            if file.is_file():
                with open(file, "rb") as fh:
                    os.fsync(fh.fileno())
        if path.exists():
            old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex}")
            os.replace(path, old)
            try:
                os.replace(tmp, path)
            except BaseException:
                os.replace(old, path)  # put the previous version back
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
