"""Turn any supported image into an 8-bit RGB :class:`PIL.Image.Image`.

Models, thumbnails and the browser all want the same thing: three 8-bit
channels, upright. This module gets there from every mode Pillow reads
(``1``, ``L``, ``LA``, ``P``, ``PA``, ``RGBA``, ``CMYK``, ``YCbCr``, ``I;16``,
``I``, ``F``, ...) and from DICOM.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from service.ingest.base import Limits, Rejected
from service.ingest.sniff import DECODE_ERRORS, SNIFF_BYTES, check_dimensions, sniff_kind

#: Colour that transparent pixels are composited onto.
BACKGROUND = (255, 255, 255)

_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_HIGH_DEPTH_PREFIXES = ("I", "F")  # I, I;16, I;16B, I;16L, I;16N, F


def stretch_to_uint8(arr: np.ndarray) -> np.ndarray:
    """Map an array linearly from its own finite min..max onto 0..255 (``uint8``).

    A constant (or all-NaN) array becomes all zeros. The shape is unchanged.
    """
    values = np.asarray(arr, dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(values.shape, dtype=np.uint8)
    lo, hi = float(values[finite].min()), float(values[finite].max())
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = (np.where(finite, values, lo) - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _flatten_alpha(im: Image.Image) -> Image.Image:
    rgba = im.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def to_rgb(im: Image.Image) -> Image.Image:
    """Return a new upright RGB image for ``im`` (EXIF orientation applied).

    Transparent pixels are composited onto white; 16-bit, 32-bit and float
    grey images are stretched from their own min..max to 8 bits (so 12-bit
    scans stay visible); palette images keep their colours.
    """
    upright = ImageOps.exif_transpose(im)
    mode = upright.mode
    if mode == "RGB":
        return upright
    if mode == "P" and "transparency" in upright.info:
        return _flatten_alpha(upright)
    if mode in _ALPHA_MODES:
        return _flatten_alpha(upright)
    if mode.startswith(_HIGH_DEPTH_PREFIXES):
        return Image.fromarray(stretch_to_uint8(np.asarray(upright))).convert("RGB")
    try:
        return upright.convert("RGB")
    except ValueError:
        # A mode Pillow cannot convert directly (e.g. LAB): show its first band as grey.
        band = np.asarray(upright.getchannel(0))
        return Image.fromarray(stretch_to_uint8(band)).convert("RGB")


def open_rgb(
    path: Path, *, limits: Limits | None = None, draft_size: int | None = None
) -> Image.Image:
    """Read the image at ``path`` as an upright 8-bit RGB image.

    ``limits``, when given, checks the header's size before decoding (use
    it on files that were never passed through ``inspect_image``).
    ``draft_size`` lets the JPEG decoder scale down by 2/4/8 while decoding,
    keeping both sides at least that big: much faster for thumbnails.

    Errors opening the file (missing, permissions) propagate as
    :class:`OSError`; content that does not decode raises
    :class:`~service.ingest.base.Rejected`.
    """
    with open(path, "rb") as fh:
        head = fh.read(SNIFF_BYTES)
        kind = sniff_kind(head)
        if kind == "dicom":
            from service.ingest.dicom import dicom_to_rgb

            if limits is not None:
                from service.ingest.dicom import inspect_dicom

                inspect_dicom(Path(path).read_bytes(), limits=limits)
            return dicom_to_rgb(Path(path))
        fh.seek(0)
        try:
            with Image.open(fh) as im:
                if limits is not None:
                    check_dimensions(im.width, im.height, limits)
                if draft_size is not None and im.format == "JPEG":
                    im.draft(None, (draft_size, draft_size))
                im.load()
                return to_rgb(im)
        except Image.DecompressionBombError as exc:
            raise Rejected("too_many_pixels", f"{path.name}: {exc}") from exc
        except DECODE_ERRORS as exc:
            raise Rejected("corrupt", f"{path.name} cannot be decoded ({exc}).") from exc
