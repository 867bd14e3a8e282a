"""Detection's hard-example scans as prepare -> compute -> commit.

* mirrored views (test-time augmentation) of the current model's open box proposals,
  each checked once (:func:`service.loop.detect.unstable_box_flags`); flags show on the
  proposal in Pending and in Review;
* cross-fitted detectors over people's boxes on training images (the hold-out images
  are checked by every training): :func:`learning.crossfit.cross_fit` trains
  ``CROSSFIT_FOLDS`` detectors, each on the other folds, with the project's policy, on
  the newest ``CROSSFIT_MAX`` labelled training images, and
  :func:`service.loop.detect.flag_hard_examples` judges their out-of-sample boxes.
  About one training's time; cancelling writes no flag.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import ImageOps
from sqlmodel import Session, col, select

from learning.adapters import create_adapter, load_adapter
from learning.adapters.base import FitConfig, LabelledImages
from learning.box_calibration import ImageBoxes
from learning.crossfit import cross_fit
from learning.data import load_rgb
from learning.hard_examples import FALSE_DETECTION, MISSED_DETECTION
from learning.policy import Policy
from service.config import Settings
from service.crud.classes import class_names
from service.crud.items import blob_store
from service.jobs.executor import ComputeContext
from service.loop.data import judged_flags
from service.loop.detect import (
    CHUNK,
    CROSSFIT_FOLDS,
    CROSSFIT_MAX,
    CROSSFIT_MIN,
    DEFAULT_IMAGE_SIZE,
    TTA_MAX,
    confident_cut,
    flag_hard_examples,
    flip_boxes,
    image_boxes,
    labelled_sets,
    objects,
    shapes,
    unstable_box_flags,
)
from service.loop.infer import current_model
from service.models import Item, Prediction, Project, ReviewFlag

Found = list[tuple[str, float, dict[str, Any]]]


@dataclass
class ScanInputs:
    """Mirrored views: ``tta_model`` (``None``: no model) over ``tta_paths`` with the proposals'
    boxes. Cross-fitting: ``paths`` / ``data`` of the newest labelled training images
    (``skipped``: too few, and why)."""

    classes: list[str]
    task: str
    seed: int
    image_size: int
    epochs: int
    threads: int
    tta_model: str | None = None
    tta_classes: list[str] = field(default_factory=list)
    tta_paths: list[Path] = field(default_factory=list)
    tta_boxes: list[list[dict[str, Any]]] = field(default_factory=list)
    possible: float = 0.05
    cut: float = 0.5
    paths: list[Path] = field(default_factory=list)
    data: list[dict[str, Any]] = field(default_factory=list)
    skipped: dict[str, Any] | None = None
    device: str = "cpu"
    tile_size: int = 640
    tile_overlap: float = 0.2
    background_share: float = 0.25


@dataclass
class ScanOutputs:
    """Per proposal the mirrored view's disagreements; the cross-fitted ``preds`` and the
    labelled ``gts`` per training image."""

    found: list[Found] = field(default_factory=list)
    preds: list[ImageBoxes] = field(default_factory=list)
    gts: list[ImageBoxes] = field(default_factory=list)


def prepare(session: Session, *, project: Project, settings: Settings, seed: int) -> tuple[ScanInputs, dict]:
    assert project.id is not None
    policy = Policy.from_dict(project.policy or {})
    mv = current_model(session, project.id)
    inputs = ScanInputs(classes=class_names(session, project.id), task=str(project.task.value), seed=seed,
                        image_size=policy.image_size or DEFAULT_IMAGE_SIZE, epochs=policy.epochs,
                        threads=settings.torch_threads, device=str(settings.torch_device),
                        tile_size=policy.tile_size, tile_overlap=policy.tile_overlap,
                        background_share=policy.background_share)
    keep: dict[str, Any] = {"mv": mv, "proposals": []}
    store = blob_store(settings)
    if mv is not None and mv.path is not None:
        rows = [(p, it) for p, it in session.exec(
            select(Prediction, Item).join(Item, col(Item.id) == Prediction.item_id)
            .where(Prediction.model_version_id == mv.id, Prediction.state == "proposed")
            .order_by(col(Prediction.id))) if "tta_flip" not in p.data][:TTA_MAX]
        inputs.tta_model, inputs.tta_classes = mv.path, list(mv.classes)
        inputs.tta_paths = [store.path(it.sha256) for _, it in rows]
        inputs.tta_boxes = [list(p.data.get("boxes", [])) for p, _ in rows]
        inputs.possible, inputs.cut = float(mv.thresholds.get("possible", 0.05)), confident_cut(mv)
        keep["proposals"] = [(int(p.id or 0), int(it.id or 0), it.version) for p, it in rows]
        keep["judged"] = {kind: judged_flags(session, project.id, kind) for kind in (FALSE_DETECTION,
                                                                                     MISSED_DETECTION)}
    sets = labelled_sets(session, project, settings)
    ids, versions = sets["train_ids"][-CROSSFIT_MAX:], sets["train_versions"][-CROSSFIT_MAX:]
    keep |= {"ids": ids, "versions": versions}
    if len(ids) < CROSSFIT_MIN:
        inputs.skipped = {"box_flags": 0, "checked_images": 0,
                          "skipped": f"{len(ids)} labelled training images; cross-fitting needs {CROSSFIT_MIN}"}
    else:
        inputs.paths, inputs.data = sets["train_paths"][-CROSSFIT_MAX:], sets["train_data"][-CROSSFIT_MAX:]
    return inputs, keep


def compute(inputs: ScanInputs, ctx: ComputeContext) -> ScanOutputs:
    out = ScanOutputs()
    progress = ctx.progress
    if inputs.tta_model is not None and inputs.tta_paths:
        adapter: Any = load_adapter(inputs.tta_model, device=inputs.device)
        classes, n = inputs.tta_classes, len(inputs.tta_paths)
        for start in range(0, n, CHUNK):
            images = [load_rgb(p) for p in inputs.tta_paths[start:start + CHUNK]]
            views = adapter.predict([ImageOps.mirror(im) for im in images]).boxes or []
            progress(0.05 + 0.4 * min(1.0, (start + CHUNK) / n), f"mirrored {start + len(images)} proposals")
            for boxes, im, dets in zip(inputs.tta_boxes[start:start + CHUNK], images, views, strict=True):
                view = image_boxes(flip_boxes(dets, im.width), classes, scored=True)
                out.found.append(unstable_box_flags(image_boxes(boxes, classes, scored=True), view,
                                                    possible=inputs.possible, cut=inputs.cut))
    if inputs.skipped is None:
        def make() -> Any:
            return create_adapter("detector", classes=inputs.classes, task=inputs.task,
                                  image_size=inputs.image_size, num_threads=inputs.threads, device=inputs.device,
                                  tile_size=inputs.tile_size, tile_overlap=inputs.tile_overlap,
                                  background_share=inputs.background_share)

        config = FitConfig(algorithm="precise", epochs=inputs.epochs, seed=inputs.seed, batch_size=8,
                           num_threads=inputs.threads)
        pred = cross_fit(make, LabelledImages(inputs.paths, objects(inputs.data)), config=config,
                         folds=CROSSFIT_FOLDS, seed=inputs.seed,
                         progress=lambda f, m: progress(0.5 + 0.5 * (0.02 + 0.93 * f), m))
        assert pred.boxes is not None
        out.preds = [image_boxes(b, inputs.classes, scored=True) for b in pred.boxes]
        out.gts = [image_boxes(shapes(d), inputs.classes, scored=False) for d in inputs.data]
    return out


def commit(session: Session, *, project: Project, inputs: ScanInputs, keep: dict, outputs: ScanOutputs
           ) -> dict[str, Any]:
    assert project.id is not None
    out = _unstable(session, project, inputs, keep, outputs)
    if inputs.skipped is not None:
        return out | inputs.skipped
    new = flag_hard_examples(session, project_id=project.id, mv=keep["mv"], item_ids=keep["ids"],
                             versions=keep["versions"], preds=outputs.preds, gts=outputs.gts, classes=inputs.classes,
                             source="cross-fitted")
    session.commit()
    return out | {"box_flags": new, "checked_images": len(keep["ids"]), "folds": CROSSFIT_FOLDS}


def _unstable(session: Session, project: Project, inputs: ScanInputs, keep: dict,
              outputs: ScanOutputs) -> dict[str, Any]:
    assert project.id is not None
    rows = keep["proposals"]
    if not rows:
        return {"unstable_boxes": 0, "checked_proposals": 0}
    classes, mv, new = inputs.tta_classes, keep["mv"], 0
    for (pid, item_id, version), found in zip(rows, outputs.found, strict=True):
        p = session.get(Prediction, pid)
        if p is None:
            continue
        p.data = {**p.data, "tta_flip": len(found)}
        session.add(p)
        for kind in sorted({k for k, _, _ in found}):
            open_, done = keep["judged"][kind]
            if item_id in open_ or (item_id, version) in done:
                continue
            boxes = [{**d, "label": classes[d["label"]]} for k, _, d in found if k == kind]
            session.add(ReviewFlag(project_id=project.id, item_id=item_id, model_version_id=mv.id, kind=kind,
                                   score=max(sc for k, sc, _ in found if k == kind), detail={
                                       "boxes": boxes, "threshold": inputs.cut, "annotation_version": version,
                                       "source": "test-time augmentation", "prediction_id": pid}))
            open_.add(item_id)
            new += 1
    session.commit()
    return {"unstable_boxes": new, "checked_proposals": len(rows)}
