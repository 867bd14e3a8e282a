"""Replay a fully labelled dataset through the real loop with a simulated labeler.

Everything but the person is the service's own code on an in-process database:
the queue (leases, hold-out stream, strategy order), annotation submits, the
retraining policy, the train and infer jobs, calibration and pre-labelling.
The oracle answers each leased item with its true label. At every training
the proposals in Pending are checked against the truth, as a truthful
labeler would confirm or reject them, which gives the realised precision and
the coverage of the unlabelled pool. The same run with the ``random``
strategy gives the baseline for label efficiency.
"""

from __future__ import annotations

import json
import logging
import random
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from lab.fashion import FASHION_CLASSES, FASHION_DIR, load_fashion, png
from lab.metrics import best_hindsight, fresh_holdouts, label_efficiency
from lab.plot import plot
from learning.policy import Policy
from service.config import Settings
from service.crud.annotations import AnnotationIn, submit
from service.crud.items import ingest
from service.crud.projects import create_project
from service.crud.queue import next_item
from service.crud.users import create_user
from service.db import engine_from_settings, upgrade_schema
from service.jobs.runner import enqueue
from service.loop.infer import current_model
from service.loop.state import maybe_train
from service.main import build_executor
from service.models import Item, ItemStatus, Prediction, Project, ProjectCreate, Role

log = logging.getLogger("labelloop.simulate")
_DEFAULT = Policy()


@dataclass
class SimConfig:
    pool: int = 10_000
    seed: int = 0
    budgets: list[int] = field(default_factory=lambda: [1000, 2000])
    # policy knobs: the product's defaults (learning.policy.Policy), retrain_every included
    retrain_every: int = _DEFAULT.retrain_every_labels or 100
    algorithm: str = _DEFAULT.algorithm
    strategy: str = _DEFAULT.strategy
    holdout_share: float = _DEFAULT.holdout_share
    holdout_min: int = _DEFAULT.holdout_min
    target: float = _DEFAULT.target_precision
    delta: float = _DEFAULT.delta
    calibration: str = _DEFAULT.calibration
    image_size: int | None = _DEFAULT.image_size  # None: the Settings' image_size, as in the product
    semi_supervised: bool | None = _DEFAULT.semi_supervised
    epochs: int = _DEFAULT.epochs
    features: str = _DEFAULT.features
    mirror: bool = _DEFAULT.mirror
    min_labels_per_class: int = _DEFAULT.min_labels_per_class
    extra_policy: dict[str, Any] = field(default_factory=dict)  # any other knob (``--policy KEY=VALUE``)
    dataset: Path = FASHION_DIR
    torch_threads: int = 2



