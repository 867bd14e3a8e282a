"""Safe readers and deterministic writers for zip, XML, JSON and numbers.

Zip reading refuses absolute paths, ``..`` parts, backslashes, symlinks,
duplicate names and more than :data:`MAX_UNCOMPRESSED_BYTES` of content (the
count is of bytes actually inflated, not of sizes the archive claims). XML is
parsed by ``defusedxml`` with DTDs forbidden, so entity bombs and external
entities never expand. Writers fix timestamps and order so that the same
labels always give the same bytes.
"""

from __future__ import annotations

import io
import json
import math
import posixpath
import re
import stat
import struct
import zipfile
import zlib
from typing import Any
from xml.etree.ElementTree import Element, ParseError, indent, tostring

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from .base import FormatError, fail

MAX_UNCOMPRESSED_BYTES = 512 * 1024 * 1024
"""Cap on the total inflated size of the members of one zip archive."""

MAX_MEMBERS = 200_000
"""Cap on the number of members in one zip archive."""

_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, RuntimeError,
               NotImplementedError, struct.error, KeyError, IndexError, OverflowError)
"""What zipfile raises on damaged archives (CRC, headers, versions, methods...)."""
_CHUNK = 1 << 20
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_SKIP_PREFIXES = ("__MACOSX/",)
_SKIP_BASENAMES = (".DS_Store", "Thumbs.db")


def as_bytes(data: object, fmt: str) -> bytes:
    """``data`` as bytes (bytes, bytearray or memoryview), else FormatError."""
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    raise fail(fmt, "", f"expected bytes, got {type(data).__name__}")


def is_zip(data: bytes) -> bool:
    """Whether ``data`` starts like a zip archive."""
    return data[:4] in (b"PK\x03\x04", b"PK\x05\x06")


def check_member_name(name: str, fmt: str) -> str:
    """``name`` if it is a safe relative posix path, else FormatError."""
    if not name or "\\" in name or "\x00" in name:
        raise fail(fmt, f"zip member {name!r}", "unsafe name (empty, backslash or NUL)")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise fail(fmt, f"zip member {name!r}", "absolute paths are not allowed")
    if ".." in name.split("/"):
        raise fail(fmt, f"zip member {name!r}", "'..' in paths is not allowed")
    return name


def read_zip(data: bytes, fmt: str) -> dict[str, bytes]:
    """Regular-file members of a zip archive by name (directories skipped)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except _ZIP_ERRORS as exc:
        raise fail(fmt, "", f"not a readable zip archive ({exc})") from None
    with archive:
        infos = archive.infolist()
        if len(infos) > MAX_MEMBERS:
            raise fail(fmt, "", f"zip has {len(infos)} members, more than {MAX_MEMBERS}")
        members: dict[str, bytes] = {}
        total = 0
        for info in infos:
            name = check_member_name(info.filename, fmt)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise fail(fmt, f"zip member {name!r}", "symbolic links are not allowed")
            if info.is_dir() or name.startswith(_SKIP_PREFIXES):
                continue
            if posixpath.basename(name) in _SKIP_BASENAMES:
                continue
            if name in members:
                raise fail(fmt, f"zip member {name!r}", "appears twice")
            members[name], total = _read_member(archive, info, total, fmt)
        return members


def _read_member(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, total: int, fmt: str
) -> tuple[bytes, int]:
    if total + info.file_size > MAX_UNCOMPRESSED_BYTES:
        raise fail(fmt, f"zip member {info.filename!r}",
                   f"archive content exceeds {MAX_UNCOMPRESSED_BYTES} bytes")
    out = bytearray()
    try:
        with archive.open(info) as stream:
            while chunk := stream.read(_CHUNK):
                out += chunk
                total += len(chunk)
                if total > MAX_UNCOMPRESSED_BYTES:
                    raise fail(fmt, f"zip member {info.filename!r}",
                               f"archive content exceeds {MAX_UNCOMPRESSED_BYTES} bytes")
    except FormatError:
        raise
    except _ZIP_ERRORS as exc:
        raise fail(fmt, f"zip member {info.filename!r}", f"cannot be read ({exc})") from None
    return bytes(out), total


def write_zip(members: dict[str, bytes]) -> bytes:
    """A deflated zip of ``members`` in name order with fixed timestamps."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in sorted(members):
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            info.create_system = 3
            archive.writestr(info, members[name], compresslevel=6)
    return buffer.getvalue()


def member_path(file_name: str, fmt: str) -> str:
    """A safe relative path without extension for the labels of ``file_name``.

    ``"images/a.jpg" -> "images/a"``; leading ``/`` and drive letters are
    dropped; ``..`` parts are refused.
    """
    name = re.sub(r"^[A-Za-z]:", "", file_name.replace("\\", "/")).lstrip("/")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if not parts or ".." in parts:
        raise fail(fmt, f"image {file_name!r}", "file name cannot be made a safe zip path")
    stem, _ = posixpath.splitext("/".join(parts))
    return stem or "/".join(parts)


def decode_text(data: bytes, fmt: str, where: str = "") -> str:
    """UTF-8 text (a BOM is allowed), else FormatError."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise fail(fmt, where, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def parse_json(data: bytes, fmt: str, where: str = "") -> Any:
    """Parsed JSON, else FormatError with the line and column."""
    text = decode_text(data, fmt, where)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise fail(fmt, where, f"invalid JSON at line {exc.lineno} column {exc.colno}: "
                   f"{exc.msg}") from None
    except RecursionError:
        raise fail(fmt, where, "JSON nested too deeply") from None


def dump_json(value: Any) -> bytes:
    """Deterministic, readable UTF-8 JSON with a trailing newline.

    The one JSON writer of the formats: a non-finite float (which JSON cannot
    hold, e.g. the area of a huge box) is written as ``null``, so a dump never
    fails on numbers and never writes ``NaN``/``Infinity``.
    """
    return (json.dumps(_json_safe(value), indent=1, sort_keys=True, ensure_ascii=False,
                       allow_nan=False) + "\n").encode("utf-8")


def _json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (also in nested dicts/lists) as None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    return value


def parse_xml(data: bytes, fmt: str, where: str = "") -> Element:
    """Root element parsed by defusedxml (no DTDs, entities or external refs)."""
    try:
        root = fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise fail(fmt, where, f"unsafe XML refused ({type(exc).__name__})") from None
    except ParseError as exc:
        raise fail(fmt, where, f"invalid XML ({exc})") from None
    except (ValueError, LookupError, RecursionError) as exc:  # bad encoding name, ...
        raise fail(fmt, where, f"invalid XML ({exc})") from None
    return root  # type: ignore[no-any-return]


def xml_bytes(root: Element) -> bytes:
    """Indented UTF-8 XML with a declaration."""
    indent(root, space="  ")
    return tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def fmt_num(value: float) -> str:
    """Shortest text that reads back as the same float (``3`` for ``3.0``).

    FormatError for a non-finite number: no format may hold ``inf``/``nan``
    (labels fitted to their image, see ``base.fit_image``, never give one).
    """
    number = float(value)
    if not math.isfinite(number):
        raise FormatError(f"cannot write the non-finite number {number!r}")
    if number.is_integer() and abs(number) < 1e15:
        return str(int(number))
    return repr(number)
