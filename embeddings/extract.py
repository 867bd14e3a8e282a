"""Batched feature extraction: image paths in, L2-normalised float32 ``[N, D]`` out.

The model is any ``embed_fn(images: list[PIL.Image.Image]) -> ndarray [B, D]``
(for instance ``adapter.embed``); this module only opens images, batches them,
checks the output and normalises it. :class:`~embeddings.cache.EmbeddingCache`
plus :func:`extract_incremental` make extraction resumable: only vectors missing
from the cache are computed, and finished work is flushed to disk as it goes.

Bad images: :func:`extract` raises :class:`ImageLoadError` naming the path;
:func:`extract_masked` instead leaves a zero row and returns an ``ok`` mask.
Cancelling (``should_stop()`` true, checked between batches) raises
:class:`ExtractionCancelled`.

Decoding: images come from :func:`embeddings.images.load_image` (the one shared decoder,
with JPEG draft decoding under ``max_side``); with ``workers > 0`` a pool of that many
threads decodes the next batch while ``embed_fn`` works on the current one (set it from
``LABELLOOP_DECODE_WORKERS``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from embeddings.cache import EmbeddingCache
from embeddings.images import ImageLoadError, load_image, to_rgb

__all__ = [
    "EmbeddingCache",
    "ExtractionCancelled",
    "ImageLoadError",
    "extract",
    "extract_incremental",
    "extract_masked",
    "l2_normalize",
    "load_image",
    "to_rgb",
]

EmbedFn = Callable[[list[Image.Image]], np.ndarray]
ProgressFn = Callable[[int, int], None]
StopFn = Callable[[], bool]


class ExtractionCancelled(RuntimeError):
    """``should_stop()`` returned true; ``done`` items had been embedded (and,
    for :func:`extract_incremental`, saved to the cache) before the stop."""

    def __init__(self, done: int, total: int) -> None:
        super().__init__(f"extraction cancelled after {done} of {total} images")
        self.done = done
        self.total = total


def l2_normalize(x: npt.ArrayLike, eps: float = 1e-12) -> np.ndarray:
    """Return ``x`` (``[N, D]`` or ``[D]``) as float32 with unit-L2 rows.

    Rows with norm <= ``eps`` (zero vectors) come back as zeros, never NaN.
    Non-finite input raises ``ValueError``.
    """
    arr = np.asarray(x, dtype=np.float32)
    if not np.all(np.isfinite(arr)):
        raise ValueError("l2_normalize: input contains NaN or inf")
    norms = np.linalg.norm(arr, axis=-1, keepdims=True)
    safe = np.where(norms > eps, norms, np.float32(1.0))
    out = np.where(norms > eps, arr / safe, np.float32(0.0))
    return np.ascontiguousarray(out, dtype=np.float32)


def _loader(max_side: int | None, skip_bad: bool) -> Callable[[Path], Image.Image | None]:
    def load(path: Path) -> Image.Image | None:
        try:
            return load_image(path, max_side=max_side)
        except ImageLoadError:
            if skip_bad:
                return None
            raise

    return load


def _check_output(out: object, n: int, dim: int | None) -> np.ndarray:
    arr = np.asarray(out)
    if arr.ndim != 2 or arr.shape[0] != n:
        raise ValueError(f"embed_fn returned shape {arr.shape} for {n} images; want [{n}, D]")
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(f"embed_fn changed dimension from {dim} to {arr.shape[1]}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("embed_fn returned NaN or inf")
    return arr


def _run(
    embed_fn: EmbedFn,
    paths: Sequence[Path],
    *,
    batch_size: int,
    progress: ProgressFn | None,
    should_stop: StopFn | None,
    skip_bad: bool,
    workers: int,
    max_side: int | None = None,
    progress_offset: int = 0,
    progress_total: int | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Embed ``paths`` until done or stopped: ``(vecs [N, D], ok [N] bool, n_done)``.

    Rows at or beyond ``n_done`` (when stopped) and rows of skipped images are zero.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    n = len(paths)
    total = n if progress_total is None else progress_total
    ok = np.zeros(n, dtype=bool)
    out: np.ndarray | None = None
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") if workers > 0 else None
    loader = _loader(max_side, skip_bad)
    done = 0

    def submit(start: int) -> list[Future[Image.Image | None]]:
        assert pool is not None
        return [pool.submit(loader, Path(p)) for p in paths[start : start + batch_size]]

    ahead: list[Future[Image.Image | None]] = []
    try:
        for start in range(0, n, batch_size):
            if should_stop is not None and should_stop():
                break
            if pool is not None:
                current = ahead or submit(start)
                # decode the next batch while this one is embedded
                ahead = submit(start + batch_size) if start + batch_size < n else []
                loaded = [f.result() for f in current]
            else:
                loaded = [loader(Path(p)) for p in paths[start : start + batch_size]]
            keep = [i for i, im in enumerate(loaded) if im is not None]
            images = [im for im in loaded if im is not None]
            if images:
                dim = None if out is None else out.shape[1]
                vecs = _check_output(embed_fn(images), len(images), dim)
                if out is None:
                    out = np.zeros((n, vecs.shape[1]), dtype=np.float32)
                rows = start + np.asarray(keep, dtype=np.int64)
                out[rows] = l2_normalize(vecs)
                ok[rows] = True
            for im in images:
                im.close()
            done = min(start + batch_size, n)
            if progress is not None:
                progress(progress_offset + done, total)
    finally:
        if pool is not None:
            for f in ahead:
                f.cancel()
            pool.shutdown(wait=True)
    if out is None:
        out = np.zeros((n, 0), dtype=np.float32)
    return out, ok, done


def extract(
    embed_fn: EmbedFn,
    paths: Sequence[Path],
    *,
    batch_size: int = 32,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
    workers: int = 0,
    max_side: int | None = None,
) -> np.ndarray:
    """Embed every image in ``paths``; return float32 ``[N, D]`` with unit-L2 rows.

    ``embed_fn`` gets lists of at most ``batch_size`` RGB images and must return
    ``[B, D]`` finite values. ``progress(done, total)`` is called after each
    batch; ``should_stop()`` is polled before each batch and a true answer raises
    :class:`ExtractionCancelled`. ``workers > 0`` decodes images in that many
    threads; ``max_side`` shrinks large images while decoding (see
    :func:`load_image`; vectors then differ slightly, so keep it fixed per
    model version when caching). An unreadable image raises :class:`ImageLoadError` naming its path.
    With no paths the result has shape ``[0, 0]`` (the dimension is unknown).
    """
    vecs, _ = _run_all(embed_fn, paths, skip_bad=False, batch_size=batch_size, progress=progress,
                       should_stop=should_stop, workers=workers, max_side=max_side)
    return vecs


def extract_masked(
    embed_fn: EmbedFn,
    paths: Sequence[Path],
    *,
    batch_size: int = 32,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
    workers: int = 0,
    max_side: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`extract` but skips unreadable images.

    Returns ``(vecs [N, D] float32, ok [N] bool)``: rows with ``ok == False`` are
    zero vectors. If no image at all could be read, ``vecs`` has shape ``[N, 0]``.
    """
    return _run_all(embed_fn, paths, skip_bad=True, batch_size=batch_size, progress=progress,
                    should_stop=should_stop, workers=workers, max_side=max_side)


