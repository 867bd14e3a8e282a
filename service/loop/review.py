"""Hard examples: classification's evidence (cross-fitting) and flag kinds, stale flags,
and reviewers resolving flags. The scans are the ``hard_examples`` job's
(:func:`service.pipelines.jobs.hard_examples_job`): :mod:`service.pipelines.classification_scans`
and :mod:`service.pipelines.detection_scans`.

* ``label error``: a person's label (multiclass) that out-of-sample evidence says is
  more likely wrong than right (:func:`learning.hard_examples.flag_label_errors`).
  The evidence is cross-fitted: k-fold (5) logistic regression on the cached
  embeddings, so every item is scored by heads that never saw its label, trained
  without the labels plain confident learning doubts, repeated with 3 fold seeds
  (:func:`label_evidence`). No flag before 50 labels; at most 5% of the checked
  labels flagged open at once; a class pair whose flags reviewers kept rejecting needs
  stronger evidence. Each flag's ``reason`` says why in words.
* ``unstable``: open proposals of the current model whose prediction changes
  under a horizontal flip (test-time augmentation); each proposal is checked once.

A flag is never duplicated: not while one of its kind is open on the item, and
not again for a label version a reviewer already judged.

Flags do not starve training. A flagged labelled item keeps status ``labelled`` and
keeps training on its label; only a flag that is *likely right* (suggested
probability >= 0.9, and reviewers have not rejected more flags of that class pair
than they accepted) gives it status ``review`` (``detail["withheld"]``): the labeler
queue skips it and training leaves its label out, and never below the per-class
label count readiness needs (:class:`service.loop.data.TrainingGuard`). Hold-out
items keep status ``labelled``, so calibration keeps its unbiased sample (removing
the items the model disagrees with would make the measured precision optimistic).

How flagged items get priority: they are not sent back to labelers; reviewers
work through ``GET /projects/{id}/review``, highest score first, and unstable
proposals show their flag in Pending. Flags stale because the label changed
meanwhile are closed (``dismissed``) at the next run, and items in ``review``
without a withholding open flag go back to ``labelled`` then (:func:`release_unheld`).
Reviewers' verdicts feed back: ``fix`` counts as the flag being right, ``confirm``
(the label is right) and ``dismiss`` as wrong (:func:`service.loop.data.flag_verdicts`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold, StratifiedKFold
from sqlmodel import Session, col, func, select

from learning.hard_examples import (
    FALSE_DETECTION,
    MISSED_DETECTION,
    find_label_issues,
)
from service.crud.annotations import (
    canonical,
    check_if_match,
    current_annotation,
    lock,
    validate_for_project,
    write_version,
)
from service.crud.audit import record_audit
from service.errors import Conflict, Invalid
from service.loop import pending
from service.models import Item, ItemStatus, Prediction, Project, Provenance, ReviewFlag, User, utcnow

LABEL_ERROR, UNSTABLE = "label error", "unstable"
FOLDS, C_REG, MAX_LABELS = 5, 10.0, 50_000  # cross-fitting 50k labels: minutes on 2 cores
REPEATS, REPEAT_MAX = 3, 5_000  # cross-fittings with different fold seeds ("3 of 3 models say ...")


def out_of_sample_probs(x: np.ndarray, y: np.ndarray, n_classes: int, *, folds: int = FOLDS, seed: int = 0,
                        progress: Callable[[float], None] | None = None,
                        train_mask: np.ndarray | None = None) -> np.ndarray:
    """Cross-fitted ``probs [N, C]`` for embeddings ``x [N, D]`` and labels ``y [N]``:
    each row comes from a logistic regression fitted on the other folds. ``train_mask``
    ``[N]`` bool: only these rows train (every row is still predicted)."""
    counts = np.bincount(y, minlength=n_classes)
    k = int(min(folds, counts[counts > 0].min()))
    split = (StratifiedKFold(k, shuffle=True, random_state=seed) if k >= 2
             else KFold(min(folds, len(y)), shuffle=True, random_state=seed))
    out = np.zeros((len(y), n_classes))
    for fold, (tr, te) in enumerate(split.split(x, y)):
        if progress is not None:
            progress(fold / split.get_n_splits())
        if train_mask is not None and np.unique(y[tr[train_mask[tr]]]).size >= 2:
            tr = tr[train_mask[tr]]
        seen = np.unique(y[tr])
        if len(seen) == 1:
            out[te, seen[0]] = 1.0
            continue
        clf = LogisticRegression(C=C_REG, max_iter=2000).fit(x[tr], y[tr])
        out[np.ix_(te, clf.classes_)] = clf.predict_proba(x[te])
    return out


def label_evidence(x: np.ndarray, y: np.ndarray, n_classes: int, *, seed: int = 0, repeats: int | None = None,
                   progress: Callable[[float], None] | None = None) -> np.ndarray:
    """``[R, N, C]`` out-of-sample probabilities for :func:`learning.hard_examples.flag_label_errors`.

    A first cross-fitting finds the labels plain confident learning doubts
    (:func:`learning.hard_examples.find_label_issues`, 10-25% of them); ``R`` more
    cross-fittings (fold seeds ``seed .. seed + R - 1``) train without those and predict
    every item. Wrong labels in the training folds make the heads unsure of the right
    answer elsewhere: on the synthetic data of ``lab/benchmarks/bench_flags.py`` (5% of
    1,000 labels wrong, 3 seeds) leaving them out raised flag precision from 0.47 to 0.69,
    and on clean labels it cut the false flags from 1.9% to 1.2% of labels. ``R``:
    ``REPEATS`` up to ``REPEAT_MAX`` labels, else 1 (a cross-fitting of 5,000 1,752-d
    embeddings takes about 40 s on 2 cores: ``R + 1`` of them about 3 minutes)."""
    r = repeats if repeats is not None else (REPEATS if len(y) <= REPEAT_MAX else 1)
    steps = r + 1

    def part(i: int) -> Callable[[float], None] | None:
        return None if progress is None else (lambda f: progress((i + f) / steps))

    first = out_of_sample_probs(x, y, n_classes, seed=seed, progress=part(0))
    doubted = np.zeros(len(y), dtype=bool)
    doubted[[f.index for f in find_label_issues(y, first)]] = True
    return np.stack([out_of_sample_probs(x, y, n_classes, seed=seed + i, progress=part(i + 1), train_mask=~doubted)
                     for i in range(r)])


def close_stale(session: Session, project_id: int) -> int:
    """Dismiss open flags that no longer apply: the label changed since a ``label error``
    flag, or an ``unstable`` flag's proposal was decided or superseded."""
    rows = session.exec(select(ReviewFlag, Item).join(Item, col(Item.id) == ReviewFlag.item_id).where(
        ReviewFlag.project_id == project_id, ReviewFlag.state == "open")).all()
    pids = [f.detail.get("prediction_id") for f, _ in rows if f.kind == UNSTABLE]
    proposed = set(session.exec(select(Prediction.id).where(col(Prediction.id).in_(pids),
                                                            Prediction.state == "proposed")).all()) if pids else set()
    n = 0
    for flag, item in rows:
        if is_stale(flag, item, proposed):
            flag.state, flag.resolved_at = "dismissed", utcnow()
            flag.detail = {**flag.detail, "closed": "no longer applies: the label or proposal changed"}
            session.add(flag)
            restore_item(session, item, flag)
            n += 1
    return n


