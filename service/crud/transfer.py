"""Annotation import and export through ``service.formats`` (LabelSet in, LabelSet out)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import asdict

from sqlalchemy import Select
from sqlmodel import Session, col, func, select

from service.crud.annotations import canonical, current_annotation, is_empty, write_version
from service.crud.classes import class_names
from service.errors import Invalid
from service.formats import FormatError, get_format
from service.formats.base import Format, ImageLabels, LabelSet, Rejected, Shape, fit_image
from service.models import Annotation, Item, ItemStatus, LabelClass, Project, Provenance, Task, User
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


def _image(item: Item, ann: Annotation, skipped: list[Rejected] | None,
           keep: set[str] | None = None) -> ImageLabels | None:
    """``item``'s labels as an :class:`ImageLabels` (only classes in ``keep`` when given),
    each shape fitted to the image; ``None`` when nothing is left."""
    d = ann.data
    if is_empty(d):
        return None
    # as stored (fit_image below checks them): no list() that a null would break
    shapes = [Shape(label=b["label"], box=b.get("bbox")) for b in d.get("boxes", [])]
    shapes += [Shape(label=p["label"], points=p.get("points")) for p in d.get("polygons", [])]
    labels = list(d.get("labels", []))
    if keep is not None:
        shapes = [s for s in shapes if s.label in keep]
        labels = [c for c in labels if c in keep]
    score = ann.score if ann.score is None or math.isfinite(ann.score) else None
    image = ImageLabels(file_name=item.file_name, width=item.width, height=item.height, labels=labels,
                        shapes=shapes, provenance=str(ann.provenance.value), score=score)
    _, refused = fit_image(image)
    if skipped is not None:
        skipped += refused
    return image if image.labels or image.shapes else None


SUBSET_BATCH = 200
"""Items read per query (and per progress report) by :func:`subset_labelset`."""


def subset_labelset(session: Session, *, project: Project, status: Iterable[ItemStatus] = (),
                    provenance: Iterable[Provenance] = (), classes: Iterable[str] = (),
                    skipped: list[Rejected] | None = None,
                    progress: Callable[[int, int], None] | None = None) -> tuple[LabelSet, list[int]]:
    """The current labels of the project's items whose status is in ``status`` and whose
    current label's provenance is in ``provenance`` (empty: any), restricted to ``classes``
    (empty: every class; else an image keeps only those classes and is left out with none
    of them), and the item ids in the label set's order.

    Reads in batches of :data:`SUBSET_BATCH` items by id (one query each, the item joined with
    its current version) and calls ``progress(done, total)`` after each batch. Unknown
    ``classes`` are :class:`Invalid`."""
    assert project.id is not None
    known = class_names(session, project.id)
    wanted = list(dict.fromkeys(classes))
    unknown = [c for c in wanted if c not in known]
    if unknown:
        raise Invalid(f"unknown classes {unknown[:20]}; project classes: {known}")
    keep = set(wanted) if wanted else None
    q = (select(Item, Annotation)
         .join(Annotation, (col(Annotation.item_id) == Item.id) & (col(Annotation.version) == Item.version))
         .where(Item.project_id == project.id, col(Item.version) > 0))
    statuses, provenances = list(status), list(provenance)
    if statuses:
        q = q.where(col(Item.status).in_(statuses))
    if provenances:
        q = q.where(col(Annotation.provenance).in_(provenances))
    total = int(session.exec(select(func.count()).select_from(q.subquery())).one())
    images: list[ImageLabels] = []
    ids: list[int] = []
    done, after = 0, 0
    while True:
        rows = session.exec(q.where(col(Item.id) > after).order_by(col(Item.id)).limit(SUBSET_BATCH)).all()
        if not rows:
            break
        for item, ann in rows:
            assert item.id is not None
            after = item.id
            image = _image(item, ann, skipped, keep)
            if image is not None:
                images.append(image)
                ids.append(item.id)
        done += len(rows)
        if progress is not None:
            progress(min(done, total), total)
    return LabelSet(classes=wanted or known, images=images), ids


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
    images: list[ImageLabels] = []
    q = select(Item).where(Item.project_id == project.id, col(Item.version) > 0)
    if only is not None:
        q = q.where(col(Item.id).in_(only.scalar_subquery()))
    rows = session.exec(q.order_by(col(Item.id))).all()
    for item in rows:
        ann = current_annotation(session, item)
        image = None if ann is None else _image(item, ann, skipped)
        if image is not None:
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
    return body, f.media_type, f"{safe_name(project)}-{fmt}{f.suffix}"


def safe_name(project: Project) -> str:
    """The project's name as a file name stem (letters, digits, ``-`` and ``_``)."""
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in project.name)[:60] or "project"


def dump(fmt: str, labels: LabelSet) -> tuple[bytes, Format]:
    """``labels`` written in ``fmt`` and the format; :class:`Invalid` when it cannot hold them."""
    try:
        f = get_format(fmt)
    except FormatError as exc:
        raise Invalid(str(exc)) from exc
    try:
        return f.dump(labels), f
    except FormatError as exc:
        raise Invalid(f"cannot export this project as {fmt}: {exc}") from exc
