"""Exports as jobs: the ``export`` job writes a project's labels (a subset of them, with
or without the images, split into train and val or not) to a file under the data dir,
reporting progress as it goes; the file is downloaded once the job has succeeded.

What goes in (:class:`service.models.transfer.ExportJobCreate`): items whose status and
whose current label's provenance are among those asked for, restricted to the classes
asked for (:func:`service.crud.transfer.subset_labelset`). What comes out:

* no images and no split: the format's own file, byte for byte what
  ``GET /projects/{id}/export`` gives for the same items;
* otherwise a zip: the labels as ``annotations<suffix>`` (a format that is a zip itself,
  YOLO or VOC, is unpacked in place), ``images/<file name>`` with ``include_images``, each
  under ``train/`` and ``val/`` with a split, and ``export.json`` stating the subset, the
  seed and share of the split and which images went where. The split shuffles the
  images in item-id order with ``random.Random(seed)`` and takes the first
  ``round(val_share * n)`` for val: the same seed on the same subset gives the same split.

The labels are read in one read-only transaction (a snapshot, ``REPEATABLE READ`` on
PostgreSQL: labels written meanwhile are not half in it, and on SQLite the read never
blocks a labeller's write); the file is
written to ``<name>.part`` and renamed when whole, so a download never sees half a file.
A project keeps the files of its newest :data:`KEEP` export jobs; older files are removed
when a new one is written (their download answers 410).
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlmodel import Session, col, select

from service.config import Settings
from service.crud.classes import class_names
from service.crud.items import blob_store
from service.crud.transfer import dump, safe_name, subset_labelset
from service.db import session_scope
from service.errors import Conflict, Gone, Invalid, NotFound
from service.formats import FormatError, get_format
from service.formats.base import LabelSet, Rejected
from service.jobs.runner import enqueue
from service.models import TERMINAL_JOB_STATES, Item, Job, JobState, Project, User, utcnow
from service.models.transfer import ExportJobCreate, ExportResult
from service.security import audit

if TYPE_CHECKING:
    from service.jobs.runner import JobContext

KIND = "export"
EXPORTS = "exports"  # folder under the data dir
KEEP = 20  # export files kept per project: an older one's download answers 410
READ_SHARE = 0.5  # of the progress bar: reading labels; the rest is writing the file
ZIP_MEDIA = "application/zip"


def start_export(session: Session, *, project: Project, body: ExportJobCreate, user: User) -> Job:
    """Check the options (422 for an unknown format or class) and enqueue an ``export`` job."""
    assert project.id is not None
    try:
        get_format(body.format)
    except FormatError as exc:
        raise Invalid(str(exc)) from exc
    known = class_names(session, project.id)
    unknown = [c for c in body.classes if c not in known]
    if unknown:
        raise Invalid(f"unknown classes {unknown[:20]}; project classes: {known}")
    return enqueue(session, kind=KIND, project_id=project.id, payload=body.model_dump(mode="json"),
                   user_id=user.id)


def split(n: int, val_share: float, seed: int) -> set[int]:
    """Positions (of ``n`` images in item-id order) drawn for val."""
    if val_share <= 0 or n == 0:
        return set()
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return set(order[:round(val_share * n)])


def export_dir(settings: Settings) -> Path:
    return settings.data_dir / EXPORTS


def export_task(ctx: JobContext) -> dict[str, Any]:
    """The ``export`` job (see the module docstring); its result is an :class:`ExportResult`."""
    opts = ExportJobCreate.model_validate(ctx.payload)
    skipped: list[Rejected] = []
    ctx.progress(0.0, "reading labels")

    def reading(done: int, total: int) -> None:
        ctx.progress(READ_SHARE * done / max(total, 1), f"read {done} of {total} labelled images")

    with session_scope(ctx.engine, read=True) as s:
        if ctx.engine.dialect.name == "postgresql":  # one snapshot for every batch (SQLite's read is one)
            s.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        project = s.get(Project, ctx.project_id)
        if project is None:
            raise NotFound("the project was deleted")
        labels, ids = subset_labelset(s, project=project, status=opts.status, provenance=opts.provenance,
                                      classes=opts.classes, skipped=skipped, progress=reading)
        stem = safe_name(project)
        shas: dict[int, str] = {}
        if opts.include_images and ids:
            for i in range(0, len(ids), 500):
                shas.update((int(iid or 0), sha) for iid, sha in s.exec(
                    select(Item.id, Item.sha256).where(col(Item.id).in_(ids[i:i + 500]))).all())
    fmt = get_format(opts.format)
    val = split(len(labels.images), opts.val_share, opts.seed)
    plain = not opts.include_images and not val
    name = f"{stem}-{opts.format}{fmt.suffix}" if plain else f"{stem}-{opts.format}-export.zip"
    folder = export_dir(ctx.settings) / f"job-{ctx.job_id}"
    folder.mkdir(parents=True, exist_ok=True)
    final, part = folder / name, folder / f"{name}.part"
    try:
        if plain:
            body, _ = dump(opts.format, labels)
            part.write_bytes(body)
            media = fmt.media_type
        else:
            _write_zip(ctx, part, opts, labels, ids, shas, val)
            media = ZIP_MEDIA
        os.replace(part, final)
    finally:
        part.unlink(missing_ok=True)
    n_val = len(val)
    result = ExportResult(file=name, path=str(final.relative_to(ctx.settings.data_dir)), media_type=media,
                          size=final.stat().st_size, images=len(labels.images), train=len(labels.images) - n_val,
                          val=n_val, skipped_shapes=len(skipped))
    with session_scope(ctx.engine) as s:
        job = s.get(Job, ctx.job_id)
        audit(s, job.created_by if job else None, "export", project_id=ctx.project_id,
              detail={"format": opts.format, "images": result.images, "job_id": ctx.job_id,
                      "subset": {"status": opts.status, "provenance": opts.provenance, "classes": opts.classes},
                      "include_images": opts.include_images, "val_share": opts.val_share, "seed": opts.seed,
                      **({"skipped": len(skipped)} if skipped else {})})
    _prune(ctx)
    ctx.progress(1.0, f"exported {result.images} images to {name}")
    return result.model_dump()


def _prune(ctx: JobContext) -> None:
    """Remove the files of the project's finished export jobs older than its newest :data:`KEEP`
    (a job still running keeps its folder)."""
    with session_scope(ctx.engine, read=True) as s:
        old = s.exec(select(Job.id).where(Job.project_id == ctx.project_id, Job.kind == KIND,
                                          col(Job.id) != ctx.job_id, col(Job.state).in_(TERMINAL_JOB_STATES))
                     .order_by(col(Job.id).desc())
                     .offset(max(KEEP - 1, 0))).all()
    root = export_dir(ctx.settings)
    for jid in old:
        folder = root / f"job-{jid}"
        if folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)


def _write_zip(ctx: JobContext, path: Path, opts: ExportJobCreate, labels: LabelSet, ids: list[int],
               shas: dict[int, str], val: set[int]) -> None:
    """The zip export: labels per part, images per part, and ``export.json``."""
    parts = {"train": [i for i in range(len(labels.images)) if i not in val],
             "val": sorted(val)} if val else {"": list(range(len(labels.images)))}
    store = blob_store(ctx.settings)
    total = len(labels.images) if opts.include_images else 0
    written = 0
    listing: dict[str, list[str]] = {}
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for part, positions in parts.items():
            prefix = f"{part}/" if part else ""
            subset = LabelSet(classes=labels.classes, images=[labels.images[i] for i in positions])
            listing[part or "all"] = [im.file_name for im in subset.images]
            body, fmt = dump(opts.format, subset)
            if fmt.suffix == ".zip":  # YOLO, VOC: their members, in place
                with zipfile.ZipFile(io.BytesIO(body)) as inner:
                    for info in inner.infolist():
                        z.writestr(prefix + info.filename, inner.read(info))
            else:
                z.writestr(f"{prefix}annotations{fmt.suffix}", body)
            if not opts.include_images:
                continue
            seen: set[str] = set()
            for i in positions:
                image, iid = labels.images[i], ids[i]
                arc = f"{prefix}images/{image.file_name}"
                if arc in seen:  # two items of one name: the second keeps its id
                    arc = f"{prefix}images/{iid}-{image.file_name}"
                seen.add(arc)
                blob = store.path(shas[iid])
                if blob.exists():  # compressed images gain nothing from deflate
                    z.write(blob, arc, compress_type=zipfile.ZIP_STORED)
                written += 1
                if written % 25 == 0 or written == total:
                    ctx.progress(READ_SHARE + (1 - READ_SHARE) * written / max(total, 1),
                                 f"wrote {written} of {total} images")
        manifest = {"format": opts.format, "created_at": utcnow().isoformat(), "classes": labels.classes,
                    "subset": {"status": [str(s) for s in opts.status],
                               "provenance": [str(p) for p in opts.provenance], "classes": opts.classes},
                    "include_images": opts.include_images,
                    "split": {"val_share": opts.val_share, "seed": opts.seed,
                              "method": "images in item-id order shuffled with Python's random.Random(seed); "
                                        "the first round(val_share * n) are val",
                              "train": len(labels.images) - len(val), "val": len(val)},
                    "images": listing}
        z.writestr("export.json", json.dumps(manifest, indent=2, sort_keys=True))


def find_export(session: Session, job_id: int) -> Job:
    """The export job ``job_id`` (:class:`NotFound` for another kind or none)."""
    job = session.get(Job, job_id)
    if job is None or job.kind != KIND or job.project_id is None:
        raise NotFound("export job not found")
    return job


def export_file(settings: Settings, job: Job) -> tuple[Path, str, str]:
    """(path, media type, file name) of a finished export job's file: :class:`Conflict` while
    it runs or when it failed, :class:`Gone` when the file was removed."""
    if job.state != JobState.succeeded:
        raise Conflict(f"the export is {job.state.value}, not ready to download")
    res = ExportResult.model_validate(job.result)
    path = (settings.data_dir / res.path).resolve()
    if export_dir(settings).resolve() not in path.parents or not path.is_file():
        raise Gone("the export file is no longer stored; run the export again")
    return path, res.media_type, res.file
