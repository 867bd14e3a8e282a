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

import gzip
import io
import json
import logging
import random
import struct
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

import service.jobs.tasks  # noqa: F401  (registers the train and infer jobs)
from learning import calibration
from learning.calibration_auto import thresholds_by_mode, top_probs
from learning.policy import Policy
from service.config import Settings
from service.crud.annotations import AnnotationIn, submit
from service.crud.items import ingest
from service.crud.projects import create_project
from service.crud.queue import next_item
from service.crud.users import create_user
from service.db import engine_from_settings, upgrade_schema
from service.jobs.runner import ThreadExecutor, enqueue
from service.loop.infer import current_model
from service.loop.state import maybe_train
from service.models import Item, ItemStatus, Prediction, Project, ProjectCreate, Role

log = logging.getLogger("labelloop.simulate")
_DEFAULT = Policy()
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                   "ankle-boot"]


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


def load_idx(images: Path, labels: Path) -> tuple[np.ndarray, np.ndarray]:
    """IDX files (gzipped or not) -> ``uint8 [N, H, W]``, ``int64 [N]``."""
    def read(p: Path) -> bytes:
        data = p.read_bytes()
        return gzip.decompress(data) if p.suffix == ".gz" else data
    raw = read(images)
    _, n, h, w = struct.unpack(">IIII", raw[:16])
    x = np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(n, h, w)
    rawy = read(labels)
    y = np.frombuffer(rawy, dtype=np.uint8, offset=8).astype(np.int64)
    return x, y


