"""inspect_image / sniff_kind: content sniffing, caps from the header, full decode."""

from __future__ import annotations

import hashlib
import time
import warnings

import numpy as np
import pytest
from PIL import Image

from service.ingest import Limits, Rejected, inspect_image, sniff_kind

LIMITS = Limits()


@pytest.mark.parametrize(
    ("fmt", "mode", "kind", "media_type"),
    [
        ("JPEG", "RGB", "jpeg", "image/jpeg"),
        ("JPEG", "L", "jpeg", "image/jpeg"),
        ("JPEG", "CMYK", "jpeg", "image/jpeg"),
        ("PNG", "RGB", "png", "image/png"),
        ("PNG", "RGBA", "png", "image/png"),
        ("PNG", "P", "png", "image/png"),
        ("PNG", "1", "png", "image/png"),
        ("BMP", "RGB", "bmp", "image/bmp"),
        ("BMP", "L", "bmp", "image/bmp"),
        ("TIFF", "RGB", "tiff", "image/tiff"),
        ("TIFF", "CMYK", "tiff", "image/tiff"),
        ("WEBP", "RGB", "webp", "image/webp"),
        ("WEBP", "RGBA", "webp", "image/webp"),
    ],
)
def test_supported_types_are_accepted(encode, picture, fmt, mode, kind, media_type):
    data = encode(picture(41, 23, mode), fmt)
    info = inspect_image(data, limits=LIMITS)
    assert (info.kind, info.width, info.height) == (kind, 41, 23)
    assert info.media_type == media_type
    assert info.size_bytes == len(data)
    assert info.sha256 == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16_bit_grey_is_accepted(encode, fmt):
    arr = np.arange(24 * 17, dtype=np.uint16).reshape(17, 24) * 150
    data = encode(Image.fromarray(arr), fmt)
    info = inspect_image(data, limits=LIMITS)
    assert (info.width, info.height) == (24, 17)


def test_multipage_tiff_is_accepted(encode, picture):
    frames = [picture(10, 8), picture(10, 8, "L")]
    data = encode(frames[0], "TIFF", save_all=True, append_images=frames[1:])
    assert inspect_image(data, limits=LIMITS).kind == "tiff"


@pytest.mark.parametrize(
    "content",
    [
        b"hello, this is not a picture\n",
        b"<!DOCTYPE html><html><body>nope</body></html>",
        b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n",
        b"GIF89a\x01\x00\x01\x00\x00\x00\x00;",
        b"BM not really a bitmap, just text that starts with BM",
        b'{"images": []}',
        bytes(range(256)),
    ],
)
def test_wrong_content_is_unsupported_whatever_the_name(content):
    with pytest.raises(Rejected) as err:
        inspect_image(content, limits=LIMITS)
    assert err.value.reason == "unsupported_type"
    assert err.value.message


def test_empty_file_is_rejected():
    with pytest.raises(Rejected) as err:
        inspect_image(b"", limits=LIMITS)
    assert err.value.reason == "empty"


def test_file_over_max_bytes_is_too_large(encode, picture):
    data = encode(picture(), "PNG")
    with pytest.raises(Rejected) as err:
        inspect_image(data, limits=Limits(max_bytes=len(data) - 1))
    assert err.value.reason == "too_large"
    assert inspect_image(data, limits=Limits(max_bytes=len(data))).kind == "png"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "TIFF", "BMP"])
