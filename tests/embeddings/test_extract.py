"""Tests for embeddings.extract: batching, RGB conversion, normalisation, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from embeddings.extract import (
    ExtractionCancelled,
    ImageLoadError,
    extract,
    extract_masked,
    l2_normalize,
    load_image,
    to_rgb,
)


def test_l2_normalize_rows_and_zeros() -> None:
    x = np.array([[3.0, 4.0], [0.0, 0.0], [1e-30, 0.0]], dtype=np.float64)
    out = l2_normalize(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0], [0.6, 0.8], rtol=1e-6)
    assert np.all(out[1] == 0) and np.all(out[2] == 0)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(l2_normalize(np.array([0.0, 2.0])), [0.0, 1.0])
    with pytest.raises(ValueError):
        l2_normalize(np.array([[np.nan, 1.0]]))


def test_extract_shapes_batches_and_modes(image_files: list[Path], fake_embed) -> None:
    seen: list[tuple[int, int]] = []
    vecs = extract(fake_embed, image_files, batch_size=4, progress=lambda d, t: seen.append((d, t)))
    assert vecs.shape == (10, 6) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, rtol=1e-5)
    assert fake_embed.batches == [4, 4, 2]
    assert fake_embed.modes == {"RGB"}
    assert seen == [(4, 10), (8, 10), (10, 10)]


def test_workers_give_same_result(image_files: list[Path], fake_embed) -> None:
    a = extract(fake_embed, image_files, batch_size=3)
    b = extract(fake_embed, image_files, batch_size=5, workers=3)
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_to_rgb_handles_alpha_and_16_bit() -> None:
    clear = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert to_rgb(clear).getpixel((0, 0)) == (255, 255, 255)  # composited over white
    la = Image.new("LA", (2, 2), (10, 255))
    assert to_rgb(la).getpixel((0, 0)) == (10, 10, 10)
    deep = Image.fromarray(np.array([[1000, 4095], [2000, 3000]], dtype=np.uint16))  # 12-bit data
    assert to_rgb(deep).getpixel((1, 0)) == (255, 255, 255)  # stretched min..max, as ingest and training
    flt = Image.fromarray(np.array([[0.0, 0.5], [1.0, 0.25]], dtype=np.float32))
    rgb = to_rgb(flt)
    assert rgb.mode == "RGB" and rgb.getpixel((0, 1)) == (255, 255, 255)


def test_bad_image_raises_naming_path(image_files: list[Path], fake_embed, tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(image_files[0].read_bytes()[:60])
    for p in (bad, truncated, tmp_path / "absent.jpg"):
        with pytest.raises(ImageLoadError) as err:
            extract(fake_embed, [image_files[0], p])
        assert err.value.path == p
        assert str(p) in str(err.value)


def test_extract_masked_skips_bad_images(image_files: list[Path], fake_embed, tmp_path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"garbage")
    paths = [image_files[0], bad, image_files[1], bad]
    vecs, ok = extract_masked(fake_embed, paths, batch_size=2)
    assert ok.tolist() == [True, False, True, False]
    assert vecs.shape == (4, 6)
    assert np.all(vecs[~ok] == 0)
    np.testing.assert_allclose(np.linalg.norm(vecs[ok], axis=1), 1.0, rtol=1e-5)
    only_bad, ok2 = extract_masked(fake_embed, [bad])
    assert only_bad.shape == (1, 0) and not ok2.any()


def test_should_stop_cancels_between_batches(image_files: list[Path], fake_embed) -> None:
    calls = {"n": 0}

    def stop() -> bool:
        calls["n"] += 1
        return calls["n"] > 2  # allow two batches

    with pytest.raises(ExtractionCancelled) as err:
        extract(fake_embed, image_files, batch_size=3, should_stop=stop)
    assert err.value.done == 6 and err.value.total == 10
    assert fake_embed.batches == [3, 3]


def test_zero_vectors_stay_zero(image_files: list[Path]) -> None:
    vecs = extract(lambda ims: np.zeros((len(ims), 5)), image_files[:3])
    assert vecs.shape == (3, 5) and np.all(vecs == 0)


@pytest.mark.parametrize(
    "bad_fn",
    [
        lambda ims: np.ones((len(ims) + 1, 4)),
        lambda ims: np.ones(len(ims)),
        lambda ims: np.full((len(ims), 4), np.nan),
    ],
)
def test_bad_embed_output_raises(image_files: list[Path], bad_fn) -> None:
    with pytest.raises(ValueError, match="embed_fn"):
        extract(bad_fn, image_files[:2])


def test_dimension_change_between_batches_raises(image_files: list[Path]) -> None:
    dims = iter([4, 5])
    with pytest.raises(ValueError, match="dimension"):
        extract(lambda ims: np.ones((len(ims), next(dims))), image_files[:4], batch_size=2)


def test_empty_input(fake_embed) -> None:
    assert extract(fake_embed, []).shape == (0, 0)
    assert fake_embed.batches == []


def test_load_image_closes_file_and_returns_rgb(image_files: list[Path]) -> None:
    for p in image_files:
        im = load_image(p)
        assert im.mode == "RGB" and im.size == (16, 12)


def test_max_side_shrinks_large_images(tmp_path: Path, fake_embed) -> None:
    big = tmp_path / "big.jpg"
    Image.new("RGB", (1600, 900), (200, 30, 30)).save(big, quality=90)
    small = load_image(big, max_side=256)
    assert max(small.size) == 256 and small.size[1] == 144
    assert load_image(big).size == (1600, 900)
    vecs = extract(fake_embed, [big], max_side=256)
    np.testing.assert_allclose(vecs, extract(fake_embed, [big]), atol=0.02)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    img = Image.new("RGB", (30, 10), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif)
    assert load_image(path).size == (10, 30)
