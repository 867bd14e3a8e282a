"""Gather labelled and unlabelled items of a project as arrays for ``learning``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlmodel import Session, col, select

from learning.policy import Policy
from service.crud.classes import class_names
from service.crud.holdout import in_calibration
from service.ingest import BlobStore
from service.models import Annotation, Item, ItemStatus, Project, Provenance, ReviewFlag, Task

#: label provenances that count as people's labels (training and readiness)
HUMAN = (Provenance.human, Provenance.imported, Provenance.model_confirmed)


@dataclass
class Snapshot:
    """Item ids, image paths and labels of one project at one moment.

    ``labels``: ``[N]`` class ids (multiclass) or ``[N, C]`` 0/1 (multilabel).
    """

    classes: list[str]
    task: Task
    train_ids: list[int] = field(default_factory=list)
    train_shas: list[str] = field(default_factory=list)
    train_paths: list[Path] = field(default_factory=list)
    train_labels: list = field(default_factory=list)
    holdout_ids: list[int] = field(default_factory=list)
    holdout_shas: list[str] = field(default_factory=list)
    holdout_paths: list[Path] = field(default_factory=list)
    holdout_labels: list = field(default_factory=list)
    pool_ids: list[int] = field(default_factory=list)
    pool_paths: list[Path] = field(default_factory=list)
    pool_shas: list[str] = field(default_factory=list)

    def y(self, labels: list) -> np.ndarray:
        if self.task == Task.multilabel:
            return np.asarray(labels, dtype=np.int64).reshape(-1, len(self.classes))
        return np.asarray(labels, dtype=np.int64)


def _encode(task: Task, classes: list[str], labels: list[str]) -> object | None:
    index = {c: i for i, c in enumerate(classes)}
    if task == Task.multilabel:
        vec = [0] * len(classes)
        for lab in labels:
            if lab in index:
                vec[index[lab]] = 1
        return vec
    if len(labels) == 1 and labels[0] in index:
        return index[labels[0]]
    return None


def current_labels(session: Session, project_id: int) -> list[tuple[Item, Annotation]]:
    """Items with their current annotation (labelled items only)."""
    rows = session.exec(
        select(Item, Annotation)
        .join(Annotation, (col(Annotation.item_id) == Item.id) & (col(Annotation.version) == Item.version))
        .where(Item.project_id == project_id, Item.status == ItemStatus.labelled)
    ).all()
    return list(rows)


def snapshot(session: Session, *, project: Project, store: BlobStore, with_pool: bool = True) -> Snapshot:
    assert project.id is not None
    classes = class_names(session, project.id)
    snap = Snapshot(classes=classes, task=project.task)
    for item, ann in current_labels(session, project.id):
        if ann.provenance not in HUMAN:
            continue
        enc = _encode(project.task, classes, list(ann.data.get("labels", [])))
        if enc is None:
            continue
        assert item.id is not None
        # the hold-out keeps only random-stream labels that a person gave and that no
        # other route would have taken (service/crud/holdout.py)
        if in_calibration(item.is_holdout, item.holdout_taken_by) and ann.provenance == Provenance.human:
            snap.holdout_ids.append(item.id)
            snap.holdout_shas.append(item.sha256)
            snap.holdout_paths.append(store.path(item.sha256))
            snap.holdout_labels.append(enc)
        else:
            snap.train_ids.append(item.id)
            snap.train_shas.append(item.sha256)
            snap.train_paths.append(store.path(item.sha256))
            snap.train_labels.append(enc)
    if with_pool:
        for item in session.exec(select(Item).where(
                Item.project_id == project.id,
                col(Item.status).in_([ItemStatus.unlabelled, ItemStatus.skipped, ItemStatus.proposed]))
                .order_by(col(Item.id))).all():
            assert item.id is not None
            snap.pool_ids.append(item.id)
            snap.pool_paths.append(store.path(item.sha256))
            snap.pool_shas.append(item.sha256)
    return snap


def label_rows(session: Session, project_id: int) -> list[tuple[bool, Provenance, dict[str, Any]]]:
    """(calibrates?, provenance, data) of every labelled item's current annotation
    (calibrates: a hold-out item still in the calibration set).

    Plain columns, not ORM objects: the dashboard and the scheduler's policy check read
    these every few seconds, and building two mapped objects per label would cost the
    API's requests their CPU on a large project."""
    return [(in_calibration(h, t), Provenance(p), dict(d)) for h, t, p, d in session.exec(
        select(Item.is_holdout, Item.holdout_taken_by, Annotation.provenance, Annotation.data)
        .join(Annotation, (col(Annotation.item_id) == Item.id) & (col(Annotation.version) == Item.version))
        .where(Item.project_id == project_id, Item.status == ItemStatus.labelled)).all()]