def _run_all(embed_fn: EmbedFn, paths: Sequence[Path], **kw: Any) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_run` over every path; a stop before the end raises :class:`ExtractionCancelled`."""
    vecs, ok, done = _run(embed_fn, paths, **kw)
    if done < len(paths):
        raise ExtractionCancelled(done, len(paths))
    return vecs, ok


def extract_incremental(
    embed_fn: EmbedFn,
    ids: npt.ArrayLike,
    paths: Sequence[Path],
    cache: EmbeddingCache,
    version: str,
    *,
    batch_size: int = 32,
    flush_every: int = 4096,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
    workers: int = 0,
    max_side: int | None = None,
) -> np.ndarray:
    """Embed only the items missing from ``cache`` for ``version``; return all of them.

    ``ids [N]`` (int64 item ids) pairs with ``paths [N]``. Missing items are
    embedded and written to the cache every ``flush_every`` items, so a cancel
    (:class:`ExtractionCancelled`) or crash loses at most one flush of work.
    ``progress(done, total)`` counts only the items that needed embedding.
    Returns float32 ``[N, D]`` in the order of ``ids``.
    """
    id_arr = np.asarray(ids, dtype=np.int64).reshape(-1)
    if id_arr.shape[0] != len(paths):
        raise ValueError(f"{id_arr.shape[0]} ids but {len(paths)} paths")
    if flush_every < 1:
        raise ValueError("flush_every must be >= 1")
    missing = cache.missing(id_arr, version)
    pos = {int(i): k for k, i in enumerate(id_arr.tolist())}
    todo_paths = [paths[pos[int(i)]] for i in missing.tolist()]
    total = len(todo_paths)
    for start in range(0, total, flush_every):
        part = todo_paths[start : start + flush_every]
        vecs, _, done = _run(
            embed_fn,
            part,
            batch_size=batch_size,
            progress=progress,
            should_stop=should_stop,
            skip_bad=False,
            workers=workers,
            max_side=max_side,
            progress_offset=start,
            progress_total=total,
        )
        if done:
            cache.put(missing[start : start + done], vecs[:done], version)
        if done < len(part):
            raise ExtractionCancelled(start + done, total)
    found, vecs = cache.get(id_arr, version)
    if found.shape[0] != id_arr.shape[0]:
        raise RuntimeError("embedding cache lost vectors during extraction")
    return np.ascontiguousarray(vecs, dtype=np.float32)
