"""Annotation import and export through ``service.formats`` (LabelSet in, LabelSet out)."""

from __future__ import annotations

import logging
import math
from dataclasses import asdict

from sqlalchemy import Select
from sqlmodel import Session, col, select

from service.crud.annotations import canonical, current_annotation, is_empty, write_version
from service.crud.classes import class_names
from service.errors import Invalid
from service.formats import FormatError, get_format
from service.formats.base import ImageLabels, LabelSet, Rejected, Shape, fit_image
from service.models import Item, LabelClass, Project, Provenance, Task, User
from service.security import audit

log = logging.getLogger(__name__)
MAX_LISTED = 1000
"""At most this many unmatched names / rejected shapes are listed in a reply."""


def _to_data(img: ImageLabels) -> dict:
    boxes, polys = [], []
    for s in img.shapes:
        if s.points:
            polys.append({"label": s.label, "points": list(s.points)})
        elif s.box:
            boxes.append({"label": s.label, "bbox": list(s.box)})
    return canonical({"labels": list(img.labels), "boxes": boxes, "polygons": polys})


def import_labels(session: Session, *, project: Project, fmt: str, data: bytes, user: User) -> dict:
    """Attach imported labels to the project's items, matched by file name.

    Idempotent: an item whose current labels already equal the imported ones
    is left alone. Unknown classes are added to the project. Shapes are fitted
    to the item's own size (``fit_image``, the same check the annotation route
    makes): one that overlaps the image is clipped to it (counted in
    ``clipped``); one that is wholly outside, empty after clipping or has a
    non-finite number is left out and listed in ``rejected`` with the reason,
    and the rest of the file is imported.
    """
    assert project.id is not None
    try:
        f = get_format(fmt)
    except FormatError as exc:
        raise Invalid(str(exc)) from exc
    items = session.exec(select(Item).where(Item.project_id == project.id)).all()
    by_name: dict[str, Item] = {}
    for it in items:
        by_name.setdefault(it.file_name, it)
    sizes = {it.file_name: (it.width, it.height) for it in items}
    try:
        labels = f.load(data, image_sizes=sizes)
    except FormatError as exc:
        raise Invalid(f"{fmt}: {exc}") from exc
    known = class_names(session, project.id)
    added = [c for c in labels.classes if c not in known]
    used = {lab for img in labels.images for lab in img.labels} | {
        s.label for img in labels.images for s in img.shapes}
    added += sorted(c for c in used if c not in known and c not in added)
    for i, c in enumerate(added):
        session.add(LabelClass(project_id=project.id, name=c, position=len(known) + i))
    updated, unchanged, clipped, unmatched = 0, 0, 0, []
    rejected: list[Rejected] = []
    for img in labels.images:
        item = by_name.get(img.file_name) or by_name.get(img.file_name.rsplit("/", 1)[-1])
        if item is None:
            unmatched.append(img.file_name)
            continue
        n_clipped, refused = fit_image(img, item.width, item.height)
        clipped += n_clipped
        rejected += refused
        new = _to_data(img)
        if project.task == Task.multiclass and len(new["labels"]) > 1:
            raise Invalid(f"{img.file_name}: several labels in a multiclass project")
        cur = current_annotation(session, item)
        if (cur is not None and cur.data == new) or (cur is None and is_empty(new)):
            unchanged += 1
            continue
        write_version(session, item=item, data=new, provenance=Provenance.imported, origin="import",
                      author=user)
        updated += 1
    audit(session, user.id, "import", project_id=project.id,
          detail={"format": fmt, "updated": updated, "unchanged": unchanged, "clipped": clipped,
                  "rejected": len(rejected)})
    return {"format": fmt, "updated": updated, "unchanged": unchanged,
            "unmatched": unmatched[:MAX_LISTED], "unmatched_count": len(unmatched),
            "classes_added": added, "clipped": clipped,
            "rejected": [asdict(r) for r in rejected[:MAX_LISTED]],
            "rejected_count": len(rejected)}


def build_labelset(session: Session, *, project: Project, skipped: list[Rejected] | None = None,
                   only: Select | None = None) -> LabelSet:
    """The project's current labels, each shape fitted to its item (``fit_image``).

    Stored rows from before imports were checked may hold huge, non-finite or
    null coordinates: a shape that cannot be fitted is left out of the label
    set and appended to ``skipped``; one that overlaps its image is clipped.
    The stored rows are not changed. ``only`` (a ``SELECT item.id``, e.g. the data browser's
    :func:`service.crud.browse.selection`) keeps the items it selects.
    """
    assert project.id is not None
    images = []
    q = select(Item).where(Item.project_id == project.id, col(Item.version) > 0)
    if only is not None:
        q = q.where(col(Item.id).in_(only.scalar_subquery()))
    rows = session.exec(q.order_by(col(Item.id))).all()
    for item in rows:
        ann = current_annotation(session, item)
        if ann is None or is_empty(ann.data):
            continue
        d = ann.data
        # as stored (fit_image below checks them): no list() that a null would break
        shapes = [Shape(label=b["label"], box=b.get("bbox")) for b in d.get("boxes", [])]
        shapes += [Shape(label=p["label"], points=p.get("points")) for p in d.get("polygons", [])]
        score = ann.score if ann.score is None or math.isfinite(ann.score) else None
        image = ImageLabels(file_name=item.file_name, width=item.width, height=item.height,
                            labels=list(d.get("labels", [])), shapes=shapes,
                            provenance=str(ann.provenance.value), score=score)
        _, refused = fit_image(image)
        if skipped is not None:
            skipped += refused
        if image.labels or image.shapes:
            images.append(image)
    return LabelSet(classes=class_names(session, project.id), images=images)


def export(session: Session, *, project: Project, fmt: str, user: User,
           only: Select | None = None) -> tuple[bytes, str, str]:
    """(bytes, media type, file name) of the project's current labels in ``fmt``; with
    ``only`` (a ``SELECT item.id``) those of the items it selects."""
    try:
        f = get_format(fmt)
    except FormatError as exc:
        raise Invalid(str(exc)) from exc
    skipped: list[Rejected] = []
    labels = build_labelset(session, project=project, skipped=skipped, only=only)
    try:
        body = f.dump(labels)
    except FormatError as exc:
        raise Invalid(f"cannot export this project as {fmt}: {exc}") from exc
    detail: dict = {"format": fmt, "images": len(labels.images)}
    if only is not None:
        detail["selection"] = True
    if skipped:
        detail["skipped"] = len(skipped)
        detail["skipped_shapes"] = [asdict(r) for r in skipped[:20]]
        log.warning("export of project %s as %s skipped %d stored shape(s) that cannot be "
                    "placed on their image, first: %s", project.id, fmt, len(skipped),
                    skipped[0])
    audit(session, user.id, "export", project_id=project.id, detail=detail)
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in project.name)[:60] or "project"
    return body, f.media_type, f"{safe}-{fmt}{f.suffix}"
