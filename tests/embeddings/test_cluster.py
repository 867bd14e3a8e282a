"""Tests for embeddings.cluster: k-means, choose_k and grid pages on synthetic blobs."""

from __future__ import annotations

import numpy as np
import pytest

from embeddings.cluster import GridPage, choose_k, grid_pages, kmeans


def _blob_probs(labels: np.ndarray, n_classes: int, seed: int) -> np.ndarray:
    """Noisy class probabilities whose mean over any blob peaks at the blob's class."""
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(n_classes), size=len(labels))
    p[np.arange(len(labels)), labels] += 1.0
    return p / p.sum(axis=1, keepdims=True)


def test_choose_k() -> None:
    assert choose_k(0, 9) == 0
    assert choose_k(1, 9) == 1
    assert choose_k(5, 4) == 1
    assert choose_k(270, 9) == 10
    assert choose_k(10_000_000, 4) == 1000
    assert choose_k(10_000_000, 4, max_k=50) == 50
    assert choose_k(100, 4, pages_per_cluster=1) == 25


def test_kmeans_shapes_and_distances(blobs) -> None:
    vecs, _ = blobs(40, 5, 16, noise=0.05, seed=0)
    centroids, assign, dist = kmeans(vecs, 5, seed=0)
    assert centroids.shape == (5, 16) and assign.shape == dist.shape == (200,)
    np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1.0, rtol=1e-5)
    assert assign.min() >= 0 and assign.max() < 5
    assert np.all(dist >= -1e-6) and np.all(dist <= 2 + 1e-6)
    np.testing.assert_allclose(dist, 1 - np.sum(vecs * centroids[assign], axis=1), atol=1e-5)
    # Assignment is to the nearest centroid.
    np.testing.assert_array_equal(assign, np.argmax(vecs @ centroids.T, axis=1))


def test_kmeans_caps_k_at_n_and_handles_tiny_inputs() -> None:
    vecs = np.eye(3, 8, dtype=np.float32)
    centroids, assign, _ = kmeans(vecs, 10, seed=0)
    assert centroids.shape == (3, 8) and sorted(assign.tolist()) == [0, 1, 2]
    centroids, assign, dist = kmeans(vecs[:1], 4, seed=0)
    assert centroids.shape == (1, 8) and assign.tolist() == [0] and abs(dist[0]) < 1e-6
    with pytest.raises(ValueError):
        kmeans(np.zeros((0, 8), dtype=np.float32), 2, seed=0)


@pytest.mark.parametrize("page_size", [4, 6, 9])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pages_are_pure_sized_and_ordered(blobs, page_size: int, seed: int) -> None:
    vecs, labels = blobs(50, 7, 24, noise=0.05, seed=seed)  # 350 items, 7 blobs
    ids = np.arange(len(vecs)) + 1000
    pages = grid_pages(ids, vecs, page_size=page_size, seed=seed)
    label_of = dict(zip(ids.tolist(), labels.tolist(), strict=True))
    vec_of = dict(zip(ids.tolist(), vecs, strict=True))
    seen: list[int] = []
    by_cluster: dict[int, list[GridPage]] = {}
    for page in pages:
        assert 1 <= len(page.item_ids) <= page_size
        assert len({label_of[i] for i in page.item_ids}) == 1, "page mixes blobs"
        assert 0.0 < page.cohesion <= 1.0
        assert page.suggested_class is None and page.confidence is None
        by_cluster.setdefault(page.cluster, []).append(page)
        seen.extend(page.item_ids)
    assert sorted(seen) == ids.tolist()  # every item on exactly one page
    for cluster_pages in by_cluster.values():
        assert [p.page for p in cluster_pages] == list(range(len(cluster_pages)))
        # Only the last page of a cluster may be short.
        assert all(len(p.item_ids) == page_size for p in cluster_pages[:-1])
        # Members run from nearest to farthest from the centroid.
        members = [i for p in cluster_pages for i in p.item_ids]
        centre = np.mean([vec_of[i] for i in members], axis=0)
        assert cluster_pages[0].cohesion >= cluster_pages[-1].cohesion - 1e-6
        first = np.mean([vec_of[i] @ centre for i in cluster_pages[0].item_ids])
        last = np.mean([vec_of[i] @ centre for i in cluster_pages[-1].item_ids])
        assert first >= last - 1e-6


def test_pages_are_deterministic(blobs) -> None:
    vecs, _ = blobs(60, 6, 32, noise=0.05, seed=3)
    ids = np.arange(len(vecs))
    a = grid_pages(ids, vecs, page_size=6, seed=11)
    b = grid_pages(ids, vecs, page_size=6, seed=11)
    assert a == b


