"""Open a stored or imported file as an 8-bit RGB image, with ingest's errors.

The decoding itself (every Pillow mode, 16-bit and float grey, EXIF orientation,
DICOM, reduced JPEG decoding) is :func:`learning.images.decode_rgb`, the one decoder
that training and embedding use too; this module adds ingest's limits and turns
undecodable content into :class:`~service.ingest.base.Rejected`.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from learning.images import ImageDecodeError, decode_rgb, is_dicom, to_rgb
from service.ingest.base import Limits, Rejected, check_dimensions
from service.ingest.dicom import check_dicom_header

__all__ = ["open_rgb", "to_rgb"]


def open_rgb(path: Path, *, limits: Limits | None = None, max_side: int | None = None) -> Image.Image:
    """Read the image at ``path`` as an upright 8-bit RGB image.

    ``limits``, when given, checks the header's size before decoding (use it on
    files that were never passed through ``inspect_image``). ``max_side`` shrinks
    the image (Lanczos) so that its longer side is at most that, decoding JPEGs
    at 1/2, 1/4 or 1/8 scale where that stays above it: much faster for thumbnails.

    Errors opening the file (missing, permissions) propagate as :class:`OSError`;
    content that does not decode raises :class:`~service.ingest.base.Rejected`.
    """
    path = Path(path)
    check = None
    if limits is not None:
        with open(path, "rb") as fh:
            if is_dicom(fh.read(132)):
                check_dicom_header(path.read_bytes(), limits=limits)

        def check(width: int, height: int) -> None:
            check_dimensions(width, height, limits)

    try:
        return decode_rgb(
            path, max_side=max_side, fit="contain", resample=Image.Resampling.LANCZOS, check_size=check
        )
    except ImageDecodeError as exc:
        raise Rejected(exc.reason, f"{path.name}: {exc.message}") from exc
