"""FAISS plumbing for :mod:`lab.faiss_index.index`: making, pruning and listing indexes.

All indexes use inner product on unit vectors (cosine similarity).

- ``flat``: ``IndexIDMap2(IndexFlatIP)``; exact; removal supported.
- ``ivf``: ``IndexIVFFlat`` with a hash direct map (ids removable and
  reconstructable). ``IndexIDMap2`` is *not* used over IVF: its removal assumes
  the inner index renumbers rows compactly, which IVF does not.
- ``hnsw``: ``IndexIDMap2(IndexHNSWFlat)``; FAISS cannot remove from HNSW.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import faiss
import numpy as np

IndexKind = Literal["flat", "ivf", "hnsw"]
KINDS: tuple[IndexKind, ...] = ("flat", "ivf", "hnsw")
_FAISS: Any = faiss  # for names missing from faiss's type stubs


MAX_NLIST = 1024
TRAIN_POINTS_PER_LIST = 64


def ivf_nlist(n: int) -> int:
    """Number of IVF lists for ``n`` vectors: ``round(4 * sqrt(n))``, at most ``n // 8`` and
    :data:`MAX_NLIST`. The cap keeps training and adding cheap on a CPU (1M vectors: 1,024
    lists of ~1,000, trained on a 64k sample); recall is kept by ``nprobe``."""
    return max(1, min(round(4 * math.sqrt(n)), n // 8, MAX_NLIST))


def ivf_nprobe(nlist: int) -> int:
    """Default lists probed per query: ``2 * sqrt(nlist)``, within ``[min(8, nlist), nlist]``."""
    return max(min(8, nlist), min(nlist, round(2 * math.sqrt(nlist))))


@dataclass(frozen=True)
class KindParams:
    """Tuning knobs: IVF ``nprobe`` (None = :func:`ivf_nprobe`), HNSW ``m`` and ``ef_search``."""

    nprobe: int | None = None
    hnsw_m: int = 32
    ef_search: int = 64
    seed: int = 0


def make_index(kind: IndexKind, dim: int, params: KindParams, train: np.ndarray | None) -> Any:
    """An empty FAISS index of ``kind``; IVF is trained on ``train [N, dim]`` (required)."""
    if kind == "flat":
        return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    if kind == "hnsw":
        sub = faiss.IndexHNSWFlat(dim, params.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        sub.hnsw.efConstruction = max(40, 2 * params.hnsw_m)
        sub.hnsw.efSearch = params.ef_search
        return faiss.IndexIDMap2(sub)
    if kind != "ivf":
        raise ValueError(f"unknown index kind {kind!r}; known: {', '.join(KINDS)}")
    if train is None or len(train) == 0:
        raise ValueError("an IVF index needs vectors to train on")
    nlist = ivf_nlist(len(train))
    quantizer = faiss.IndexFlatIP(dim)
    ivf = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.cp.seed = params.seed
    ivf.cp.min_points_per_centroid = 1  # silence FAISS's small-training-set warning
    ivf.cp.max_points_per_centroid = TRAIN_POINTS_PER_LIST  # FAISS samples the training set down to this
    ivf.cp.spherical = True
    ivf.train(train)
    ivf.set_direct_map_type(_FAISS.DirectMap.Hashtable)
    ivf.nprobe = min(nlist, params.nprobe if params.nprobe is not None else ivf_nprobe(nlist))
    return ivf


def apply_params(index: Any, kind: IndexKind, params: KindParams) -> None:
    """Set search-time knobs on a loaded index (``nprobe`` or ``efSearch``)."""
    if kind == "ivf" and params.nprobe is not None:
        index.nprobe = max(1, min(int(params.nprobe), int(index.nlist)))
    elif kind == "hnsw":
        sub: Any = faiss.downcast_index(index.index)  # `index` keeps ownership
        sub.hnsw.efSearch = params.ef_search


def remove_ids(index: Any, kind: IndexKind, ids: np.ndarray) -> None:
    """Remove ``ids [M]`` (all present) from a flat or IVF index."""
    if kind == "hnsw":
        raise ValueError("FAISS cannot remove from HNSW; rebuild instead")
    arr = np.ascontiguousarray(ids, dtype=np.int64)
    sel: Any
    if kind == "ivf":  # the hash direct map only accepts an IDSelectorArray
        sel = faiss.IDSelectorArray(len(arr), faiss.swig_ptr(arr))
    else:
        sel = faiss.IDSelectorBatch(len(arr), faiss.swig_ptr(arr))
    removed = index.remove_ids(sel)
    if removed != len(arr):
        raise RuntimeError(f"FAISS removed {removed} of {len(arr)} vectors")


def stored_ids(index: Any, kind: IndexKind) -> np.ndarray:
    """All ids held by ``index``, int64 ``[N]``, in no particular order."""
    if kind != "ivf":
        return faiss.vector_to_array(index.id_map).astype(np.int64)
    inv = index.invlists
    lists = [
        faiss.rev_swig_ptr(inv.get_ids(i), inv.list_size(i)).copy()
        for i in range(index.nlist)
        if inv.list_size(i)
    ]
    return np.concatenate(lists).astype(np.int64) if lists else np.empty(0, dtype=np.int64)
