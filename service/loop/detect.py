"""The detection/segmentation loop: ``train_detector`` and ``infer_detector`` jobs, the policy check.

Mirrors :mod:`service.loop.train` and :mod:`service.loop.infer` for ``detection`` and
``segmentation`` projects:

* ``train_detector`` fits the detector adapter on people's boxes (polygons for
  segmentation), predicts the hold-out images (never trained on), certifies per-class
  box thresholds (:mod:`learning.box_calibration`) and publishes a ``ready`` model version
  with ``thresholds`` ``{"kind": "boxes", "in_force": {class: t}, "possible": s, ...}``. The
  same out-of-sample hold-out predictions give the hard examples: ``false detection`` /
  ``missed detection`` review flags (:func:`learning.hard_examples.detection_flags`).
* ``infer_detector`` predicts the pool and proposes an image (Prediction ``proposed``,
  ``data={"boxes": [...], "polygons": [...]}``) only when it passes the completeness rule:
  some box at or above its class threshold and none in the uncertain band.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any

import numpy as np
from PIL import ImageOps
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

import learning.adapters.detector  # noqa: F401  (registers the "detector" adapter)
from learning.adapters import create_adapter, load_adapter
from learning.adapters.base import FitConfig, LabelledImages
from learning.box_calibration import ImageBoxes, calibrate_boxes, map50, propose
from learning.crossfit import cross_fit
from learning.data import load_rgb
from learning.hard_examples import (
    FALSE_DETECTION,
    MISSED_DETECTION,
    FlagRule,
    detection_cuts,
    detection_flags,
    iou_matrix,
    match_boxes,
    pair_trust,
)
from learning.policy import Policy, readiness, should_retrain
from service.config import Settings
from service.crud.annotations import canonical
from service.crud.items import blob_store
from service.crud.projects import class_names
from service.jobs.runner import JobConflict, JobContext, enqueue, task
from service.jobs.scheduler import periodic
from service.loop.audit import shape_boxes
from service.loop.data import HUMAN, TrainingGuard, current_labels, flag_verdicts, judged_flags, label_counts
from service.loop.infer import (
    Tally,
    begin_publish,
    current_model,
    job_rng,
    model_to_run,
    open_pool,
    publish_summary,
    settle,
)
from service.loop.state import project_state
from service.loop.train import fail_version, publish_version
from service.models import (
    Item,
    Job,
    JobState,
    ModelVersion,
    Prediction,
    Project,
    Provenance,
    ReviewFlag,
    Task,
)

DETECTION_TASKS = (Task.detection, Task.segmentation)
DEFAULT_IMAGE_SIZE = 320
CHUNK = 32
CROSSFIT_FOLDS, CROSSFIT_MIN, CROSSFIT_MAX = 2, 10, 2000  # hard examples on training images
TTA_MAX = 2000  # box proposals mirrored per scan (each once)


def box_mode(calibration: str) -> str:
    """Boxes' calibration mode for a policy's ``calibration``: ``auto`` is boxes' ``per_class``
    (each class with enough hold-out boxes proves its own threshold, thin classes share the
    pooled one: :mod:`learning.box_calibration`)."""
    return "per_class" if calibration == "auto" else calibration


def image_boxes(dets: list[dict[str, Any]], classes: list[str], *, scored: bool) -> ImageBoxes:
    """Annotation/prediction boxes (polygons count by their box) -> :class:`ImageBoxes` (known classes)."""
    rows = [d for d in dets if d["label"] in classes]
    return ImageBoxes(np.array([d["bbox"] for d in rows], dtype=np.float64).reshape(-1, 4),
                      np.array([classes.index(d["label"]) for d in rows], dtype=np.int64),
                      np.array([d["score"] for d in rows]) if scored else None)


def _shapes(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"label": label, "bbox": box} for label, box in shape_boxes(data)]


def labelled_sets(session: Session, project: Project, settings: Settings) -> dict[str, list]:
    """People's current labels split into train and hold-out: ids, paths, annotation dicts."""
    assert project.id is not None
    store = blob_store(settings)
    out: dict[str, list] = {f"{part}_{k}": [] for part in ("train", "holdout")
                            for k in ("ids", "paths", "data", "versions")}
    for item, ann in current_labels(session, project.id):
        if ann.provenance not in HUMAN or not (ann.data.get("boxes") or ann.data.get("polygons")):
            continue
        part = "holdout" if item.is_holdout and ann.provenance == Provenance.human else "train"
        out[f"{part}_ids"].append(item.id)
        out[f"{part}_paths"].append(store.path(item.sha256))
        out[f"{part}_data"].append(ann.data)
        out[f"{part}_versions"].append(item.version)
    return out