def load_fashion(root: Path, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    x, y = load_idx(root / "train-images-idx3-ubyte.gz", root / "train-labels-idx1-ubyte.gz")
    idx = np.random.default_rng(seed).permutation(len(x))[:n]
    return x[idx], y[idx]


def _png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


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
            files = [(f"fm_{start + i:05d}.png", _png(x[start + i])) for i in range(min(1000, len(x) - start))]
            res = ingest(s, project=project, files=files, settings=settings, thumbnails=False)
            for c in res.created:
                truth[c["id"]] = FASHION_CLASSES[int(y[int(c["file"][3:8])])]
        s.commit()
    timing["setup"] = time.perf_counter() - t0
    executor = ThreadExecutor(engine, settings)
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
    engine.dispose()
    return {"strategy": strategy, "curve": curve, "timing": timing, "data_dir": str(tmp),
            "seconds": time.perf_counter() - t0}


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
        hindsight = _best_hindsight(scores, correct, 0.95)
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


def fresh_holdouts(scores: np.ndarray, correct: np.ndarray, n_holdout: int, *, draws: int = 200, seed: int = 0,
                   target: float = 0.95, delta: float = 0.05, mode: str = "pooled", pred: np.ndarray | None = None,
                   truth: np.ndarray | None = None, n_classes: int | None = None,
                   **options: Any) -> dict[str, float]:
    """What fresh random hold-outs of ``n_holdout`` items from the pool itself would certify.

    ``scores`` / ``correct``: ``[N]`` the model's top score on each pool item and whether its
    top class is right. Each of ``draws`` seeded draws calibrates on ``n_holdout`` items under
    the policy's ``mode`` (``pooled``; ``auto`` and ``per_class`` also need each item's top
    class ``pred [N]``, true class ``truth [N]`` and ``n_classes``; ``options`` go on to
    :func:`learning.calibration.calibrate`) and pre-labels the pool at the thresholds it proves.
    Returns the mean certified ``coverage`` of the pool, the share of draws that certify
    ``none`` and the share whose pre-labels fall ``below_target``. A run's own certificate is
    one such draw (its hold-out was drawn from the pool as it then was): the mean over draws is
    the same expectation without that draw's luck, so it tells a weak model from an unlucky
    hold-out and compares policies on far fewer seeds.
    """
    if not 0 < n_holdout <= len(scores):
        raise ValueError(f"need 0 < n_holdout <= {len(scores)} pool items, got {n_holdout}")
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    scores, correct = np.asarray(scores, dtype=np.float64), np.asarray(correct, dtype=bool)
    if mode != "pooled" and (pred is None or truth is None or not n_classes):
        raise ValueError(f"calibration {mode!r} needs pred, truth and n_classes")
    probs = top_probs(pred, scores, n_classes) if mode != "pooled" else None  # type: ignore[arg-type]
    rng = np.random.default_rng(seed)
    cov, none, low = np.zeros(draws), 0, 0
    for i in range(draws):
        idx = rng.choice(len(scores), n_holdout, replace=False)
        if probs is None:
            t = calibration.calibrate(scores[idx], correct[idx], target=target, delta=delta, **options)
            above = scores >= t.threshold if t.threshold is not None else np.zeros(len(scores), bool)
        else:
            ths = thresholds_by_mode(mode, probs[idx], np.asarray(truth)[idx], target=target, delta=delta, **options)
            cut = np.array([np.inf if t is None else t for t in ths])
            above = scores >= cut[np.asarray(pred, dtype=np.int64)]
        if not above.any():
            none += 1
            continue
        cov[i] = float(above.mean())
        low += int(correct[above].mean() < target)
    return {"coverage": float(cov.mean()), "none": none / draws, "below_target": low / draws}


def _best_hindsight(scores: np.ndarray, correct: np.ndarray, target: float) -> float:
    """Largest coverage whose precision on the pool itself reaches ``target`` (an upper reference)."""
    if len(scores) == 0:
        return 0.0
    order = np.argsort(-scores)
    prec = np.cumsum(correct[order]) / np.arange(1, len(order) + 1)
    ok = np.flatnonzero(prec >= target)
    return float((ok.max() + 1) / len(scores)) if len(ok) else 0.0


def label_efficiency(active: list[dict], baseline: list[dict], budget: int) -> dict[str, Any]:
    """How many labels random sampling needs to reach the active run's coverage at ``budget``."""
    a = next((p for p in active if p["labels"] == budget), None)
    if a is None:
        return {"budget": budget, "ratio": None}
    target_cov = a["coverage"]
    pts = [(p["labels"], p["coverage"]) for p in baseline]
    for (l0, c0), (l1, c1) in zip(pts, pts[1:], strict=False):
        if c0 < target_cov <= c1:
            need = l0 + (l1 - l0) * (target_cov - c0) / (c1 - c0)
            return {"budget": budget, "coverage": target_cov, "random_labels_needed": need, "ratio": need / budget}
    if pts and pts[0][1] >= target_cov:
        return {"budget": budget, "coverage": target_cov, "random_labels_needed": pts[0][0],
                "ratio": pts[0][0] / budget}
    last = pts[-1][0] if pts else 0
    return {"budget": budget, "coverage": target_cov, "random_labels_needed": f"> {last}",
            "ratio": f"> {last / budget:.2f}" if budget else None}


def mean_curve(runs: list[list[dict[str, Any]]], key: str = "coverage") -> list[dict[str, Any]]:
    """One point per budget every run has: the mean of ``key`` over the runs' checkpoints,
    under ``coverage`` (what :func:`label_efficiency` reads) whatever ``key`` is."""
    if not runs:
        return []
    budgets = sorted(set.intersection(*({p["labels"] for p in r if p} for r in runs)))
    return [{"labels": b, "coverage": float(np.mean([next(p[key] for p in r if p and p["labels"] == b)
                                                     for r in runs]))} for b in budgets]


def efficiency_interval(active: list[list[dict[str, Any]]], baseline: list[list[dict[str, Any]]], budget: int,
                        *, level: float = 0.95, reps: int = 2000, seed: int = 0,
                        paired: bool = False) -> dict[str, Any]:
    """Label efficiency at ``budget`` on the mean curves, with a percentile bootstrap interval.

    ``active`` / ``baseline``: one checkpoint list per seed. Each replicate redraws the seeds
    of each arm with replacement and recomputes :func:`label_efficiency` on the mean curves;
    a coverage random sampling never reached counts as above every finite ratio. ``paired``:
    ``active[i]`` and ``baseline[i]`` ran on the same pool (same seed) and are redrawn
    together, so that how hard a pool is counts once. Seeds are the unit because a run's
    checkpoints share one model history and one hold-out: the spread between seeds is what
    a new project would see. Returns ``ratio`` (all seeds), the
    interval's ends ``low`` and ``high`` (``"> x"`` where an end lies past the baseline's last
    budget) and the replicates (``draws``, for :func:`share_below`).
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be between 0 and 1, got {level}")
    if not active or not baseline:
        raise ValueError("need at least one run in each arm")
    if paired and len(active) != len(baseline):
        raise ValueError(f"paired arms need as many runs: {len(active)} and {len(baseline)}")
    point = label_efficiency(mean_curve(active), mean_curve(baseline), budget)
    if point["ratio"] is None:
        raise ValueError(f"not every active run has a checkpoint at {budget} labels")
    rng = np.random.default_rng(seed)
    draws = np.empty(reps)
    for i in range(reps):
        ia = rng.integers(0, len(active), len(active))
        ib = ia if paired else rng.integers(0, len(baseline), len(baseline))
        a, b = [active[j] for j in ia], [baseline[j] for j in ib]
        draws[i] = _as_number(label_efficiency(mean_curve(a), mean_curve(b), budget)["ratio"])
    lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2], method="inverted_cdf")  # no inf - inf
    last = max(p["labels"] for p in mean_curve(baseline)) / budget
    return {"budget": budget, "ratio": point.get("ratio"), "level": level, "reps": reps,
            "low": float(lo) if np.isfinite(lo) else f"> {last:.2f}",
            "high": float(hi) if np.isfinite(hi) else f"> {last:.2f}", "draws": draws}


def share_below(interval: dict[str, Any], ratio: float) -> float:
    """Share of :func:`efficiency_interval`'s bootstrap replicates below ``ratio``."""
    return float(np.mean(interval["draws"] < ratio))


def _as_number(ratio: Any) -> float:
    """``label_efficiency``'s ratio as a number: ``"> x"`` (never reached) is infinity."""
    if ratio is None:
        return float("nan")
    return float("inf") if isinstance(ratio, str) else float(ratio)


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


def plot(report: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [("active", report["active"])] + ([("random", report["random"])] if "random" in report else [])
    for key, ylabel in (("coverage", "coverage of the unlabelled pool"),
                        ("precision", "realised pre-label precision"),
                        ("pool_accuracy", "accuracy on the unlabelled pool")):
        fig, ax = plt.subplots(figsize=(6, 4))
        for name, r in runs:
            pts = [(p["labels"], p[key]) for p in r["curve"] if p[key] is not None]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", label=f"{name} ({r['strategy']})")
        if key == "precision":
            ax.axhline(report["config"]["target"], color="grey", linestyle="--", label="target")
        ax.set_xlabel("human labels")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / f"{key}.png", dpi=100)
        plt.close(fig)
