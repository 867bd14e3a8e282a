"""Spherical k-means over embeddings and the look-alike grid pages cut from it.

:func:`kmeans` clusters unit vectors by cosine similarity with ``faiss.Kmeans``
(seeded with k-means++ on a sample, so well-separated groups each get their own
centroids). :func:`grid_pages` turns clusters into pages of 4, 6 or 9 items for
one-click confirmation: a cluster's members are sorted by distance to its
centroid (ties by item id) and cut into consecutive pages, so the first page of
a cluster holds its most typical items. A cluster's last page may hold fewer
than ``page_size`` items; ``keep_partial=False`` drops such pages instead.
Everything is deterministic for a given ``seed`` (and FAISS thread count).
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np
import numpy.typing as npt

from embeddings.extract import l2_normalize

PAGE_SIZES = (4, 6, 9)


@dataclass(frozen=True)
class GridPage:
    """One grid of look-alike items from a single cluster.

    ``item_ids`` are nearest to the centroid first. ``cohesion`` is the mean
    cosine similarity of the page's items to the cluster centroid (higher means
    more alike). With class probabilities, ``suggested_class`` is the argmax of
    the page's mean probabilities, ``confidence`` that mean probability and
    ``agreement`` the share of items whose own argmax is the suggested class;
    all three are None without probabilities. ``page`` counts pages within the
    cluster from 0.
    """

    cluster: int
    page: int
    item_ids: list[int]
    cohesion: float
    suggested_class: int | None = None
    confidence: float | None = None
    agreement: float | None = None


def choose_k(n: int, page_size: int, *, pages_per_cluster: int = 3, max_k: int = 1000) -> int:
    """Heuristic cluster count: about ``n / (pages_per_cluster * page_size)``.

    Clamped to ``[1, min(n, max_k)]``; 0 when ``n == 0``.
    """
    if n <= 0:
        return 0
    if page_size < 1 or pages_per_cluster < 1:
        raise ValueError("page_size and pages_per_cluster must be >= 1")
    k = round(n / (pages_per_cluster * page_size))
    return int(max(1, min(k, n, max_k)))


def _kmeans_pp(x: np.ndarray, k: int, rng: np.random.Generator, sample: int) -> np.ndarray:
    """k-means++ seeds ``[k, D]`` drawn from at most ``sample`` rows of unit vectors ``x``."""
    if len(x) > sample:
        x = x[np.sort(rng.choice(len(x), size=sample, replace=False))]
    centers = np.empty((k, x.shape[1]), dtype=np.float32)
    first = int(rng.integers(len(x)))
    centers[0] = x[first]
    d2 = np.maximum(2.0 - 2.0 * (x @ centers[0]), 0.0).astype(np.float64)
    for j in range(1, k):
        total = float(d2.sum())
        # All remaining points coincide with a centre: fall back to uniform picks.
        idx = int(rng.choice(len(x), p=d2 / total)) if total > 1e-12 else int(rng.integers(len(x)))
        centers[j] = x[idx]
        d2 = np.minimum(d2, np.maximum(2.0 - 2.0 * (x @ centers[j]), 0.0))
    return centers


def kmeans(
    vecs: npt.ArrayLike,
    k: int,
    *,
    seed: int,
    niter: int = 20,
    init_sample: int = 20_000,
    init_flops: float = 2e9,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spherical k-means of ``vecs [N, D]`` (rows are L2-normalised first).

    ``k`` is capped at ``N``. Returns ``(centroids [k, D] float32 unit rows,
    assign [N] int64 in [0, k), dist [N] float32)`` where ``dist = 1 - cosine``
    to the assigned centroid (0 = on the centroid, smaller is closer).

    Seeds come from k-means++ on a random sample of at most ``init_sample``
    rows (fewer when ``sample * k * D`` would exceed ``init_flops``, but at
    least ``2k``); ``niter`` FAISS Lloyd iterations follow.
    """
    x = l2_normalize(np.asarray(vecs, dtype=np.float32))
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"kmeans needs a non-empty [N, D] array, got shape {x.shape}")
    if k < 1:
        raise ValueError("k must be >= 1")
    n, d = x.shape
    k = min(int(k), n)
    rng = np.random.default_rng(seed)
    if k == 1:
        mean = x.mean(axis=0, keepdims=True)
        centroids = l2_normalize(mean) if np.linalg.norm(mean) > 0 else x[:1].copy()
    else:
        # k-means++ costs ~ sample * k * D: keep it within init_flops.
        sample = max(2 * k, min(init_sample, int(init_flops // (k * d))))
        init = _kmeans_pp(x, k, rng, sample)
        km = faiss.Kmeans(
            d,
            k,
            niter=niter,
            seed=int(seed) % (2**31),
            spherical=True,
            verbose=False,
            min_points_per_centroid=1,
        )
        km.train(x, init_centroids=init)
        assert km.centroids is not None
        centroids = l2_normalize(km.centroids)
    index = faiss.IndexFlatIP(d)
    index.add(centroids)
    sims, assign = index.search(x, 1)
    dist = np.clip(1.0 - sims[:, 0], 0.0, 2.0).astype(np.float32)  # rounding can overshoot
    return centroids.astype(np.float32), assign[:, 0].astype(np.int64), dist


def _suggest(p: np.ndarray) -> tuple[int, float, float]:
    mean = p.mean(axis=0)
    cls = int(np.argmax(mean))
    return cls, float(mean[cls]), float(np.mean(np.argmax(p, axis=1) == cls))


def grid_pages(
    ids: npt.ArrayLike,
    vecs: npt.ArrayLike,
    *,
    page_size: int,
    seed: int,
    probs: npt.ArrayLike | None = None,
    k: int | None = None,
    niter: int = 20,
    keep_partial: bool = True,
    split_by_class: bool = False,
    pool_partial: bool = False,
) -> list[GridPage]:
    """Cut look-alike pages from k-means clusters of ``vecs [N, D]``.

    ``ids [N]`` are item ids; ``probs [N, C]`` optional class probabilities for
    the page suggestion. ``page_size`` is 4, 6 or 9; ``k`` defaults to
    :func:`choose_k`. Every page holds items of exactly one cluster. Pages come
    cluster by cluster (clusters by index), and within a cluster nearest to the
    centroid first. A cluster's last page may be smaller than ``page_size``;
    with ``keep_partial=False`` it is dropped (its items appear on no page).

    ``split_by_class=True`` (needs ``probs``) cuts each cluster further by every
    item's own most probable class, so a page holds items that both look alike
    and that the model puts in one class: a look-alike cluster that straddles two
    classes (shirts and T-shirts) gives two sets of pages instead of mixed ones.
    ``page`` then counts pages within that (cluster, class) group.

    ``pool_partial=True`` pools the groups' partial last pages instead: per class (or
    all, without ``split_by_class``), the leftover items are laid out cluster after
    cluster along a nearest-centroid chain and cut into full pages (only the very last
    may be partial). With many clusters times classes most groups are smaller than a
    page, and a page of one or two images costs a person about as much as labelling
    them one by one. A pooled page's ``cluster`` is its first item's, and its ``page`` is
    1 + its index among its class's pooled pages, so it sorts after every cluster's first page.
    """
    if page_size not in PAGE_SIZES:
        raise ValueError(f"page_size must be one of {PAGE_SIZES}, got {page_size}")
    id_arr = np.asarray(ids, dtype=np.int64).reshape(-1)
    x = np.asarray(vecs, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] != id_arr.shape[0]:
        raise ValueError(f"vecs {x.shape} do not match {id_arr.shape[0]} ids")
    if len(np.unique(id_arr)) != len(id_arr):
        raise ValueError("ids must be unique")
    p: np.ndarray | None = None
    if probs is not None:
        p = np.asarray(probs, dtype=np.float64)
        if p.ndim != 2 or p.shape[0] != id_arr.shape[0] or not np.all(np.isfinite(p)):
            raise ValueError(f"probs must be finite [N, C] with N={id_arr.shape[0]}, got {p.shape}")
    n = len(id_arr)
    if n == 0:
        return []
    k = choose_k(n, page_size) if k is None else k
    if split_by_class and p is None:
        raise ValueError("split_by_class needs probs")
    centroids, assign, dist = kmeans(x, k, seed=seed, niter=niter)
    n_groups = p.shape[1] if split_by_class and p is not None else 1
    group = assign.astype(np.int64) * n_groups + (np.argmax(p, axis=1) if split_by_class and p is not None else 0)
    # One sort: by cluster (and class), then distance to the centroid, then item id.
    order = np.lexsort((id_arr, dist, group))
    bounds = np.searchsorted(group[order], np.arange(len(centroids) * n_groups + 1))
    pages: list[GridPage] = []

    def add(rows: np.ndarray, cluster: int, page: int) -> None:
        suggestion: tuple[int | None, float | None, float | None] = (None, None, None)
        if p is not None:
            suggestion = _suggest(p[rows])
        pages.append(
            GridPage(
                cluster=cluster,
                page=page,
                item_ids=[int(i) for i in id_arr[rows]],
                cohesion=float(np.mean(1.0 - dist[rows])),
                suggested_class=suggestion[0],
                confidence=suggestion[1],
                agreement=suggestion[2],
            )
        )

    chain = _centroid_chain(centroids) if pool_partial else np.arange(len(centroids))
    leftovers: list[list[np.ndarray]] = [[] for _ in range(n_groups)]
    for c in chain:
        for cls in range(n_groups):
            g = int(c) * n_groups + cls
            members = order[bounds[g] : bounds[g + 1]]
            for j, start in enumerate(range(0, len(members), page_size)):
                rows = members[start : start + page_size]
                if len(rows) < page_size:
                    if pool_partial:
                        leftovers[cls].append(rows)
                        break
                    if not keep_partial:
                        break
                add(rows, int(c), j)
    for parts in leftovers:
        pooled = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        for j, start in enumerate(range(0, len(pooled), page_size)):
            rows = pooled[start : start + page_size]
            if len(rows) < page_size and not keep_partial:
                break
            add(rows, int(assign[rows[0]]), 1 + j)
    return pages


def _centroid_chain(centroids: np.ndarray) -> np.ndarray:
    """Cluster indices in a greedy nearest-neighbour chain over the centroids (from 0), so
    that pooled leftovers of consecutive clusters look alike where they meet."""
    k = len(centroids)
    if k <= 2:
        return np.arange(k)
    unit = centroids / np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    sim = unit @ unit.T
    seen = np.zeros(k, dtype=bool)
    out = np.empty(k, dtype=np.int64)
    cur = 0
    for i in range(k):
        out[i], seen[cur] = cur, True
        if i + 1 < k:
            row = np.where(seen, -np.inf, sim[cur])
            cur = int(np.argmax(row))
    return out
