"""Classification (multiclass, multilabel): one image, one or more class labels.

* train: a classifier (:mod:`learning.adapters.classifier`) on people's labels, ``fast``
  (a head on cached embeddings) or ``precise`` (fine-tuned), optionally semi-supervised
  on a seeded sample of the pool's and hold-out's images; calibrated per class, pooled or
  ``auto`` on the hold-out (:func:`service.loop.train.calibrate_version`).
* infer: an image is proposed when its top class (multilabel: every class) clears its
  threshold; every pool item gets a query score (:func:`service.loop.scoring.query_scores`,
  exploring while a class is short of labels); hold-out items are predicted and scored
  with the pool (:mod:`service.crud.holdout`).
* hard examples (multiclass): ``label error`` and ``unstable``
  (:mod:`service.pipelines.classification_scans`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import bindparam, delete, update
from sqlmodel import Session, col, select

from learning.adapters import create_adapter
from learning.adapters.base import FitConfig, FitEmbeddings, LabelledImages
from learning.policy import Policy, short_classes
from service.config import Settings
from service.crud import holdout
from service.crud.items import blob_store
from service.jobs.executor import ComputeContext
from service.loop.data import label_counts, snapshot
from service.loop.features import cached_embeddings
from service.loop.infer import Tally, begin_publish, open_pool, predict_pool, publish_summary, settle, thresholds_for
from service.loop.scoring import query_scores
from service.loop.train import calibrate_version, fit_config, unlabelled_paths, unlabelled_sample
from service.models import Item, ModelVersion, Prediction, Project, Task
from service.pipelines import classification_scans as scans
from service.pipelines.base import InferPlan, ModelConfig, Progress, ScanPlan, TrainOutputs, TrainPlan


def classifier(model: ModelConfig, classes: list[str], task: Task, policy: Policy) -> Any:
    """The classifier adapter a policy trains (its ``feature_version`` names the embedding space)."""
    return create_adapter("classifier", classes=classes, task=str(task.value), backbone=model.backbone,
                          checkpoint=model.checkpoint, image_size=policy.image_size or model.image_size,
                          num_threads=model.torch_threads, features=policy.features, mirror=policy.mirror,
                          **model.classifier_options())


@dataclass
class TrainInputs:
    """A classification fit: ``y_*`` ``[N]`` class ids (multilabel ``[N, C]`` 0/1). ``fast``:
    ``embed_*`` are train + hold-out + ``n_unlabelled`` sampled images, embedded in that order."""

    version: int
    classes: list[str]
    task: Task
    policy: Policy
    model: ModelConfig
    fit: FitConfig
    train_paths: list[Path]
    y_train: np.ndarray
    holdout_paths: list[Path]
    y_holdout: np.ndarray
    embed_shas: list[str]
    embed_paths: list[Path]
    n_unlabelled: int
    path: Path


@dataclass
class InferInputs:
    """Predict ``paths`` (the open pool, then the calibrating hold-out's ``n - n_pool``
    images) with the model at ``model_path`` and decide at ``thresholds``."""

    model_path: str
    algorithm: str
    classes: list[str]
    task: Task
    thresholds: list[float | None]
    shas: list[str]
    paths: list[Path]
    n_pool: int
    strategy: str
    explore: bool
    query_seed: int
    model: ModelConfig


@dataclass
class InferOutputs:
    """Per image (rows of ``paths``): query score ``[N]``, proposed labels (empty: none)
    with the score they carry, and the top classes ``[[class, p], ...]``."""

    scores: np.ndarray
    labels: list[list[str]]
    label_scores: list[float]
    tops: list[list[list[Any]]]


def decide(task: Task, classes: list[str], p: np.ndarray, ths: list[float | None]) -> tuple[list[str], float]:
    """Labels proposed for probabilities ``p [C]`` at thresholds ``ths`` (``None``: never), and their score."""
    if task == Task.multilabel:
        chosen = [c for c, s, t in zip(classes, p, ths, strict=True) if t is not None and s >= t]
        return chosen, float(max((p[classes.index(c)] for c in chosen), default=float(p.max())))
    c = int(p.argmax())
    s = float(p[c])
    t = ths[c]
    return ([classes[c]] if t is not None and s >= t else []), s


def top(classes: list[str], p: np.ndarray, k: int = 3) -> list[list[Any]]:
    idx = np.argsort(-p)[:k]
    return [[classes[int(i)], round(float(p[int(i)]), 5)] for i in idx]


class Handoff:
    """The classifier the embedding step built, for the fit in the same process (in-process, one
    classifier per training, as before sharding); never pickled: another process builds its own."""

    def __init__(self) -> None:
        self.adapter: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.adapter = None


@dataclass(frozen=True)
class EmbedShards:
    """A :class:`service.jobs.executor.ShardTask`: a shard of ``(sha, path)`` -> its frozen-backbone
    embeddings ``[n, D]`` through the on-disk cache (the new classifier's feature space);
    each worker builds the backbone once."""

    model: ModelConfig
    classes: tuple[str, ...]
    task: Task
    policy: Policy
    handoff: Handoff = field(default_factory=Handoff, compare=False, repr=False)

    @property
    def key(self) -> tuple[Any, ...]:
        p = self.policy
        return ("embed", self.model, self.classes, self.task, p.image_size, p.features, p.mirror)

    def load(self) -> Any:
        self.handoff.adapter = classifier(self.model.here(), list(self.classes), self.task, self.policy)
        return self.handoff.adapter

    def run(self, adapter: Any, shard: list[tuple[str, Path]], report: Callable[[float], None]) -> np.ndarray:
        return cached_embeddings(adapter, [s for s, _ in shard], [p for _, p in shard],
                                 settings=self.model.cache_settings(), progress=lambda f, m: report(f))


@dataclass(frozen=True)
class PredictShards:
    """A :class:`service.jobs.executor.ShardTask`: a shard of ``(sha, path)`` -> ``(probs [n, C],
    embeddings [n, D] or None)`` with the saved model at ``model_path`` (loaded once per worker)."""

    model_path: str
    algorithm: str
    n_classes: int
    model: ModelConfig

    @property
    def key(self) -> tuple[Any, ...]:
        return ("predict", self.model_path, self.model)

    def load(self) -> Any:
        return self.model.here().load(self.model_path)

    def run(self, adapter: Any, shard: list[tuple[str, Path]], report: Callable[[float], None]
            ) -> tuple[np.ndarray, np.ndarray | None]:
        return predict_pool(adapter, algorithm=self.algorithm, n_classes=self.n_classes, shas=[s for s, _ in shard],
                            paths=[p for _, p in shard], settings=self.model.cache_settings(),
                            progress=lambda f, m: report((f - 0.05) / 0.6))


@dataclass
class FitJob:
    """What the fit step gets: the training inputs and (``fast``) their embeddings, rows as
    :class:`TrainInputs` lists them (train, hold-out, unlabelled sample)."""

    inputs: TrainInputs
    vecs: np.ndarray | None
    handoff: Handoff | None = None


def fit_classifier(job: FitJob, ctx: ComputeContext) -> TrainOutputs:
    """Fit, calibrate on the hold-out and save (no database; run by ``ctx.run``)."""
    inputs, vecs = job.inputs, job.vecs
    policy, progress = inputs.policy, ctx.progress
    n, h = len(inputs.train_paths), len(inputs.holdout_paths)
    adapter = job.handoff.adapter if job.handoff is not None else None
    if adapter is None:
        adapter = classifier(inputs.model.here(), inputs.classes, inputs.task, policy)
    emb = None
    if vecs is not None:
        emb = FitEmbeddings(train=vecs[:n], holdout=vecs[n:n + h],
                            unlabelled=vecs[n + h:] if inputs.n_unlabelled else None)
    train = LabelledImages(list(inputs.train_paths), inputs.y_train)
    held = LabelledImages(list(inputs.holdout_paths), inputs.y_holdout) if h else None
    report = adapter.fit(train, held, config=inputs.fit, progress=lambda f, m: progress(0.45 + 0.4 * f, m),
                         embeddings=emb)
    probs = report.holdout_probs if report.holdout_probs is not None else np.zeros((0, len(inputs.classes)))
    ths, metrics, curve = calibrate_version(inputs.task, inputs.classes, probs, inputs.y_holdout, policy)
    metrics.update({"fit_seconds": report.seconds, "epochs_run": report.epochs_run,
                    "stopped_early": report.stopped_early,
                    "device": str(getattr(adapter, "trained_on", None) or inputs.model.here().device),
                    "history": [x.__dict__ for x in report.history][-50:]})
    progress(0.9, "saving model")
    adapter.save(inputs.path)
    return TrainOutputs(model_path=inputs.path, thresholds=ths, metrics=metrics, risk_coverage=curve)


class ClassificationPipeline:
    """Multiclass (``scans_hard_examples``) and multilabel projects."""

    def __init__(self, name: str, *, scans_hard_examples: bool) -> None:
        self.name = name
        self.scans_hard_examples = scans_hard_examples

    # -- train -------------------------------------------------------------------------------

    def prepare_train(self, session: Session, *, project: Project, settings: Settings, policy: Policy,
                      version: int, path: Path) -> TrainPlan:
        snap = snapshot(session, project=project, store=blob_store(settings), with_pool=policy.uses_unlabelled)
        sample = unlabelled_sample(policy, snap, version) if policy.uses_unlabelled else []
        shas: list[str] = []
        paths: list[Path] = []
        if policy.algorithm == "fast":
            every_sha, every_path = snap.pool_shas + snap.holdout_shas, unlabelled_paths(snap)
            shas = snap.train_shas + snap.holdout_shas + [every_sha[i] for i in sample]
            paths = snap.train_paths + snap.holdout_paths + [every_path[i] for i in sample]
        inputs = TrainInputs(version=version, classes=snap.classes, task=snap.task, policy=policy,
                             model=ModelConfig.from_settings(settings),
                             fit=fit_config(policy, snap, seed=version, sample=sample),
                             train_paths=list(snap.train_paths), y_train=snap.y(snap.train_labels),
                             holdout_paths=list(snap.holdout_paths), y_holdout=snap.y(snap.holdout_labels),
                             embed_shas=shas, embed_paths=paths, n_unlabelled=len(sample) if shas else 0, path=path)
        return TrainPlan(classes=snap.classes, algorithm=policy.algorithm, n_train=len(snap.train_ids),
                         n_holdout=len(snap.holdout_ids), inputs=inputs)

    def compute_train(self, inputs: TrainInputs, ctx: ComputeContext) -> TrainOutputs:
        """``fast``: embed (sharded: ``ctx.map``), then fit, calibrate and save as one step
        (``ctx.run``: a Ray task holding a GPU where there is one)."""
        n, m = len(inputs.train_paths), len(inputs.embed_shas)
        ctx.progress(0.02, f"training v{inputs.version} on {n} labels ({inputs.policy.algorithm})")
        vecs, handoff = None, Handoff()
        if inputs.policy.algorithm == "fast":
            task = EmbedShards(model=inputs.model, classes=tuple(inputs.classes), task=inputs.task,
                               policy=inputs.policy, handoff=handoff)
            parts = ctx.map(task, ctx.shards(list(zip(inputs.embed_shas, inputs.embed_paths, strict=True))),
                            progress=lambda f: ctx.progress(0.02 + 0.4 * f, f"embedded {round(f * m)} of {m} items"))
            vecs = np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)
        return ctx.run(fit_classifier, FitJob(inputs, vecs, handoff), gpu=True)

    def after_train(self, session: Session, *, project: Project, mv: ModelVersion, plan: TrainPlan,
                    outputs: TrainOutputs) -> dict[str, Any]:
        return {"holdout_accuracy": mv.metrics.get("holdout_accuracy")}

    # -- infer -------------------------------------------------------------------------------

    def prepare_infer(self, session: Session, *, project: Project, mv: ModelVersion, settings: Settings,
                      policy: Policy, rng: Any) -> InferPlan:
        assert project.id is not None
        store = blob_store(settings)
        pool = open_pool(session, project.id)
        # hold-out items keep their place in the pool (service/crud/holdout.py): predicted and
        # scored with it, so the queue and Pending can tell when they would have been taken
        ghosts = holdout.calibration_items(session, project.id)
        every = pool + [g for g, _ in ghosts]
        short = short_classes(label_counts(session, project.id)[0], list(mv.classes), policy.min_labels_per_class)
        inputs = InferInputs(model_path=str(mv.path), algorithm=mv.algorithm, classes=list(mv.classes),
                             task=project.task, thresholds=thresholds_for(mv, list(mv.classes)),
                             shas=[i.sha256 for i in every], paths=[store.path(i.sha256) for i in every],
                             n_pool=len(pool), strategy=policy.strategy, explore=bool(short),
                             query_seed=rng.getrandbits(32),
                             model=ModelConfig.from_settings(settings))
        return InferPlan(inputs, keep={"ids": [int(i.id) for i in pool if i.id is not None], "short": short,
                                       "ghosts": [(int(g.id or 0), truth) for g, truth in ghosts]})

    def compute_infer(self, inputs: InferInputs, ctx: ComputeContext) -> InferOutputs:
        """Predict (sharded: ``ctx.map``, each worker loads the model once), then score and decide here."""
        n = len(inputs.shas)
        task = PredictShards(model_path=inputs.model_path, algorithm=inputs.algorithm,
                             n_classes=len(inputs.classes), model=inputs.model)
        parts = ctx.map(task, ctx.shards(list(zip(inputs.shas, inputs.paths, strict=True))),
                        progress=lambda f: ctx.progress(0.05 + 0.6 * f, f"predicted {round(f * n)} of {n}"))
        probs = (np.concatenate([p for p, _ in parts]) if parts
                 else np.zeros((0, len(inputs.classes)), dtype=np.float32))
        vecs = np.concatenate([v for _, v in parts]) if parts and all(v is not None for _, v in parts) else None
        ctx.progress(0.7, "scoring and proposing")
        # diversity-aware strategies spread a batch over the embeddings (fast models have them
        # cached; for precise ones they fall back to their uncertainty score)
        # while a class has too few labels to train on, uncertainty sampling also draws at random
        scores = query_scores(inputs.strategy, probs, multilabel=inputs.task == Task.multilabel, embeddings=vecs,
                              rng=np.random.default_rng(inputs.query_seed), explore=inputs.explore)
        decided = [decide(inputs.task, inputs.classes, p, inputs.thresholds) for p in probs]
        return InferOutputs(scores=np.asarray(scores, dtype=np.float64), labels=[d[0] for d in decided],
                            label_scores=[d[1] for d in decided], tops=[top(inputs.classes, p) for p in probs])

    def commit_infer(self, session: Session, *, project: Project, mv: ModelVersion, policy: Policy,
                     plan: InferPlan, outputs: InferOutputs, rng: Any, progress: Progress) -> dict[str, Any]:
        assert project.id is not None
        ids: list[int] = plan.keep["ids"]
        n = len(ids)
        fresh = begin_publish(session, ids)
        _publish_holdout(session, project_id=project.id, mv=mv, ghosts=plan.keep["ghosts"], outputs=outputs,
                         start=n, auto=policy.auto_accept)
        rejected = {(p.item_id, p.label) for p in session.exec(select(Prediction).where(
            Prediction.model_version_id == mv.id, Prediction.state == "rejected")).all()}
        tally = Tally()
        for k, item_id in enumerate(ids):  # ids[k] is the pool's k-th item, row k of the outputs
            item = fresh.get(item_id)
            if item is None:
                continue
            labels, score = outputs.labels[k], outputs.label_scores[k]
            label = labels[0] if len(labels) == 1 else (";".join(labels) if labels else None)
            proposed = bool(labels) and (item.id, label) not in rejected
            item.query_score = float(outputs.scores[k])
            pred = Prediction(item_id=item_id, project_id=project.id, model_version_id=mv.id,  # type: ignore[arg-type]
                              label=label, score=score, state="proposed" if proposed else "none",
                              data={"labels": labels, "top": outputs.tops[k]})
            settle(session, item=item, pred=pred, version_data={"labels": labels, "boxes": [], "polygons": []},
                   policy=policy, rng=rng, tally=tally)
        session.commit()
        return publish_summary(mv, n, tally, progress) | {"exploring_for": plan.keep["short"]}

    # -- hard examples -----------------------------------------------------------------------

    def prepare_scan(self, session: Session, *, project: Project, settings: Settings, seed: int
                     ) -> ScanPlan | None:
        if not self.scans_hard_examples:
            return None
        inputs, keep = scans.prepare(session, project=project, settings=settings, seed=seed)
        return ScanPlan(inputs, keep)

    def compute_scan(self, inputs: scans.ScanInputs, ctx: ComputeContext) -> scans.ScanOutputs:
        return scans.compute(inputs, ctx)

    def commit_scan(self, session: Session, *, project: Project, plan: ScanPlan,
                    outputs: scans.ScanOutputs) -> dict[str, Any]:
        return scans.commit(session, project=project, inputs=plan.inputs, keep=plan.keep, outputs=outputs)

    def hard_examples_summary(self, out: dict[str, Any]) -> str:
        return f"{out.get('label_errors', 0)} label errors, {out.get('unstable', 0)} unstable"


def _publish_holdout(session: Session, *, project_id: int, mv: ModelVersion, ghosts: list[tuple[int, list[str]]],
                     outputs: InferOutputs, start: int, auto: bool) -> None:
    """Hold-out items' query scores and predictions (rows ``start..`` of ``outputs``; state
    ``holdout``; ``label`` only where the model would propose it rightly); with
    ``auto_accept`` a proposal takes the item."""
    if not ghosts:
        return
    ids = [i for i, _ in ghosts]
    session.exec(delete(Prediction).where(col(Prediction.item_id).in_(ids), col(Prediction.state) == holdout.STATE))
    scores = outputs.scores[start:]
    session.connection().execute(update(Item).where(col(Item.id) == bindparam("iid")).values(
        query_score=bindparam("qs")), [{"iid": i, "qs": float(q)} for i, q in zip(ids, scores, strict=True)])
    proposed = []
    for k, (item_id, truth) in enumerate(ghosts, start=start):
        labels, score = outputs.labels[k], outputs.label_scores[k]
        right = bool(labels) and sorted(labels) == sorted(truth)
        session.add(Prediction(item_id=item_id, project_id=project_id, model_version_id=int(mv.id or 0),
                               label=";".join(labels) if right else None, score=score, state=holdout.STATE,
                               data={"labels": labels, "top": outputs.tops[k]}))
        if labels:
            proposed.append(item_id)
    if auto:
        holdout.take_after_auto(session, proposed)
