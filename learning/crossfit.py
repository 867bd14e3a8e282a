"""Out-of-sample predictions for labelled images by k-fold cross-fitting (any adapter).

Every labelled image is predicted by a model that never trained on it: the images are
split into ``folds`` seeded folds; for each fold a fresh adapter (``make_adapter()``)
is fitted on the other folds with the fold passed as its hold-out, and the adapter's
own hold-out predictions (``FitReport.holdout_probs``, and the boxes of a detection
adapter's ``holdout_predictions``) become that fold's predictions. A label a model has fitted
can no longer look wrong to it, which is why hard examples for labelled images
(``false detection`` / ``missed detection`` on people's boxes) need these predictions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from learning.adapters.base import FitConfig, LabelledImages, Predictions, Progress
from learning.train import notify


def fold_ids(n: int, folds: int, seed: int) -> np.ndarray:
    """``[n]`` fold number of each image: a seeded permutation cut into ``folds`` near-equal parts."""
    if folds < 2:
        raise ValueError(f"cross-fitting needs at least 2 folds, got {folds}")
    if n < folds:
        raise ValueError(f"cannot cut {n} labelled images into {folds} folds")
    out = np.empty(n, dtype=np.int64)
    out[np.random.default_rng(seed).permutation(n)] = np.arange(n) % folds
    return out


def cross_fit(make_adapter: Callable[[], Any], data: LabelledImages, *, config: FitConfig, folds: int = 2,
              seed: int = 0, progress: Progress | None = None) -> Predictions:
    """Predictions of every image in ``data`` by a model fitted without it, in ``data``'s order.

    ``progress(fraction, message)`` is called through each fit (it may raise ``Cancelled``).
    Costs about ``(folds - 1)`` full fits: each fold's model trains on ``(folds - 1) / folds``
    of the images.
    """
    fold = fold_ids(len(data), folds, seed)
    probs: np.ndarray | None = None
    boxes: list[Any] = [None] * len(data)
    for k in range(folds):
        tr, ho = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
        adapter = make_adapter()

        def step(f: float, msg: str, k: int = k) -> None:
            notify(progress, (k + f) / folds, f"fold {k + 1}/{folds}: {msg}")

        report = adapter.fit(LabelledImages([data.images[int(i)] for i in tr], data.labels[tr]),
                             LabelledImages([data.images[int(i)] for i in ho], data.labels[ho]), config=config,
                             progress=step)
        held = report.holdout_probs
        if held is None or len(held) != len(ho):
            raise RuntimeError(f"{type(adapter).__name__}.fit did not predict its hold-out")
        if probs is None:
            probs = np.zeros((len(data), held.shape[1]), dtype=np.float32)
        probs[ho] = held
        pred: Predictions | None = getattr(adapter, "holdout_predictions", None)
        if pred is not None and pred.boxes is not None:
            for j, i in enumerate(ho):
                boxes[int(i)] = pred.boxes[j]
    assert probs is not None
    return Predictions(probs, boxes if all(b is not None for b in boxes) else None)
