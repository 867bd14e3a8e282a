"""Classification's hard-example scans as prepare -> compute -> commit.

* ``label error`` (multiclass): people's labels that cross-fitted evidence on the cached
  embeddings says are more likely wrong than right (:func:`service.loop.review.label_evidence`,
  :func:`learning.hard_examples.flag_label_errors`). No flag before ``RULE.min_labels``
  labels; at most 5% of the checked labels flagged open at once; a class pair whose flags
  reviewers kept rejecting needs stronger evidence.
* ``unstable``: open proposals of the current model whose prediction changes under a
  second view (:func:`tta_views`); each proposal is checked once.

Prepare reads the labels, the reviewers' verdicts and the open flags; compute embeds,
cross-fits and predicts (no database); commit writes the flags, skipping items labelled
again meanwhile (the next scan judges the new label).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from sqlmodel import Session, col, select

from learning.adapters import load_adapter
from learning.data import load_rgb
from learning.hard_examples import Flag, FlagRule, flag_label_errors, flag_unstable, pair_history, unsupported_flags
from service.config import Settings
from service.crud.classes import class_names
from service.crud.items import blob_store
from service.jobs.executor import ComputeContext
from service.loop.clusters import FeatureSource, embed_items
from service.loop.data import HUMAN, TrainingGuard, flag_verdicts, judged_flags
from service.loop.infer import current_model
from service.loop.review import LABEL_ERROR, MAX_LABELS, UNSTABLE, label_evidence, restore_item
from service.models import Annotation, Item, ItemStatus, Prediction, Project, ReviewFlag, utcnow

RULE = FlagRule()
WITHDRAWN = "withdrawn: the latest model no longer supports it"
TTA_BATCH, TTA_MAX = 128, 2000  # proposals checked per run (each once)
ZOOM = 0.8  # the second view of a mirror-averaging model: the central 80% of the image


@dataclass
class ScanInputs:
    """Label errors: ``shas``/``paths``/``y [N]`` of the checked labels (``None``: skipped,
    ``skipped`` says why), ``verdicts [V, 3]`` (given, suggested, right), ``skip [N]`` (an open
    or judged flag), ``open_flags``. Unstable: the open proposals' ``tta_paths``."""

    classes: list[str]
    seed: int
    data_dir: Path
    features: FeatureSource | None = None
    shas: list[str] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)
    y: np.ndarray | None = None
    verdicts: np.ndarray | None = None
    skip: np.ndarray | None = None
    open_flags: int = 0
    open_rows: np.ndarray | None = None  # [F] checked labels with an open flag, and its suggested class
    open_suggested: np.ndarray | None = None
    skipped: dict[str, Any] | None = None
    tta_model: str | None = None
    device: str = "cpu"
    tta_classes: list[str] = field(default_factory=list)
    tta_paths: list[Path] = field(default_factory=list)


@dataclass
class ScanOutputs:
    """``flags``: label-error flags (indices into the checked labels) in the embedding space
    ``feature_version``; ``views [2, P, C]`` of the proposals and their ``unstable`` flags."""

    flags: list[Flag] = field(default_factory=list)
    withdrawn: list[int] = field(default_factory=list)  # positions in ScanInputs.open_rows
    feature_version: str | None = None
    views: np.ndarray | None = None
    unstable: list[Flag] = field(default_factory=list)


