"""Read image files out of a zip archive in memory, safely.

Nothing is ever extracted to disk. Each member is checked before a byte of
it is read: names that would escape the archive's folder (absolute paths,
drive letters, ``..`` after turning backslashes into slashes, NUL bytes),
links and other special files are refused as ``unsafe_path``. Sizes are
capped twice: by the sizes the archive declares (so an honest-looking zip
bomb is refused without inflating it) and by the bytes actually inflated,
read in chunks that stop at the cap (so a lying header cannot inflate more).
"""

from __future__ import annotations

import io
import os
import re
import stat
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import IO

from service.ingest.base import Limits, Rejected

_CHUNK = 1024 * 1024
_DRIVE = re.compile(r"^[A-Za-z]:")
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
#: Folders and files that archivers add and nobody wants imported.
_JUNK_TOP = frozenset({"__MACOSX"})

ZipSource = bytes | bytearray | memoryview | str | os.PathLike[str]


def is_zip(data: bytes) -> bool:
    """Whether ``data`` (at least its first 4 bytes) starts like a zip archive."""
    return bytes(data[:4]) in _ZIP_MAGICS


def safe_member_name(name: str) -> str | None:
    """The member's path, normalised to ``a/b/c.png``, or ``None`` if it is unsafe.

    Backslashes count as separators (archives made on Windows use them).
    Absolute paths, drive letters, ``..`` components and NUL bytes are unsafe.
    """
    if "\x00" in name:
        return None
    unified = name.replace("\\", "/")
    if unified.startswith("/") or _DRIVE.match(unified):
        return None
    parts = [part for part in unified.split("/") if part not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return str(PurePosixPath(*parts))


def _is_hidden(safe_name: str) -> bool:
    parts = safe_name.split("/")
    return parts[0] in _JUNK_TOP or any(part.startswith(".") for part in parts)


def _file_type_problem(info: zipfile.ZipInfo) -> str | None:
    """Why a member is not a plain file (link, device, fifo), from its Unix mode bits."""
    mode = (info.external_attr >> 16) & 0xFFFF
    kind = stat.S_IFMT(mode)
    if kind in (0, stat.S_IFREG):
        return None
    if kind == stat.S_IFLNK:
        return "is a symbolic link"
    return f"is a special file (mode {oct(mode)})"


def _read_capped(zf: zipfile.ZipFile, info: zipfile.ZipInfo, cap: int) -> bytes | None:
    """Inflate one member in chunks; ``None`` as soon as more than ``cap`` bytes come out."""
    out = bytearray()
    with zf.open(info) as fh:
        while chunk := fh.read(min(_CHUNK, cap + 1 - len(out))):
            out += chunk
            if len(out) > cap:
                return None
    return bytes(out)


def _open_zip(source: ZipSource) -> zipfile.ZipFile:
    fp: str | os.PathLike[str] | IO[bytes]
    if isinstance(source, bytes | bytearray | memoryview):
        fp = io.BytesIO(source)
    else:
        fp = source
    try:
        return zipfile.ZipFile(fp)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError) as exc:
        raise Rejected("corrupt", f"The archive cannot be read as a zip file ({exc}).") from exc


def _check_archive(members: list[zipfile.ZipInfo], limits: Limits) -> None:
    """Archive-wide caps on member count and declared inflated size."""
    if len(members) > limits.max_zip_members:
        raise Rejected(
            "too_many_members",
            f"The archive holds {len(members):,} entries; the cap is {limits.max_zip_members:,}.",
        )
    declared = sum(info.file_size for info in members)
    if declared > limits.max_zip_total_bytes:
        raise Rejected(
            "too_large",
            f"The archive unpacks to {declared:,} bytes; the cap is "
            f"{limits.max_zip_total_bytes:,}.",
        )


def _read_member(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, budget: int, limits: Limits
) -> bytes | Rejected:
    """The member's bytes, or why it is refused; never reads past the caps."""
    if info.flag_bits & 0x1:
        return Rejected("encrypted", "The archive member is password-protected.")
    if info.file_size > limits.max_bytes:
        return Rejected(
            "too_large",
            f"The file unpacks to {info.file_size:,} bytes; the cap is {limits.max_bytes:,}.",
        )
    cap = min(limits.max_bytes, budget)
    try:
        data = _read_capped(zf, info, cap)
    except NotImplementedError as exc:  # compression method zipfile lacks
        return Rejected("unsupported_type", f"The archive member cannot be unpacked ({exc}).")
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
        return Rejected("corrupt", f"The archive member is damaged ({exc}).")
    if data is None:
        if cap < limits.max_bytes:
            return Rejected("too_large", "The archive unpacks to more bytes than its cap allows.")
        return Rejected("too_large", f"The file unpacks to more than {limits.max_bytes:,} bytes.")
    return data


def iter_zip(source: ZipSource, *, limits: Limits) -> Iterator[tuple[str, bytes | Rejected]]:
    """Yield ``(name, bytes)`` for each regular file of a zip, or ``(name, Rejected)``.

    ``source`` is the archive's bytes or a path to it. Safe names come
    normalised (``a/b.png``); unsafe ones come as stored, with
    ``Rejected("unsafe_path")``. Folders, ``__MACOSX/`` and hidden files
    (``.DS_Store``, ``._x.jpg``) are skipped. Raises :class:`Rejected` for
    the whole archive when it is not a readable zip (``corrupt``), has more
    than ``max_zip_members`` entries (``too_many_members``) or declares more
    than ``max_zip_total_bytes`` in all (``too_large``); these are raised
    before anything is yielded. Members are yielded in archive order.
    """
    with _open_zip(source) as zf:
        members = zf.infolist()
        _check_archive(members, limits)
        budget = limits.max_zip_total_bytes
        for info in members:
            name = info.filename
            safe = safe_member_name(name)
            if safe is None:
                yield name, Rejected("unsafe_path", f"The path {name!r} escapes the archive.")
                continue
            if info.is_dir():
                continue
            problem = _file_type_problem(info)
            if problem is not None:
                yield name, Rejected("unsafe_path", f"The entry {name!r} {problem}.")
                continue
            if _is_hidden(safe):
                continue
            result = _read_member(zf, info, budget, limits)
            if isinstance(result, bytes):
                budget -= len(result)
            yield safe, result
