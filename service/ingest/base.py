"""Shared value types of the ingest package: limits, results and errors.

Everything here is plain data (and :func:`check_dimensions`, a pure check of a
header's size against :class:`Limits`); no I/O happens at import time.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Image kinds that :func:`service.ingest.inspect_image` accepts, with their media types.
MEDIA_TYPES: dict[str, str] = {
    "jpeg": "image/jpeg",
    "png": "image/png",
    "bmp": "image/bmp",
    "tiff": "image/tiff",
    "webp": "image/webp",
    "dicom": "application/dicom",
}

#: Machine-readable reasons carried by :class:`Rejected`.
REJECT_REASONS: frozenset[str] = frozenset(
    {
        "empty",  # zero bytes
        "unsupported_type",  # content is not one of MEDIA_TYPES (whatever the name says)
        "corrupt",  # right magic bytes, but the file does not decode completely
        "too_large",  # bytes over Limits.max_bytes (or an archive over its byte cap)
        "too_many_pixels",  # header declares width*height or a side over the caps
        "too_many_members",  # archive with more entries than Limits.max_zip_members
        "unsafe_path",  # archive member that would escape its folder, or a link
        "encrypted",  # password-protected archive member
    }
)


@dataclass(frozen=True)
class Limits:
    """Caps applied to every uploaded or imported file.

    ``max_pixels`` (width * height) and ``max_side`` are checked from the
    header before any pixel is decoded. Pillow's own process-wide guard
    (``Image.MAX_IMAGE_PIXELS``, an error at twice that value, about 179 M
    pixels by default) still applies on top, so a ``max_pixels`` above it has
    no effect beyond Pillow's cap.
    """

    max_bytes: int = 50 * 1024**2
    max_pixels: int = 100_000_000
    max_side: int = 30_000
    max_zip_members: int = 20_000
    max_zip_total_bytes: int = 4 * 1024**3


class Rejected(Exception):
    """A file (or archive member) that must not be imported.

    ``reason`` is a short code from :data:`REJECT_REASONS` for programs;
    ``message`` is one sentence for people.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(reason, message)
        self.reason = reason
        self.message = message

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


class StorageError(Exception):
    """The blob store could not write or read (disk full, read-only, permissions).

    ``reason`` is one of ``"disk_full"``, ``"read_only"``, ``"permission_denied"``
    or ``"io_error"``; ``errno`` is the operating system's error number, if any.
    The original :class:`OSError` is chained as ``__cause__``.
    """

    def __init__(self, reason: str, message: str, *, errno: int | None = None) -> None:
        super().__init__(reason, message, errno)
        self.reason = reason
        self.message = message
        self.errno = errno

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[object, ...]:
        return (_storage_error, (self.reason, self.message, self.errno))


def _storage_error(reason: str, message: str, errno: int | None) -> StorageError:
    """Rebuild a :class:`StorageError` when unpickled (keyword ``errno`` survives)."""
    return StorageError(reason, message, errno=errno)


def check_dimensions(width: int, height: int, limits: Limits) -> None:
    """Raise :class:`Rejected` when a header's size breaks ``limits`` (or is empty)."""
    if width <= 0 or height <= 0:
        raise Rejected("corrupt", f"The image header declares an empty size {width}x{height}.")
    if width > limits.max_side or height > limits.max_side:
        raise Rejected(
            "too_many_pixels",
            f"The image is {width}x{height} pixels; sides are capped at {limits.max_side}.",
        )
    if width * height > limits.max_pixels:
        raise Rejected(
            "too_many_pixels",
            f"The image is {width}x{height} = {width * height:,} pixels; "
            f"the cap is {limits.max_pixels:,}.",
        )


@dataclass(frozen=True)
class ImageInfo:
    """What :func:`inspect_image` learned about one accepted file.

    ``sha256`` is the lowercase hex digest of the exact bytes; ``kind`` is a
    key of :data:`MEDIA_TYPES`; ``width`` and ``height`` are in pixels as
    stored (before any EXIF rotation).
    """

    sha256: str
    kind: str
    width: int
    height: int
    size_bytes: int
    media_type: str


_CONTROL = {c: None for c in [*range(0x20), 0x7F]}


def display_name(name: str, *, limit: int = 1000) -> str:
    """A file's name as labelloop shows and stores it: the last path part, control
    characters (NUL included, which PostgreSQL cannot store) dropped, an unpaired
    surrogate replaced, at most ``limit`` characters; ``"unnamed"`` if nothing is left.
    The same on every database, so one odd name never fails a batch."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1].translate(_CONTROL)
    base = base.encode("utf-8", "replace").decode("utf-8")
    return base.strip()[:limit] or "unnamed"