def test_truncated_files_are_corrupt(encode, picture, fmt):
    data = encode(picture(64, 64), fmt)
    with pytest.raises(Rejected) as err:
        inspect_image(data[: len(data) * 2 // 3], limits=LIMITS)
    assert err.value.reason == "corrupt"


def test_header_only_png_and_jpeg_are_corrupt(encode, picture):
    png = encode(picture(), "PNG")
    jpeg = encode(picture(), "JPEG")
    for data in (png[:40], jpeg[:20], b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff"):
        with pytest.raises(Rejected) as err:
            inspect_image(data, limits=LIMITS)
        assert err.value.reason == "corrupt"


def test_png_with_bad_crc_is_corrupt(encode, picture):
    data = bytearray(encode(picture(), "PNG"))
    idat = data.index(b"IDAT")
    data[idat + 10] ^= 0xFF  # damage compressed pixels; the chunk CRC no longer matches
    with pytest.raises(Rejected) as err:
        inspect_image(bytes(data), limits=LIMITS)
    assert err.value.reason == "corrupt"


def test_jpeg_with_garbage_scan_is_corrupt(encode, picture):
    data = encode(picture(64, 64), "JPEG")
    sos = data.index(b"\xff\xda")
    with pytest.raises(Rejected) as err:
        inspect_image(data[: sos + 20], limits=LIMITS)
    assert err.value.reason == "corrupt"


@pytest.fixture
def no_decoding(monkeypatch):
    """Fail the test if any pixel data is decoded."""

    def forbidden(self, *args, **kwargs):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(Image.Image, "load", forbidden)
    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", forbidden)


@pytest.mark.parametrize("side", [50_000, 13_000, 100_000])
def test_decompression_bomb_header_is_rejected_fast_without_decoding(
    make_bomb_png, no_decoding, side
):
    data = make_bomb_png(side, side)
    assert len(data) < 200
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with pytest.raises(Rejected) as err:
            inspect_image(data, limits=Limits(max_side=200_000))
    assert err.value.reason == "too_many_pixels"
    assert time.perf_counter() - start < 1.0  # microseconds of work; generous for CI


def test_real_highly_compressible_bomb_is_rejected_fast(encode):
    # 12000 x 12000 one-bit zeros: 144 M pixels in a file of a few kB.
    data = encode(Image.new("1", (12_000, 12_000)), "PNG")
    assert len(data) < 100_000
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with pytest.raises(Rejected) as err:
            inspect_image(data, limits=LIMITS)
    assert err.value.reason == "too_many_pixels"
    assert time.perf_counter() - start < 1.0  # microseconds of work; generous for CI


def test_own_pixel_cap_is_checked_before_decoding(encode, picture, monkeypatch):
    data = encode(picture(100, 100), "JPEG")
    monkeypatch.setattr(Image.Image, "load", lambda self: pytest.fail("decoded"))
    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", lambda self: pytest.fail("decoded"))
    with pytest.raises(Rejected) as err:
        inspect_image(data, limits=Limits(max_pixels=9_999))
    assert err.value.reason == "too_many_pixels"


def test_side_cap(encode, picture):
    data = encode(picture(300, 10), "PNG")
    with pytest.raises(Rejected) as err:
        inspect_image(data, limits=Limits(max_side=299))
    assert err.value.reason == "too_many_pixels"
    assert "299" in err.value.message
    assert inspect_image(data, limits=Limits(max_side=300)).width == 300


def test_decoder_bomb_error_becomes_rejected(encode, picture, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    data = encode(picture(40, 30), "PNG")  # 1200 px > 2 * 100: Pillow raises on open
    with pytest.raises(Rejected) as err:
        inspect_image(data, limits=LIMITS)
    assert err.value.reason == "too_many_pixels"


def test_sniff_kind_ignores_names_and_needs_only_the_head(encode, picture):
    assert sniff_kind(encode(picture(), "PNG")[:16]) == "png"
    assert sniff_kind(encode(picture(), "WEBP")[:16]) == "webp"
    assert sniff_kind(b"\x00" * 128 + b"DICM") == "dicom"
    assert sniff_kind(b"") is None
    assert sniff_kind(b"BM") is None


def test_rejected_carries_reason_and_message_and_pickles():
    import pickle

    err = Rejected("corrupt", "The file is damaged.")
    again = pickle.loads(pickle.dumps(err))
    assert (again.reason, again.message) == ("corrupt", "The file is damaged.")
    assert str(again) == "corrupt: The file is damaged."
