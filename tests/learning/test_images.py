"""learning.images.decode_rgb: the one decoder of ingest, training and embedding."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from learning.images import ImageDecodeError, decode_rgb, is_dicom, stretch_to_uint8, to_rgb


def _save(im: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """A textured RGB picture (so JPEG has real work to do)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // width, y * 255 // height, (x ^ y) & 255], -1).astype(np.float64)
    return Image.fromarray(np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8))


def test_every_source_kind_gives_the_same_pixels(tmp_path: Path) -> None:
    data = _save(_photo(40, 30), "PNG")
    path = tmp_path / "p.png"
    path.write_bytes(data)
    want = np.asarray(decode_rgb(path))
    assert want.shape == (30, 40, 3)
    for source in (str(path), data, io.BytesIO(data), Image.open(io.BytesIO(data))):
        np.testing.assert_array_equal(np.asarray(decode_rgb(source)), want)


def test_a_file_object_is_read_from_where_it_stands() -> None:
    data = _save(_photo(8, 6), "PNG")
    fh = io.BytesIO(b"junk" + data)
    fh.seek(4)
    assert decode_rgb(fh).size == (8, 6)


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [("L", "PNG"), ("LA", "PNG"), ("P", "PNG"), ("RGBA", "PNG"), ("1", "BMP"), ("CMYK", "JPEG"),
     ("CMYK", "TIFF"), ("YCbCr", "TIFF"), ("I", "TIFF"), ("F", "TIFF"), ("RGBA", "WEBP")],
)
def test_any_mode_becomes_rgb(mode: str, fmt: str) -> None:
    out = decode_rgb(_save(_photo(33, 21).convert(mode), fmt))
    assert (out.mode, out.size) == ("RGB", (33, 21))


def test_sixteen_bit_and_float_grey_are_stretched_from_min_to_max() -> None:
    twelve_bit = np.linspace(1000, 3000, 200).reshape(10, 20).astype(np.uint16)
    out = np.asarray(decode_rgb(_save(Image.fromarray(twelve_bit), "PNG")))
    assert out.min() == 0 and out.max() == 255
    np.testing.assert_array_equal(out[..., 0], stretch_to_uint8(twelve_bit))
    flt = Image.fromarray(np.array([[0.0, 0.5], [1.0, 0.25]], dtype=np.float32))
    assert np.asarray(to_rgb(flt))[..., 0].tolist() == [[0, 128], [255, 64]]
    assert np.asarray(to_rgb(Image.fromarray(np.full((2, 2), 65535, np.uint16)))).max() == 0  # constant
    assert stretch_to_uint8(np.array([np.nan, 1.0, 3.0])).tolist() == [0, 0, 255]


def test_transparency_is_composited_on_white() -> None:
    clear = Image.new("RGBA", (4, 4), (255, 0, 0, 255))
    clear.putpixel((0, 0), (0, 0, 0, 0))
    out = decode_rgb(_save(clear, "PNG"))
    assert out.getpixel((0, 0)) == (255, 255, 255) and out.getpixel((3, 3)) == (255, 0, 0)
    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    pal.putpixel((0, 0), 0)
    out = decode_rgb(_save(pal, "PNG", transparency=0))
    assert out.getpixel((0, 0)) == (255, 255, 255) and out.getpixel((1, 1)) == (0, 0, 255)
    assert to_rgb(Image.new("LA", (2, 2), (10, 255))).getpixel((0, 0)) == (10, 10, 10)


@pytest.mark.parametrize(("orientation", "size"), [(1, (30, 10)), (3, (30, 10)), (6, (10, 30)), (8, (10, 30))])
def test_exif_orientation_is_applied(orientation: int, size: tuple[int, int]) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _save(Image.new("RGB", (30, 10), (0, 0, 255)), "JPEG", exif=exif.tobytes())
    assert decode_rgb(data).size == size
    assert decode_rgb(data, max_side=5).size == ((15, 5) if size[0] > size[1] else (5, 15))