def _objects(data: list[dict[str, Any]]) -> np.ndarray:
    arr = np.empty(len(data), dtype=object)
    arr[:] = data
    return arr


def train_detector_project(session: Session, *, project: Project, settings: Settings, progress: Any,
                           job_id: int | None = None) -> ModelVersion:
    """Fit, calibrate box thresholds, flag hard examples and publish; returns the ready version."""
    assert project.id is not None
    policy = Policy.from_dict(project.policy or {})
    classes = class_names(session, project.id)
    labels_at = label_counts(session, project.id)[2]  # what this training saw: later labels count for the next
    sets = labelled_sets(session, project, settings)
    version = (session.exec(select(func.max(ModelVersion.version))
                            .where(ModelVersion.project_id == project.id)).one() or 0) + 1
    mv = ModelVersion(project_id=project.id, version=version, name=f"v{version}", algorithm="precise",
                      status="training", classes=classes, policy=policy.to_dict(), job_id=job_id,
                      n_train=len(sets["train_ids"]), n_holdout=len(sets["holdout_ids"]))
    session.add(mv)
    session.commit()
    path = settings.models_dir / f"project-{project.id}" / f"v{version}"
    try:
        progress(0.02, f"training detector v{version} on {len(sets['train_ids'])} images")
        adapter: Any = create_adapter("detector", classes=classes, task=str(project.task.value),
                                      image_size=policy.image_size or DEFAULT_IMAGE_SIZE,
                                      num_threads=settings.torch_threads)
        holdout = LabelledImages(sets["holdout_paths"], _objects(sets["holdout_data"])) if sets["holdout_ids"] else None
        config = FitConfig(algorithm="precise", epochs=policy.epochs, seed=version, batch_size=8,
                           num_threads=settings.torch_threads)
        report = adapter.fit(LabelledImages(sets["train_paths"], _objects(sets["train_data"])), holdout,
                             config=config, progress=lambda f, m: progress(0.03 + 0.85 * f, m))
        hp = adapter.holdout_predictions.boxes if adapter.holdout_predictions is not None else []
        preds = [image_boxes(b, classes, scored=True) for b in hp]
        gts = [image_boxes(_shapes(d), classes, scored=False) for d in sets["holdout_data"]]
        cal = calibrate_boxes(preds, gts, len(classes), target=policy.target_precision, delta=policy.delta,
                              mode=box_mode(policy.calibration))
        thresholds = {"kind": "boxes", "mode": policy.calibration, **cal.to_dict(classes),
                      "in_force": dict(zip(classes, cal.thresholds, strict=True))}
        metrics = {"n_holdout": len(gts), "holdout_map50": map50(preds, gts, len(classes)) if gts else None,
                   "fit_seconds": report.seconds, "epochs_run": report.epochs_run,
                   "history": [h.__dict__ for h in report.history][-50:]}
        progress(0.92, "saving model")
        adapter.save(path)
    except BaseException as exc:
        fail_version(session, mv, path, exc)
        raise
    publish_version(session, project, mv, path, thresholds=thresholds, metrics=metrics, labels_at=labels_at)
    metrics["flags"] = flag_hard_examples(session, project_id=project.id, mv=mv, item_ids=sets["holdout_ids"],
                                          versions=sets["holdout_versions"], preds=preds, gts=gts, classes=classes,
                                          source="hold-out")
    session.commit()
    return mv


