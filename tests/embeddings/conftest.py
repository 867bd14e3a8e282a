"""Shared fixtures for the embeddings tests: synthetic vectors and a fake model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def _blobs(
    n_per: int, n_blobs: int, dim: int, *, noise: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(vecs [n_blobs * n_per, dim] unit rows, labels [N])`` around random centres."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_blobs, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = np.repeat(np.arange(n_blobs), n_per)
    vecs = centres[labels] + noise * rng.standard_normal((len(labels), dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    perm = rng.permutation(len(labels))
    return vecs[perm].astype(np.float32), labels[perm]


@pytest.fixture
def blobs() -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    """Factory: ``blobs(n_per, n_blobs, dim, noise=..., seed=...)``."""
    return _blobs


class FakeEmbedder:
    """Deterministic stand-in for ``adapter.embed``: per-channel means and stds, [B, 6].

    Records the batch sizes and image modes it was called with.
    """

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.modes: set[str] = set()

    def __call__(self, images: list[Image.Image]) -> np.ndarray:
        self.batches.append(len(images))
        rows = []
        for im in images:
            self.modes.add(im.mode)
            arr = np.asarray(im, dtype=np.float32) / 255.0
            rows.append(np.concatenate([arr.mean(axis=(0, 1)), arr.std(axis=(0, 1))]))
        return np.stack(rows).astype(np.float64)  # not float32 on purpose


@pytest.fixture
def fake_embed() -> FakeEmbedder:
    return FakeEmbedder()


@pytest.fixture
def image_files(tmp_path: Path) -> list[Path]:
    """Ten small images in assorted modes (RGB, L, RGBA, P, P+transparency, I;16, CMYK)."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(10):
        arr = rng.integers(0, 256, size=(12, 16, 3), dtype=np.uint8)
        base = Image.fromarray(arr)
        kind = i % 7
        if kind == 0:
            img, ext = base, "png"
        elif kind == 1:
            img, ext = base.convert("L"), "png"
        elif kind == 2:
            img, ext = base.convert("RGBA"), "png"
        elif kind == 3:
            img, ext = base.convert("P"), "png"
        elif kind == 4:
            img = base.convert("P")
            img.info["transparency"] = 0
            ext = "png"
        elif kind == 5:
            gray16 = (arr[..., 0].astype(np.uint16) * 257).astype(np.uint16)
            img, ext = Image.fromarray(gray16), "png"
        else:
            img, ext = base.convert("CMYK"), "jpg"
        p = tmp_path / f"img{i}.{ext}"
        img.save(p)
        paths.append(p)
    return paths
