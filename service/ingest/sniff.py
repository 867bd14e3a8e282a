"""Content sniffing and validation of one image file held in memory.

The kind of a file is decided by its first bytes (magic numbers), never by
its name. Validation runs in this order, cheapest first, so that hostile
input is turned away before it costs anything:

1. empty / over ``Limits.max_bytes``;
2. magic bytes -> kind, else ``unsupported_type``;
3. header only (Pillow reads it lazily; pydicom stops before the pixels):
   width, height, checked against ``max_side`` and ``max_pixels``;
4. a full decode (and, for PNG, a CRC check of every chunk) to catch
   truncated or damaged files -> ``corrupt``.
"""

from __future__ import annotations

import hashlib
import io

from PIL import Image, features

from learning.images import DECODE_ERRORS, is_dicom
from service.ingest.base import MEDIA_TYPES, ImageInfo, Limits, Rejected, check_dimensions
from service.ingest.dicom import inspect_dicom

#: How many leading bytes :func:`sniff_kind` needs to recognise every kind.
SNIFF_BYTES = 132

_PIL_FORMATS = {"jpeg": "JPEG", "png": "PNG", "bmp": "BMP", "tiff": "TIFF", "webp": "WEBP"}

# BITMAPINFOHEADER sizes that Pillow's BMP reader understands.
_BMP_HEADER_SIZES = frozenset({12, 16, 40, 52, 56, 64, 108, 124})

# Common things that arrive with an image extension but are not images.
_LOOKALIKES: tuple[tuple[bytes, str], ...] = (
    (b"%PDF", "a PDF document"),
    (b"GIF8", "a GIF image, which is not supported"),
    (b"PK\x03\x04", "a zip archive"),
    (b"\x1f\x8b", "a gzip file"),
    (b"<", "HTML or XML text"),
    (b"{", "JSON text"),
    (b"\x00\x00\x00\x0cjP  ", "a JPEG 2000 image, which is not supported"),
)


def sniff_kind(head: bytes) -> str | None:
    """Return the image kind that ``head`` (the first bytes of a file) starts with.

    ``head`` should hold at least :data:`SNIFF_BYTES` bytes when the file is
    that long (DICOM's magic sits at offset 128). Returns a key of
    :data:`~service.ingest.base.MEDIA_TYPES`, or ``None`` for anything else.
    """
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:2] == b"BM" and len(head) >= 18:
        if int.from_bytes(head[14:18], "little") in _BMP_HEADER_SIZES:
            return "bmp"
    if is_dicom(head):
        return "dicom"
    return None


def _describe_unknown(head: bytes) -> str:
    """A short human phrase for content that is not a supported image."""
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    for magic, what in _LOOKALIKES:
        if stripped.startswith(magic):
            return what
    if b"\x00" in head:
        return "an unrecognised binary format"
    return "plain text"


def _open_pillow(data: bytes, kind: str) -> Image.Image:
    """Open ``data`` with only the Pillow plugin for ``kind`` (reads the header only)."""
    try:
        return Image.open(io.BytesIO(data), formats=[_PIL_FORMATS[kind]])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # The warning only arrives as an exception where warnings are made errors.
        raise Rejected(
            "too_many_pixels", f"The image is larger than the decoder's safety cap ({exc})."
        ) from exc
    except DECODE_ERRORS as exc:
        raise Rejected("corrupt", f"The {kind.upper()} header cannot be read ({exc}).") from exc


def _inspect_pillow(data: bytes, kind: str, limits: Limits) -> tuple[int, int]:
    """Header check, then a full decode; returns ``(width, height)``."""
    if kind == "webp" and not features.check("webp"):
        raise Rejected("unsupported_type", "This installation of Pillow cannot read WebP.")
    with _open_pillow(data, kind) as im:
        width, height = im.size
        check_dimensions(width, height, limits)
        if kind == "png":
            try:
                im.verify()  # chunk CRCs; leaves the image unusable, so reopen below
            except DECODE_ERRORS as exc:
                raise Rejected("corrupt", f"The PNG file is damaged ({exc}).") from exc
    with _open_pillow(data, kind) as im:
        try:
            im.load()
        except DECODE_ERRORS as exc:
            raise Rejected(
                "corrupt", f"The {kind.upper()} file is truncated or damaged ({exc})."
            ) from exc
    return width, height


def inspect_image(data: bytes, *, limits: Limits) -> ImageInfo:
    """Validate one file's bytes and describe it.

    Raises :class:`~service.ingest.base.Rejected` with ``reason`` ``empty``,
    ``too_large``, ``unsupported_type``, ``too_many_pixels`` or ``corrupt``.
    The pixel caps are checked from the header before any pixel is decoded.
    """
    size = len(data)
    if size == 0:
        raise Rejected("empty", "The file is empty.")
    if size > limits.max_bytes:
        raise Rejected(
            "too_large", f"The file is {size:,} bytes; the cap is {limits.max_bytes:,} bytes."
        )
    head = bytes(data[:SNIFF_BYTES])
    kind = sniff_kind(head)
    if kind is None:
        raise Rejected(
            "unsupported_type",
            f"The content is {_describe_unknown(head)}, not a JPEG, PNG, BMP, TIFF, WebP "
            "or DICOM image.",
        )
    if kind == "dicom":
        width, height = inspect_dicom(data, limits=limits)
    else:
        width, height = _inspect_pillow(data, kind, limits)
    return ImageInfo(
        sha256=hashlib.sha256(data).hexdigest(),
        kind=kind,
        width=width,
        height=height,
        size_bytes=size,
        media_type=MEDIA_TYPES[kind],
    )