def confident_cut(mv: ModelVersion | None) -> float:
    """Score at which a box counts as confident: the lowest certified class threshold (0.5 without one)."""
    live = [t for t in ((mv.thresholds or {}).get("in_force") or {}).values() if t is not None] if mv else []
    return min(live) if live else 0.5


# a labelled box the model barely sees / a box it is very sure of. On the cross-fitted canvases of
# tests/detection/test_box_errors.py (two runs) the three objects left out of the labels scored
# 0.82-0.94 and no other unlabelled box above 0.77; correct labelled boxes scored 0.40 and more.
MISSED_CUT, FALSE_CUT = 0.3, 0.8
FLAG_SHARE, FLAG_MIN = 0.05, 5  # new flags of each kind per run: at most max(FLAG_MIN, FLAG_SHARE * images)
LIKELY_RIGHT_FIXES = 3  # a kind's flags take images out of training only after reviewers fixed this many


def flag_cuts(mv: ModelVersion | None, classes: list[str], trust: float) -> tuple[float, np.ndarray]:
    """``(missed_below, false_above [C])`` for :func:`learning.hard_examples.detection_flags`.

    Judged at cuts chosen for the flag's precision, not the pre-label thresholds (a
    certified threshold near 0.9 made every correct box scored below it a ``missed
    detection``): missed below ``MISSED_CUT`` (lower where a class's pre-label threshold
    is lower), false at or above ``max(FALSE_CUT, the class's pre-label threshold)``;
    both tightened by ``trust`` (:func:`learning.hard_examples.detection_cuts`)."""
    in_force = (mv.thresholds or {}).get("in_force") or {} if mv else {}
    live = [in_force.get(c) for c in classes]
    low = min([MISSED_CUT, *(t for t in live if t is not None)])
    missed, _ = detection_cuts(low, FALSE_CUT, trust)
    return missed, np.array([detection_cuts(low, max(FALSE_CUT, t or 0.0), trust)[1] for t in live])


def flag_hard_examples(session: Session, *, project_id: int, mv: ModelVersion | None, item_ids: list[int],
                       versions: list[int], preds: list[ImageBoxes], gts: list[ImageBoxes], classes: list[str],
                       source: str) -> int:
    """``false detection`` / ``missed detection`` flags from out-of-sample predictions.

    ``source``: ``hold-out`` (the model version's own predictions of images it never trained
    on) or ``cross-fitted`` (:func:`find_box_errors`). Boxes are judged at :func:`flag_cuts`,
    tightened for a kind whose flags reviewers kept rejecting; at most ``max(FLAG_MIN,
    FLAG_SHARE * images)`` new flags of each kind, most suspicious first. At most one open
    flag per item and kind; never again for a label version a reviewer already judged, nor
    for an item labelled again since ``versions`` were read. A flagged training image keeps
    training unless the flag is likely right: reviewers fixed at least ``LIKELY_RIGHT_FIXES``
    flags of that kind and more than they rejected; then it gets status ``review`` (the
    queue skips it, training leaves its boxes out) while its classes keep the labels
    readiness needs (:class:`service.loop.data.TrainingGuard`). Returns the number of new flags."""
    project = session.get(Project, project_id)
    assert project is not None
    guard = TrainingGuard(session, project)
    n = 0
    for kind in (FALSE_DETECTION, MISSED_DETECTION):
        open_, done = judged_flags(session, project_id, kind)
        verdicts = [right for _, right in flag_verdicts(session, project_id, kind)][-FlagRule.window:]
        fixed, kept = sum(verdicts), len(verdicts) - sum(verdicts)
        likely = fixed >= LIKELY_RIGHT_FIXES and fixed > kept
        low, high = flag_cuts(mv, classes, float(pair_trust(np.array(fixed), np.array(kept))))
        found = []
        for item_id, version, p, g in zip(item_ids, versions, preds, gts, strict=True):
            if item_id in open_ or (item_id, version) in done:
                continue
            mine = [f for f in detection_flags(p.boxes, np.asarray(p.scores), p.labels, g.boxes, g.labels,
                                               missed_below=low, false_above=high) if f.kind == kind]
            if mine:
                found.append((max(f.score for f in mine), item_id, version, mine, g))
        found.sort(key=lambda r: (-r[0], r[1]))
        for score, item_id, version, mine, g in found[:max(FLAG_MIN, int(FLAG_SHARE * len(item_ids)))]:
            item = session.get(Item, item_id)
            if item is None or item.version != version:
                continue
            out = likely and guard.withhold(item, [classes[int(c)] for c in g.labels])
            boxes = [{**f.detail, "label": classes[int(f.detail["label"])], "score": f.score} for f in mine]
            detail = {"boxes": boxes, "missed_below": round(low, 5), "false_above": dict(zip(
                classes, np.round(high, 5).tolist(), strict=True)), "reason": box_reason(kind, boxes, low, high,
                                                                                          classes),
                "likely_right": likely, "withheld": out, "annotation_version": version, "source": source}
            session.add(ReviewFlag(project_id=project_id, item_id=item_id, model_version_id=mv.id if mv else None,
                                   kind=kind, score=score, detail=detail))
            session.add(item)
            open_.add(item_id)
            n += 1
    return n


