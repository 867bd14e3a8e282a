"""Look-alike grids and the cold start: the ``cluster`` and ``cold_start`` jobs, grid leases.

**Grids.** The ``cluster`` job embeds the pool that no pre-label covers (items
``unlabelled`` or ``skipped``; proposals live in Pending), cuts k-means pages of
4, 6 and 9 items (:func:`embeddings.cluster.grid_pages`) and suggests a class per
page from the current model's latest predictions (``Prediction.data["top"]``).
The pages are :class:`~service.models.GridPage` rows of the job (page ids
``"<job id>-<size>-<index>"``); its ``result`` says what the cut went by:
``{"model_version_id", "feature_version", "n_items", "n_pages": {"4": n, "6": n, "9": n}}``.
The newest succeeded cluster job is served (page leases, confirm and skip:
:mod:`service.loop.grids`). A ``clusters`` check re-clusters after each inference
and after new uploads.

**Cold start.** Before any model exists the queue's strategy stream would be
random. The ``cold_start`` job embeds the pool with the pretrained backbone and
ranks representatives of its k-means regions (:func:`learning.query.cold_start`)
farthest-first away from what is already labelled, writing ``Item.query_score``
(``1 < score <= 2`` for picks, ``0`` for the rest), so the first labels span the data.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import bindparam, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from embeddings.cluster import choose_k, grid_pages
from learning import query
from learning.adapters import create_adapter, load_adapter
from learning.grid_purity import fit_correctness, purity_cut
from learning.policy import Policy
from service.config import Settings
from service.crud.classes import class_names
from service.crud.holdout import calibration_items
from service.crud.items import blob_store
from service.jobs.executor import ComputeContext
from service.jobs.runner import JobConflict, JobContext, enqueue
from service.loop.features import cached_embeddings
from service.loop.infer import current_model
from service.models import (
    GridPage,
    Item,
    ItemStatus,
    Job,
    JobState,
    ModelVersion,
    Prediction,
    Project,
    Task,
    utcnow,
)

GRID = "grid"
SIZES = (4, 6, 9)
POOL = (ItemStatus.unlabelled, ItemStatus.skipped)
CLASSIFICATION = (Task.multiclass, Task.multilabel)
COLD_START_SAMPLE = 20_000  # cold_start costs O(N k D) per iteration
ANCHORS = 5_000  # labelled items the farthest-first order keeps away from


def compute_options(settings: Settings) -> dict[str, Any]:
    """Where features are computed: ``LABELLOOP_DEVICE``, the CPU runtime, the shared folder
    of exported backbones and the decoding threads (hashable values, for the cache below)."""
    return {"device": str(settings.torch_device), "runtime": settings.cpu_runtime,
            "runtime_dir": str(settings.models_dir / "runtime"), "decode_workers": settings.decode_workers}


def load_model(path: str | Path, settings: Settings) -> Any:
    """A saved model on this deployment's device (a classifier keeps its calibrated runtime)."""
    opts = compute_options(settings)
    return load_adapter(path, device=opts["device"], runtime_dir=opts["runtime_dir"],
                        decode_workers=opts["decode_workers"])


@lru_cache(maxsize=2)
def pretrained_features(backbone: str, checkpoint: str | None, image_size: int, threads: int, features: str,
                        mirror: bool, device: str = "cpu", runtime: str = "torch", runtime_dir: str | None = None,
                        decode_workers: int = 0) -> Any:
    return create_adapter("classifier", classes=["_0", "_1"], backbone=backbone, checkpoint=checkpoint,
                          image_size=image_size, num_threads=threads, features=features, mirror=mirror,
                          device=device, runtime=runtime, runtime_dir=runtime_dir, decode_workers=decode_workers)


def feature_adapter(project: Project, mv: ModelVersion | None, settings: Settings) -> Any:
    """The current ``fast`` model (frozen backbone, so its feature space is cached), else
    the pretrained backbone at the project's image size (kept in memory between jobs)."""
    return FeatureSource.of(project, mv, settings).adapter()


