"""Ingest: validate, sniff, store and list image files (pure Python over bytes and paths).

No database and no web framework here: the upload route and the folder
importer call these functions and turn :class:`Rejected` into per-file
reports.

- :func:`inspect_image` checks one file's bytes (content sniffing, size and
  pixel caps from the header, full decode) and describes it.
- :class:`BlobStore` keeps accepted bytes content-addressed by sha256, with
  atomic writes and cached thumbnails.
- :func:`iter_zip` reads the members of a zip archive in memory, refusing
  unsafe paths, links and zip bombs.
- :func:`scan_folder` lists the image files of a server folder, incrementally.
- :func:`open_rgb` opens any supported file as an upright 8-bit RGB image, through
  :func:`learning.images.decode_rgb`, the decoder training and embedding use too.
"""

from service.ingest.archive import is_zip, iter_zip, safe_member_name
from service.ingest.base import (
    MEDIA_TYPES,
    REJECT_REASONS,
    ImageInfo,
    Limits,
    Rejected,
    StorageError,
)
from service.ingest.convert import open_rgb, to_rgb
from service.ingest.folder import relative_key, scan_folder
from service.ingest.sniff import SNIFF_BYTES, inspect_image, sniff_kind
from service.ingest.storage import BlobStore

__all__ = [
    "MEDIA_TYPES",
    "REJECT_REASONS",
    "SNIFF_BYTES",
    "BlobStore",
    "ImageInfo",
    "Limits",
    "Rejected",
    "StorageError",
    "inspect_image",
    "is_zip",
    "iter_zip",
    "open_rgb",
    "relative_key",
    "safe_member_name",
    "scan_folder",
    "sniff_kind",
    "to_rgb",
]
