"""Detection and segmentation: boxes (polygons) per image.

* train: the detector adapter (:mod:`learning.adapters.detector`) on people's boxes
  (polygons for segmentation); its predictions of the hold-out images (never trained
  on) certify per-class box thresholds (:mod:`learning.box_calibration`), stored as
  ``{"kind": "boxes", "in_force": {class: t}, "possible": s, ...}``, and give the
  hold-out's hard examples: ``false detection`` / ``missed detection`` flags
  (:func:`service.loop.detect.flag_hard_examples`).
* infer: an image is proposed (``data={"boxes": [...], "polygons": [...]}``) only when it
  passes the completeness rule: some box at or above its class threshold and none in
  the uncertain band (:func:`learning.box_calibration.propose`).
* hard examples: mirrored views of open proposals, and cross-fitted detectors over the
  training images (:mod:`service.pipelines.detection_scans`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlmodel import Session, select

import learning.adapters.detector  # noqa: F401  (registers the "detector" adapter)
from learning.adapters import create_adapter
from learning.adapters.base import FitConfig, LabelledImages
from learning.box_calibration import calibrate_boxes, map50, propose
from learning.policy import Policy
from service.config import Settings
from service.crud.annotations import canonical
from service.crud.classes import class_names
from service.crud.items import blob_store
from service.jobs.executor import ComputeContext
from service.loop.detect import (
    CHUNK,
    DEFAULT_IMAGE_SIZE,
    box_mode,
    flag_hard_examples,
    image_boxes,
    labelled_sets,
    objects,
    proposal,
    shapes,
)
from service.loop.infer import Tally, begin_publish, open_pool, publish_summary, settle
from service.models import ModelVersion, Prediction, Project, Task
from service.pipelines import detection_scans as scans
from service.pipelines.base import InferPlan, ModelConfig, Progress, ScanPlan, TrainOutputs, TrainPlan


@dataclass
class TrainInputs:
    """A detector fit: images with their annotation dicts (``{"boxes": [...], "polygons": [...]}``)."""

    version: int
    classes: list[str]
    task: Task
    policy: Policy
    model: ModelConfig
    train_paths: list[Path]
    train_data: list[dict[str, Any]]
    holdout_paths: list[Path]
    holdout_data: list[dict[str, Any]]
    path: Path


@dataclass
class InferInputs:
    model_path: str
    classes: list[str]
    thresholds: list[float | None]
    possible: float
    segmentation: bool
    paths: list[Path]
    model: ModelConfig


@dataclass
class ImageDecision:
    """One image's outcome: ``proposal`` (``None``: not complete enough to propose) with
    its weakest kept score, else ``fallback`` data (the top boxes) with the best score."""

    query_score: float
    proposal: dict[str, Any] | None
    proposal_score: float
    fallback: dict[str, Any] = field(default_factory=dict)
    fallback_score: float = 0.0


class DetectionPipeline:
    """Detection and segmentation projects."""

    name = "detection"
    scans_hard_examples = True

    # -- train -------------------------------------------------------------------------------

    def prepare_train(self, session: Session, *, project: Project, settings: Settings, policy: Policy,
                      version: int, path: Path) -> TrainPlan:
        assert project.id is not None
        classes = class_names(session, project.id)
        sets = labelled_sets(session, project, settings)
        inputs = TrainInputs(version=version, classes=classes, task=project.task, policy=policy,
                             model=ModelConfig.from_settings(settings), train_paths=sets["train_paths"],
                             train_data=sets["train_data"], holdout_paths=sets["holdout_paths"],
                             holdout_data=sets["holdout_data"], path=path)
        return TrainPlan(classes=classes, algorithm="precise", n_train=len(sets["train_ids"]),
                         n_holdout=len(sets["holdout_ids"]), inputs=inputs,
                         keep={"holdout_ids": sets["holdout_ids"], "holdout_versions": sets["holdout_versions"]})

    def compute_train(self, inputs: TrainInputs, ctx: ComputeContext) -> TrainOutputs:
        policy, classes, progress = inputs.policy, inputs.classes, ctx.progress
        progress(0.02, f"training detector v{inputs.version} on {len(inputs.train_paths)} images")
        adapter: Any = create_adapter("detector", classes=classes, task=str(inputs.task.value),
                                      image_size=policy.image_size or DEFAULT_IMAGE_SIZE,
                                      tile_size=policy.tile_size, tile_overlap=policy.tile_overlap,
                                      background_share=policy.background_share,
                                      num_threads=inputs.model.torch_threads, device=inputs.model.device)
        holdout = LabelledImages(inputs.holdout_paths, objects(inputs.holdout_data)) if inputs.holdout_paths else None
        config = FitConfig(algorithm="precise", epochs=policy.epochs, seed=inputs.version, batch_size=8,
                           num_threads=inputs.model.torch_threads)
        report = adapter.fit(LabelledImages(inputs.train_paths, objects(inputs.train_data)), holdout,
                             config=config, progress=lambda f, m: progress(0.03 + 0.85 * f, m))
        hp = adapter.holdout_predictions.boxes if adapter.holdout_predictions is not None else []
        preds = [image_boxes(b, classes, scored=True) for b in hp]
        gts = [image_boxes(shapes(d), classes, scored=False) for d in inputs.holdout_data]
        cal = calibrate_boxes(preds, gts, len(classes), target=policy.target_precision, delta=policy.delta,
                              mode=box_mode(policy.calibration))
        thresholds = {"kind": "boxes", "mode": policy.calibration, **cal.to_dict(classes),
                      "in_force": dict(zip(classes, cal.thresholds, strict=True))}
        metrics = {"n_holdout": len(gts), "holdout_map50": map50(preds, gts, len(classes)) if gts else None,
                   "fit_seconds": report.seconds, "epochs_run": report.epochs_run,
                   "device": str(getattr(adapter, "trained_on", None) or inputs.model.device),
                   "history": [h.__dict__ for h in report.history][-50:]}
        progress(0.92, "saving model")
        adapter.save(inputs.path)
        return TrainOutputs(model_path=inputs.path, thresholds=thresholds, metrics=metrics, holdout=(preds, gts))

    def after_train(self, session: Session, *, project: Project, mv: ModelVersion, plan: TrainPlan,
                    outputs: TrainOutputs) -> dict[str, Any]:
        assert project.id is not None
        preds, gts = outputs.holdout
        flags = flag_hard_examples(session, project_id=project.id, mv=mv, item_ids=plan.keep["holdout_ids"],
                                   versions=plan.keep["holdout_versions"], preds=preds, gts=gts, classes=plan.classes,
                                   source="hold-out")
        session.commit()
        return {"holdout_map50": mv.metrics.get("holdout_map50"), "flags": flags}

    # -- infer -------------------------------------------------------------------------------

    def prepare_infer(self, session: Session, *, project: Project, mv: ModelVersion, settings: Settings,
                      policy: Policy, rng: Any) -> InferPlan:
        assert project.id is not None
        store = blob_store(settings)
        classes = list(mv.classes)
        pool = open_pool(session, project.id)
        inputs = InferInputs(model_path=str(mv.path), classes=classes,
                             thresholds=[(mv.thresholds.get("in_force") or {}).get(c) for c in classes],
                             possible=float(mv.thresholds.get("possible", 0.05)),
                             segmentation=project.task == Task.segmentation,
                             paths=[store.path(i.sha256) for i in pool], model=ModelConfig.from_settings(settings))
        return InferPlan(inputs, keep={"ids": [int(i.id) for i in pool if i.id is not None]})

    def compute_infer(self, inputs: InferInputs, ctx: ComputeContext) -> list[ImageDecision]:
        adapter: Any = inputs.model.load(inputs.model_path)
        n = len(inputs.paths)
        dets: list[list[dict[str, Any]]] = []
        for start in range(0, n, CHUNK):
            dets += adapter.predict(inputs.paths[start:start + CHUNK]).boxes or []
            ctx.progress(0.05 + 0.8 * min(1.0, (start + CHUNK) / n), f"predicted {len(dets)} of {n}")
        out = []
        for d in dets:
            pb = image_boxes(d, inputs.classes, scored=True)
            ok, keep = propose(pb, inputs.thresholds, inputs.possible)
            s = np.asarray(pb.scores)
            live = s >= inputs.possible
            out.append(ImageDecision(
                query_score=float((1 - np.abs(2 * s[live] - 1)).max()) if live.any() else 0.0,
                proposal=proposal(d, keep, inputs.segmentation) if ok else None,
                proposal_score=float(s[keep].min()) if ok and keep.any() else 0.0,
                fallback={"boxes": d[:20]}, fallback_score=float(s.max(initial=0.0))))
        return out

    def commit_infer(self, session: Session, *, project: Project, mv: ModelVersion, policy: Policy,
                     plan: InferPlan, outputs: list[ImageDecision], rng: Any, progress: Progress) -> dict[str, Any]:
        ids: list[int] = plan.keep["ids"]
        fresh = begin_publish(session, ids)
        rejected = set(session.exec(select(Prediction.item_id).where(Prediction.model_version_id == mv.id,
                                                                     Prediction.state == "rejected")).all())
        tally = Tally()
        for item_id, d in zip(ids, outputs, strict=True):
            item = fresh.get(item_id)
            if item is None:  # labelled while the model predicted
                continue
            item.query_score = d.query_score
            proposed = d.proposal is not None and item_id not in rejected
            data = d.proposal if proposed and d.proposal is not None else d.fallback
            score = d.proposal_score if proposed else d.fallback_score
            pred = Prediction(item_id=item_id, project_id=project.id, model_version_id=mv.id,  # type: ignore[arg-type]
                              label=None, score=score, state="proposed" if proposed else "none", data=data)
            settle(session, item=item, pred=pred, version_data=canonical(data), policy=policy, rng=rng, tally=tally)
        session.commit()
        return publish_summary(mv, len(ids), tally, progress)

    # -- hard examples -----------------------------------------------------------------------

    def prepare_scan(self, session: Session, *, project: Project, settings: Settings, seed: int
                     ) -> ScanPlan | None:
        inputs, keep = scans.prepare(session, project=project, settings=settings, seed=seed)
        return ScanPlan(inputs, keep)

    def compute_scan(self, inputs: scans.ScanInputs, ctx: ComputeContext) -> scans.ScanOutputs:
        return scans.compute(inputs, ctx)

    def commit_scan(self, session: Session, *, project: Project, plan: ScanPlan,
                    outputs: scans.ScanOutputs) -> dict[str, Any]:
        return scans.commit(session, project=project, inputs=plan.inputs, keep=plan.keep, outputs=outputs)

    def hard_examples_summary(self, out: dict[str, Any]) -> str:
        return (f"{out['box_flags']} box flags on {out['checked_images']} labelled images, "
                f"{out['unstable_boxes']} unstable proposals")
