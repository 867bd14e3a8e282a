"""On-disk embedding cache keyed by (item id, model version).

Layout under ``root``, one folder per model version::

    <slug(version)>/meta.json                      {"version": ..., "dim": D}
    <slug(version)>/chunk-<stamp>.npy              float32 [n, D] vectors
    <slug(version)>/chunk-<stamp>.ids.npy          int64 [n] item ids (the id map)

Every :meth:`EmbeddingCache.put` writes one new chunk; nothing is rewritten,
so extraction can flush often without quadratic cost. Each file is written to a
temporary name, fsynced and moved into place with ``os.replace``; the ids file
goes last and is the commit marker, so a crash leaves either a whole chunk or
an ignored orphan. When an id occurs in several chunks the newest chunk wins.
:meth:`EmbeddingCache.compact` merges a version's chunks into one.

:meth:`EmbeddingCache.fill` is the one cache filler: ids and items in, every
item's vector out, computing (and storing, chunk by chunk) only the missing ones.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO, TypeVar

import numpy as np
import numpy.typing as npt

_IDS_SUFFIX = ".ids.npy"
T = TypeVar("T")


def _slug(version: str) -> str:
    if not version:
        raise ValueError("model version must be a non-empty string")
    readable = re.sub(r"[^A-Za-z0-9._-]", "_", version)[:48]
    return f"{readable}-{hashlib.sha256(version.encode()).hexdigest()[:12]}"


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not supported everywhere (e.g. Windows)
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write a file atomically: ``write(fileobj)`` into a temp file, fsync, ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


class EmbeddingCache:
    """Vectors per (item id, model version) under ``root``; see the module docstring."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        # chunk ids are immutable once committed: cache them by file path.
        self._ids_memo: dict[Path, np.ndarray] = {}

    # ---- layout helpers -------------------------------------------------
    def _dir(self, version: str) -> Path:
        return self.root / _slug(version)

    def _chunks(self, version: str) -> list[Path]:
        """Committed chunks of ``version`` (vector paths), oldest first."""
        d = self._dir(version)
        if not d.is_dir():
            return []
        names = sorted(p.name[: -len(_IDS_SUFFIX)] for p in d.glob(f"chunk-*{_IDS_SUFFIX}"))
        return [d / f"{name}.npy" for name in names]

    def _chunk_ids(self, vec_path: Path) -> np.ndarray:
        ids = self._ids_memo.get(vec_path)
        if ids is None:
            ids = np.load(vec_path.with_suffix(_IDS_SUFFIX), allow_pickle=False)
            self._ids_memo[vec_path] = ids
        return ids

    def dim(self, version: str) -> int | None:
        """Vector dimension stored for ``version``, or None when nothing is cached."""
        meta = self._dir(version) / "meta.json"
        if not meta.is_file():
            return None
        info = json.loads(meta.read_text())
        if info.get("version") != version:
            raise ValueError(f"cache folder {meta.parent} belongs to {info.get('version')!r}")
        return int(info["dim"])

    def versions(self) -> list[str]:
        """Model versions that have a folder in the cache."""
        if not self.root.is_dir():
            return []
        out = []
        for meta in sorted(self.root.glob("*/meta.json")):
            out.append(str(json.loads(meta.read_text())["version"]))
        return out

    def _table(self, version: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[Path]]:
        """``(sorted unique ids [M], chunk index [M], row [M], chunk paths)``; newest wins."""
        chunks = self._chunks(version)
        if not chunks:
            empty = np.empty(0, dtype=np.int64)
            return empty, empty, empty, chunks
        all_ids = [self._chunk_ids(c) for c in chunks]
        ids = np.concatenate(all_ids)
        chunk_of = np.concatenate(
            [np.full(len(a), k, dtype=np.int64) for k, a in enumerate(all_ids)]
        )
        row_of = np.concatenate([np.arange(len(a), dtype=np.int64) for a in all_ids])
        # np.unique keeps the first occurrence: reverse so that the newest chunk wins.
        uniq, first = np.unique(ids[::-1], return_index=True)
        pick = len(ids) - 1 - first
        return uniq, chunk_of[pick], row_of[pick], chunks

    # ---- public API -----------------------------------------------------
    def missing(self, ids: npt.ArrayLike, version: str) -> np.ndarray:
        """Ids (int64, unique, first-occurrence order) with no cached vector for ``version``."""
        req = np.asarray(ids, dtype=np.int64).reshape(-1)
        uniq, _, _, _ = self._table(version)
        absent = req[~np.isin(req, uniq)]
        _, first = np.unique(absent, return_index=True)
        return absent[np.sort(first)]

    def get(self, ids: npt.ArrayLike, version: str) -> tuple[np.ndarray, np.ndarray]:
        """Cached vectors for ``ids``: ``(found_ids [M] int64, vectors [M, D] float32)``.

        ``found_ids`` keeps the order of ``ids`` (absent ids are left out). With
        nothing cached for ``version`` the vectors have shape ``[0, 0]``.
        """
        req = np.asarray(ids, dtype=np.int64).reshape(-1)
        for attempt in range(2):
            try:
                return self._get(req, version)
            except FileNotFoundError:  # a concurrent compact() removed a chunk: rescan
                self._ids_memo.clear()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _get(self, req: np.ndarray, version: str) -> tuple[np.ndarray, np.ndarray]:
        uniq, chunk_of, row_of, chunks = self._table(version)
        dim = self.dim(version)
        if not chunks or dim is None:
            return np.empty(0, dtype=np.int64), np.zeros((0, dim or 0), dtype=np.float32)
        pos = np.searchsorted(uniq, req)
        pos_c = np.minimum(pos, len(uniq) - 1)
        hit = uniq[pos_c] == req
        found = req[hit]
        where = pos_c[hit]
        out = np.empty((len(found), dim), dtype=np.float32)
        want_chunk = chunk_of[where]
        for k in np.unique(want_chunk).tolist():
            sel = np.flatnonzero(want_chunk == k)
            vecs = np.load(chunks[k], mmap_mode="r", allow_pickle=False)
            out[sel] = vecs[row_of[where[sel]]]
        return found, out

    def put(self, ids: npt.ArrayLike, vectors: npt.ArrayLike, version: str) -> None:
        """Store ``vectors [N, D]`` for ``ids [N]`` under ``version`` (one new chunk).

        Re-putting an id replaces its vector; within one call the last duplicate
        wins. The dimension must match what ``version`` already holds.
        """
        id_arr = np.asarray(ids, dtype=np.int64).reshape(-1)
        vecs = np.asarray(vectors, dtype=np.float32)
        if vecs.ndim != 2 or vecs.shape[0] != id_arr.shape[0]:
            raise ValueError(f"vectors {vecs.shape} do not match {id_arr.shape[0]} ids")
        if not np.all(np.isfinite(vecs)):
            raise ValueError("vectors contain NaN or inf")
        if id_arr.size == 0:
            return
        dim = self.dim(version)
        d = self._dir(version)
        if dim is None:
            meta = json.dumps({"version": version, "dim": int(vecs.shape[1])}).encode()
            atomic_write_bytes(d / "meta.json", lambda fh: fh.write(meta))
        elif dim != vecs.shape[1]:
            raise ValueError(
                f"version {version!r} holds dim {dim}, got vectors of dim {vecs.shape[1]}"
            )
        _, last_rev = np.unique(id_arr[::-1], return_index=True)
        keep = np.sort(len(id_arr) - 1 - last_rev)
        id_arr, vecs = id_arr[keep], np.ascontiguousarray(vecs[keep])
        self._write_chunk(d, id_arr, vecs)

    def _write_chunk(self, d: Path, ids: np.ndarray, vecs: np.ndarray) -> Path:
        name = f"chunk-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        vec_path = d / f"{name}.npy"
        atomic_write_bytes(vec_path, lambda fh: np.save(fh, vecs, allow_pickle=False))
        atomic_write_bytes(
            d / f"{name}{_IDS_SUFFIX}", lambda fh: np.save(fh, ids, allow_pickle=False)
        )
        return vec_path

    def fill(
        self,
        ids: npt.ArrayLike,
        items: Sequence[T],
        embed: Callable[[list[T]], npt.ArrayLike],
        version: str,
        *,
        chunk: int = 512,
        progress: Callable[[int, int], None] | None = None,
    ) -> np.ndarray:
        """Vectors for ``ids [N]`` (int64) under ``version``, computing only the missing ones.

        ``items [N]`` pairs with ``ids``; ``embed(items[k] ...) -> [B, D]`` is called on
        at most ``chunk`` missing items at a time, each missing id once (its first item),
        and every chunk is stored before the next starts, so an exception in ``embed``
        (a cancel, a crash) loses at most one chunk of work. ``progress(done, total)``
        counts the missing items. Returns float32 ``[N, D]`` in the order of ``ids``;
        ``[0, 0]`` for no ids.
        """
        id_arr = np.asarray(ids, dtype=np.int64).reshape(-1)
        if id_arr.shape[0] != len(items):
            raise ValueError(f"{id_arr.shape[0]} ids but {len(items)} items")
        if chunk < 1:
            raise ValueError("chunk must be >= 1")
        if id_arr.size == 0:
            return np.zeros((0, 0), dtype=np.float32)
        missing = self.missing(id_arr, version)
        first: dict[int, int] = {}
        for k, i in enumerate(id_arr.tolist()):
            first.setdefault(i, k)
        todo = [first[i] for i in missing.tolist()]
        for start in range(0, len(todo), chunk):
            part = todo[start : start + chunk]
            self.put(id_arr[part], embed([items[k] for k in part]), version)
            if progress is not None:
                progress(start + len(part), len(todo))
        found, vecs = self.get(id_arr, version)
        if found.shape[0] != id_arr.shape[0]:
            raise RuntimeError("embedding cache lost vectors while filling")
        return np.ascontiguousarray(vecs, dtype=np.float32)

    def compact(self, version: str) -> int:
        """Merge ``version``'s chunks into one, dropping replaced vectors; return its size."""
        chunks = self._chunks(version)
        uniq, _, _, _ = self._table(version)
        if len(chunks) <= 1:
            return len(uniq)
        found, vecs = self.get(uniq, version)
        self._write_chunk(self._dir(version), found, vecs)
        for c in chunks:  # ids file first: an orphan vectors file is ignored
            c.with_suffix(_IDS_SUFFIX).unlink(missing_ok=True)
            c.unlink(missing_ok=True)
            self._ids_memo.pop(c, None)
        return len(found)

    def drop(self, version: str) -> None:
        """Delete everything cached for ``version``."""
        d = self._dir(version)
        for c in self._chunks(version):
            self._ids_memo.pop(c, None)
        if d.is_dir():
            shutil.rmtree(d)

    def __len__(self) -> int:
        return sum(len(self._table(v)[0]) for v in self.versions())
