"""Cached embeddings for the ``fast`` algorithm and for clusters.

Embeddings of a frozen backbone never change, so each item is embedded once
per feature space (``adapter.feature_version``) and kept in an on-disk
:class:`~embeddings.cache.EmbeddingCache`; only new items are computed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from embeddings.cache import EmbeddingCache
from service.config import Settings


def cache_for(settings: Settings) -> EmbeddingCache:
    return EmbeddingCache(settings.data_dir / "embeddings")


def content_key(sha256: str) -> int:
    """A 60-bit cache key from an image's sha256: the same image is embedded once,
    whatever project or item it belongs to."""
    return int(sha256[:15], 16)


def cached_embeddings(adapter: object, shas: Sequence[str], paths: Sequence[Path], *, settings: Settings,
                      progress: Callable[[float, str], None] | None = None, chunk: int = 512) -> np.ndarray:
    """``[N, D]`` float32 rows for the images ``shas`` (computing and caching the missing ones,
    ``settings.inference_batch_size`` images per forward pass)."""
    version: str = adapter.feature_version  # type: ignore[attr-defined]
    batch = int(settings.inference_batch_size)

    def embed(images: Sequence[Path]) -> np.ndarray:
        return adapter.embed(images, batch_size=batch)  # type: ignore[attr-defined,no-any-return]

    ids = np.asarray([content_key(s) for s in shas], dtype=np.int64)

    def report(done: int, total: int) -> None:
        if progress is not None:
            progress(min(1.0, done / max(total, 1)), f"embedded {done} of {total} new items")

    return cache_for(settings).fill(ids, list(paths), embed, version, chunk=chunk, progress=report)
