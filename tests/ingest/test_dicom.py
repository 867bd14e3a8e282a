"""DICOM through the optional pydicom: accepted, capped, converted; refused without it."""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest

from service.ingest import Limits, Rejected, inspect_image, open_rgb, scan_folder
from tests.ingest.dicom_files import make_dicom, ramp

LIMITS = Limits()


def test_dicom_is_accepted_with_its_size():
    data = make_dicom(ramp(20, 30))
    info = inspect_image(data, limits=LIMITS)
    assert (info.kind, info.width, info.height) == ("dicom", 30, 20)
    assert info.media_type == "application/dicom"


def test_dicom_pixel_cap_is_checked_from_the_header(monkeypatch):
    data = make_dicom(ramp(20, 30))
    import pydicom

    real = pydicom.dcmread

    def header_only(fp, *args, stop_before_pixels=False, **kwargs):
        assert stop_before_pixels, "pixels were read before the cap was checked"
        return real(fp, *args, stop_before_pixels=stop_before_pixels, **kwargs)

    monkeypatch.setattr(pydicom, "dcmread", header_only)
    with pytest.raises(Rejected) as err:
        inspect_image(data, limits=Limits(max_pixels=599))
    assert err.value.reason == "too_many_pixels"


def test_truncated_dicom_is_corrupt():
    data = make_dicom(ramp(40, 40))
    with pytest.raises(Rejected) as err:
        inspect_image(data[:-500], limits=LIMITS)
    assert err.value.reason == "corrupt"


def test_dicom_without_pixels_is_unsupported():
    data = make_dicom(ramp(4, 4))
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(data))
    del ds.PixelData
    buf = io.BytesIO()
    ds.save_as(buf)
    with pytest.raises(Rejected) as err:
        inspect_image(buf.getvalue(), limits=LIMITS)
    assert err.value.reason == "unsupported_type"


@pytest.mark.parametrize(
    ("photometric", "darkest_at"), [("MONOCHROME2", (0, 0)), ("MONOCHROME1", (29, 19))]
)
def test_open_rgb_stretches_grey_and_honours_monochrome1(tmp_path, photometric, darkest_at):
    arr = (np.arange(20 * 30, dtype=np.uint16).reshape(20, 30) + 100).astype(np.uint16)
    path = tmp_path / "scan"  # no extension: found by content
    path.write_bytes(make_dicom(arr, photometric=photometric))
    assert list(scan_folder(tmp_path)) == [path]
    im = open_rgb(path)
    assert (im.mode, im.size) == ("RGB", (30, 20))
    grey = np.asarray(im)[..., 0]
    assert grey.min() == 0 and grey.max() == 255
    assert im.getpixel(darkest_at) == (0, 0, 0)


def test_open_rgb_applies_the_window(tmp_path):
    arr = np.full((10, 10), 1000, dtype=np.uint16)
    arr[:, 5:] = 3000
    path = tmp_path / "w.dcm"
    path.write_bytes(make_dicom(arr, WindowCenter=1000, WindowWidth=200))
    out = np.asarray(open_rgb(path))
    assert out[0, 0, 0] < out[0, 9, 0]


def test_rgb_dicom(tmp_path):
    arr = np.zeros((6, 8, 3), dtype=np.uint8)
    arr[..., 1] = 200
    path = tmp_path / "c.dcm"
    path.write_bytes(make_dicom(arr, photometric="RGB"))
    assert inspect_image(path.read_bytes(), limits=LIMITS).width == 8
    assert open_rgb(path).getpixel((2, 2)) == (0, 200, 0)


def test_without_pydicom_dicom_is_unsupported(monkeypatch):
    monkeypatch.setitem(sys.modules, "pydicom", None)  # import pydicom -> ImportError
    with pytest.raises(Rejected) as err:
        inspect_image(b"\x00" * 128 + b"DICM" + b"\x00" * 64, limits=LIMITS)
    assert err.value.reason == "unsupported_type"
    assert "pydicom" in err.value.message