def test_suggested_class_matches_blob(blobs) -> None:
    vecs, labels = blobs(45, 5, 16, noise=0.05, seed=7)
    ids = np.arange(len(vecs)) * 2
    probs = _blob_probs(labels, 5, seed=7)
    label_of = dict(zip(ids.tolist(), labels.tolist(), strict=True))
    pages = grid_pages(ids, vecs, page_size=9, seed=0, probs=probs)
    assert pages
    for page in pages:
        assert page.suggested_class == label_of[page.item_ids[0]]
        assert page.confidence is not None and 0.0 < page.confidence <= 1.0
        assert page.agreement is not None and 0.0 <= page.agreement <= 1.0


def test_drop_partial_pages(blobs) -> None:
    vecs, _ = blobs(23, 4, 16, noise=0.05, seed=1)
    pages = grid_pages(np.arange(len(vecs)), vecs, page_size=9, seed=0, k=4, keep_partial=False)
    assert pages and all(len(p.item_ids) == 9 for p in pages)
    assert len(pages) == 8  # 23 per blob -> 2 full pages each


def test_pooled_leftovers_fill_pages_within_a_class(blobs) -> None:
    """Many clusters times classes: most (cluster, class) groups are smaller than a page.
    Pooling their leftovers per class gives full pages of one predicted class, every item
    once, at most one partial page per class; unpooled, most pages are partial."""
    vecs, labels = blobs(40, 6, 16, noise=0.3, seed=3)  # 240 items, overlapping blobs
    ids = np.arange(len(vecs)) + 500
    rng = np.random.default_rng(3)
    probs = _blob_probs((labels + (rng.random(len(labels)) < 0.3)) % 3, 3, seed=3)  # 3 classes across blobs
    top = dict(zip(ids.tolist(), np.argmax(probs, axis=1).tolist(), strict=True))
    plain = grid_pages(ids, vecs, page_size=9, seed=0, probs=probs, k=12, split_by_class=True)
    pooled = grid_pages(ids, vecs, page_size=9, seed=0, probs=probs, k=12, split_by_class=True,
                        pool_partial=True)
    for pages in (plain, pooled):
        got = [i for pg in pages for i in pg.item_ids]
        assert sorted(got) == sorted(ids.tolist())  # every item on exactly one page
        for pg in pages:
            assert len({top[i] for i in pg.item_ids}) == 1 and pg.suggested_class == top[pg.item_ids[0]]
    partial = [pg for pg in pooled if len(pg.item_ids) < 9]
    assert len(partial) <= 3 and len({pg.suggested_class for pg in partial}) == len(partial)
    assert sum(len(pg.item_ids) < 9 for pg in plain) > 3 * len(partial)
    assert len(pooled) < len(plain)
    assert all(pg.page >= 1 for pg in partial)  # pooled pages sort after every cluster's first page


def test_small_inputs_and_validation() -> None:
    vecs = np.eye(3, 4, dtype=np.float32)
    pages = grid_pages([7, 8, 9], vecs, page_size=4, seed=0)
    assert len(pages) == 1 and sorted(pages[0].item_ids) == [7, 8, 9]
    assert grid_pages([7, 8, 9], vecs, page_size=4, seed=0, keep_partial=False) == []
    assert grid_pages([], np.zeros((0, 4), dtype=np.float32), page_size=4, seed=0) == []
    with pytest.raises(ValueError, match="page_size"):
        grid_pages([1], vecs[:1], page_size=5, seed=0)
    with pytest.raises(ValueError, match="unique"):
        grid_pages([1, 1], vecs[:2], page_size=4, seed=0)
    with pytest.raises(ValueError):
        grid_pages([1, 2], vecs[:2], page_size=4, seed=0, probs=np.ones((3, 2)))


def test_split_by_class_cuts_a_straddling_cluster(blobs) -> None:
    # one tight look-alike blob whose items the model puts half in class 0, half in
    # class 1: plain pages mix the two, split pages never do
    vecs, _ = blobs(36, 1, 16, noise=0.02, seed=5)
    ids = np.arange(len(vecs)) + 7
    cls = np.arange(len(vecs)) % 2
    probs = np.full((len(vecs), 3), 0.05)
    probs[np.arange(len(vecs)), cls] = 0.9
    cls_of = dict(zip(ids.tolist(), cls.tolist(), strict=True))
    plain = grid_pages(ids, vecs, page_size=6, seed=0, probs=probs, k=1)
    assert any(len({cls_of[i] for i in p.item_ids}) > 1 for p in plain)
    split = grid_pages(ids, vecs, page_size=6, seed=0, probs=probs, k=1, split_by_class=True)
    assert sorted(i for p in split for i in p.item_ids) == ids.tolist()
    for p in split:
        assert {cls_of[i] for i in p.item_ids} == {p.suggested_class} and p.agreement == 1.0
    assert sorted((p.suggested_class, p.page) for p in split) == [(c, j) for c in (0, 1) for j in range(3)]
    with pytest.raises(ValueError, match="needs probs"):
        grid_pages(ids, vecs, page_size=6, seed=0, split_by_class=True)
