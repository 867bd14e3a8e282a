"""Images in: upload batches, zip archives and server folders; listing items.

A batch is checked file by file (content sniffing, byte and pixel caps), the
blobs are written content-addressed (atomic, idempotent), and then every new
item row of the batch is inserted in one transaction: a bad file is reported
in ``rejected`` and never fails the batch, and a crash before the commit
leaves only unreferenced blobs, never half an import.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sqlmodel import Session, col, func, select

from service.config import Settings
from service.crud.annotations import current_annotation
from service.errors import Forbidden, Invalid, StorageFailed
from service.ingest import BlobStore, Limits, Rejected, StorageError, inspect_image, is_zip, iter_zip
from service.ingest.base import display_name
from service.models import Item, ItemPublic, ItemStatus, Project

_rng = random.SystemRandom()


def queue_rank(settings: Settings, project_id: int, sha256: str) -> float:
    """The item's place in the random streams: unpredictable, or with ``random_seed`` a
    function of (seed, project, content) so that a replay ranks every item the same."""
    if settings.random_seed is None:
        return _rng.random()
    return random.Random(f"{settings.random_seed}:{project_id}:{sha256}").random()


@dataclass
class BatchResult:
    created: list[dict] = field(default_factory=list)
    duplicates: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"created": self.created, "duplicates": self.duplicates, "rejected": self.rejected}


def limits_from(settings: Settings) -> Limits:
    return Limits(max_bytes=settings.max_upload_bytes, max_pixels=settings.max_image_pixels)


def blob_store(settings: Settings) -> BlobStore:
    return BlobStore(settings.storage_dir)


def _expand(name: str, data: bytes | Rejected, limits: Limits) -> Iterator[tuple[str, bytes | Rejected]]:
    """The upload itself, or a zip's members one at a time: one member's bytes in memory at
    once, never the whole unpacked archive (up to ``max_zip_total_bytes``)."""
    if isinstance(data, Rejected) or not is_zip(data):
        yield name, data
        return
    try:
        yield from iter_zip(data, limits=limits)
    except Rejected as exc:  # the whole archive: raised before its first member
        yield name, exc


def ingest(session: Session, *, project: Project, files: Iterable[tuple[str, bytes | Rejected]],
           settings: Settings, thumbnails: bool = True) -> BatchResult:
    """Add a batch of files (zips are expanded) to ``project``; see module doc. ``files`` is
    read one at a time (a generator keeps one file in memory); a file its reader already
    refused comes as its :class:`Rejected` and is listed with it."""
    assert project.id is not None
    limits = limits_from(settings)
    store = blob_store(settings)
    result = BatchResult()
    new_rows: dict[str, Item] = {}
    existing = set(session.exec(select(Item.sha256).where(Item.project_id == project.id)).all())
    for upload_name, data in files:
        for name, content in _expand(upload_name, data, limits):
            display = display_name(name)
            if isinstance(content, Rejected):
                result.rejected.append({"file": name, "reason": content.reason, "message": content.message})
                continue
            try:
                info = inspect_image(content, limits=limits)
            except Rejected as exc:
                result.rejected.append({"file": name, "reason": exc.reason, "message": exc.message})
                continue
            if info.sha256 in existing or info.sha256 in new_rows:
                other = new_rows.get(info.sha256)
                result.duplicates.append({"file": name, "sha256": info.sha256,
                                          "of": other.file_name if other else None})
                continue
            try:
                store.put(content, info)
                if thumbnails:
                    store.thumbnail(info.sha256, size=settings.thumbnail_size)
            except StorageError as exc:
                raise StorageFailed(f"storage failed: {exc}") from exc
            except Rejected as exc:
                result.rejected.append({"file": name, "reason": exc.reason, "message": exc.message})
                continue
            new_rows[info.sha256] = Item(
                project_id=project.id, sha256=info.sha256, file_name=display, media_type=info.media_type,
                width=info.width, height=info.height, size_bytes=info.size_bytes,
                queue_rank=queue_rank(settings, project.id, info.sha256),
            )
    for row in new_rows.values():
        session.add(row)
    session.flush()
    result.created = [{"file": r.file_name, "id": r.id, "sha256": r.sha256} for r in new_rows.values()]
    return result


def item_public(session: Session, item: Item) -> ItemPublic:
    """The item with its current labels and their provenance."""
    out = ItemPublic.model_validate(item, from_attributes=True)
    cur = current_annotation(session, item)
    if cur is not None:
        out.annotation = cur.data
        out.provenance = cur.provenance
    return out


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"i{last_id}".encode()).decode()


def decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor.encode()).decode()
        if not raw.startswith("i"):
            raise ValueError
        return int(raw[1:])
    except (ValueError, UnicodeDecodeError) as exc:
        raise Invalid("invalid cursor") from exc


def list_items(session: Session, *, project: Project, status: ItemStatus | None, cursor: str | None,
               limit: int) -> tuple[list[Item], int, str | None]:
    q = select(Item).where(Item.project_id == project.id)
    cq = select(func.count()).select_from(Item).where(Item.project_id == project.id)
    if status is not None:
        q = q.where(Item.status == status)
        cq = cq.where(Item.status == status)
    if cursor:
        q = q.where(col(Item.id) > decode_cursor(cursor))
    rows = list(session.exec(q.order_by(col(Item.id)).limit(limit + 1)).all())
    nxt = None
    if len(rows) > limit:
        rows = rows[:limit]
        assert rows[-1].id is not None
        nxt = encode_cursor(rows[-1].id)
    return rows, session.exec(cq).one(), nxt


def read_server_files(root: Path, rel_paths: list[str]) -> list[tuple[str, bytes]]:
    out = []
    for rel in rel_paths:
        p = root / rel
        try:
            out.append((rel, p.read_bytes()))
        except OSError as exc:
            out.append((rel, b""))  # inspect_image rejects it as empty with the file name
            _ = exc
    return out


def check_server_root(settings: Settings, path: Path) -> Path:
    """A server folder admins may import from (inside an allowed root, when roots are set)."""
    try:
        p = path.expanduser().resolve()
        is_dir = p.is_dir()
    except (ValueError, OSError, RuntimeError) as exc:  # NUL byte, unknown ~user, symlink loop
        raise Invalid(f"not a usable server path: {exc}") from exc
    if not is_dir:
        raise Invalid(f"not a folder on the server: {path}")
    roots = [r.expanduser().resolve() for r in settings.allow_server_import_roots]
    if roots and not any(p == r or r in p.parents for r in roots):
        raise Forbidden("folder is outside LABELLOOP_ALLOW_SERVER_IMPORT_ROOTS")
    return p
