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
    """``[N, D]`` float32 rows for the images ``shas`` (computing and caching the missing ones)."""
    version: str = adapter.feature_version  # type: ignore[attr-defined]
    cache = cache_for(settings)
    ids_arr = np.asarray([content_key(s) for s in shas], dtype=np.int64)
    missing = set(cache.missing(ids_arr, version).tolist()) if len(ids_arr) else set()
    todo: list[tuple[int, Path]] = []
    for i, p in zip(ids_arr.tolist(), paths, strict=True):
        if i in missing:  # each missing image once, however often it is asked for
            missing.discard(i)
            todo.append((i, p))
    for start in range(0, len(todo), chunk):
        part = todo[start:start + chunk]
        vecs = adapter.embed([p for _, p in part])  # type: ignore[attr-defined]
        cache.put([i for i, _ in part], vecs, version)
        if progress is not None:
            progress(min(1.0, (start + len(part)) / max(len(todo), 1)),
                     f"embedded {start + len(part)} of {len(todo)} new items")
    if not len(ids_arr):
        return np.zeros((0, 0), dtype=np.float32)
    found, vecs = cache.get(ids_arr, version)
    pos = {int(i): k for k, i in enumerate(found.tolist())}
    order = [pos[int(i)] for i in ids_arr.tolist()]
    return np.asarray(vecs[order], dtype=np.float32)
