"""Decoding the next batch in threads while the current one is embedded changes nothing but speed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from embeddings.extract import ExtractionCancelled, extract, extract_masked


def _files(tmp_path: Path, n: int) -> list[Path]:
    rng = np.random.default_rng(1)
    paths = []
    for i in range(n):
        p = tmp_path / f"{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(p, quality=90)
        paths.append(p)
    return paths


def _embed(images: list[Image.Image]) -> np.ndarray:
    return np.stack([np.asarray(im.resize((4, 4)), dtype=np.float32).reshape(-1) + 1.0 for im in images])


@pytest.mark.parametrize("workers", [1, 4])
def test_workers_give_the_same_vectors(tmp_path: Path, workers: int) -> None:
    paths = _files(tmp_path, 10)
    ref = extract(_embed, paths, batch_size=3)
    np.testing.assert_array_equal(extract(_embed, paths, batch_size=3, workers=workers), ref)
    np.testing.assert_array_equal(extract(_embed, paths, batch_size=3, workers=workers, max_side=40),
                                  extract(_embed, paths, batch_size=3, max_side=40))


def test_workers_skip_bad_images_and_stop(tmp_path: Path) -> None:
    paths = _files(tmp_path, 7)
    paths[4].write_bytes(b"not an image")
    vecs, ok = extract_masked(_embed, paths, batch_size=2, workers=2)
    assert ok.tolist() == [True, True, True, True, False, True, True] and not vecs[4].any()
    calls = iter(range(100))
    with pytest.raises(ExtractionCancelled) as err:
        extract(_embed, paths[:4], batch_size=2, workers=2, should_stop=lambda: next(calls) >= 1)
    assert err.value.done == 2