def box_reason(kind: str, boxes: list[dict[str, Any]], low: float, high: np.ndarray, classes: list[str]) -> str:
    """The sentence a reviewer reads for a detection flag."""
    if kind == FALSE_DETECTION:
        parts = [f"a {b['label']} ({b['score']:.2f})" for b in boxes]
        return (f"a model that never saw these labels is very sure of {', '.join(parts)} where no labelled box is "
                f"(sure: >= {min(high.tolist(), default=FALSE_CUT):.2f})")
    parts = [f"a labelled {b['label']} ({b['best_same_class_score']:.2f})" for b in boxes]
    return (f"a model that never saw these labels barely sees {', '.join(parts)} (best score of its class there; "
            f"below {low:.2f})")


def find_box_errors(session: Session, *, project: Project, settings: Settings, progress: Any,
                    seed: int = 0) -> dict[str, Any]:
    """Flag people's boxes on training images that cross-fitted detectors contradict.

    The hold-out images are checked by every ``train_detector`` run; the images a model
    trained on need predictions from a model that did not (a fitted box cannot look wrong
    to its model): :func:`learning.crossfit.cross_fit` trains ``CROSSFIT_FOLDS`` detectors,
    each on the other folds, with the project's policy (epochs, image size), on the newest
    ``CROSSFIT_MAX`` labelled training images. About one training's time; progress per fold
    and batch; cancelling writes no flag."""
    assert project.id is not None
    policy = Policy.from_dict(project.policy or {})
    classes = class_names(session, project.id)
    sets = labelled_sets(session, project, settings)
    ids, paths = sets["train_ids"][-CROSSFIT_MAX:], sets["train_paths"][-CROSSFIT_MAX:]
    data, versions = sets["train_data"][-CROSSFIT_MAX:], sets["train_versions"][-CROSSFIT_MAX:]
    mv = current_model(session, project.id)
    session.commit()  # no transaction (SQLite write lock) while training
    if len(ids) < CROSSFIT_MIN:
        return {"box_flags": 0, "checked_images": 0,
                "skipped": f"{len(ids)} labelled training images; cross-fitting needs {CROSSFIT_MIN}"}

    def make() -> Any:
        return create_adapter("detector", classes=classes, task=str(project.task.value),
                              image_size=policy.image_size or DEFAULT_IMAGE_SIZE, num_threads=settings.torch_threads)

    config = FitConfig(algorithm="precise", epochs=policy.epochs, seed=seed, batch_size=8,
                       num_threads=settings.torch_threads)
    pred = cross_fit(make, LabelledImages(paths, _objects(data)), config=config, folds=CROSSFIT_FOLDS, seed=seed,
                     progress=lambda f, m: progress(0.02 + 0.93 * f, m))
    assert pred.boxes is not None
    preds = [image_boxes(b, classes, scored=True) for b in pred.boxes]
    gts = [image_boxes(_shapes(d), classes, scored=False) for d in data]
    new = flag_hard_examples(session, project_id=project.id, mv=mv, item_ids=ids, versions=versions, preds=preds,
                             gts=gts, classes=classes, source="cross-fitted")
    session.commit()
    return {"box_flags": new, "checked_images": len(ids), "folds": CROSSFIT_FOLDS}


