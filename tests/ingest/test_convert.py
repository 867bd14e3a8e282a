"""open_rgb / to_rgb: every mode to upright 8-bit RGB."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from PIL import Image

from service.ingest import Limits, Rejected, inspect_image, open_rgb, to_rgb


def _write(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [
        ("RGB", "JPEG"),
        ("L", "PNG"),
        ("LA", "PNG"),
        ("P", "PNG"),
        ("RGBA", "PNG"),
        ("1", "BMP"),
        ("CMYK", "JPEG"),
        ("CMYK", "TIFF"),
        ("YCbCr", "TIFF"),
        ("I", "TIFF"),
        ("F", "TIFF"),
        ("RGBA", "WEBP"),
    ],
)
def test_any_mode_becomes_rgb(tmp_path, encode, picture, mode, fmt):
    path = _write(tmp_path, f"x.{fmt.lower()}", encode(picture(33, 21, mode), fmt))
    im = open_rgb(path)
    assert (im.mode, im.size) == ("RGB", (33, 21))


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16_bit_grey_is_stretched_to_full_range(tmp_path, encode, fmt):
    arr = np.linspace(1000, 3000, 20 * 10).reshape(10, 20).astype(np.uint16)  # 12-bit data
    source = Image.fromarray(arr)
    assert source.mode.startswith("I;16")
    im = open_rgb(_write(tmp_path, "x", encode(source, fmt)))
    out = np.asarray(im)
    assert im.mode == "RGB"
    assert out.min() == 0 and out.max() == 255
    assert (out[..., 0] == out[..., 1]).all()


def _tiff_rgb16(arr: np.ndarray) -> bytes:
    """A minimal uncompressed little-endian TIFF holding ``arr`` ([H, W, 3] uint16)."""
    height, width, _ = arr.shape
    pixels = arr.astype("<u2").tobytes()
    entries = [  # (tag, type, count, value); type 3 = SHORT, 4 = LONG
        (256, 4, 1, width),
        (257, 4, 1, height),
        (258, 3, 3, None),  # BitsPerSample 16,16,16 stored after the IFD
        (259, 3, 1, 1),
        (262, 3, 1, 2),
        (273, 4, 1, None),  # StripOffsets
        (277, 3, 1, 3),
        (278, 4, 1, height),
        (279, 4, 1, len(pixels)),
        (284, 3, 1, 1),
    ]
    ifd_size = 2 + 12 * len(entries) + 4
    bits_at = 8 + ifd_size
    pixels_at = bits_at + 6
    ifd = struct.pack("<H", len(entries))
    for tag, typ, count, value in entries:
        if tag == 258:
            value = bits_at
        elif tag == 273:
            value = pixels_at
        packed = struct.pack("<I", value) if typ == 4 else struct.pack("<HH", value, 0)
        ifd += struct.pack("<HHI", tag, typ, count) + packed
    ifd += struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<3H", 16, 16, 16) + pixels


def test_16_bit_rgb_tiff_becomes_rgb(tmp_path):
    arr = np.zeros((6, 8, 3), dtype=np.uint16)
    arr[..., 0] = 65535  # pure red at full 16-bit scale
    data = _tiff_rgb16(arr)
    info = inspect_image(data, limits=Limits())
    assert (info.kind, info.width, info.height) == ("tiff", 8, 6)
    out = open_rgb(_write(tmp_path, "rgb16.tif", data))
    assert (out.mode, out.size) == ("RGB", (8, 6))
    assert out.getpixel((3, 3)) == (255, 0, 0)


def test_transparent_pixels_become_white(tmp_path, encode):
    im = Image.new("RGBA", (4, 4), (255, 0, 0, 255))
    im.putpixel((0, 0), (0, 0, 0, 0))
    out = open_rgb(_write(tmp_path, "a.png", encode(im, "PNG")))
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert out.getpixel((3, 3)) == (255, 0, 0)


def test_palette_with_transparency_becomes_white(tmp_path, encode):
    im = Image.new("P", (4, 4), 1)
    im.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    im.putpixel((0, 0), 0)
    out = open_rgb(_write(tmp_path, "p.png", encode(im, "PNG", transparency=0)))
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert out.getpixel((1, 1)) == (0, 0, 255)


@pytest.mark.parametrize(
    ("orientation", "size", "red_corner"),
    [
        (1, (20, 10), (0, 0)),
        (3, (20, 10), (19, 9)),  # rotated 180
        (6, (10, 20), (9, 0)),  # rotated 90 clockwise to display
        (8, (10, 20), (0, 19)),  # rotated 90 counter-clockwise to display
    ],
)
def test_exif_orientation_is_applied(tmp_path, encode, orientation, size, red_corner):
    im = Image.new("RGB", (20, 10), (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, 4, 4))  # red block in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = _write(tmp_path, "o.jpg", encode(im, "JPEG", exif=exif.tobytes(), quality=95))
    out = open_rgb(path)
    assert out.size == size
    r, _, b = np.asarray(out)[red_corner[1], red_corner[0]].tolist()
    assert r > 200 and b < 60


def test_max_side_shrinks_to_fit_and_never_enlarges(tmp_path, encode, picture):
    path = _write(tmp_path, "big.jpg", encode(picture(1024, 800), "JPEG"))
    out = open_rgb(path, max_side=128)
    assert (out.mode, out.size) == ("RGB", (128, 100))
    small = _write(tmp_path, "small.png", encode(picture(40, 30), "PNG"))
    assert open_rgb(small, max_side=128).size == (40, 30)


def test_limits_are_checked_before_decoding(tmp_path, encode, picture):
    path = _write(tmp_path, "x.png", encode(picture(100, 100), "PNG"))
    with pytest.raises(Rejected) as err:
        open_rgb(path, limits=Limits(max_pixels=100))
    assert err.value.reason == "too_many_pixels"


def test_undecodable_file_is_rejected_and_missing_file_raises(tmp_path, encode, picture):
    data = encode(picture(64, 64), "PNG")
    with pytest.raises(Rejected) as err:
        open_rgb(_write(tmp_path, "cut.png", data[: len(data) // 2]))
    assert err.value.reason == "corrupt"
    with pytest.raises(Rejected):
        open_rgb(_write(tmp_path, "text.png", b"just text"))
    with pytest.raises(FileNotFoundError):
        open_rgb(tmp_path / "missing.png")


def test_to_rgb_returns_a_new_image(picture):
    src = picture(8, 8)
    out = to_rgb(src)
    assert out is not src and out.mode == "RGB"
    assert to_rgb(Image.new("LAB", (3, 3))).mode == "RGB"