def is_stale(flag: ReviewFlag, item: Item, proposed: set[int | None]) -> bool:
    if flag.kind == UNSTABLE:
        return flag.detail.get("prediction_id") not in proposed
    return item.version != flag.detail.get("annotation_version")


# -- reviewers ---------------------------------------------------------------------------------


def flag_public(session: Session, flag: ReviewFlag, item: Item) -> dict[str, Any]:
    ann = current_annotation(session, item)
    proposal = session.exec(select(Prediction).where(Prediction.item_id == item.id,
                                                     Prediction.state == "proposed")).first()
    return {"id": flag.id, "item_id": item.id, "file_name": item.file_name, "width": item.width, "height": item.height,
            "kind": flag.kind, "score": flag.score,
            "state": flag.state, "detail": flag.detail, "model_version_id": flag.model_version_id,
            "labels": ann.data.get("labels", []) if ann else [], "provenance": ann.provenance if ann else None,
            "boxes": ann.data.get("boxes", []) if ann else [], "polygons": ann.data.get("polygons", []) if ann else [],
            "item_status": item.status, "etag": f'"v{item.version}"', "is_holdout": item.is_holdout,
            "stale": flag.state == "open" and is_stale(flag, item, {proposal.id} if proposal else set()),
            "proposal": None if proposal is None else {"prediction_id": proposal.id, "label": proposal.label,
                                                       "score": proposal.score},
            "created_at": flag.created_at, "resolved_by": flag.resolved_by, "resolved_at": flag.resolved_at}