@dataclass(frozen=True)
class FeatureSource:
    """The embedding space grids, the cold start and label errors work in, as plain values a
    worker process can rebuild: the current ``fast`` model's (its backbone is frozen, so its
    features are cached), else the pretrained backbone's at the project's image size."""

    model_path: str | None
    backbone: str
    checkpoint: str | None
    image_size: int
    threads: int
    features: str
    mirror: bool
    options: tuple[tuple[str, Any], ...] = ()  # compute_options: device, runtime, ...

    @classmethod
    def of(cls, project: Project, mv: ModelVersion | None, settings: Settings) -> FeatureSource:
        policy = Policy.from_dict(project.policy or {})
        return cls(model_path=mv.path if mv is not None and mv.algorithm == "fast" and mv.path else None,
                   backbone=settings.backbone,
                   checkpoint=str(settings.backbone_checkpoint) if settings.backbone_checkpoint else None,
                   image_size=int(policy.image_size or settings.image_size), threads=settings.torch_threads,
                   features=policy.features, mirror=policy.mirror,
                   options=tuple(sorted(compute_options(settings).items())))

    def adapter(self) -> Any:
        opts = dict(self.options)
        if self.model_path is not None:
            return load_adapter(self.model_path, device=opts.get("device", "cpu"), runtime_dir=opts.get("runtime_dir"),
                                decode_workers=opts.get("decode_workers", 0))
        return pretrained_features(self.backbone, self.checkpoint, self.image_size, self.threads,
                                   self.features, self.mirror, **opts)


@dataclass(frozen=True)
class FeatureShards:
    """A :class:`service.jobs.executor.ShardTask`: a shard of ``(sha, path)`` -> its embeddings
    ``[n, D]`` in ``source``'s space, through the on-disk cache under ``data_dir`` (each worker
    builds the adapter once)."""

    source: FeatureSource
    data_dir: str
    batch_size: int

    @property
    def key(self) -> tuple[Any, ...]:
        return ("features", self.source)

    def load(self) -> Any:
        return self.source.adapter()

    def run(self, adapter: Any, shard: list[tuple[str, Path]], report: Any) -> np.ndarray:
        cache = Settings.model_construct(data_dir=Path(self.data_dir), inference_batch_size=self.batch_size)
        return cached_embeddings(adapter, [s for s, _ in shard], [p for _, p in shard], settings=cache,
                                 progress=lambda f, m: report(f))


def embed_items(source: FeatureSource, shas: list[str], paths: list[Path], *, settings: Settings,
                compute: ComputeContext | None = None, progress: Any = None) -> np.ndarray:
    """``[N, D]`` embeddings of the images in ``source``'s space, through the on-disk cache: in
    shards on ``compute``'s executor (``ctx.map``: Ray actors under ``LABELLOOP_EXECUTOR=ray``),
    else here. ``progress(fraction, message)``."""
    if compute is None or not shas:
        return cached_embeddings(source.adapter(), shas, paths, settings=settings, progress=progress)
    task = FeatureShards(source, str(settings.data_dir), int(settings.inference_batch_size))
    report = None if progress is None else (lambda f: progress(f, f"embedding {len(shas)} images"))
    parts = compute.map(task, compute.shards(list(zip(shas, paths, strict=True))), progress=report)
    return np.concatenate(parts).astype(np.float32, copy=False)


def pool_items(session: Session, project_id: int) -> list[Item]:
    return list(session.exec(select(Item).where(Item.project_id == project_id, col(Item.status).in_(POOL))
                             .order_by(col(Item.id))).all())


def predicted_probs(session: Session, mv: ModelVersion, ids: list[int], *, multilabel: bool) -> np.ndarray:
    """``[N, C]`` from the latest ``top`` of ``mv`` per item (rest of the mass spread evenly);
    rows of items without a prediction are NaN."""
    index = {c: i for i, c in enumerate(mv.classes)}
    pos = {iid: k for k, iid in enumerate(ids)}
    out = np.full((len(ids), len(index)), np.nan)
    for p in session.exec(select(Prediction).where(Prediction.model_version_id == mv.id)
                          .order_by(col(Prediction.id))).all():
        k = pos.get(p.item_id)
        if k is None:
            continue
        known = [(index[c], float(s)) for c, s in p.data.get("top", []) if c in index]
        rest = len(index) - len(known)
        out[k] = 0.0 if multilabel or not rest else max(0.0, 1.0 - sum(s for _, s in known)) / rest
        for i, s in known:
            out[k, i] = s
    return out


