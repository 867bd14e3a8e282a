"""Files of :class:`lab.faiss_index.index.VectorIndex`: a FAISS file plus a JSON header.

``<path>`` holds the FAISS index (streamed by ``faiss.write_index``);
``<path>.json`` holds the header: format, model version, dim, kind, count,
tuning knobs and the sha256 of the FAISS file. Each file is written to a temp
name and moved into place; the header goes last and its checksum ties the pair
together, so a torn save is detected on load instead of silently mixing files.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, BinaryIO

import faiss

from embeddings.cache import atomic_write_bytes
from lab.faiss_index.faiss_kinds import KINDS

FORMAT = "labelloop-vector-index"
_FAISS: Any = faiss  # for names missing from faiss's type stubs


class IndexVersionError(ValueError):
    """A stored index was made by another model version or has another dimension."""


class IndexFileError(ValueError):
    """An index file and its JSON header do not belong together (torn or corrupt save)."""


def header_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def write_index_files(path: Path, index: Any, header: dict[str, Any]) -> None:
    """Write ``index`` to ``path`` and ``header`` (plus format and sha256) beside it."""
    digest = hashlib.sha256()

    def write(fh: BinaryIO) -> None:
        def chunk(b: bytes) -> int:  # streamed: no second in-memory copy of the index
            digest.update(b)
            return fh.write(b)

        faiss.write_index(index, _FAISS.PyCallbackIOWriter(chunk))

    atomic_write_bytes(path, write)
    full = {"format": FORMAT, "format_version": 1, **header, "sha256": digest.hexdigest()}
    text = json.dumps(full, indent=1).encode()
    atomic_write_bytes(header_path(path), lambda fh: fh.write(text))


def read_index_files(
    path: Path, *, expected_version: str, expected_dim: int | None
) -> tuple[Any, dict[str, Any]]:
    """Read ``(faiss index, header)`` after checking version and dim, then checksum.

    Raises :class:`IndexVersionError` (before the FAISS file is read) when the
    header's ``model_version`` differs from ``expected_version`` or its ``dim``
    from ``expected_dim``; :class:`IndexFileError` when the pair does not match.
    """
    hpath = header_path(path)
    header: dict[str, Any] = json.loads(hpath.read_text())
    if header.get("format") != FORMAT:
        raise IndexFileError(f"{hpath} is not a {FORMAT} header")
    stored, dim = str(header["model_version"]), int(header["dim"])
    if stored != expected_version:
        raise IndexVersionError(
            f"index {path} was built for model version {stored!r}, expected {expected_version!r}"
        )
    if expected_dim is not None and dim != expected_dim:
        raise IndexVersionError(f"index {path} has dim {dim}, expected {expected_dim}")
    with path.open("rb") as fh:
        if hashlib.file_digest(fh, "sha256").hexdigest() != header.get("sha256"):
            raise IndexFileError(f"{path} does not match its header (torn or corrupt save)")
    index: Any = faiss.read_index(str(path))
    if index.d != dim or index.ntotal != int(header["count"]) or header["kind"] not in KINDS:
        raise IndexFileError(f"{path}: header and index disagree on dim/count/kind")
    return index, header
