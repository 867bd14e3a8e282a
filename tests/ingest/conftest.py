"""Fixtures for the ingest tests: tiny images drawn here, encoded in memory."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from PIL import Image

Encoder = Callable[..., bytes]


def encode_image(im: Image.Image, fmt: str, **save_kw: Any) -> bytes:
    """Encode ``im`` as ``fmt`` (a Pillow format name) and return the bytes."""
    buf = io.BytesIO()
    im.save(buf, format=fmt, **save_kw)
    return buf.getvalue()


def gradient(width: int = 40, height: int = 30, mode: str = "RGB") -> Image.Image:
    """A small deterministic picture (so encoders do real work) in ``mode``."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 256], -1)
    im = Image.fromarray(rgb.astype(np.uint8))
    return im if mode == "RGB" else im.convert(mode)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    """One PNG chunk with its length and CRC."""
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width x height`` grey pixels (data is bogus)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


@pytest.fixture
def encode() -> Encoder:
    return encode_image


@pytest.fixture
def picture() -> Callable[..., Image.Image]:
    return gradient


@pytest.fixture
def make_bomb_png() -> Callable[[int, int], bytes]:
    return bomb_png