def prepare(session: Session, *, project: Project, settings: Settings, seed: int) -> tuple[ScanInputs, dict]:
    """``(inputs, keep)``: ``keep`` has the checked labels' items and label versions, the
    proposals' ids, and the open/judged flags, for :func:`commit`."""
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
    store = blob_store(settings)
    inputs = ScanInputs(classes=classes, seed=seed, data_dir=settings.data_dir)
    keep: dict[str, Any] = {"mv_id": mv.id if mv else None, "open": open_, "done": done,
                            "labels": [(int(it.id or 0), it.version) for it, _ in rows], "proposals": []}
    if len(rows) < RULE.min_labels or len({a.data["labels"][0] for _, a in rows}) < 2:
        inputs.skipped = {"label_errors": 0, "checked_labels": len(rows),
                          "skipped": f"{len(rows)} labels; flags need {RULE.min_labels}"}
    else:
        inputs.features = FeatureSource.of(project, mv, settings)
        inputs.shas = [it.sha256 for it, _ in rows]
        inputs.paths = [store.path(it.sha256) for it, _ in rows]
        inputs.y = np.asarray([index[a.data["labels"][0]] for _, a in rows])
        inputs.verdicts = np.asarray(verdicts, dtype=np.int64).reshape(-1, 3)
        inputs.skip = np.array([it.id in open_ or (it.id, it.version) in done for it, _ in rows], dtype=bool)
        inputs.open_flags = len(open_)
        row_of: dict[tuple[Any, Any], int] = {(it.id, it.version): k for k, (it, _) in enumerate(rows)}
        opened = [(f, row_of[(f.item_id, f.detail.get("annotation_version"))]) for f in session.exec(
            select(ReviewFlag).where(ReviewFlag.project_id == project.id, ReviewFlag.kind == LABEL_ERROR,
                                     ReviewFlag.state == "open").order_by(col(ReviewFlag.id)))
            if (f.item_id, f.detail.get("annotation_version")) in row_of and f.detail.get("suggested") in index]
        inputs.open_rows = np.asarray([k for _, k in opened], dtype=np.int64)
        inputs.open_suggested = np.asarray([index[f.detail["suggested"]] for f, _ in opened], dtype=np.int64)
        keep["open_flag_ids"] = [int(f.id or 0) for f, _ in opened]
    if mv is not None and mv.path is not None:
        props = [(p, it) for p, it in session.exec(
            select(Prediction, Item).join(Item, col(Item.id) == Prediction.item_id)
            .where(Prediction.model_version_id == mv.id, Prediction.state == "proposed")
            .order_by(col(Prediction.id))) if "tta_flip" not in p.data][:TTA_MAX]
        inputs.tta_model, inputs.tta_classes = mv.path, list(mv.classes)
        inputs.device = str(settings.torch_device)
        inputs.tta_paths = [store.path(it.sha256) for _, it in props]
        keep["proposals"] = [(int(p.id or 0), int(it.id or 0), it.version, p.label) for p, it in props]
        keep["open_unstable"] = judged_flags(session, project.id, UNSTABLE)[0]
    return inputs, keep


def compute(inputs: ScanInputs, ctx: ComputeContext) -> ScanOutputs:
    """Embed and cross-fit the checked labels, and look at the proposals a second time."""
    out = ScanOutputs()
    progress = ctx.progress
    if inputs.skipped is None:
        assert inputs.features is not None and inputs.y is not None and inputs.verdicts is not None
        x = embed_items(inputs.features, inputs.shas, inputs.paths,
                        settings=Settings.model_construct(data_dir=inputs.data_dir), compute=ctx,
                        progress=lambda f, m: progress(0.05 + 0.5 * f, m))
        adapter = inputs.features.adapter()
        n = len(inputs.classes)
        fits = label_evidence(x, inputs.y, n, seed=inputs.seed,
                              progress=lambda f: progress(0.55 + 0.1 * f, "cross-fitting"))
        v = inputs.verdicts
        right, wrong = pair_history(n, v[:, 0], v[:, 1], v[:, 2].astype(bool), window=RULE.window)
        skip, open_flags = inputs.skip, inputs.open_flags
        if inputs.open_rows is not None and inputs.open_suggested is not None and len(inputs.open_rows):
            # open flags this evidence no longer supports are withdrawn (and their labels checked again)
            gone = unsupported_flags(inputs.y, fits, inputs.open_rows, inputs.open_suggested, rule=RULE)
            out.withdrawn = [int(k) for k in np.flatnonzero(gone)]
            if out.withdrawn:
                skip = skip.copy() if skip is not None else np.zeros(len(inputs.y), dtype=bool)
                skip[inputs.open_rows[gone]] = False
                open_flags -= len(out.withdrawn)
        out.flags = flag_label_errors(inputs.y, fits, rule=RULE, right=right, wrong=wrong, skip=skip,
                                      open_flags=open_flags, class_names=inputs.classes)
        out.feature_version = adapter.feature_version
    if inputs.tta_model is not None and inputs.tta_paths:
        progress(0.6, f"test-time augmentation of {len(inputs.tta_paths)} proposals")
        out.views = tta_views(load_adapter(inputs.tta_model, device=inputs.device), inputs.tta_paths)
        out.unstable = flag_unstable(out.views, threshold=0.25)
    return out


