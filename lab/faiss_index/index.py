"""FAISS vector index keyed by int64 item id and stamped with a model version.

Vectors are L2-normalised on the way in (zero rows stay zero), so inner product
is cosine similarity: scores lie in [-1, 1], higher means closer.

Kinds (``VectorIndex.kind``; FAISS details in :mod:`lab.faiss_index.faiss_kinds`):

- ``flat``: exact.
- ``ivf``: ``IndexIVFFlat`` with ``nlist ~ 4 * sqrt(N)`` (at most 1,024); approximate, tuned by
  ``nprobe``. New vectors go to the lists trained at build time: call
  :meth:`VectorIndex.rebuild` when :attr:`VectorIndex.needs_rebuild` says so.
- ``hnsw``: approximate and fast to search, but FAISS cannot delete from HNSW,
  so :meth:`~VectorIndex.remove` (and re-adding an existing id) rebuilds the
  graph from the stored vectors: O(N log N).

``build(..., kind="auto")`` picks ``flat`` below ``ivf_threshold`` vectors and
``ivf`` at or above it. Files (:mod:`lab.faiss_index.index_file`): ``save(path)``
writes the FAISS file at ``path`` and a JSON header at ``<path>.json`` (model
version, dim, kind, count, sha256 of the FAISS file), each atomically; ``load``
checks the header before reading the index and raises
:class:`IndexVersionError` on a version or dimension mismatch.
Methods take an internal lock, so one instance may be shared between threads.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from embeddings.extract import l2_normalize
from lab.faiss_index.faiss_kinds import (
    KINDS,
    IndexKind,
    KindParams,
    apply_params,
    make_index,
    remove_ids,
    stored_ids,
)
from lab.faiss_index.index_file import (
    IndexFileError,
    IndexVersionError,
    read_index_files,
    write_index_files,
)

__all__ = ["IndexFileError", "IndexKind", "IndexVersionError", "VectorIndex"]


def _as_ids(ids: npt.ArrayLike, *, new: bool = False) -> np.ndarray:
    arr = np.ascontiguousarray(np.asarray(ids, dtype=np.int64).reshape(-1))
    if new and np.any(arr < 0):
        raise ValueError("item ids must be >= 0 (FAISS uses -1 for 'no result')")
    return arr


class VectorIndex:
    """Cosine-similarity index over item ids; see the module docstring."""

    def __init__(
        self,
        dim: int,
        model_version: str,
        *,
        ivf_threshold: int = 50_000,
        nprobe: int | None = None,
        hnsw_m: int = 32,
        ef_search: int = 64,
        seed: int = 0,
    ) -> None:
        if dim < 1:
            raise ValueError("dim must be >= 1")
        if not model_version:
            raise ValueError("model_version must be a non-empty string")
        self.dim = int(dim)
        self.model_version = model_version
        self.ivf_threshold = int(ivf_threshold)
        self.hnsw_m = int(hnsw_m)
        self.seed = int(seed)
        self._nprobe = nprobe
        self._ef_search = int(ef_search)
        self._lock = threading.RLock()
        self._kind: IndexKind = "flat"
        self._trained_on = 0
        self._ids = np.empty(0, dtype=np.int64)  # sorted
        self._index: Any = self._new("flat", None)

    # ---- properties -----------------------------------------------------
    @property
    def kind(self) -> IndexKind:
        return self._kind

    @property
    def ids(self) -> np.ndarray:
        """Stored item ids, sorted, int64 ``[N]`` (a copy)."""
        return self._ids.copy()

    @property
    def nprobe(self) -> int | None:
        """Lists probed per query (IVF only; None for other kinds)."""
        return int(self._index.nprobe) if self._kind == "ivf" else None

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        self._nprobe = int(value)
        if self._kind == "ivf":
            self._index.nprobe = max(1, min(int(value), int(self._index.nlist)))

    @property
    def needs_rebuild(self) -> bool:
        """True when ``build(kind="auto")`` would now pick another kind, or an IVF
        index has grown to over 4x the vectors its lists were trained on."""
        n = len(self._ids)
        if self._kind == "flat":
            return n >= self.ivf_threshold
        if self._kind == "ivf":
            return n > 4 * max(self._trained_on, 1)
        return False

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, item_id: object) -> bool:
        if not isinstance(item_id, int | np.integer):
            return False
        pos = int(np.searchsorted(self._ids, item_id))
        return pos < len(self._ids) and int(self._ids[pos]) == int(item_id)

    def __repr__(self) -> str:
        return (
            f"VectorIndex(kind={self._kind!r}, n={len(self)}, dim={self.dim}, "
            f"model_version={self.model_version!r})"
        )

    # ---- construction ---------------------------------------------------
    def _params(self) -> KindParams:
        return KindParams(self._nprobe, self.hnsw_m, self._ef_search, self.seed)

    def _new(self, kind: IndexKind, train: np.ndarray | None) -> Any:
        return make_index(kind, self.dim, self._params(), train)

    def _check_vecs(self, vecs: npt.ArrayLike, n: int | None = None) -> np.ndarray:
        arr = np.asarray(vecs, dtype=np.float32)
        if arr.ndim != 2 or arr.shape[1] != self.dim:
            raise ValueError(f"vectors must be [N, {self.dim}], got {arr.shape}")
        if n is not None and arr.shape[0] != n:
            raise ValueError(f"{arr.shape[0]} vectors for {n} ids")
        return l2_normalize(arr)

    def build(
        self, ids: npt.ArrayLike, vecs: npt.ArrayLike, *, kind: IndexKind | Literal["auto"] = "auto"
    ) -> VectorIndex:
        """Replace the contents with ``vecs [N, D]`` for ``ids [N]``; return self.

        ``kind="auto"`` picks ``ivf`` when ``N >= ivf_threshold``, else ``flat``.
        Duplicate ids keep their last vector.
        """
        id_arr = _as_ids(ids, new=True)
        arr = self._check_vecs(vecs, len(id_arr))
        id_arr, arr = _dedupe_last(id_arr, arr)
        if kind == "auto":
            kind = "ivf" if len(id_arr) >= self.ivf_threshold else "flat"
        if kind not in KINDS:
            raise ValueError(f"unknown index kind {kind!r}; known: auto, {', '.join(KINDS)}")
        with self._lock:
            index = self._new(kind, arr)
            if len(id_arr):
                index.add_with_ids(arr, id_arr)
            self._index, self._kind = index, kind
            self._ids = np.sort(id_arr)
            self._trained_on = len(id_arr) if kind == "ivf" else 0
        return self

    def rebuild(self, *, kind: IndexKind | Literal["auto"] = "auto") -> VectorIndex:
        """Build again from the stored vectors (e.g. when :attr:`needs_rebuild`)."""
        with self._lock:
            ids, vecs = self._ids.copy(), self.reconstruct(self._ids)
            return self.build(ids, vecs, kind=kind)

    # ---- mutation -------------------------------------------------------
    def add(self, ids: npt.ArrayLike, vecs: npt.ArrayLike) -> None:
        """Add ``vecs [N, D]`` under ``ids [N]``; an id already present is replaced."""
        id_arr = _as_ids(ids, new=True)
        arr = self._check_vecs(vecs, len(id_arr))
        if not len(id_arr):
            return
        id_arr, arr = _dedupe_last(id_arr, arr)
        with self._lock:
            present = id_arr[np.isin(id_arr, self._ids)]
            if len(present):
                if self._kind == "hnsw":  # no deletion in HNSW: rebuild with the new rows
                    keep = ~np.isin(self._ids, id_arr)
                    old_ids = self._ids[keep]
                    old = self.reconstruct(old_ids)
                    self.build(
                        np.concatenate([old_ids, id_arr]), np.vstack([old, arr]), kind="hnsw"
                    )
                    return
                self._remove_raw(present)
            self._index.add_with_ids(arr, id_arr)
            self._ids = np.union1d(self._ids, id_arr)

    def remove(self, ids: npt.ArrayLike) -> int:
        """Remove ``ids`` (absent ids are ignored); return how many were removed."""
        id_arr = np.unique(_as_ids(ids))
        with self._lock:
            present = id_arr[np.isin(id_arr, self._ids)]
            if not len(present):
                return 0
            if self._kind == "hnsw":
                keep_ids = self._ids[~np.isin(self._ids, present)]
                self.build(keep_ids, self.reconstruct(keep_ids), kind="hnsw")
                return len(present)
            self._remove_raw(present)
            self._ids = np.setdiff1d(self._ids, present, assume_unique=True)
            return len(present)

    def _remove_raw(self, present: np.ndarray) -> None:
        remove_ids(self._index, self._kind, present)

    # ---- queries --------------------------------------------------------
    def reconstruct(self, ids: npt.ArrayLike) -> np.ndarray:
        """Stored (normalised) vectors for ``ids [M]``: float32 ``[M, D]``; KeyError if absent."""
        id_arr = _as_ids(ids)
        with self._lock:
            missing = id_arr[~np.isin(id_arr, self._ids)]
            if len(missing):
                raise KeyError(f"ids not in index: {missing[:10].tolist()}")
            if not len(id_arr):
                return np.zeros((0, self.dim), dtype=np.float32)
            return np.asarray(self._index.reconstruct_batch(id_arr), dtype=np.float32)

    def search(self, queries: npt.ArrayLike, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest stored items for each query ``[Q, D]`` (or ``[D]``).

        Returns ``(scores [Q, k] float32, ids [Q, k] int64)``, best first; scores
        are cosine similarities (higher is closer). Slots beyond the available
        results hold id ``-1`` and score ``-inf``.
        """
        if k < 1:
            raise ValueError("k must be >= 1")
        q = np.asarray(queries, dtype=np.float32)
        if q.ndim == 1:
            q = q[None, :]
        q = self._check_vecs(q)
        with self._lock:
            if len(self._ids) == 0 or len(q) == 0:
                scores = np.full((len(q), k), -np.inf, dtype=np.float32)
                return scores, np.full((len(q), k), -1, dtype=np.int64)
            scores, found = self._index.search(q, k)
        scores = np.where(found < 0, np.float32(-np.inf), scores).astype(np.float32)
        return scores, found.astype(np.int64)

    # ---- persistence ----------------------------------------------------
    def save(self, path: Path | str) -> None:
        """Write the FAISS index to ``path`` and its header to ``<path>.json``, atomically."""
        with self._lock:
            header = {
                "model_version": self.model_version,
                "dim": self.dim,
                "kind": self._kind,
                "count": len(self._ids),
                "nprobe": self.nprobe,
                "ef_search": self._ef_search,
                "hnsw_m": self.hnsw_m,
                "ivf_threshold": self.ivf_threshold,
                "trained_on": self._trained_on,
                "seed": self.seed,
            }
            write_index_files(Path(path), self._index, header)

    @classmethod
    def load(
        cls, path: Path | str, *, expected_version: str, expected_dim: int | None = None
    ) -> VectorIndex:
        """Load an index saved by :meth:`save`.

        Raises :class:`IndexVersionError` when the stored model version is not
        ``expected_version`` or the dimension is not ``expected_dim`` (when
        given), before reading the FAISS file; :class:`IndexFileError` when the
        file and header do not match; ``FileNotFoundError`` when either is absent.
        """
        index, header = read_index_files(
            Path(path), expected_version=expected_version, expected_dim=expected_dim
        )
        out = cls(
            int(header["dim"]),
            str(header["model_version"]),
            ivf_threshold=int(header["ivf_threshold"]),
            nprobe=header.get("nprobe"),
            hnsw_m=int(header["hnsw_m"]),
            ef_search=int(header["ef_search"]),
            seed=int(header["seed"]),
        )
        kind: IndexKind = header["kind"]
        out._index, out._kind = index, kind
        out._trained_on = int(header.get("trained_on", 0))
        apply_params(index, kind, out._params())
        out._ids = np.sort(stored_ids(index, kind))
        return out


def _dedupe_last(ids: np.ndarray, vecs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keep the last row of each repeated id, in original order."""
    _, last_rev = np.unique(ids[::-1], return_index=True)
    if len(last_rev) == len(ids):
        return ids, vecs
    keep = np.sort(len(ids) - 1 - last_rev)
    return ids[keep], np.ascontiguousarray(vecs[keep])