def _decoded_sizes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Record the size of every image Pillow decodes (``load``), after any draft."""
    seen: list[tuple[int, int]] = []
    real_load = Image.Image.load

    def load(self: Image.Image) -> object:
        out = real_load(self)
        seen.append(self.size)
        return out

    monkeypatch.setattr(Image.Image, "load", load)
    return seen


def test_a_large_jpeg_is_decoded_reduced_for_a_small_input(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _save(_photo(4000, 3000), "JPEG", quality=90)
    seen = _decoded_sizes(monkeypatch)
    small = decode_rgb(data, max_side=96)
    assert small.size == (128, 96)
    assert seen and max(w for w, _ in seen) <= 500  # 1/8 scale: never the 4000 x 3000 raster
    seen.clear()
    full = decode_rgb(data)
    assert full.size == (4000, 3000) and (4000, 3000) in seen
    # Reduced decoding changes pixels only a little against a full decode shrunk the same way.
    ref = full.resize((128, 96), Image.Resampling.BICUBIC, reducing_gap=2.0)
    diff = np.abs(np.asarray(small, dtype=np.int16) - np.asarray(ref, dtype=np.int16))
    assert diff.mean() < 6


def test_reduced_decoding_never_goes_below_the_request(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _save(_photo(1000, 300), "JPEG")
    seen = _decoded_sizes(monkeypatch)
    cover = decode_rgb(data, max_side=100)  # shorter side 100
    assert cover.size == (333, 100) and min(seen[-1]) >= 100
    contain = decode_rgb(data, max_side=100, fit="contain")  # longer side 100
    assert contain.size == (100, 30)
    assert decode_rgb(_save(_photo(20, 10), "PNG"), max_side=100).size == (20, 10)  # never enlarged
    with pytest.raises(ValueError):
        decode_rgb(data, max_side=0)


def test_check_size_runs_before_any_pixel_is_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _save(_photo(64, 48), "PNG")
    seen = _decoded_sizes(monkeypatch)

    class TooBig(Exception):
        pass

    def refuse(width: int, height: int) -> None:
        assert (width, height) == (64, 48)
        raise TooBig

    with pytest.raises(TooBig):
        decode_rgb(data, check_size=refuse)
    assert seen == []


def test_bad_content_raises_a_decode_error_naming_the_file(tmp_path: Path) -> None:
    data = _save(_photo(64, 64), "PNG")
    cut = tmp_path / "cut.png"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageDecodeError) as err:
        decode_rgb(cut)
    assert err.value.reason == "corrupt" and err.value.path == cut and "cut.png" in str(err.value)
    with pytest.raises(ImageDecodeError) as err:
        decode_rgb(b"just text")
    assert err.value.reason == "corrupt" and err.value.path is None
    with pytest.raises(FileNotFoundError):
        decode_rgb(tmp_path / "absent.png")


def test_the_decompression_bomb_guard_is_too_many_pixels(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # errors above twice this
    with pytest.raises(ImageDecodeError) as err:
        decode_rgb(_save(_photo(30, 30), "PNG"))
    assert err.value.reason == "too_many_pixels"


def test_dicom_is_decoded_from_every_source_kind(tmp_path: Path) -> None:
    from tests.ingest.dicom_files import make_dicom, ramp

    data = make_dicom(ramp(20, 30))
    assert is_dicom(data[:132]) and not is_dicom(_save(_photo(8, 8), "PNG"))
    path = tmp_path / "scan"
    path.write_bytes(data)
    want = np.asarray(decode_rgb(data))
    assert want.shape == (20, 30, 3) and want.min() == 0 and want.max() == 255
    for source in (path, str(path), io.BytesIO(data)):
        np.testing.assert_array_equal(np.asarray(decode_rgb(source)), want)
    assert decode_rgb(path, max_side=10).size == (15, 10)
    rgb = np.zeros((6, 8, 3), dtype=np.uint8)
    rgb[..., 1] = 200
    assert decode_rgb(make_dicom(rgb, photometric="RGB")).getpixel((2, 2)) == (0, 200, 0)


def test_dicom_without_pydicom_is_unsupported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pydicom", None)  # import pydicom -> ImportError
    with pytest.raises(ImageDecodeError) as err:
        decode_rgb(b"\x00" * 128 + b"DICM" + b"\x00" * 64)
    assert err.value.reason == "unsupported_type" and "pydicom" in err.value.message