def flip_boxes(dets: list[dict[str, Any]], width: int) -> list[dict[str, Any]]:
    """Boxes predicted on the mirrored image, in the original image's coordinates."""
    return [{**d, "bbox": [width - d["bbox"][0] - d["bbox"][2], *d["bbox"][1:]]} for d in dets]


def unstable_box_flags(proposed: ImageBoxes, view: ImageBoxes, *, possible: float, cut: float,
                       iou: float = 0.5) -> list[tuple[str, float, dict[str, Any]]]:
    """Disagreements between a proposal's boxes and the model's boxes on the mirrored image.

    * ``false detection``: a proposed box that no same-class mirrored box (scoring at least
      ``possible``) matches at IoU ``>= iou``; score = 1 - its best same-class IoU.
    * ``missed detection``: a confident mirrored box (``>= cut``) that no proposed box
      matches, an object the proposal lacks; score = its confidence.
    Returns ``(kind, score, detail)`` per box, ``detail`` as the review card shows it."""
    vs = np.asarray(view.scores, dtype=np.float64)
    ps = np.asarray(proposed.scores, dtype=np.float64)
    out: list[tuple[str, float, dict[str, Any]]] = []
    seen = np.flatnonzero(vs >= possible)
    mp, _ = match_boxes(proposed.boxes, proposed.labels, view.boxes[seen], view.labels[seen], iou=iou, pred_scores=ps)
    ious = iou_matrix(proposed.boxes, view.boxes[seen])
    for i in np.setdiff1d(np.arange(len(proposed.boxes)), mp):
        same = view.labels[seen] == proposed.labels[i]
        best = float(ious[i, same].max()) if same.any() else 0.0
        out.append((FALSE_DETECTION, 1.0 - best, {"box": proposed.boxes[i].tolist(), "label": int(proposed.labels[i]),
                                                  "score": float(ps[i]), "best_same_class_iou": best, "view": "flip"}))
    sure = np.flatnonzero(vs >= cut)
    _, mv_ = match_boxes(proposed.boxes, proposed.labels, view.boxes[sure], view.labels[sure], iou=iou,
                         pred_scores=ps)
    for j in np.setdiff1d(np.arange(sure.size), mv_):
        k = sure[j]
        out.append((MISSED_DETECTION, float(vs[k]), {"box": view.boxes[k].tolist(), "label": int(view.labels[k]),
                                                      "score": float(vs[k]), "best_same_class_iou": 0.0,
                                                      "view": "flip"}))
    return out


