"""Batches of images decoded in a pool of threads while the model works on the previous batch.

Decoding and resizing, not the model, bound CPU inference on small inputs: Pillow's JPEG
decoder and its resampling release the GIL, so a few threads keep the model fed without
the cost of worker processes. ``workers=0`` decodes in the calling thread, in order, as
:class:`learning.data.TensorBatches` does (same batches, same values).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from learning.data import load_rgb

__all__ = ["ParallelBatches"]


class ParallelBatches:
    """Iterate ``(x [B, 3, S, S] float32, idx [B] int64)`` over ``sources`` in order;
    ``x[j] = transform(loader(sources[idx[j]]))``. With ``workers > 0`` the items of the next
    batch are decoded in ``workers`` threads while the caller uses the current one;
    ``pin_memory`` puts ``x`` in page-locked memory (fast, non-blocking copies to a GPU)."""

    def __init__(
        self,
        sources: Sequence[Any],
        transform: Callable[[Any], torch.Tensor],
        *,
        batch_size: int = 32,
        loader: Callable[[Any], Any] = load_rgb,
        workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if workers < 0:
            raise ValueError("workers must be >= 0")
        self.sources = sources
        self.transform = transform
        self.batch_size = batch_size
        self.loader = loader
        self.workers = workers
        self.pin_memory = pin_memory

    def __len__(self) -> int:
        return math.ceil(len(self.sources) / self.batch_size)

    def _item(self, i: int) -> torch.Tensor:
        return self.transform(self.loader(self.sources[i]))

    def _stack(self, items: list[torch.Tensor]) -> torch.Tensor:
        x = torch.stack(items)
        return x.pin_memory() if self.pin_memory else x

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.sources)
        starts = list(range(0, n, self.batch_size))
        if self.workers == 0:
            for s in starts:
                idx = np.arange(s, min(s + self.batch_size, n))
                yield self._stack([self._item(int(i)) for i in idx]), torch.from_numpy(idx.astype(np.int64))
            return
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="decode") as pool:

            def submit(s: int) -> list[Future[torch.Tensor]]:
                return [pool.submit(self._item, i) for i in range(s, min(s + self.batch_size, n))]

            pending = submit(starts[0]) if starts else []
            for k, s in enumerate(starts):
                current = pending
                pending = submit(starts[k + 1]) if k + 1 < len(starts) else []  # decode ahead
                try:
                    x = self._stack([f.result() for f in current])
                except BaseException:
                    for f in pending:
                        f.cancel()
                    raise
                yield x, torch.arange(s, s + len(current), dtype=torch.int64)