def commit(session: Session, *, project: Project, inputs: ScanInputs, keep: dict, outputs: ScanOutputs
           ) -> dict[str, Any]:
    """Write the flags (and each checked proposal's second view); returns the scan's counts."""
    assert project.id is not None
    out = dict(inputs.skipped) if inputs.skipped is not None else _label_errors(session, project, inputs, keep,
                                                                                 outputs)
    return out | _unstable(session, project, inputs, keep, outputs)


def _label_errors(session: Session, project: Project, inputs: ScanInputs, keep: dict,
                  outputs: ScanOutputs) -> dict[str, Any]:
    classes, open_, done = inputs.classes, set(keep["open"]), keep["done"]
    withdrawn = 0
    for k in outputs.withdrawn:
        flag = session.get(ReviewFlag, keep["open_flag_ids"][k], populate_existing=True)
        item = session.get(Item, flag.item_id, populate_existing=True) if flag is not None else None
        if flag is None or item is None or flag.state != "open" or item.version != flag.detail.get(
                "annotation_version"):
            continue  # resolved, or labelled again, meanwhile
        flag.state, flag.resolved_at = "dismissed", utcnow()
        flag.detail = {**flag.detail, "closed": WITHDRAWN, "withdrawn": True}
        session.add(flag)
        restore_item(session, item, flag)
        open_.discard(item.id)
        withdrawn += 1
    session.flush()
    guard = TrainingGuard(session, project)
    new = withheld = 0
    for f in outputs.flags:
        item_id, version = keep["labels"][f.index]
        item = session.get(Item, item_id, populate_existing=True)  # labelled again while we computed?
        if item is None or item.id in open_ or (item.id, item.version) in done or item.version != version:
            continue  # the next run judges the new label
        given = classes[f.detail["given"]]
        out = f.detail["likely_right"] and guard.withhold(item, [given])
        session.add(ReviewFlag(project_id=project.id, item_id=item_id, model_version_id=keep["mv_id"],  # type: ignore[arg-type]
                               kind=LABEL_ERROR, score=f.score, detail={
                                   "given": given, "suggested": classes[f.detail["suggested"]],
                                   "reason": f.detail["reason"],
                                   "self_confidence": round(f.detail["self_confidence"], 5),
                                   "suggested_prob": round(f.detail["suggested_prob"], 5),
                                   "votes": f.detail["votes"], "fits": f.detail["fits"],
                                   "bar": round(f.detail["bar"], 5), "likely_right": f.detail["likely_right"],
                                   "withheld": out, "annotation_version": item.version,
                                   "method": "confident_learning", "feature_version": outputs.feature_version}))
        session.add(item)
        new += 1
        withheld += out
    session.commit()
    return {"label_errors": new, "checked_labels": len(keep["labels"]), "withheld": withheld,
            "withdrawn": withdrawn}


def _unstable(session: Session, project: Project, inputs: ScanInputs, keep: dict,
              outputs: ScanOutputs) -> dict[str, Any]:
    rows = keep["proposals"]
    if not rows or outputs.views is None:
        return {"unstable": 0, "checked_proposals": 0}
    views, classes = outputs.views, inputs.tta_classes
    for k, (pid, *_rest) in enumerate(rows):
        p = session.get(Prediction, pid)
        if p is None:
            continue
        c = int(views[1, k].argmax())
        p.data = {**p.data, "tta_flip": [classes[c], round(float(views[1, k, c]), 5)]}
        session.add(p)
    new = 0
    for f in outputs.unstable:
        pid, item_id, version, label = rows[f.index]
        if item_id in keep["open_unstable"]:
            continue
        session.add(ReviewFlag(project_id=project.id, item_id=item_id, model_version_id=keep["mv_id"],  # type: ignore[arg-type]
                               kind=UNSTABLE, score=f.score, detail={
                                   "prediction_id": pid, "proposed": label,
                                   "views": [classes[c] for c in f.detail["view_classes"]],
                                   "annotation_version": version}))
        new += 1
    session.commit()
    return {"unstable": new, "checked_proposals": len(rows)}


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