def workspace(cfg: Any, work_dir: Path | None, prefix: str) -> tuple[Path, Settings, Engine]:
    """A fresh data dir with an in-process SQLite database at the schema head for one simulated
    project (``cfg``: a simulator config with ``image_size``, ``torch_threads`` and ``seed``);
    embeddings cached under ``work_dir`` are shared through a link."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=work_dir))
    size = {"image_size": cfg.image_size} if getattr(cfg, "image_size", None) else {}
    settings = Settings(data_dir=tmp, database_url=f"sqlite:///{tmp / 'sim.db'}", secret_key="sim",
                        scheduler_enabled=False, run_jobs_in_process=False, **size,  # type: ignore[arg-type]
                        torch_threads=cfg.torch_threads, thumbnail_size=32, random_seed=cfg.seed)
    if work_dir is not None and (work_dir / "embeddings").exists():
        (tmp / "embeddings").symlink_to((work_dir / "embeddings").resolve())
    engine = engine_from_settings(settings)
    upgrade_schema(engine)
    return tmp, settings, engine


def run(cfg: SimConfig, *, work_dir: Path | None = None, strategy: str | None = None) -> dict[str, Any]:
    """One simulated project; returns a curve of checkpoints (one per training)."""
    strategy = strategy or cfg.strategy
    t0 = time.perf_counter()
    x, y = load_fashion(cfg.dataset, cfg.pool, cfg.seed)
    tmp, settings, engine = workspace(cfg, work_dir, "labelloop-sim-")
    timing = {"setup": 0.0, "labelling": 0.0, "jobs": 0.0, "measure": 0.0}
    policy = {"min_labels_per_class": cfg.min_labels_per_class, "retrain_every_labels": cfg.retrain_every,
              "algorithm": cfg.algorithm, "strategy": strategy, "holdout_share": cfg.holdout_share,
              "holdout_min": cfg.holdout_min,
              "target_precision": cfg.target, "delta": cfg.delta, "calibration": cfg.calibration,
              "image_size": cfg.image_size, "semi_supervised": cfg.semi_supervised, "epochs": cfg.epochs,
              "features": cfg.features, "mirror": cfg.mirror, **cfg.extra_policy}
    with Session(engine, expire_on_commit=False) as s:
        admin = create_user(s, name="oracle", role=Role.admin, password=None)
        project = create_project(s, data=ProjectCreate(name="sim", classes=FASHION_CLASSES, policy=policy),
                                 user=admin)
        truth: dict[int, str] = {}
        for start in range(0, len(x), 1000):
            files = [(f"fm_{start + i:05d}.png", png(x[start + i])) for i in range(min(1000, len(x) - start))]
            res = ingest(s, project=project, files=files, settings=settings, thumbnails=False)
            for c in res.created:
                truth[c["id"]] = FASHION_CLASSES[int(y[int(c["file"][3:8])])]
        s.commit()
    timing["setup"] = time.perf_counter() - t0
    executor = build_executor(engine, settings)  # LABELLOOP_EXECUTOR: in-process, or jobs on Ray
    rng = random.Random(cfg.seed)
    curve: list[dict[str, Any]] = []
    labels = 0
    max_budget = max(cfg.budgets)
    while labels < max_budget:
        t = time.perf_counter()
        with Session(engine, expire_on_commit=False) as s:
            project = s.get(Project, project.id)  # type: ignore[assignment]
            assert project is not None and admin is not None
            got = next_item(s, project=project, user=admin, ttl_seconds=600, rng=rng)
            if got is None:
                break
            assert got.item.id is not None and got.lease.id is not None
            submit(s, item=got.item, project=project, user=admin, if_match=None,
                   body=AnnotationIn(labels=[truth[got.item.id]], lease_id=got.lease.id))
            s.commit()
        labels += 1
        timing["labelling"] += time.perf_counter() - t
        if labels % 20 == 0 or labels == max_budget:
            with Session(engine, expire_on_commit=False) as s:
                p = s.get(Project, project.id)
                assert p is not None
                job = maybe_train(s, p)
                if job is None and labels % cfg.retrain_every == 0 and current_model(s, int(p.id or 0)) is not None:
                    # checkpoints line up with the budgets: train at every multiple of retrain_every
                    job = enqueue(s, kind="train", project_id=p.id, payload={"reason": "simulation checkpoint"}).id
                    s.commit()
            if job is not None:
                t = time.perf_counter()
                executor.run_pending()
                timing["jobs"] += time.perf_counter() - t  # train + infer jobs (embeddings included)
                t = time.perf_counter()
                point = measure(engine, project.id, truth, labels)  # type: ignore[arg-type]
                timing["measure"] += time.perf_counter() - t
                curve.append(point)
                log.info("%s labels=%d coverage=%.3f precision=%s", strategy, labels, point["coverage"],
                         point["precision"])
    executor.stop()  # a private Ray this run started goes with it
    engine.dispose()
    return {"strategy": strategy, "curve": curve, "timing": timing, "data_dir": str(tmp),
            "executor": settings.executor, "seconds": time.perf_counter() - t0}


def measure(engine: Any, project_id: int, truth: dict[int, str], labels: int) -> dict[str, Any]:
    """Score the current proposals against the truth (what a truthful labeler would decide)."""
    with Session(engine) as s:
        mv = current_model(s, project_id)
        pool = s.exec(select(Item.id).where(Item.project_id == project_id, col(Item.status).in_(
            [ItemStatus.unlabelled, ItemStatus.skipped, ItemStatus.proposed]))).all()
        preds = s.exec(select(Prediction).where(Prediction.project_id == project_id,
                                                col(Prediction.state).in_(["proposed", "none"]),
                                                Prediction.model_version_id == (mv.id if mv else -1))).all()
        proposed = [p for p in preds if p.state == "proposed"]
        right = sum(1 for p in proposed if p.label == truth[p.item_id])
        top = [p.data.get("top", [[None]])[0][0] for p in preds]
        acc = float(np.mean([t == truth[p.item_id] for t, p in zip(top, preds, strict=True)])) if preds else None
        scores = np.array([p.score for p in preds])
        correct = np.array([t == truth[p.item_id] for t, p in zip(top, preds, strict=True)])
        hindsight = best_hindsight(scores, correct, 0.95)
        ths = mv.thresholds if mv else {}
        job_metrics = mv.metrics if mv else {}
        n_holdout = job_metrics.get("n_holdout") or (ths.get("pooled") or {}).get("n_total")
        policy = Policy.from_dict(mv.policy if mv else {})
        index = {c: i for i, c in enumerate(FASHION_CLASSES)}
        pred = np.array([index.get(t, 0) for t in top], dtype=np.int64)
        true = np.array([index[truth[p.item_id]] for p in preds], dtype=np.int64)
        fresh = fresh_holdouts(scores, correct, int(n_holdout), target=policy.target_precision, delta=policy.delta,
                               mode=policy.calibration, pred=pred, truth=true, n_classes=len(FASHION_CLASSES)
                               ) if n_holdout and int(n_holdout) <= len(scores) else None
    return {"labels": labels, "model_version": mv.version if mv else None, "pool": len(pool),
            "proposed": len(proposed), "right": right,
            "precision": right / len(proposed) if proposed else None,
            "coverage": len(proposed) / len(pool) if pool else 0.0,
            "pool_accuracy": acc, "hindsight_coverage": hindsight,
            "fresh_holdout_coverage": fresh["coverage"] if fresh else None,
            "holdout": n_holdout,
            "threshold": (ths.get("pooled") or {}).get("threshold"),
            "holdout_accuracy": job_metrics.get("holdout_accuracy"),
            "fit_seconds": job_metrics.get("fit_seconds")}


def simulate(cfg: SimConfig, out: Path, *, baseline: bool = True, baseline_factor: float = 2.0,
             work: Path | None = None) -> dict[str, Any]:
    """Active run + random baseline; writes ``report.json`` and plots into ``out``.

    ``work`` holds the runs' data dirs and the embedding cache (share it between seeds)."""
    out.mkdir(parents=True, exist_ok=True)
    work = work or out / "work"
    work.mkdir(parents=True, exist_ok=True)
    (work / "embeddings").mkdir(exist_ok=True)
    active = run(cfg, work_dir=work)
    report: dict[str, Any] = {"config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
                              "active": active}
    if baseline:
        bcfg = SimConfig(**{**asdict(cfg), "budgets": [int(max(cfg.budgets) * baseline_factor)]})
        report["random"] = run(bcfg, work_dir=work, strategy="random")
        report["label_efficiency"] = [label_efficiency(active["curve"], report["random"]["curve"], b)
                                      for b in cfg.budgets]
    report["at_budgets"] = [next((p for p in active["curve"] if p["labels"] == b), None) for b in cfg.budgets]
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    plot(report, out)
    return report

