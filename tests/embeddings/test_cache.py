"""Tests for embeddings.cache.EmbeddingCache (its one filler, ``fill``) and extract_incremental."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embeddings.cache import EmbeddingCache
from embeddings.extract import ExtractionCancelled, extract, extract_incremental


def _vecs(n: int, d: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def test_put_get_missing_round_trip(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path)
    v = _vecs(5)
    cache.put([10, 11, 12, 13, 14], v, "m1")
    found, got = cache.get([14, 99, 10, 12], "m1")
    assert found.tolist() == [14, 10, 12]
    np.testing.assert_array_equal(got, v[[4, 0, 2]])
    assert cache.missing([99, 10, 98, 99], "m1").tolist() == [99, 98]
    assert cache.dim("m1") == 4 and cache.versions() == ["m1"] and len(cache) == 5


def test_versions_are_separate_and_names_are_safe(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path)
    cache.put([1], _vecs(1), "proj/7:v1")
    cache.put([1], _vecs(1, d=8), "../escape")
    assert cache.missing([1], "proj/7:v2").tolist() == [1]
    assert cache.get([1], "proj/7:v2")[1].shape == (0, 0)
    assert cache.get([1], "../escape")[1].shape == (1, 8)
    assert sorted(cache.versions()) == ["../escape", "proj/7:v1"]
    assert all(p.parent == tmp_path for p in tmp_path.iterdir())


def test_reput_replaces_and_last_duplicate_wins(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path)
    cache.put([1, 2], np.ones((2, 3)), "m")
    cache.put([2, 3, 3], np.array([[2.0] * 3, [3.0] * 3, [4.0] * 3]), "m")
    found, got = cache.get([1, 2, 3], "m")
    assert found.tolist() == [1, 2, 3]
    assert got[:, 0].tolist() == [1.0, 2.0, 4.0]


def test_dim_mismatch_and_bad_input_raise(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path)
    cache.put([1], _vecs(1, d=4), "m")
    with pytest.raises(ValueError, match="dim"):
        cache.put([2], _vecs(1, d=5), "m")
    with pytest.raises(ValueError):
        cache.put([2, 3], _vecs(1), "m")
    with pytest.raises(ValueError):
        cache.put([2], np.full((1, 4), np.nan), "m")


def test_compact_keeps_latest_and_leaves_one_chunk(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path)
    for i in range(4):
        cache.put([i, i + 1], np.full((2, 2), float(i)), "m")
    assert cache.compact("m") == 5
    d = next(tmp_path.iterdir())
    assert len(list(d.glob("chunk-*.ids.npy"))) == 1
    found, got = EmbeddingCache(tmp_path).get(range(5), "m")
    assert found.tolist() == [0, 1, 2, 3, 4]
    assert got[:, 0].tolist() == [0.0, 1.0, 2.0, 3.0, 3.0]


def test_no_temp_files_and_orphans_ignored(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path)
    cache.put([1, 2], _vecs(2), "m")
    d = next(tmp_path.iterdir())
    assert not [p for p in d.iterdir() if p.name.startswith(".")]
    # A crash between the vectors file and the ids file leaves an orphan.
    np.save(d / "chunk-99999999999999999999-deadbeef.npy", _vecs(3))
    assert EmbeddingCache(tmp_path).missing([1, 2, 3], "m").tolist() == [3]


def test_drop(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path)
    cache.put([1], _vecs(1), "m")
    cache.drop("m")
    assert cache.versions() == [] and cache.missing([1], "m").tolist() == [1]


class _Embedder:
    """``embed(items) -> [B, 3]`` of each item's number; records every call."""

    def __init__(self, fail_on_call: int | None = None) -> None:
        self.calls: list[list[int]] = []
        self.fail_on_call = fail_on_call

    def __call__(self, items: list[int]) -> np.ndarray:
        self.calls.append(list(items))
        if self.fail_on_call == len(self.calls):
            raise KeyboardInterrupt("stopped")  # what a cancel or crash looks like to the cache
        return np.array([[float(i), 1.0, -float(i)] for i in items], dtype=np.float64)


def test_fill_computes_only_missing_items_once_each(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path)
    embed = _Embedder()
    first = cache.fill([1, 2], [10, 20], embed, "m")
    assert embed.calls == [[10, 20]] and first.dtype == np.float32
    progress: list[tuple[int, int]] = []
    out = cache.fill([3, 1, 3, 4], [30, 10, 31, 40], embed, "m", progress=lambda d, t: progress.append((d, t)))
    assert embed.calls[1:] == [[30, 40]]  # 1 was cached; 3 is asked twice and computed once (its first item)
    assert out[:, 0].tolist() == [30.0, 10.0, 30.0, 40.0]
    assert progress == [(2, 2)]
    assert cache.fill([], [], embed, "m").shape == (0, 0) and len(embed.calls) == 2


def test_fill_stores_each_chunk_before_the_next(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path)
    embed = _Embedder(fail_on_call=3)
    with pytest.raises(KeyboardInterrupt):
        cache.fill(range(10), list(range(10)), embed, "m", chunk=3)
    assert cache.missing(range(10), "m").tolist() == [6, 7, 8, 9]  # two chunks kept
    rest = _Embedder()
    out = cache.fill(range(10), list(range(10)), rest, "m", chunk=3)
    assert rest.calls == [[6, 7, 8], [9]]
    assert out[:, 0].tolist() == [float(i) for i in range(10)]


def test_fill_checks_its_input(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path)
    with pytest.raises(ValueError, match="items"):
        cache.fill([1, 2], [1], _Embedder(), "m")
    with pytest.raises(ValueError, match="chunk"):
        cache.fill([1], [1], _Embedder(), "m", chunk=0)
    with pytest.raises(ValueError):
        cache.fill([1], [1], lambda items: np.ones((2, 3)), "m")  # wrong row count


def test_extract_incremental_only_embeds_missing(
    tmp_path: Path, image_files: list[Path], fake_embed
) -> None:
    cache = EmbeddingCache(tmp_path / "cache")
    ids = list(range(100, 110))
    first = extract_incremental(
        fake_embed, ids[:6], image_files[:6], cache, "v1", batch_size=4, flush_every=4
    )
    assert sum(fake_embed.batches) == 6
    progress: list[tuple[int, int]] = []
    allv = extract_incremental(
        fake_embed,
        ids,
        image_files,
        cache,
        "v1",
        batch_size=4,
        progress=lambda d, t: progress.append((d, t)),
    )
    assert sum(fake_embed.batches) == 10  # only the 4 new images
    assert progress[-1] == (4, 4)
    np.testing.assert_allclose(allv[:6], first)
    np.testing.assert_allclose(allv, extract(fake_embed, image_files), rtol=1e-6)
    assert allv.shape == (10, 6) and allv.dtype == np.float32


def test_extract_incremental_cancel_keeps_flushed_work(
    tmp_path: Path, image_files: list[Path], fake_embed
) -> None:
    cache = EmbeddingCache(tmp_path / "cache")
    calls = {"n": 0}

    def stop() -> bool:
        calls["n"] += 1
        return calls["n"] > 3  # three batches of two, then stop

    with pytest.raises(ExtractionCancelled) as err:
        extract_incremental(
            fake_embed,
            range(10),
            image_files,
            cache,
            "v",
            batch_size=2,
            flush_every=4,
            should_stop=stop,
        )
    assert err.value.done == 6
    assert cache.missing(range(10), "v").tolist() == [6, 7, 8, 9]