def list_flags(session: Session, *, project: Project, kind: str | None, state: str | None, offset: int,
               limit: int) -> tuple[list[dict[str, Any]], int]:
    """Flags, most suspicious first; ``state=None`` lists every state."""
    q = select(ReviewFlag, Item).join(Item, col(Item.id) == ReviewFlag.item_id).where(
        ReviewFlag.project_id == project.id)
    if kind:
        q = q.where(ReviewFlag.kind == kind)
    if state:
        q = q.where(ReviewFlag.state == state)
    count = session.exec(select(func.count()).select_from(q.subquery())).one()
    rows = session.exec(q.order_by(col(ReviewFlag.score).desc(), col(ReviewFlag.id)).offset(offset).limit(limit))
    return [flag_public(session, f, it) for f, it in rows.all()], int(count)


def restore_item(session: Session, item: Item, flag: ReviewFlag) -> None:
    """Status ``review`` lasts while an open flag that took the item out of training remains."""
    others = session.exec(select(ReviewFlag).where(ReviewFlag.item_id == item.id, ReviewFlag.state == "open",
                                                   ReviewFlag.id != flag.id)).all()
    if item.status == ItemStatus.review and not any(f.detail.get("withheld") for f in others):
        item.status = ItemStatus.labelled
        session.add(item)


def release_unheld(session: Session, project_id: int) -> int:
    """Items in ``review`` whose open flags do not take them out of training (flags written
    before flags did so only when likely right, or resolved meanwhile) go back to
    ``labelled``; returns how many."""
    held = {f.item_id for f in session.exec(select(ReviewFlag).where(
        ReviewFlag.project_id == project_id, ReviewFlag.state == "open")) if f.detail.get("withheld")}
    n = 0
    for item in session.exec(select(Item).where(Item.project_id == project_id, Item.status == ItemStatus.review)):
        if item.id not in held:
            item.status = ItemStatus.labelled
            session.add(item)
            n += 1
    return n


def resolve_flag(session: Session, *, flag: ReviewFlag, project: Project, user: User, action: str,
                 labels: list[str] | None, note: str = "", if_match: str | None = None,
                 shapes: dict[str, list[dict[str, Any]]] | None = None) -> dict[str, Any]:
    """``confirm``: the item's labels (or, for ``unstable``, the proposal) are right;
    ``fix``: a ``human`` version (origin ``review``) with ``labels``, or for a
    ``false detection`` / ``missed detection`` flag with ``shapes`` (the image's boxes and
    polygons, all of them); ``dismiss``: close the flag without a verdict. Records outcome,
    resolver and time on the flag."""
    if flag.state != "open":
        raise Conflict(f"flag {flag.id} is already {flag.state}")
    item = session.get(Item, flag.item_id)
    assert item is not None
    lock(session, item)
    if action == "fix":
        boxes = flag.kind in (FALSE_DETECTION, MISSED_DETECTION)
        if boxes and shapes is None:
            raise Invalid("fix of a detection flag needs the image's boxes (and polygons)")
        if not boxes and not labels:
            raise Invalid("fix needs the correct labels")
        if if_match is not None:
            check_if_match(item, if_match)
        data = canonical(shapes if boxes and shapes is not None else {"labels": labels})
        validate_for_project(session, project, item, data)
        for p in session.exec(select(Prediction).where(Prediction.item_id == item.id, Prediction.state == "proposed")):
            p.state = "confirmed" if data["labels"] == [p.label] else "corrected"
            p.decided_at, p.decided_by = utcnow(), user.id
            session.add(p)
        record_audit(session, item, data, user)
        write_version(session, item=item, data=data, provenance=Provenance.human, origin="review", author=user)
    elif action == "confirm" and flag.kind == UNSTABLE:
        pid = int(flag.detail.get("prediction_id") or 0)
        flagged = session.get(Prediction, pid)
        if flagged is None or flagged.state != "proposed":
            raise Conflict("the flagged proposal is no longer pending; fix or dismiss the flag")
        pending.confirm(session, project=project, ids=[pid], user=user)
    flag.state = {"fix": "fixed", "confirm": "confirmed"}.get(action, "dismissed")
    flag.resolved_by, flag.resolved_at = user.id, utcnow()
    fixed = (shapes if flag.kind in (FALSE_DETECTION, MISSED_DETECTION) else labels) if action == "fix" else None
    flag.detail = {**flag.detail, "resolution": {"action": action, "labels": fixed,
                                                 "note": note[:1000], "annotation_version": item.version}}
    session.add(flag)
    restore_item(session, item, flag)
    session.flush()
    return flag_public(session, flag, item)
