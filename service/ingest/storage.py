"""Content-addressed blob storage for image files and their thumbnails.

Layout under ``root``::

    objects/ab/cd/<sha256>               the exact uploaded bytes
    thumbs/<size>/ab/cd/<sha256>.jpg     RGB JPEG, longest side <= size

Paths are built only from validated sha256 digests, never from client file
names. Every write goes to a temporary file in the target folder, is
fsynced and then renamed over the final name, so a reader sees either no
file or the whole file, and a failed write never leaves a partial object at
the final path. Operating-system failures come out as
:class:`~service.ingest.base.StorageError` with a reason people can act on.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from service.ingest.base import ImageInfo, StorageError
from service.ingest.convert import open_rgb

_SHA256 = re.compile(r"[0-9a-f]{64}")
_PARTIAL_PREFIX = ".tmp-"
_PARTIAL_SUFFIX = ".part"
THUMB_MIN, THUMB_MAX = 16, 2048

_ERRNO_REASONS: dict[int, tuple[str, str]] = {
    errno.ENOSPC: ("disk_full", "the disk is full"),
    errno.EDQUOT: ("disk_full", "the disk quota is exhausted"),
    errno.EFBIG: ("disk_full", "the file is too big for the file system"),
    errno.EROFS: ("read_only", "the file system is read-only"),
    errno.EACCES: ("permission_denied", "permission was denied"),
    errno.EPERM: ("permission_denied", "the operation is not permitted"),
}


def storage_error(exc: OSError, action: str) -> StorageError:
    """Translate an :class:`OSError` into a :class:`StorageError` naming the cause."""
    code = exc.errno
    reason, cause = _ERRNO_REASONS.get(code or -1, ("io_error", exc.strerror or str(exc)))
    where = f" ({exc.filename})" if exc.filename else ""
    return StorageError(reason, f"Could not {action}: {cause}{where}.", errno=code)


def check_sha256(sha256: str) -> str:
    """Return ``sha256`` if it is 64 lowercase hex digits, else raise :class:`ValueError`."""
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")
    return sha256


def _fsync_dir(folder: Path) -> None:
    """Persist a rename on file systems that need the folder synced (best effort)."""
    with contextlib.suppress(OSError):  # not supported everywhere (some network FS)
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(final: Path, write: Callable[[BinaryIO], object], *, action: str) -> None:
    """Write ``final`` through a temporary sibling, fsync, then ``os.replace``.

    ``write`` receives the open binary file. On any failure the temporary
    file is removed and ``final`` is left as it was; :class:`OSError`
    becomes :class:`StorageError` (``action`` says what was being done).
    """
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(
            prefix=_PARTIAL_PREFIX, suffix=_PARTIAL_SUFFIX, dir=final.parent
        )
    except OSError as exc:
        raise storage_error(exc, action) from exc
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, final)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError):
            raise storage_error(exc, action) from exc
        raise
    _fsync_dir(final.parent)


class BlobStore:
    """Content-addressed storage of image bytes and thumbnails under ``root``.

    Creating a store does no I/O; folders appear on the first write.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.objects = self.root / "objects"
        self.thumbs = self.root / "thumbs"

    def path(self, sha256: str) -> Path:
        """Where the object with this digest lives (whether or not it exists)."""
        check_sha256(sha256)
        return self.objects / sha256[:2] / sha256[2:4] / sha256

    def thumbnail_path(self, sha256: str, *, size: int = 256) -> Path:
        """Where the ``size`` px thumbnail of this object lives (whether or not it exists)."""
        check_sha256(sha256)
        _check_size(size)
        return self.thumbs / str(size) / sha256[:2] / sha256[2:4] / f"{sha256}.jpg"

    def exists(self, sha256: str) -> bool:
        """Whether the object is stored."""
        return self.path(sha256).is_file()

    def put(self, data: bytes, info: ImageInfo) -> Path:
        """Store ``data`` under ``info.sha256`` and return its path.

        Idempotent: an object already stored with the right size is left
        alone. Raises :class:`ValueError` when ``data`` does not hash to
        ``info.sha256``, :class:`StorageError` when the disk refuses.
        """
        final = self.path(info.sha256)
        if hashlib.sha256(data).hexdigest() != info.sha256:
            raise ValueError("data does not match info.sha256")
        try:
            if final.stat().st_size == len(data):
                return final
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise storage_error(exc, f"check {info.sha256[:12]}") from exc
        atomic_write(final, lambda fh: fh.write(data), action=f"store {info.sha256[:12]}")
        return final

    def read(self, sha256: str) -> bytes:
        """The stored bytes; :class:`FileNotFoundError` if absent."""
        path = self.path(sha256)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise storage_error(exc, f"read {sha256[:12]}") from exc

    def thumbnail(self, sha256: str, *, size: int = 256) -> Path:
        """Path of an RGB JPEG whose longest side is at most ``size``, made if missing.

        Raises :class:`FileNotFoundError` when the object is not stored and
        :class:`~service.ingest.base.Rejected` when it does not decode.
        """
        out = self.thumbnail_path(sha256, size=size)
        if out.is_file():
            return out
        source = self.path(sha256)
        if not source.is_file():
            raise FileNotFoundError(f"no stored object {sha256}")
        im = open_rgb(source, max_side=size)
        atomic_write(
            out,
            lambda fh: im.save(fh, format="JPEG", quality=85, optimize=True),
            action=f"write the thumbnail of {sha256[:12]}",
        )
        return out

    def delete(self, sha256: str) -> None:
        """Remove the object and all its thumbnails; absent files are fine."""
        targets = [self.path(sha256)]
        if self.thumbs.is_dir():
            targets += self.thumbs.glob(f"*/{sha256[:2]}/{sha256[2:4]}/{sha256}.jpg")
        for target in targets:
            try:
                target.unlink(missing_ok=True)
            except OSError as exc:
                raise storage_error(exc, f"delete {sha256[:12]}") from exc

    def sweep_partials(self, *, older_than_s: float = 3600.0) -> int:
        """Delete temporary files left by writes that crashed; returns how many."""
        cutoff = time.time() - older_than_s
        removed = 0
        for top in (self.objects, self.thumbs):
            if not top.is_dir():
                continue
            for tmp in top.rglob(f"{_PARTIAL_PREFIX}*{_PARTIAL_SUFFIX}"):
                with contextlib.suppress(OSError):
                    if tmp.stat().st_mtime < cutoff:
                        tmp.unlink()
                        removed += 1
        return removed


def _check_size(size: int) -> None:
    if not THUMB_MIN <= size <= THUMB_MAX:
        raise ValueError(f"thumbnail size must be {THUMB_MIN}..{THUMB_MAX}, got {size}")