def cluster_project(session: Session, *, project: Project, settings: Settings, progress: Any,
                    job_id: int, compute: ComputeContext | None = None) -> dict[str, Any]:
    """Cut grid pages of every size for the pool and store them as job ``job_id``'s
    :class:`GridPage` rows (a rerun of the job replaces its pages); the job stores the
    returned summary."""
    assert project.id is not None
    out = cut_pages(session, project=project, settings=settings, progress=progress, job_id=job_id,
                    compute=compute)
    pages: dict[str, list[dict[str, Any]]] = out.pop("pages")
    for old in session.exec(select(GridPage).where(GridPage.job_id == job_id)).all():
        session.delete(old)
    session.flush()
    session.add_all([GridPage(job_id=job_id, project_id=project.id, size=int(size), position=n,
                              **{k: v for k, v in page.items() if k != "id"})
                     for size, listed in pages.items() for n, page in enumerate(listed)])
    session.commit()
    out["n_pages"] = {size: len(listed) for size, listed in pages.items()}
    return out


def cut_pages(session: Session, *, project: Project, settings: Settings, progress: Any,
              job_id: int, compute: ComputeContext | None = None) -> dict[str, Any]:
    """What :func:`cluster_project` stores, with the pages as dicts under ``"pages"``
    (``{"4": [...], "6": [...], "9": [...]}``, ids ``"<job id>-<size>-<index>"``). The pool is
    embedded in shards on ``compute``'s executor where one is given (:func:`embed_items`)."""
    assert project.id is not None
    mv = current_model(session, project.id)
    items = pool_items(session, project.id)
    n_pool = len(items)
    # hold-out items keep their place in the pool (service/crud/holdout.py): each rides on
    # the page of its nearest look-alike, hidden, and a confirm with its class takes it
    ghosts = calibration_items(session, project.id) if project.task in CLASSIFICATION else []
    items += [g for g, _ in ghosts]
    ids = [int(i.id) for i in items if i.id is not None]
    probs = predicted_probs(session, mv, ids, multilabel=project.task == Task.multilabel) if mv else None
    classes = list(mv.classes) if mv else class_names(session, project.id)
    store = blob_store(settings)
    shas, paths = [i.sha256 for i in items], [store.path(i.sha256) for i in items]
    session.commit()  # no transaction (SQLite write lock) while embedding
    out: dict[str, Any] = {"model_version_id": mv.id if mv else None, "n_items": n_pool,
                           "pages": {str(s): [] for s in SIZES}}
    if not n_pool:
        return out
    source = FeatureSource.of(project, mv, settings)
    vecs = embed_items(source, shas, paths, settings=settings, compute=compute,
                       progress=lambda f, m: progress(0.05 + 0.6 * f, m))
    adapter = source.adapter()  # in-process: cached (the pretrained backbone) or small (a fast model)
    out["feature_version"] = adapter.feature_version
    unknown = np.zeros(len(ids), dtype=bool)  # no prediction to go by (uniform rows)
    if probs is not None and mv is not None:
        missing = np.isnan(probs).any(axis=1)
        if missing.any():
            fast = mv.algorithm == "fast" and hasattr(adapter, "predict_embeddings")
            if fast:
                probs[missing] = adapter.predict_embeddings(vecs[missing]).probs
            else:
                probs[missing], unknown = 1.0 / len(classes), missing
    if probs is not None and project.task == Task.multiclass:
        # items the model cannot place go to single labels (the strategy stream serves the
        # least certain first anyway) instead of being deselected from a page one by one
        placed, out["grid_cut"] = on_pages(probs, unknown, n_pool=n_pool, labels=[lab for _, lab in ghosts],
                                           classes=classes, policy=Policy.from_dict(project.policy or {}))
        placed |= unknown
        out["n_uncertain"] = int((~placed[:n_pool]).sum())
    else:
        placed = np.ones(len(ids), dtype=bool)
    ghost = np.arange(len(ids)) >= n_pool
    g_ids = [i for i, ok in zip(ids[n_pool:], placed[n_pool:], strict=True) if ok]
    g_vecs, g_probs = vecs[ghost & placed], probs[ghost & placed] if probs is not None else None
    keep = placed & ~ghost
    ids = [i for i, ok in zip(ids, keep, strict=True) if ok]
    vecs, probs = vecs[keep], probs[keep] if probs is not None else None
    if not ids:
        return out
    for j, size in enumerate(SIZES):
        progress(0.7 + 0.1 * j, f"cutting grids of {size}")
        # small pools: still two clusters per class (purer pages) while pages stay full
        k = max(choose_k(len(ids), size), min(2 * len(classes), max(1, len(ids) // size)))
        # with a model, pages hold look-alikes the model also puts in one class (fewer
        # exceptions), and the leftovers of (cluster, class) groups are pooled per class
        # into full pages: a page of one or two costs about what single labels do (actions
        # per item 0.385 -> 0.323 in `labelloop simulate-review actions`, seed 0, README).
        # Before a model there is no class to pool by, and look-alike clusters stay apart.
        pages = grid_pages(ids, vecs, page_size=size, seed=job_id, probs=probs, k=k,
                           split_by_class=probs is not None, pool_partial=probs is not None)
        # the most typical page of every cluster first, best suggestion first
        pages.sort(key=lambda p: (p.page, -(p.confidence if p.confidence is not None else p.cohesion)))
        out["pages"][str(size)] = [{
            "id": f"{job_id}-{size}-{n}", "cluster": p.cluster, "item_ids": p.item_ids,
            "cohesion": round(p.cohesion, 5),
            "suggested_class": classes[p.suggested_class] if p.suggested_class is not None else None,
            "confidence": None if p.confidence is None else round(p.confidence, 5),
            "agreement": None if p.agreement is None else round(p.agreement, 5),
            "holdout_ids": []} for n, p in enumerate(pages)]
        attach_holdout(out["pages"][str(size)], ids, vecs, probs, g_ids, g_vecs, g_probs)
    progress(1.0, f"{len(ids)} items in {len(out['pages']['9'])} grids of 9")
    return out


def on_pages(probs: np.ndarray, unknown: np.ndarray, *, n_pool: int, labels: list[list[str]], classes: list[str],
             policy: Policy) -> tuple[np.ndarray, dict[str, Any]]:
    """Which rows of ``probs [N, C]`` (the pool's ``n_pool`` rows, then the calibrating
    hold-out's, whose ``labels`` a person gave) go on grid pages: ``grid_min_confidence``,
    then the most likely right up to ``grid_purity`` (:mod:`learning.grid_purity`), the
    likelihood learnt from the hold-out rows. The same rule is applied to pool and
    hold-out rows, so a hold-out item rides on a page exactly when a pool item like it
    would be on one. Returns the mask and what the cut went by (for the job's result)."""
    placed = probs.max(axis=1) >= policy.grid_min_confidence
    info: dict[str, Any] = {"min_confidence": policy.grid_min_confidence, "purity": policy.grid_purity}
    if policy.grid_purity is None:
        return placed, info
    index = {c: i for i, c in enumerate(classes)}
    rows = [n_pool + j for j, lab in enumerate(labels) if len(lab) == 1 and lab[0] in index and not unknown[n_pool + j]]
    fitted = fit_correctness(probs[rows], np.array([index[labels[r - n_pool][0]] for r in rows], dtype=np.int64))
    likely = fitted.predict(probs) if fitted is not None else probs.max(axis=1)
    sure = placed & ~unknown
    sure[n_pool:] = False  # the cut is the pool's; hold-out rows then follow the same rule
    placed &= likely >= purity_cut(likely[sure], policy.grid_purity)
    sure &= placed
    info.update({"likelihood": "hold-out" if fitted is not None else "score", "evidence": len(rows),
                 "expected_purity": round(float(likely[sure].mean()), 4) if sure.any() else None})
    return placed, info


def attach_holdout(pages: list[dict[str, Any]], ids: list[int], vecs: np.ndarray, probs: np.ndarray | None,
                   g_ids: list[int], g_vecs: np.ndarray, g_probs: np.ndarray | None) -> None:
    """Put each hold-out item ``g_ids[j]`` (``g_vecs [G, D]`` unit rows) in ``holdout_ids`` of the
    page of its nearest pool item ``ids`` (``vecs [N, D]``) among those the model puts in the
    same class (``probs`` / ``g_probs`` argmax, when given), where pages are cut by class."""
    where = {iid: n for n, page in enumerate(pages) for iid in page["item_ids"]}
    on_page = np.array([i in where for i in ids], dtype=bool)
    if not g_ids or not on_page.any():
        return
    cls = probs.argmax(axis=1) if probs is not None else None
    g_cls = g_probs.argmax(axis=1) if g_probs is not None else None
    sims = g_vecs @ vecs.T  # [G, N]
    for j, gid in enumerate(g_ids):
        ok = on_page if cls is None or g_cls is None or not (on_page & (cls == g_cls[j])).any() else (
            on_page & (cls == g_cls[j]))
        nearest = int(np.argmax(np.where(ok, sims[j], -np.inf)))
        pages[where[ids[nearest]]]["holdout_ids"].append(int(gid))


def farthest_first(points: np.ndarray, anchors: np.ndarray | None = None) -> np.ndarray:
    """Order ``points [K, D]`` (unit rows) so that every prefix is spread out: start with
    the point farthest from ``anchors [A, D]`` (row 0 without anchors), then repeatedly
    the point farthest from all chosen. Returns ``[K]`` indices."""
    k = len(points)
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    near = np.full(k, np.inf)
    if anchors is not None and len(anchors):
        near = (2.0 - 2.0 * points @ anchors.T).min(axis=1)
    order = [int(np.argmax(near)) if anchors is not None and len(anchors) else 0]
    for _ in range(1, k):
        near = np.minimum(near, 2.0 - 2.0 * points @ points[order[-1]])
        near[order] = -np.inf
        order.append(int(np.argmax(near)))
    return np.asarray(order, dtype=np.int64)


def cold_start_project(session: Session, *, project: Project, settings: Settings, progress: Any,
                       seed: int, compute: ComputeContext | None = None) -> dict[str, Any]:
    """Rank the pool for the queue before any model exists (see the module doc); the sample is
    embedded in shards on ``compute``'s executor where one is given (:func:`embed_items`)."""
    assert project.id is not None
    policy = Policy.from_dict(project.policy or {})
    # hold-out items are ranked with the pool (service/crud/holdout.py), not kept away from
    ghosts = [g for g, _ in calibration_items(session, project.id)]
    items = pool_items(session, project.id) + ghosts
    held = {g.id for g in ghosts}
    done = [i for i in session.exec(select(Item).where(Item.project_id == project.id, col(Item.status).not_in(POOL))
                                    .order_by(col(Item.id).desc()).limit(ANCHORS + len(held))).all()
            if i.id not in held][:ANCHORS]
    session.commit()
    rng = np.random.default_rng(seed)
    sample = [items[i] for i in np.sort(rng.permutation(len(items))[:COLD_START_SAMPLE])]
    if not sample:
        return {"picked": 0, "pool": 0}
    store = blob_store(settings)
    source = FeatureSource.of(project, None, settings)
    vecs = embed_items(source, [i.sha256 for i in sample], [store.path(i.sha256) for i in sample],
                       settings=settings, compute=compute, progress=lambda f, m: progress(0.05 + 0.7 * f, m))
    anchors = embed_items(source, [i.sha256 for i in done], [store.path(i.sha256) for i in done],
                          settings=settings, compute=compute) if done else None
    k = min(policy.batch_size, max(1, len(sample) // 2))
    reps = query.cold_start(vecs, k, rng)
    picks = reps[farthest_first(vecs[reps], anchors)]
    scores = {int(i.id): 0.0 for i in items if i.id is not None}
    picked_ids = [int(sample[row].id or 0) for row in picks.tolist()]
    for r, iid in enumerate(picked_ids):
        scores[iid] = 1.0 + (len(picks) - r) / len(picks)
    if current_model(session, project.id) is not None:
        session.commit()
        return {"skipped": "a model became current; inference scores the pool"}
    stmt = update(Item).where(col(Item.id) == bindparam("iid")).values(query_score=bindparam("qs"))
    session.connection().execute(stmt, [{"iid": i, "qs": s} for i, s in scores.items()])
    session.commit()
    progress(1.0, f"{len(picks)} cold-start picks among {len(items)} items")
    return {"picked": len(picks), "pool": len(items) - len(held), "picked_ids": picked_ids}


def _project_job(ctx: JobContext, session: Session) -> Project:
    project = session.get(Project, ctx.project_id)
    if project is None:
        raise ValueError("project was deleted")
    return project


def cluster_task(ctx: JobContext) -> dict[str, Any]:
    """The ``cluster`` job (:mod:`service.jobs.registry`): :func:`cluster_project`."""
    with Session(ctx.engine, expire_on_commit=False) as s:
        return cluster_project(s, project=_project_job(ctx, s), settings=ctx.settings, progress=ctx.progress,
                               job_id=ctx.job_id, compute=ctx.compute_context())


def cold_start_task(ctx: JobContext) -> dict[str, Any]:
    """The ``cold_start`` job (:mod:`service.jobs.registry`): :func:`cold_start_project`."""
    with Session(ctx.engine, expire_on_commit=False) as s:
        return cold_start_project(s, project=_project_job(ctx, s), settings=ctx.settings, progress=ctx.progress,
                                  seed=ctx.job_id, compute=ctx.compute_context())


def newest_job(session: Session, project_id: int, kind: str, state: JobState | None = None) -> Job | None:
    q = select(Job).where(Job.project_id == project_id, Job.kind == kind)
    if state is not None:
        q = q.where(Job.state == state)
    return session.exec(q.order_by(col(Job.id).desc()).limit(1)).first()


def due_after_infer(session: Session, project_id: int, kind: str, infer_kind: str = "infer") -> bool:
    """True when an inference (``infer_kind``) finished after the newest ``kind`` job was created."""
    infer = newest_job(session, project_id, infer_kind, JobState.succeeded)
    last = newest_job(session, project_id, kind)
    return infer is not None and infer.finished_at is not None and (
        last is None or infer.finished_at > last.created_at)


def _cluster_due(session: Session, project_id: int) -> bool:
    last = newest_job(session, project_id, "cluster")
    fresh = select(Item.id).where(Item.project_id == project_id, col(Item.status).in_(POOL))
    if last is not None:
        fresh = fresh.where(col(Item.created_at) > last.created_at)
    return due_after_infer(session, project_id, "cluster") or session.exec(fresh.limit(1)).first() is not None


def _cold_start_due(session: Session, project_id: int) -> bool:
    if current_model(session, project_id) is not None:
        return False
    pool = select(Item.id).where(Item.project_id == project_id, col(Item.status).in_(POOL))
    unscored = session.exec(pool.where(col(Item.query_score).is_(None)).limit(1)).first() is not None
    picked = session.exec(pool.where(col(Item.query_score) >= 1.0).limit(1)).first() is not None
    last = newest_job(session, project_id, "cold_start")
    failed_lately = last is not None and last.state == JobState.failed and last.finished_at is not None and (
        utcnow() - last.finished_at < timedelta(minutes=10))
    return (unscored or not picked) and session.exec(pool.limit(1)).first() is not None and not failed_lately


def _enqueue_where(engine: Engine, kind: str, due: Any, tasks: tuple[Task, ...]) -> None:
    with Session(engine) as s:
        for project in s.exec(select(Project)).all():
            if project.task in tasks and project.id is not None and due(s, project.id):
                try:
                    enqueue(s, kind=kind, project_id=project.id, payload={"reason": "scheduled"})
                except JobConflict:
                    continue
                s.commit()


def clusters_check(engine: Engine, settings: Settings) -> None:
    _enqueue_where(engine, "cluster", _cluster_due, CLASSIFICATION)


def cold_start_check(engine: Engine, settings: Settings) -> None:
    _enqueue_where(engine, "cold_start", _cold_start_due, tuple(Task))
