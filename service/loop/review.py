"""Hard examples: the ``hard_examples`` job, and reviewers resolving its flags.

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
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold, StratifiedKFold
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from learning.adapters import load_adapter
from learning.data import load_rgb
from learning.hard_examples import (
    FALSE_DETECTION,
    MISSED_DETECTION,
    FlagRule,
    find_label_issues,
    flag_label_errors,
    flag_unstable,
    pair_history,
)
from service.config import Settings
from service.crud.annotations import (
    canonical,
    check_if_match,
    current_annotation,
    lock,
    validate_for_project,
    write_version,
)
from service.crud.items import blob_store
from service.crud.projects import class_names
from service.errors import Conflict, Invalid
from service.jobs.runner import JobConflict, JobContext, enqueue, task
from service.jobs.scheduler import periodic
from service.loop import pending
from service.loop.audit import record_audit
from service.loop.clusters import due_after_infer, feature_adapter
from service.loop.data import HUMAN, TrainingGuard, flag_verdicts, judged_flags
from service.loop.detect import DETECTION_TASKS, find_box_errors, find_unstable_boxes
from service.loop.features import cached_embeddings
from service.loop.infer import current_model
from service.models import Annotation, Item, ItemStatus, Prediction, Project, Provenance, ReviewFlag, Task, User, utcnow

LABEL_ERROR, UNSTABLE = "label error", "unstable"
FOLDS, C_REG, MAX_LABELS = 5, 10.0, 50_000  # cross-fitting 50k labels: minutes on 2 cores
REPEATS, REPEAT_MAX = 3, 5_000  # cross-fittings with different fold seeds ("3 of 3 models say ...")
RULE = FlagRule()
TTA_BATCH, TTA_MAX = 128, 2000  # proposals checked per run (each once)
ZOOM = 0.8  # the second view of a mirror-averaging model: the central 80% of the image


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
    answer elsewhere: on the synthetic data of ``tests/benchmarks/bench_flags.py`` (5% of
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
            _restore(session, item, flag)
            n += 1
    return n


def is_stale(flag: ReviewFlag, item: Item, proposed: set[int | None]) -> bool:
    if flag.kind == UNSTABLE:
        return flag.detail.get("prediction_id") not in proposed
    return item.version != flag.detail.get("annotation_version")


def find_label_errors(session: Session, *, project: Project, settings: Settings, progress: Any,
                      seed: int) -> dict[str, Any]:
    assert project.id is not None
    classes = class_names(session, project.id)
    index = {c: i for i, c in enumerate(classes)}
    rows = [(it, ann) for it, ann in session.exec(select(Item, Annotation).join(Annotation, (
        col(Annotation.item_id) == Item.id) & (col(Annotation.version) == Item.version)).where(
        Item.project_id == project.id, col(Item.status).in_([ItemStatus.labelled, ItemStatus.review]))
        .order_by(col(Item.id)))
        if ann.provenance in HUMAN and len(ann.data.get("labels", [])) == 1 and ann.data["labels"][0] in index]
    counts = np.bincount([index[a.data["labels"][0]] for _, a in rows], minlength=len(classes))
    rows = [(it, a) for it, a in rows if counts[index[a.data["labels"][0]]] >= 2][-MAX_LABELS:]  # 2 to cross-fit
    mv = current_model(session, project.id)
    open_, done = judged_flags(session, project.id, LABEL_ERROR)
    verdicts = [(index[f.detail["given"]], index[f.detail["suggested"]], right)
                for f, right in flag_verdicts(session, project.id, LABEL_ERROR)
                if f.detail.get("given") in index and f.detail.get("suggested") in index]
    session.commit()  # no transaction (SQLite write lock) while embedding
    if len(rows) < RULE.min_labels or len({a.data["labels"][0] for _, a in rows}) < 2:
        return {"label_errors": 0, "checked_labels": len(rows),
                "skipped": f"{len(rows)} labels; flags need {RULE.min_labels}"}
    store = blob_store(settings)
    adapter = feature_adapter(project, mv, settings)
    x = cached_embeddings(adapter, [it.sha256 for it, _ in rows], [store.path(it.sha256) for it, _ in rows],
                          settings=settings, progress=lambda f, m: progress(0.05 + 0.5 * f, m))
    y = np.asarray([index[a.data["labels"][0]] for _, a in rows])
    fits = label_evidence(x, y, len(classes), seed=seed, progress=lambda f: progress(0.55 + 0.1 * f, "cross-fitting"))
    v = np.asarray(verdicts, dtype=np.int64).reshape(-1, 3)
    right, wrong = pair_history(len(classes), v[:, 0], v[:, 1], v[:, 2].astype(bool), window=RULE.window)
    skip = np.array([it.id in open_ or (it.id, it.version) in done for it, _ in rows], dtype=bool)
    guard = TrainingGuard(session, project)
    new = withheld = 0
    for f in flag_label_errors(y, fits, rule=RULE, right=right, wrong=wrong, skip=skip,
                               open_flags=len(open_), class_names=classes):
        item = rows[f.index][0]
        version = item.version
        session.refresh(item)  # labelled again while we computed: next run judges the new label
        assert item.id is not None
        if item.id in open_ or (item.id, item.version) in done or item.version != version:
            continue
        given = classes[f.detail["given"]]
        out = f.detail["likely_right"] and guard.withhold(item, [given])
        session.add(ReviewFlag(project_id=project.id, item_id=item.id, model_version_id=mv.id if mv else None,
                               kind=LABEL_ERROR, score=f.score, detail={
                                   "given": given, "suggested": classes[f.detail["suggested"]],
                                   "reason": f.detail["reason"],
                                   "self_confidence": round(f.detail["self_confidence"], 5),
                                   "suggested_prob": round(f.detail["suggested_prob"], 5),
                                   "votes": f.detail["votes"], "fits": f.detail["fits"],
                                   "bar": round(f.detail["bar"], 5), "likely_right": f.detail["likely_right"],
                                   "withheld": out, "annotation_version": item.version,
                                   "method": "confident_learning", "feature_version": adapter.feature_version}))
        session.add(item)
        new += 1
        withheld += out
    session.commit()
    return {"label_errors": new, "checked_labels": len(rows), "withheld": withheld}


def tta_views(adapter: Any, paths: list[Any]) -> np.ndarray:
    """``[2, N, C]``: probabilities of each image and of a second view of it: its horizontal
    mirror, or, for a model that already averages each image with its mirror (``mirror``
    on, the default: the flip would change nothing), the image zoomed in to its central
    ``ZOOM`` share and scaled back."""
    mirrored = bool(getattr(adapter, "mirrored", False))
    views: list[list[np.ndarray]] = [[], []]
    for start in range(0, len(paths), TTA_BATCH):
        images = [load_rgb(p) for p in paths[start:start + TTA_BATCH]]
        views[0].append(np.asarray(adapter.predict(images).probs))
        views[1].append(np.asarray(adapter.predict([second_view(im, mirrored) for im in images]).probs))
    return np.stack([np.concatenate(v) for v in views])


def second_view(image: Image.Image, mirrored: bool) -> Image.Image:
    """The view an unstable prediction is checked on (see :func:`tta_views`)."""
    if not mirrored:
        return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    w, h = image.size
    dx, dy = round(w * (1 - ZOOM) / 2), round(h * (1 - ZOOM) / 2)
    return image.crop((dx, dy, w - dx, h - dy)).resize((w, h), Image.Resampling.BILINEAR)


def find_unstable(session: Session, *, project: Project, settings: Settings, progress: Any) -> dict[str, Any]:
    assert project.id is not None
    mv = current_model(session, project.id)
    if mv is None or mv.path is None or project.task != Task.multiclass:
        return {"unstable": 0, "checked_proposals": 0}
    rows = [(p, it) for p, it in session.exec(select(Prediction, Item).join(Item, col(Item.id) == Prediction.item_id)
                                              .where(Prediction.model_version_id == mv.id,
                                                     Prediction.state == "proposed")
                                              .order_by(col(Prediction.id))) if "tta_flip" not in p.data][:TTA_MAX]
    open_, _ = judged_flags(session, project.id, UNSTABLE)
    session.commit()
    if not rows:
        return {"unstable": 0, "checked_proposals": 0}
    progress(0.6, f"test-time augmentation of {len(rows)} proposals")
    store = blob_store(settings)
    views = tta_views(load_adapter(mv.path), [store.path(it.sha256) for _, it in rows])
    classes = list(mv.classes)
    for k, (p, _) in enumerate(rows):
        c = int(views[1, k].argmax())
        p.data = {**p.data, "tta_flip": [classes[c], round(float(views[1, k, c]), 5)]}
        session.add(p)
    new = 0
    for f in flag_unstable(views, threshold=0.25):
        p, item = rows[f.index]
        if item.id in open_:
            continue
        session.add(ReviewFlag(project_id=project.id, item_id=item.id, model_version_id=mv.id,  # type: ignore[arg-type]
                               kind=UNSTABLE, score=f.score, detail={
                                   "prediction_id": p.id, "proposed": p.label,
                                   "views": [classes[c] for c in f.detail["view_classes"]],
                                   "annotation_version": item.version}))
        new += 1
    session.commit()
    return {"unstable": new, "checked_proposals": len(rows)}


def hard_examples(session: Session, *, project: Project, settings: Settings, progress: Any,
                  seed: int = 0) -> dict[str, Any]:
    assert project.id is not None
    closed = close_stale(session, project.id)
    released = release_unheld(session, project.id)
    session.commit()
    out: dict[str, Any] = {"closed_stale": closed, "released": released}
    if project.task == Task.multiclass:
        out |= find_label_errors(session, project=project, settings=settings, progress=progress, seed=seed)
        out |= find_unstable(session, project=project, settings=settings, progress=progress)
    elif project.task in DETECTION_TASKS:
        out |= find_unstable_boxes(session, project=project, settings=settings, progress=progress)
        out |= find_box_errors(session, project=project, settings=settings,
                               progress=lambda f, m: progress(0.5 + 0.5 * f, m), seed=seed)
    mv = current_model(session, project.id)
    out["model_version_id"] = mv.id if mv else None
    session.commit()  # progress() writes the job row: hold no transaction here (SQLite)
    progress(1.0, f"{out['box_flags']} box flags on {out['checked_images']} labelled images, "
             f"{out['unstable_boxes']} unstable proposals" if "box_flags" in out
             else f"{out.get('label_errors', 0)} label errors, {out.get('unstable', 0)} unstable")
    return out


@task("hard_examples", one_per_project=True)
def hard_examples_task(ctx: JobContext) -> dict[str, Any]:
    with Session(ctx.engine, expire_on_commit=False) as s:
        project = s.get(Project, ctx.project_id)
        if project is None:
            raise ValueError("project was deleted")
        return hard_examples(s, project=project, settings=ctx.settings, progress=ctx.progress, seed=ctx.job_id)


@periodic("hard-examples")
def hard_examples_check(engine: Engine, settings: Settings) -> None:
    """After each inference: look for label errors and unstable proposals (classification) or
    wrong boxes on training images (detection, segmentation) again."""
    with Session(engine) as s:
        tasks = [Task.multiclass, *DETECTION_TASKS]
        for project in s.exec(select(Project).where(col(Project.task).in_(tasks))).all():
            infer = "infer" if project.task == Task.multiclass else "infer_detector"
            if project.id is not None and due_after_infer(s, project.id, "hard_examples", infer):
                try:
                    enqueue(s, kind="hard_examples", project_id=project.id, payload={"reason": "scheduled"})
                except JobConflict:
                    continue
                s.commit()


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


def _restore(session: Session, item: Item, flag: ReviewFlag) -> None:
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
    _restore(session, item, flag)
    session.flush()
    return flag_public(session, flag, item)
