"""DICOM checks at import, over :mod:`learning.images`, which holds the one DICOM decoder.

pydicom is optional and imported lazily there. Without it, DICOM files are turned
away as ``unsupported_type`` with a message that says what to install; nothing else
in the package needs it.
"""

from __future__ import annotations

from learning.images import ImageDecodeError, dicom_header, read_dicom
from service.ingest.base import Limits, Rejected, check_dimensions

__all__ = ["check_dicom_header", "inspect_dicom"]


def check_dicom_header(data: bytes, *, limits: Limits) -> tuple[int, int]:
    """Check a DICOM file's header (no pixels read) against ``limits``; ``(width, height)``.

    Multi-frame files count ``rows * cols * frames`` against ``max_pixels``.
    """
    try:
        width, height, frames = dicom_header(data)
    except ImageDecodeError as exc:
        raise Rejected(exc.reason, exc.message) from exc
    check_dimensions(width, height, limits)
    if width * height * frames > limits.max_pixels:
        raise Rejected(
            "too_many_pixels",
            f"The DICOM file holds {frames} frames of {width}x{height}; "
            f"the cap is {limits.max_pixels:,} pixels in all.",
        )
    return width, height


def inspect_dicom(data: bytes, *, limits: Limits) -> tuple[int, int]:
    """Check a DICOM file's header against ``limits``, then decode it; ``(width, height)``."""
    width, height = check_dicom_header(data, limits=limits)
    try:
        read_dicom(data)
    except ImageDecodeError as exc:
        raise Rejected(exc.reason, exc.message) from exc
    return width, height
