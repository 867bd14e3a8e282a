"""Images in, tensors out: small in-memory caches, batching, splits.

An *image source* is a path (``str`` / ``Path``), bytes, an open binary file or a PIL
image of any size and mode; :func:`learning.images.decode_rgb` turns each into an
upright RGB image by the rules written there (DICOM included).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from learning.images import ImageSource, decode_rgb

__all__ = [
    "ImageSource",
    "TensorBatches",
    "load_rgb",
    "load_thumbnails",
    "stratified_split",
]


#: ``load_rgb(source, *, max_side=None)``: the one decoder, :func:`learning.images.decode_rgb`
#: (``max_side`` bounds the shorter side; JPEGs are decoded at reduced scale).
load_rgb = decode_rgb


def load_thumbnails(sources: Sequence[ImageSource], image_size: int) -> list[Image.Image]:
    """RGB copies of ``sources`` whose shorter side is at most ``1.25 * image_size``.

    Used to keep a training set in memory between epochs without holding full photos.
    """
    max_side = math.ceil(image_size * 1.25)
    return [decode_rgb(s, max_side=max_side) for s in sources]


class TensorBatches:
    """Iterate ``(x [B, 3, S, S] float32, idx [B] int64)`` over ``sources`` in order, or in a
    seeded shuffled order; ``x[j] = transform(loader(sources[idx[j]]))``. Single-process on
    purpose (2 CPU cores, determinism)."""

    def __init__(
        self,
        sources: Sequence[Any],
        transform: Callable[[Any], torch.Tensor],
        *,
        batch_size: int = 32,
        shuffle: bool = False,
        seed: int = 0,
        loader: Callable[[Any], Any] = decode_rgb,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.sources = sources
        self.transform = transform
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.rng = np.random.default_rng(seed)
        self.loader = loader

    def __len__(self) -> int:
        return math.ceil(len(self.sources) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.sources)
        order = self.rng.permutation(n) if self.shuffle else np.arange(n)
        for start in range(0, n, self.batch_size):
            idx = order[start : start + self.batch_size]
            x = torch.stack([self.transform(self.loader(self.sources[int(i)])) for i in idx])
            yield x, torch.from_numpy(idx.astype(np.int64))


def stratified_split(
    labels: np.ndarray, fraction: float, *, seed: int = 0, min_size: int = 20
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices ``[N]`` into ``(keep, held)`` with about ``fraction`` of each class held.

    ``labels``: ``[N]`` class ids, or ``[N, C]`` multi-hot (stratified by the rarest
    positive class of each row). A class with fewer than 2 items stays whole in ``keep``.
    Returns an empty ``held`` when ``N < min_size`` or ``fraction <= 0``.
    """
    n = len(labels)
    if n < min_size or fraction <= 0:
        return np.arange(n), np.empty(0, dtype=np.int64)
    if labels.ndim == 2:
        counts = labels.sum(axis=0)
        rarity = np.where(labels > 0, counts[None, :], np.inf)
        strata = np.where(labels.any(axis=1), rarity.argmin(axis=1), -1)
    else:
        strata = labels
    rng = np.random.default_rng(seed)
    held: list[int] = []
    for value in np.unique(strata):
        members = np.flatnonzero(strata == value)
        if len(members) < 2:
            continue
        take = min(len(members) - 1, max(1, round(fraction * len(members))))
        held.extend(rng.choice(members, size=take, replace=False).tolist())
    held_arr = np.sort(np.asarray(held, dtype=np.int64))
    keep = np.setdiff1d(np.arange(n), held_arr)
    return keep, held_arr