def find_unstable_boxes(session: Session, *, project: Project, settings: Settings, progress: Any) -> dict[str, Any]:
    """Test-time augmentation of the current model's open box proposals (each checked once):
    the mirrored image's boxes against the proposal (:func:`unstable_box_flags`). Flags show
    on the proposal in Pending and in Review."""
    assert project.id is not None
    mv = current_model(session, project.id)
    if mv is None or mv.path is None:
        return {"unstable_boxes": 0, "checked_proposals": 0}
    rows = [(p, it) for p, it in session.exec(select(Prediction, Item).join(Item, col(Item.id) == Prediction.item_id)
                                              .where(Prediction.model_version_id == mv.id,
                                                     Prediction.state == "proposed")
                                              .order_by(col(Prediction.id))) if "tta_flip" not in p.data][:TTA_MAX]
    judged = {kind: judged_flags(session, project.id, kind) for kind in (FALSE_DETECTION, MISSED_DETECTION)}
    session.commit()  # no transaction (SQLite write lock) while predicting
    if not rows:
        return {"unstable_boxes": 0, "checked_proposals": 0}
    adapter: Any = load_adapter(str(mv.path))
    classes, store = list(mv.classes), blob_store(settings)
    possible, cut = float(mv.thresholds.get("possible", 0.05)), confident_cut(mv)
    new = 0
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start:start + CHUNK]
        images = [load_rgb(store.path(it.sha256)) for _, it in chunk]
        views = adapter.predict([ImageOps.mirror(im) for im in images]).boxes or []
        progress(0.05 + 0.4 * min(1.0, (start + CHUNK) / len(rows)), f"mirrored {start + len(chunk)} proposals")
        for (p, item), im, dets in zip(chunk, images, views, strict=True):
            view = image_boxes(flip_boxes(dets, im.width), classes, scored=True)
            found = unstable_box_flags(image_boxes(p.data.get("boxes", []), classes, scored=True), view,
                                       possible=possible, cut=cut)
            p.data = {**p.data, "tta_flip": len(found)}
            session.add(p)
            assert item.id is not None
            for kind in sorted({k for k, _, _ in found}):
                open_, done = judged[kind]
                if item.id in open_ or (item.id, item.version) in done:
                    continue
                boxes = [{**d, "label": classes[d["label"]]} for k, _, d in found if k == kind]
                session.add(ReviewFlag(project_id=project.id, item_id=item.id, model_version_id=mv.id, kind=kind,
                                       score=max(sc for k, sc, _ in found if k == kind), detail={
                                           "boxes": boxes, "threshold": cut, "annotation_version": item.version,
                                           "source": "test-time augmentation", "prediction_id": p.id}))
                open_.add(item.id)
                new += 1
        session.commit()
    return {"unstable_boxes": new, "checked_proposals": len(rows)}


def _proposal(dets: list[dict[str, Any]], keep: np.ndarray, segmentation: bool) -> dict[str, Any]:
    kept = [d for d, k in zip(dets, keep, strict=True) if k]
    data: dict[str, Any] = {"labels": [], "boxes": [], "polygons": []}
    for d in kept:
        if segmentation and d.get("points"):
            data["polygons"].append({"label": d["label"], "points": d["points"], "score": d["score"]})
        else:
            data["boxes"].append({"label": d["label"], "bbox": d["bbox"], "score": d["score"]})
    return data


