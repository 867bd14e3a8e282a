"""Tests for lab.faiss_index.index.VectorIndex: kinds, ids, persistence, recall."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lab.faiss_index.faiss_kinds import IndexKind
from lab.faiss_index.index import IndexFileError, IndexVersionError, VectorIndex
from tests.embeddings.conftest import _blobs


@pytest.fixture
def blobs():
    """Factory: ``blobs(n_per, n_blobs, dim, noise=..., seed=...)`` (as tests/embeddings')."""
    return _blobs

KINDS: list[IndexKind] = ["flat", "ivf", "hnsw"]


def _unit(n: int, d: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("kind", KINDS)
def test_self_query_finds_itself(kind: IndexKind) -> None:
    vecs = _unit(500, 16)
    ids = np.arange(1000, 1500)
    index = VectorIndex(16, "m1").build(ids, vecs, kind=kind)
    assert index.kind == kind and len(index) == 500 and 1000 in index and 5 not in index
    if kind == "ivf":
        index.nprobe = 10_000  # capped at nlist: exhaustive
    scores, found = index.search(vecs[:20], 3)
    assert scores.shape == found.shape == (20, 3)
    assert found[:, 0].tolist() == ids[:20].tolist()
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first


@pytest.mark.parametrize("kind", KINDS)
def test_remove_and_readd_replaces(kind: IndexKind) -> None:
    vecs = _unit(300, 8, seed=1)
    ids = np.arange(300)
    index = VectorIndex(8, "m1").build(ids, vecs, kind=kind)
    if kind == "ivf":
        index.nprobe = 10_000
    assert index.remove([5, 6, 999]) == 2
    assert len(index) == 298 and 5 not in index
    _, found = index.search(vecs[5], 5)
    assert 5 not in found and 6 not in found
    # Re-adding an id replaces its vector: id 7 now sits where id 8 is.
    index.add([7], vecs[8:9])
    assert len(index) == 298
    np.testing.assert_allclose(index.reconstruct([7])[0], vecs[8], atol=1e-6)
    _, found = index.search(vecs[8], 2)
    assert sorted(found[0].tolist()) == [7, 8]
    index.add([5, 5], np.stack([vecs[0], vecs[5]]))  # last duplicate wins
    np.testing.assert_allclose(index.reconstruct([5])[0], vecs[5], atol=1e-6)
    assert len(index) == 299


def test_missing_results_are_padded() -> None:
    index = VectorIndex(4, "m")
    scores, found = index.search(_unit(2, 4), 3)
    assert found.tolist() == [[-1, -1, -1]] * 2 and np.all(np.isneginf(scores))
    index.add([1, 2], _unit(2, 4))
    scores, found = index.search(_unit(1, 4, seed=3), 5)
    assert sorted(found[0, :2].tolist()) == [1, 2] and found[0, 2:].tolist() == [-1, -1, -1]
    assert np.all(np.isfinite(scores[0, :2])) and np.all(np.isneginf(scores[0, 2:]))


def test_input_checks() -> None:
    index = VectorIndex(4, "m")
    with pytest.raises(ValueError):
        index.add([1], _unit(1, 5))
    with pytest.raises(ValueError):
        index.add([1, 2], _unit(1, 4))
    with pytest.raises(ValueError):
        index.add([-1], _unit(1, 4))
    with pytest.raises(ValueError):
        index.search(_unit(1, 4), 0)
    with pytest.raises(KeyError):
        index.reconstruct([42])
    with pytest.raises(ValueError, match="known"):
        index.build([1], _unit(1, 4), kind="annoy")  # type: ignore[arg-type]


def test_vectors_are_normalised_and_zero_rows_allowed() -> None:
    index = VectorIndex(3, "m")
    index.add([1, 2], np.array([[3.0, 0.0, 4.0], [0.0, 0.0, 0.0]]))
    want = np.array([[0.6, 0.0, 0.8], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(index.reconstruct([1, 2]), want, atol=1e-6)
    scores, found = index.search(np.array([[0.0, 0.0, 10.0]]), 2)
    assert found[0].tolist() == [1, 2]
    np.testing.assert_allclose(scores[0], [0.8, 0.0], atol=1e-6)


def test_auto_kind_and_rebuild() -> None:
    vecs = _unit(400, 8)
    index = VectorIndex(8, "m", ivf_threshold=300)
    assert index.build(np.arange(200), vecs[:200]).kind == "flat"
    index.add(np.arange(200, 400), vecs[200:])
    assert index.needs_rebuild
    index.rebuild()
    assert index.kind == "ivf" and len(index) == 400 and not index.needs_rebuild
    assert index.build(np.arange(400), vecs).kind == "ivf"


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip(tmp_path: Path, kind: IndexKind) -> None:
    vecs = _unit(600, 12, seed=2)
    ids = np.arange(600) * 3
    index = VectorIndex(12, "model-v7", nprobe=5).build(ids, vecs, kind=kind)
    index.remove([0, 3])
    path = tmp_path / "sub" / "index.faiss"
    path.parent.mkdir()
    index.save(path)
    assert path.is_file() and (tmp_path / "sub" / "index.faiss.json").is_file()
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []
    loaded = VectorIndex.load(path, expected_version="model-v7", expected_dim=12)
    assert loaded.kind == kind and len(loaded) == 598 and loaded.dim == 12
    np.testing.assert_array_equal(loaded.ids, index.ids)
    assert loaded.nprobe == index.nprobe
    q = _unit(10, 12, seed=9)
    for a, b in zip(index.search(q, 5), loaded.search(q, 5), strict=True):
        np.testing.assert_array_equal(a, b)
    loaded.add([1], vecs[:1])  # still usable after load
    assert 1 in loaded and loaded.remove([1]) == 1


def test_load_rejects_other_version_dim_and_torn_files(tmp_path: Path) -> None:
    path = tmp_path / "idx.faiss"
    VectorIndex(8, "v1").build(np.arange(10), _unit(10, 8)).save(path)
    with pytest.raises(IndexVersionError, match="v1"):
        VectorIndex.load(path, expected_version="v2")
    with pytest.raises(IndexVersionError, match="dim"):
        VectorIndex.load(path, expected_version="v1", expected_dim=16)
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(IndexFileError):
        VectorIndex.load(path, expected_version="v1")
    with pytest.raises(FileNotFoundError):
        VectorIndex.load(tmp_path / "nothing.faiss", expected_version="v1")


def _recall_at_k(approx: np.ndarray, exact: np.ndarray) -> float:
    hits = sum(len(set(a) & set(e)) for a, e in zip(approx.tolist(), exact.tolist(), strict=True))
    return hits / exact.size


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_recall_at_10_vs_flat(kind: IndexKind, blobs) -> None:
    """Recall@10 of IVF/HNSW against exact search on 20k clustered vectors."""
    # 20,000 vectors in 100 diffuse clusters (noise norm ~1.2 around unit centres),
    # plus 500 held-out queries from the same clusters.
    data, _ = blobs(205, 100, 64, noise=0.15, seed=4)
    vecs, queries = data[:20_000], data[20_000:]
    ids = np.arange(len(vecs))
    flat = VectorIndex(64, "m").build(ids, vecs, kind="flat")
    approx = VectorIndex(64, "m", ivf_threshold=10_000).build(
        ids, vecs, kind="auto" if kind == "ivf" else "hnsw"
    )
    assert approx.kind == kind
    _, exact = flat.search(queries, 10)
    _, got = approx.search(queries, 10)
    recall = _recall_at_k(got, exact)
    knob = f"nprobe={approx.nprobe}" if kind == "ivf" else "efSearch=64"
    print(f"\n{kind} recall@10 vs flat, 20,000 x 64 clustered vectors: {recall:.4f} ({knob})")
    assert recall >= 0.9
