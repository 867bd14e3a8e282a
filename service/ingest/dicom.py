"""DICOM support through pydicom, which is optional and imported lazily.

Without pydicom, DICOM files are turned away as ``unsupported_type`` with a
message that says what to install; nothing else in the package needs it.
"""

from __future__ import annotations

import io
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from PIL import Image

from service.ingest.base import Limits, Rejected
from service.ingest.convert import stretch_to_uint8
from service.ingest.sniff import DECODE_ERRORS, check_dimensions

# pydicom's pixel handlers raise these on truncated or inconsistent pixel data.
_PIXEL_ERRORS: tuple[type[BaseException], ...] = (AttributeError, *DECODE_ERRORS)


def dicom_available() -> bool:
    """Whether pydicom can be imported here."""
    try:
        _pydicom()
    except Rejected:
        return False
    return True


def _pydicom() -> ModuleType:
    try:
        import pydicom
    except ImportError as exc:
        raise Rejected(
            "unsupported_type", "DICOM files need the optional package pydicom, not installed."
        ) from exc
    return pydicom


def _read(source: bytes | Path, *, stop_before_pixels: bool) -> Any:
    """``pydicom.dcmread`` with parse errors turned into ``Rejected("corrupt")``."""
    pydicom = _pydicom()
    from pydicom.errors import InvalidDicomError

    errors: tuple[type[BaseException], ...] = (InvalidDicomError, *DECODE_ERRORS)
    fp: Any = io.BytesIO(source) if isinstance(source, bytes | bytearray) else str(source)
    try:
        return pydicom.dcmread(fp, stop_before_pixels=stop_before_pixels)
    except errors as exc:
        raise Rejected("corrupt", f"The DICOM file cannot be parsed ({exc}).") from exc


def _pixels(ds: Any) -> np.ndarray:
    """Decode the pixel data: ``[rows, cols]``, ``[rows, cols, 3]`` or with a frame axis first."""
    if "PixelData" not in ds:
        raise Rejected("unsupported_type", "The DICOM file holds no image pixel data.")
    try:
        return np.asarray(ds.pixel_array)
    except (NotImplementedError, RuntimeError, ImportError) as exc:
        # pydicom raises these when no installed plugin decodes the transfer syntax.
        raise Rejected(
            "unsupported_type",
            f"The DICOM transfer syntax {ds.file_meta.get('TransferSyntaxUID', '?')} "
            f"cannot be decoded here ({exc}).",
        ) from exc
    except _PIXEL_ERRORS as exc:
        raise Rejected("corrupt", f"The DICOM pixel data is truncated or damaged ({exc}).") from exc


def inspect_dicom(data: bytes, *, limits: Limits) -> tuple[int, int]:
    """Check a DICOM file's header against ``limits``, then decode it; ``(width, height)``.

    Multi-frame files count ``rows * cols * frames`` against ``max_pixels``.
    """
    header = _read(data, stop_before_pixels=True)
    rows, cols = header.get("Rows"), header.get("Columns")
    if rows is None or cols is None:
        raise Rejected("unsupported_type", "The DICOM file holds no image (no Rows/Columns).")
    width, height = int(cols), int(rows)
    check_dimensions(width, height, limits)
    frames = int(header.get("NumberOfFrames", 1) or 1)
    if width * height * frames > limits.max_pixels:
        raise Rejected(
            "too_many_pixels",
            f"The DICOM file holds {frames} frames of {width}x{height}; "
            f"the cap is {limits.max_pixels:,} pixels in all.",
        )
    _pixels(_read(data, stop_before_pixels=False))
    return width, height


def _lut_functions() -> tuple[Any, Any, Any]:
    """``apply_modality_lut``, ``apply_voi_lut``, ``apply_color_lut`` for pydicom 2 or 3."""
    try:
        from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut
    except ImportError:  # pydicom 2.x
        from pydicom.pixel_data_handlers.util import (
            apply_color_lut,
            apply_modality_lut,
            apply_voi_lut,
        )
    return apply_modality_lut, apply_voi_lut, apply_color_lut


def dicom_to_rgb(source: bytes | Path) -> Image.Image:
    """First frame of a DICOM file as an 8-bit RGB image, ready to show.

    Grey images get the modality LUT (rescale slope/intercept) and the
    file's VOI window when it has one, then a min..max stretch;
    MONOCHROME1 is inverted so that bright means dense, as viewers show it.
    """
    ds = _read(source, stop_before_pixels=False)
    arr = _pixels(ds)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        arr = arr[0]
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    modality_lut, voi_lut, color_lut = _lut_functions()
    if arr.ndim == 2 and photometric == "PALETTE COLOR":
        arr = np.asarray(color_lut(arr, ds))
    if arr.ndim == 3 and arr.shape[-1] >= 3:
        rgb = arr[..., :3]
        if rgb.dtype != np.uint8:
            bits = int(ds.get("BitsStored", 16) or 16)
            if photometric == "PALETTE COLOR":
                bits = 16  # colour LUT entries are 16-bit
            rgb = np.clip(rgb.astype(np.float64) * (255.0 / (2**bits - 1)), 0, 255)
            rgb = np.rint(rgb).astype(np.uint8)
        return Image.fromarray(np.ascontiguousarray(rgb))
    if arr.ndim != 2:
        raise Rejected("unsupported_type", f"DICOM pixel array of shape {arr.shape} is not shown.")
    grey = np.asarray(modality_lut(arr, ds))
    if "WindowCenter" in ds or "VOILUTSequence" in ds:
        grey = np.asarray(voi_lut(grey, ds))
    grey8 = stretch_to_uint8(grey)
    if photometric == "MONOCHROME1":
        grey8 = 255 - grey8
    return Image.fromarray(grey8).convert("RGB")