def labels_in(data: dict[str, Any]) -> list[str]:
    """Every class an annotation names: image labels, then box and polygon labels."""
    return list(data.get("labels", [])) + [s["label"] for s in data.get("boxes", []) + data.get("polygons", [])]


def label_counts(session: Session, project_id: int) -> tuple[dict[str, int], dict[str, int], int]:
    """(train counts per class, hold-out counts per class, total people's labels)."""
    train: dict[str, int] = {}
    hold: dict[str, int] = {}
    total = 0
    for is_holdout, provenance, data in label_rows(session, project_id):
        if provenance not in HUMAN:
            continue
        total += 1
        target = hold if (is_holdout and provenance == Provenance.human) else train
        for lab in labels_in(data):
            target[lab] = target.get(lab, 0) + 1
    return train, hold, total


def judged_flags(session: Session, project_id: int, kind: str) -> tuple[set[int], set[tuple[int, Any]]]:
    """(items with an open flag of ``kind``, (item, label version) pairs a reviewer already judged).
    A flag a later scan withdrew (``detail["withdrawn"]``) judged nothing: its label may be flagged again."""
    open_, done = set(), set()
    for f in session.exec(select(ReviewFlag).where(ReviewFlag.project_id == project_id, ReviewFlag.kind == kind)):
        if f.state == "open":
            open_.add(f.item_id)
        elif not f.detail.get("withdrawn"):
            done.add((f.item_id, f.detail.get("annotation_version")))
            done.add((f.item_id, (f.detail.get("resolution") or {}).get("annotation_version")))
    return open_, done


def flag_verdicts(session: Session, project_id: int, kind: str) -> list[tuple[ReviewFlag, bool]]:
    """Reviewers' verdicts on resolved flags of ``kind``, oldest first: ``(flag, right)``,
    ``right`` when the reviewer fixed the label (to something else than it was), not when
    they kept it (``confirmed``: the label is right; ``dismissed``). Flags closed because
    the label changed meanwhile carry no verdict and are left out."""
    rows = session.exec(select(ReviewFlag).where(
        ReviewFlag.project_id == project_id, ReviewFlag.kind == kind,
        col(ReviewFlag.state).in_(["fixed", "confirmed", "dismissed"]))
        .order_by(col(ReviewFlag.resolved_at), col(ReviewFlag.id))).all()
    out = []
    for f in rows:
        if "closed" in f.detail:
            continue
        fixed = (f.detail.get("resolution") or {}).get("labels")
        out.append((f, f.state == "fixed" and fixed != [f.detail.get("given")]))
    return out


class TrainingGuard:
    """Whether a flagged labelled item may leave training (status ``review``).

    Flags do not starve training: an item leaves only when its flag is likely right
    (the caller decides that) and every class it labels keeps at least
    ``min_labels_per_class`` training labels without it, the count readiness needs
    (:func:`label_counts`), so open flags never make a project not ready to train.
    Every other flagged item keeps status ``labelled`` and trains as labelled."""

    def __init__(self, session: Session, project: Project) -> None:
        assert project.id is not None
        self.counts = dict(label_counts(session, project.id)[0])
        self.need = Policy.from_dict(project.policy or {}).min_labels_per_class

    def withhold(self, item: Item, labels: list[str]) -> bool:
        """Take ``item`` (labelling ``labels``, one entry per box) out of training if allowed;
        hold-out items never leave (calibration keeps its unbiased sample)."""
        if item.is_holdout or item.status != ItemStatus.labelled:
            return False
        drop: dict[str, int] = {}
        for lab in labels:
            drop[lab] = drop.get(lab, 0) + 1
        if any(self.counts.get(c, 0) - k < self.need for c, k in drop.items()):
            return False
        for c, k in drop.items():
            self.counts[c] = self.counts.get(c, 0) - k
        item.status = ItemStatus.review
        return True
