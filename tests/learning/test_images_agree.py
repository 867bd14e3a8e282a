"""Ingest, training and embedding see the same pixels: all three go through learning.images.

Before the one decoder, ingest and training stretched 16-bit grey from its own
min..max while embedding divided by 257, so a 12-bit scan looked right as a
thumbnail and in training but nearly black to the embedder.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from embeddings.images import load_image
from embeddings.images import to_rgb as embedding_to_rgb
from learning.data import load_rgb
from learning.images import decode_rgb
from service.ingest import open_rgb
from service.ingest import to_rgb as ingest_to_rgb


def _cases() -> dict[str, tuple[Image.Image, str, dict[str, object]]]:
    y, x = np.mgrid[0:12, 0:16]
    twelve_bit = (1000 + x * 100 + y * 7).astype(np.uint16)
    exif = Image.Exif()
    exif[0x0112] = 6
    rgb = Image.fromarray(np.stack([x * 15, y * 20, (x + y) * 9], -1).astype(np.uint8))
    alpha = rgb.convert("RGBA")
    alpha.putalpha(Image.fromarray((x * 16).astype(np.uint8)))
    return {
        "16-bit grey PNG": (Image.fromarray(twelve_bit), "PNG", {}),
        "32-bit grey TIFF": (Image.fromarray(twelve_bit.astype(np.int32) * 1000), "TIFF", {}),
        "float TIFF": (Image.fromarray((x * 0.01 - y * 0.3).astype(np.float32)), "TIFF", {}),
        "grey + alpha PNG": (alpha.convert("LA"), "PNG", {}),
        "RGBA PNG": (alpha, "PNG", {}),
        "palette PNG": (rgb.convert("P"), "PNG", {}),
        "CMYK JPEG": (rgb.convert("CMYK"), "JPEG", {"quality": 95}),
        "rotated JPEG": (rgb, "JPEG", {"exif": exif.tobytes(), "quality": 95}),
    }


CASES = _cases()


@pytest.mark.parametrize("case", list(CASES))
def test_every_reader_gives_the_same_pixels(tmp_path: Path, case: str) -> None:
    image, fmt, kw = CASES[case]
    path = tmp_path / "image"
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    path.write_bytes(buf.getvalue())
    readers: dict[str, Callable[[Path], Image.Image]] = {
        "ingest open_rgb": open_rgb,
        "ingest to_rgb": lambda p: ingest_to_rgb(Image.open(p)),
        "training load_rgb": load_rgb,
        "embedding load_image": load_image,
        "embedding to_rgb": lambda p: embedding_to_rgb(Image.open(p)),
    }
    want = np.asarray(decode_rgb(path))
    assert want.dtype == np.uint8 and want.shape[2] == 3
    for name, read in readers.items():
        got = np.asarray(read(path))
        assert got.shape == want.shape, name
        np.testing.assert_array_equal(got, want, err_msg=name)
    if case.startswith(("16-bit", "32-bit", "float")):
        assert want.min() == 0 and want.max() == 255  # stretched, not divided
