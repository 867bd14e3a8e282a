"""Server folders: one-off import and watched folders re-scanned on a schedule."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from service.config import Settings
from service.crud.items import BatchResult, ingest
from service.ingest import Rejected, scan_folder
from service.models import ImportedFile, Project, WatchedFolder, utcnow

BATCH = 200


def import_folder(session: Session, *, project: Project, root: Path, settings: Settings,
                  watch: bool = False, interval_minutes: float = 10.0) -> BatchResult:
    assert project.id is not None
    folder = session.exec(select(WatchedFolder).where(WatchedFolder.project_id == project.id,
                                                      WatchedFolder.path == str(root))).first()
    if folder is None:
        folder = WatchedFolder(project_id=project.id, path=str(root),
                               interval_minutes=interval_minutes if watch else 0.0)
        session.add(folder)
        session.flush()
    elif watch:
        folder.interval_minutes = interval_minutes
    return scan(session, folder=folder, project=project, settings=settings)


def scan(session: Session, *, folder: WatchedFolder, project: Project, settings: Settings) -> BatchResult:
    """Import files of ``folder`` not imported before (incremental refresh)."""
    root = Path(folder.path)
    seen = set(session.exec(select(ImportedFile.rel_path).where(ImportedFile.folder_id == folder.id)).all())
    total = BatchResult()
    batch: list[Path] = []
    for path in scan_folder(root, seen=seen):
        batch.append(path)
        if len(batch) >= BATCH:
            _one_batch(session, folder, project, settings, root, batch, total)
            batch = []
    if batch:
        _one_batch(session, folder, project, settings, root, batch, total)
    folder.last_scan_at = utcnow()
    session.add(folder)
    return total


def _read(path: Path, cap: int) -> bytes | Rejected:
    """The file's bytes, or ``too_large`` without reading it when it is over ``cap`` bytes
    (ingest reads one file at a time: a batch never holds more than one file)."""
    try:
        size = path.stat().st_size
        if size > cap:
            return Rejected("too_large", f"The file is {size:,} bytes; the cap is {cap:,} bytes.")
        with path.open("rb") as fh:
            return fh.read(cap + 1)  # grown since the stat: ingest still sees it over the cap
    except OSError:
        return b""


def _one_batch(session: Session, folder: WatchedFolder, project: Project, settings: Settings, root: Path,
               paths: list[Path], total: BatchResult) -> None:
    assert folder.id is not None
    rels = [p.relative_to(root).as_posix() if p.is_absolute() else p.as_posix() for p in paths]
    files = ((rel, _read(root / rel, settings.max_upload_bytes)) for rel in rels)
    res = ingest(session, project=project, files=files, settings=settings)
    for rel in rels:
        session.add(ImportedFile(folder_id=folder.id, rel_path=rel))
    total.created += res.created
    total.duplicates += res.duplicates
    total.rejected += res.rejected


def rescan_due(engine: Engine, settings: Settings) -> None:
    """Scan every watched folder whose interval has passed (the scheduler's
    ``watched-folders`` check, listed in :data:`service.jobs.registry.CHECKS`)."""
    with Session(engine) as session:
        folders = session.exec(select(WatchedFolder).where(WatchedFolder.interval_minutes > 0)).all()
        now = utcnow()
        for f in folders:
            if f.last_scan_at and (now - f.last_scan_at).total_seconds() < f.interval_minutes * 60:
                continue
            project = session.get(Project, f.project_id)
            if project is None or not Path(f.path).is_dir():
                continue
            scan(session, folder=f, project=project, settings=settings)
            session.commit()