def infer_detector_project(session: Session, *, project: Project, settings: Settings, progress: Any,
                           model_version_id: int | None = None, rng: random.Random | None = None) -> dict[str, Any]:
    assert project.id is not None
    rng = rng or random.Random()
    mv = model_to_run(session, project.id, model_version_id)
    if not mv.is_current:
        return {"skipped": f"model v{mv.version} is no longer current"}
    policy = Policy.from_dict(project.policy or {})
    adapter: Any = load_adapter(str(mv.path))
    classes = list(mv.classes)
    ths = [(mv.thresholds.get("in_force") or {}).get(c) for c in classes]
    possible = float(mv.thresholds.get("possible", 0.05))
    store = blob_store(settings)
    pool = open_pool(session, project.id)
    ids = [int(i.id) for i in pool if i.id is not None]
    paths: list[Path] = [store.path(i.sha256) for i in pool]
    session.commit()  # end the read transaction: SQLite must not hold its lock while we predict
    dets: list[list[dict[str, Any]]] = []
    for start in range(0, len(pool), CHUNK):
        dets += adapter.predict(paths[start:start + CHUNK]).boxes or []
        progress(0.05 + 0.8 * min(1.0, (start + CHUNK) / len(pool)), f"predicted {len(dets)} of {len(pool)}")
    fresh = begin_publish(session, ids)
    rejected = set(session.exec(select(Prediction.item_id).where(Prediction.model_version_id == mv.id,
                                                                 Prediction.state == "rejected")).all())
    tally = Tally()
    for item_id, d in zip(ids, dets, strict=True):
        item = fresh.get(item_id)
        if item is None:  # labelled while the model predicted
            continue
        pb = image_boxes(d, classes, scored=True)
        ok, keep = propose(pb, ths, possible)
        s = np.asarray(pb.scores)
        item.query_score = float((1 - np.abs(2 * s[s >= possible] - 1)).max()) if (s >= possible).any() else 0.0
        proposed = ok and item_id not in rejected
        data = _proposal(d, keep, project.task == Task.segmentation) if proposed else {"boxes": d[:20]}
        score = float(s[keep].min()) if proposed else float(s.max(initial=0.0))
        pred = Prediction(item_id=item_id, project_id=project.id, model_version_id=mv.id,  # type: ignore[arg-type]
                          label=None, score=score, state="proposed" if proposed else "none", data=data)
        settle(session, item=item, pred=pred, version_data=canonical(data), policy=policy, rng=rng, tally=tally)
    session.commit()
    return publish_summary(mv, pool, tally, progress)


def _project(ctx: JobContext, s: Session) -> Project:
    project = s.get(Project, ctx.project_id)
    if project is None:
        raise ValueError("project was deleted")
    if project.task not in DETECTION_TASKS:
        raise ValueError(f"{ctx.kind} runs on detection and segmentation projects, not {project.task.value}")
    return project


@task("train_detector", one_per_project=True)
def train_detector_task(ctx: JobContext) -> dict[str, Any]:
    with Session(ctx.engine, expire_on_commit=False) as s:
        project = _project(ctx, s)
        mv = train_detector_project(s, project=project, settings=ctx.settings, progress=ctx.progress,
                                    job_id=ctx.job_id)
        if ctx.payload.get("infer", True):
            enqueue(s, kind="infer_detector", project_id=project.id, payload={"model_version_id": mv.id})
            s.commit()
        return {"model_version_id": mv.id, "version": mv.version, "n_train": mv.n_train,
                "n_holdout": mv.n_holdout, "holdout_map50": mv.metrics.get("holdout_map50"),
                "flags": mv.metrics.get("flags", 0)}


@task("infer_detector")
def infer_detector_task(ctx: JobContext) -> dict[str, Any]:
    with Session(ctx.engine, expire_on_commit=False) as s:
        return infer_detector_project(s, project=_project(ctx, s), settings=ctx.settings, progress=ctx.progress,
                                      model_version_id=ctx.payload.get("model_version_id"), rng=job_rng(ctx))


def maybe_train_detector(session: Session, project: Project) -> int | None:
    """Enqueue ``train_detector`` when the retraining policy says so; returns the job id."""
    running = session.exec(select(Job.id).where(Job.project_id == project.id, Job.kind == "train_detector",
                                                col(Job.state).in_([JobState.queued, JobState.running]))).first()
    state = dataclasses.replace(project_state(session, project), training_running=running is not None)
    policy = Policy.from_dict(project.policy or {})
    if not readiness(state, policy).ready or not should_retrain(state, policy).train:
        return None
    try:
        job = enqueue(session, kind="train_detector", project_id=project.id,
                      payload={"reason": should_retrain(state, policy).reason})
    except JobConflict:
        return None
    session.commit()
    return job.id


@periodic("detection-policy")
def detection_policy_check(engine: Engine, settings: Settings) -> None:
    with Session(engine) as session:
        for project in session.exec(select(Project).where(col(Project.task).in_(list(DETECTION_TASKS)))).all():
            maybe_train_detector(session, project)


from service.loop import annotate as _annotate  # noqa: E402  (the annotate job sits beside the detection jobs)

_annotate.register_job()
