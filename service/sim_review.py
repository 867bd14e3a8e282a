"""Simulator experiments for "make every human action count" (Fashion-MNIST, oracle labeler).

Every experiment drives the service's own code on an in-process SQLite database
(:mod:`service.simulate` sets up the same way): the queue (``next_item`` /
``submit``), the retraining policy (``maybe_train``), the ``train``, ``infer``,
``cluster`` and ``hard_examples`` jobs, grid pages (``lease_pages`` /
``confirm_page`` / ``skip_page``), Pending (``list_pending`` / ``confirm`` /
``correct``), audits (``record_audit`` through ``submit``) and the dashboard's
realised precision (``service.loop.stats``). Only the person is simulated.

**1. Actions per item** (:func:`actions_run`). The oracle labels the whole pool and
every action is counted: one per single label, one per confirmed page (grid or
Pending), one per item given its own class (or deselected) on a grid page or
corrected in Pending, one per grid page skipped, one per change of a grid page's
class. Its policy:

* *warm-up*: single labels from the queue (strategy + hold-out streams) until
  ``warmup`` labels; the project retrains on its policy (every
  ``retrain_every`` new labels, grid and Pending labels included);
* then rounds. Each round starts with the model update the policy asks for
  (train -> infer, then the scheduler's ``clusters`` check re-clusters), then:
  (a) *Pending*: pages of ``pending_page`` (24, the web page's size) proposals;
  each wrong proposal is corrected (one action), the rest confirmed (one action);
  (b) *grids*: pages of ``page_size`` (9) served by ``lease_pages``. Let *m* be the
  true class most of the live items share. If *m* covers at least ``min_share``
  of the page the oracle gives every other item its true class on the page (one
  action each; with ``grid_corrections`` off it deselects them instead, one action
  each, and they go back to the queue), sets the
  page's class to *m* when the suggestion differs (one action, the class menu of
  the grid page) and confirms (one action); otherwise it skips the page (one
  action). Grids stop for the round when the policy wants a retraining, when no
  page is left, or when the last ``window`` pages gave fewer labels than actions
  (single labels would do better);
  (c) *single labels* from the queue until the next retraining is due (also
  what labels the leftovers at the end).

Grid purity is the share of a served page whose true class is the page's
suggested class (pages with a model suggestion).

**2. Strategies** (:func:`strategies_run`): :func:`service.simulate.run` per strategy
and seed on the same pool; labels to reach 90% (and 85%) accuracy of the current
model on the unlabelled pool (``pool_accuracy``; the random hold-out's accuracy
is reported beside it), linear between checkpoints.

**3. Label errors** (:func:`label_errors_run`): the oracle answers the queue
wrongly (a uniformly drawn other class) for a ``noise`` share of items; after
``budget`` labels (retraining on the policy) the ``hard_examples`` job runs;
recall and precision of the corrupted labels among the top ``cut`` share of
labelled items ranked by flag score.

**4. Audit** (:func:`audit_run`): ``auto_accept`` on with the default
``audit_share``; the oracle labels ``budget`` items from the queue (audit items
come first and are answered truthfully), the project trains once more on every
label, then the oracle answers the audits still open (on the items themselves:
:func:`answer_audits`).
Per model version the dashboard's interval is compared with the true precision
of all labels that version auto-accepted.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlmodel import Session, col, func, select

import service.jobs.tasks  # noqa: F401  (registers the jobs)
from learning.policy import Policy
from service.config import Settings
from service.crud.annotations import AnnotationIn, submit
from service.crud.items import ingest
from service.crud.projects import create_project
from service.crud.queue import next_item
from service.crud.users import create_user
from service.db import engine_from_settings
from service.jobs.runner import ThreadExecutor, enqueue
from service.loop import pending
from service.loop.clusters import clusters_check
from service.loop.grids import confirm_page, find_page, lease_pages, skip_page
from service.loop.state import maybe_train, project_state
from service.loop.stats import interval, realised_precision
from service.models import Item, ItemStatus, Prediction, Project, ProjectCreate, ReviewFlag, Role, User
from service.simulate import FASHION_CLASSES, FASHION_DIR, SimConfig, _png, load_fashion, run, workspace

log = logging.getLogger("labelloop.sim_review")
OPEN = (ItemStatus.unlabelled, ItemStatus.skipped, ItemStatus.proposed)
MIN_HOLDOUT = 100


@dataclass
class ReviewConfig:
    pool: int = 10_000
    seed: int = 0
    pool_seed: int | None = None  # the pool's draw (default: ``seed``); the loop's randomness follows ``seed``
    # policy knobs: the product's defaults (learning.policy.Policy)
    algorithm: str = Policy.algorithm
    strategy: str = Policy.strategy
    retrain_every: int = Policy.retrain_every_labels or 100
    holdout_share: float = Policy.holdout_share
    target: float = 0.95
    delta: float = 0.05
    calibration: str = Policy.calibration  # the product's default
    image_size: int | None = Policy.image_size  # None: the image_size setting, as in the product
    min_labels_per_class: int = Policy.min_labels_per_class
    dataset: Path = FASHION_DIR
    torch_threads: int = 2
    # actions (1)
    warmup: int = 300
    page_size: int = 9
    pending_page: int = 24
    min_share: float = 0.5
    relabel_pages: bool = True
    grid_corrections: bool = True
    window: int = 5
    # label errors (3) and audit (4)
    budget: int = 2000
    noise: float = 0.05
    cut: float = 0.10
    auto_accept: bool = False
    audit_share: float = 0.02
    extra_policy: dict[str, Any] = field(default_factory=dict)

    def policy(self) -> dict[str, Any]:
        return {"min_labels_per_class": self.min_labels_per_class, "retrain_every_labels": self.retrain_every,
                "algorithm": self.algorithm, "strategy": self.strategy, "holdout_share": self.holdout_share,
                "target_precision": self.target, "delta": self.delta, "calibration": self.calibration,
                "image_size": self.image_size, "auto_accept": self.auto_accept, "audit_share": self.audit_share,
                **self.extra_policy}


# -- the simulated project ---------------------------------------------------------------------


@dataclass
class Harness:
    """One throw-away project: engine, settings, the oracle user and the truth per item id."""

    engine: Any
    settings: Settings
    project_id: int
    user: User
    truth: dict[int, str]
    executor: ThreadExecutor
    rng: random.Random
    data_dir: Path

    def project(self, s: Session) -> Project:
        p = s.get(Project, self.project_id)
        assert p is not None
        return p

    def run_jobs(self) -> int:
        return self.executor.run_pending()

    def train_if_due(self) -> bool:
        """The retraining policy's decision; runs train -> infer when it says so."""
        with Session(self.engine, expire_on_commit=False) as s:
            job = maybe_train(s, self.project(s))
        if job is None:
            return False
        self.run_jobs()
        return True

    def recluster(self) -> None:
        """The scheduler's ``clusters`` check (re-clusters after an inference), then the job."""
        clusters_check(self.engine, self.settings)
        self.run_jobs()

    def open_items(self) -> int:
        with Session(self.engine) as s:
            return int(s.exec(select(func.count()).select_from(Item).where(
                Item.project_id == self.project_id, col(Item.status).in_(OPEN))).one())

    def close(self) -> None:
        self.engine.dispose()


def make_harness(cfg: ReviewConfig, work_dir: Path | None) -> Harness:
    """Ingest the seeded Fashion-MNIST pool into a new project (as :func:`service.simulate.run`)."""
    x, y = load_fashion(cfg.dataset, cfg.pool, cfg.seed if cfg.pool_seed is None else cfg.pool_seed)
    tmp, settings, engine = workspace(cfg, work_dir, "labelloop-review-")
    truth: dict[int, str] = {}
    with Session(engine, expire_on_commit=False) as s:
        user = create_user(s, name="oracle", role=Role.admin, password=None)
        project = create_project(s, data=ProjectCreate(name="sim", classes=FASHION_CLASSES, policy=cfg.policy()),
                                 user=user)
        for start in range(0, len(x), 1000):
            files = [(f"fm_{start + i:05d}.png", _png(x[start + i])) for i in range(min(1000, len(x) - start))]
            res = ingest(s, project=project, files=files, settings=settings, thumbnails=False)
            for c in res.created:
                truth[c["id"]] = FASHION_CLASSES[int(y[int(c["file"][3:8])])]
        s.commit()
        assert project.id is not None
    return Harness(engine, settings, project.id, user, truth, ThreadExecutor(engine, settings),
                   random.Random(cfg.seed), tmp)


def single_label(h: Harness, *, noise: float = 0.0, rng: random.Random | None = None
                 ) -> tuple[int, str, str] | None:
    """One queue draw answered by the oracle: ``(item id, queue reason, label given)``, or None
    when the queue is empty. With ``noise`` the answer is a wrong class that often."""
    with Session(h.engine, expire_on_commit=False) as s:
        got = next_item(s, project=h.project(s), user=h.user, ttl_seconds=600, rng=h.rng)
        if got is None:
            return None
        assert got.item.id is not None and got.lease.id is not None
        label = h.truth[got.item.id]
        if noise and rng is not None and rng.random() < noise:
            label = rng.choice([c for c in FASHION_CLASSES if c != label])
        submit(s, item=got.item, project=h.project(s), user=h.user, if_match=f'"v{got.item.version}"',
               body=AnnotationIn(labels=[label], lease_id=got.lease.id))
        s.commit()
        return got.item.id, str(got.reason), label


# -- 1. actions per item -----------------------------------------------------------------------


@dataclass
class Tally:
    """Actions by kind, labels by route, and the curve (actions, labelled share)."""

    n: int
    actions: Counter = field(default_factory=Counter)
    labels: Counter = field(default_factory=Counter)
    pages: list[dict[str, Any]] = field(default_factory=list)
    curve: list[tuple[int, float]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.actions.values())

    def point(self, open_items: int) -> None:
        self.curve.append((self.total, round(1.0 - open_items / self.n, 5)))


def pending_pages(h: Harness, t: Tally, page: int) -> int:
    """Work through Pending page by page: correct the wrong proposals, confirm the rest."""
    done = 0
    while True:
        with Session(h.engine, expire_on_commit=False) as s:
            project = h.project(s)
            rows, _ = pending.list_pending(s, project=project, limit=page)
            if not rows:
                return done
            right = [r["prediction_id"] for r in rows if r["label"] == h.truth[r["item_id"]]]
            for r in rows:
                if r["label"] != h.truth[r["item_id"]]:
                    pending.correct(s, project=project, prediction_id=r["prediction_id"],
                                    labels=[h.truth[r["item_id"]]], user=h.user)
                    t.actions["pending_correct"] += 1
                    t.labels["pending_correct"] += 1
            if right:
                pending.confirm(s, project=project, ids=right, user=h.user)
                t.actions["pending_confirm"] += 1
                t.labels["pending_confirm"] += len(right)
            s.commit()
        done += len(rows)
        t.point(h.open_items())


def grid_page(h: Harness, t: Tally, cfg: ReviewConfig) -> tuple[int, int] | None:
    """Lease one page and act on it; ``(labels, actions)`` or None when no page is left."""
    with Session(h.engine, expire_on_commit=False) as s:
        project = h.project(s)
        got = lease_pages(s, project=project, user=h.user, size=cfg.page_size, limit=1,
                          ttl_seconds=600)["data"]
        s.commit()
        if not got:
            return None
        live: list[int] = got[0]["item_ids"]
        job, page = find_page(s, got[0]["id"])
        classes = [h.truth[i] for i in live]
        suggested = got[0]["suggested_class"]
        major, n_major = Counter(classes).most_common(1)[0]
        n_sugg = sum(c == suggested for c in classes)
        if suggested is not None and (n_sugg >= n_major or not cfg.relabel_pages):
            major, n_major = suggested, n_sugg
        t.pages.append({"size": len(live), "suggested": suggested, "purity": n_sugg / len(live) if suggested else None,
                        "confidence": got[0]["confidence"], "agreement": got[0]["agreement"],
                        "label": major, "majority_share": n_major / len(live)})
        if n_major / len(live) < cfg.min_share:
            skip_page(s, project=project, page=page, user=h.user)
            t.actions["grid_skip"] += 1
            t.pages[-1]["action"] = "skip"
            s.commit()
            return 0, 1
        others = [i for i in live if h.truth[i] != major]
        fixes = {i: h.truth[i] for i in others} if cfg.grid_corrections else {}
        exclude = [] if cfg.grid_corrections else others
        out = confirm_page(s, project=project, job=job, page=page, user=h.user, label=major, exclude=exclude,
                           corrections=fixes)
        s.commit()
        acts = 1 + len(others) + int(major != suggested)
        got = len(out["labelled"]) + len(out["corrected"])
        t.actions["grid_confirm"] += 1
        t.actions["grid_correct" if cfg.grid_corrections else "grid_deselect"] += len(others)
        t.actions["grid_relabel"] += int(major != suggested)
        t.labels["grid"] += len(out["labelled"])
        t.labels["grid_correct"] += len(out["corrected"])
        t.pages[-1].update(action="confirm", labelled=got, actions=acts)
        return got, acts


def labels_since_training(h: Harness) -> int:
    with Session(h.engine) as s:
        return project_state(s, h.project(s)).labels_since_training


def actions_run(cfg: ReviewConfig, *, work_dir: Path | None = None) -> dict[str, Any]:
    """Label the whole pool with the oracle's policy (module doc); count every action."""
    t0 = time.perf_counter()
    h = make_harness(cfg, work_dir)
    t = Tally(n=len(h.truth))
    seconds: dict[str, float] = {k: 0.0 for k in ("singles", "jobs", "pending", "grids")}
    trainings = 0

    def singles(until_training: bool) -> bool:
        """Queue labels until ``warmup`` single labels (or, with ``until_training``, until the
        policy trains again); False when the queue is empty."""
        nonlocal trainings
        while True:
            ts = time.perf_counter()
            if single_label(h) is None:
                return False
            seconds["singles"] += time.perf_counter() - ts
            t.actions["single"] += 1
            t.labels["single"] += 1
            if t.actions["single"] % 20 == 0:
                t.point(h.open_items())
                tj = time.perf_counter()
                trained = h.train_if_due()
                seconds["jobs"] += time.perf_counter() - tj
                trainings += trained
                if trained if until_training else t.actions["single"] >= cfg.warmup:
                    return True

    singles(until_training=False)
    rounds = 0
    while h.open_items():
        rounds += 1
        tj = time.perf_counter()
        trainings += h.train_if_due()
        h.recluster()
        seconds["jobs"] += time.perf_counter() - tj
        tp = time.perf_counter()
        pending_pages(h, t, cfg.pending_page)
        seconds["pending"] += time.perf_counter() - tp
        tg = time.perf_counter()
        recent: list[tuple[int, int]] = []
        grids = 0
        while labels_since_training(h) < cfg.retrain_every:
            res = grid_page(h, t, cfg)
            if res is None:
                break
            grids += 1
            recent = (recent + [res])[-cfg.window:]
            t.point(h.open_items())
            if len(recent) == cfg.window and sum(a for a, _ in recent) < sum(b for _, b in recent):
                break
        seconds["grids"] += time.perf_counter() - tg
        if labels_since_training(h) < cfg.retrain_every and h.open_items():
            if not singles(until_training=True) and not grids:
                # queue empty: what is left waits in Pending (handled next round) or nowhere
                with Session(h.engine) as s:
                    left = s.exec(select(func.count()).select_from(Item).where(
                        Item.project_id == h.project_id, col(Item.status).in_(OPEN))).one()
                    proposed = s.exec(select(func.count()).select_from(Item).where(
                        Item.project_id == h.project_id, Item.status == ItemStatus.proposed)).one()
                if left and not proposed:
                    log.warning("stuck with %d open items", left)
                    break
        log.info("seed %d round %d: actions=%d labelled=%.3f %s", cfg.seed, rounds, t.total,
                 1 - h.open_items() / t.n, dict(t.actions))
    t.point(h.open_items())
    served = [p for p in t.pages if p["purity"] is not None]
    confirmed = [p for p in t.pages if p.get("action") == "confirm"]
    out = {
        "seed": cfg.seed, "pool": t.n, "actions": t.total, "actions_per_item": t.total / t.n,
        "labelled_share": 1.0 - h.open_items() / t.n, "by_kind": dict(t.actions), "labels_by_route": dict(t.labels),
        "grid_pages_served": len(t.pages), "grid_pages_confirmed": len(confirmed),
        "grid_purity_mean": float(np.mean([p["purity"] for p in served])) if served else None,
        "grid_purity_items": (sum(p["purity"] * p["size"] for p in served) / sum(p["size"] for p in served)
                              if served else None),
        "grid_purity_confirmed": (float(np.mean([p["purity"] for p in confirmed if p["purity"] is not None]))
                                  if confirmed else None),
        "trainings": trainings, "rounds": rounds, "curve": t.curve, "pages": t.pages,
        "seconds": time.perf_counter() - t0, "timing": dict(seconds),
        "label_accuracy": label_accuracy(h)}
    h.close()
    return out


def label_accuracy(h: Harness) -> float | None:
    """Share of current labels equal to the truth (the oracle never errs here: expect 1.0)."""
    from service.loop.data import current_labels

    with Session(h.engine) as s:
        rows = current_labels(s, h.project_id)
        ok = [ann.data.get("labels") == [h.truth[int(it.id or 0)]] for it, ann in rows]
    return float(np.mean(ok)) if ok else None


# -- 2. strategies -----------------------------------------------------------------------------


def labels_to(curve: list[dict[str, Any]], key: str, level: float) -> float | None:
    """Labels at which ``key`` first reaches ``level`` (linear between checkpoints); None if never."""
    prev = None
    for p in curve:
        v = p.get(key)
        if v is None:
            continue
        if v >= level:
            if prev is None or prev[1] >= level:
                return float(p["labels"])
            (l0, v0), (l1, v1) = prev, (p["labels"], v)
            return float(l0 + (l1 - l0) * (level - v0) / (v1 - v0))
        prev = (p["labels"], v)
    return None


def strategies_run(cfg: SimConfig, strategies: list[str], *, work_dir: Path,
                   levels: tuple[float, ...] = (0.85, 0.9)) -> dict[str, Any]:
    """:func:`service.simulate.run` for each strategy on one seed's pool."""
    from service.loop.scoring import query_scores

    probs = np.random.default_rng(cfg.seed).dirichlet(np.ones(len(FASHION_CLASSES)), size=1000)
    # how the infer job calls it (no embeddings): does the diverse strategy differ from plain margin at all?
    same = bool(np.array_equal(query_scores("margin_diverse", probs), query_scores("margin", probs)))
    out: dict[str, Any] = {"seed": cfg.seed, "budget": max(cfg.budgets), "runs": {},
                           "margin_diverse_scores_equal_margin_in_infer": same}
    for name in strategies:
        r = run(cfg, work_dir=work_dir, strategy=name)
        curve = [{k: p[k] for k in ("labels", "pool_accuracy", "holdout_accuracy", "coverage", "precision",
                                    "holdout")} for p in r["curve"]]
        out["runs"][name] = {
            "curve": curve, "seconds": r["seconds"],
            # hold-out accuracy only once the hold-out holds MIN_HOLDOUT items (40 labels: 2 items, accuracy 1.0)
            "labels_to": {f"{key}>={lv}": labels_to([p for p in curve if key == "pool_accuracy"
                                                     or (p["holdout"] or 0) >= MIN_HOLDOUT], key, lv)
                          for key in ("pool_accuracy", "holdout_accuracy") for lv in levels},
            "at": {str(b): next((p["pool_accuracy"] for p in curve if p["labels"] == b), None)
                   for b in (500, 1000, 1500, 2000, 2500, 3000, 4000)}}
        log.info("seed %d %s: %s", cfg.seed, name, out["runs"][name]["labels_to"])
    return out


# -- 3. label errors ---------------------------------------------------------------------------


def label_errors_run(cfg: ReviewConfig, *, work_dir: Path | None = None) -> dict[str, Any]:
    """Noisy oracle for ``budget`` queue labels, then the ``hard_examples`` job; recall and
    precision of the corrupted labels among the top ``cut`` of labelled items by flag score."""
    from service.loop.review import LABEL_ERROR

    t0 = time.perf_counter()
    h = make_harness(cfg, work_dir)
    noise_rng = random.Random(cfg.seed + 7919)
    corrupted: set[int] = set()
    n = 0
    while n < cfg.budget:
        got = single_label(h, noise=cfg.noise, rng=noise_rng)
        if got is None:
            break
        n += 1
        if got[2] != h.truth[got[0]]:
            corrupted.add(got[0])
        if n % 20 == 0:
            h.train_if_due()
    with Session(h.engine) as s:
        enqueue(s, kind="hard_examples", project_id=h.project_id, payload={"reason": "simulation"})
        s.commit()
    tj = time.perf_counter()
    h.run_jobs()
    job_seconds = time.perf_counter() - tj
    with Session(h.engine) as s:
        flags = s.exec(select(ReviewFlag).where(ReviewFlag.project_id == h.project_id,
                                                ReviewFlag.kind == LABEL_ERROR)
                       .order_by(col(ReviewFlag.score).desc(), col(ReviewFlag.id))).all()
        ranked = [f.item_id for f in flags]
        holdout = {int(i or 0) for i in s.exec(select(Item.id).where(Item.project_id == h.project_id,
                                                                 col(Item.is_holdout).is_(True))).all()}
    cut = int(round(cfg.cut * n))
    top = ranked[:cut]
    hits = len(set(top) & corrupted)
    all_hits = len(set(ranked) & corrupted)
    out = {"seed": cfg.seed, "strategy": cfg.strategy, "labels": n, "corrupted": len(corrupted),
           "flags": len(ranked), "cut": cut, "top_flagged": len(top), "hits_in_cut": hits,
           "recall_at_cut": hits / len(corrupted) if corrupted else None,
           "precision_at_cut": hits / len(top) if top else None,
           "recall_all_flags": all_hits / len(corrupted) if corrupted else None,
           "precision_all_flags": all_hits / len(ranked) if ranked else None,
           "corrupted_in_holdout": len(corrupted & holdout),
           "job_seconds": job_seconds, "seconds": time.perf_counter() - t0}
    h.close()
    return out


# -- 4. audit ----------------------------------------------------------------------------------


def answer_audits(h: Harness, reasons: Counter) -> int:
    """The oracle answers every open audit truthfully through the item's annotation endpoint
    (``submit`` without a lease, which records the verdict like a queue answer does). Not through
    the queue's audit stream: with thousands of auto-accepted predictions its candidate query
    takes seconds per draw on SQLite (see the report)."""
    with Session(h.engine) as s:
        ids = sorted(set(s.exec(select(Prediction.item_id).where(
            Prediction.project_id == h.project_id, col(Prediction.audit).is_(True),
            col(Prediction.audit_correct).is_(None), Prediction.state == "auto")).all()))
    for iid in ids:
        with Session(h.engine, expire_on_commit=False) as s:
            item = s.get(Item, iid)
            assert item is not None
            submit(s, item=item, project=h.project(s), user=h.user, if_match=f'"v{item.version}"',
                   body=AnnotationIn(labels=[h.truth[iid]]))
            s.commit()
        reasons["audit (answered on the item)"] += 1
    return len(ids)


def audit_run(cfg: ReviewConfig, *, work_dir: Path | None = None, redraws: int = 0) -> dict[str, Any]:
    """``auto_accept`` on; the oracle labels ``budget`` queue items (audits first, truthfully), the
    project trains once more, the oracle answers the audits still open; the dashboard's interval
    per model version against the truth. With ``redraws`` the last step (train -> infer with its
    auto-accepts and audit draw -> answers) is also repeated on that many copies of the database
    taken before it (the same labels, a fresh audit draw each: ``out["redraws"]``)."""
    t0 = time.perf_counter()
    cfg = ReviewConfig(**{**asdict(cfg), "auto_accept": True})
    h = make_harness(cfg, work_dir)
    reasons: Counter = Counter()
    n = 0
    while n < cfg.budget:
        got = single_label(h)
        if got is None:
            break
        n += 1
        reasons[got[1]] += 1
        if n % 20 == 0:
            h.train_if_due()
    h.engine.dispose()
    snapshot = h.data_dir / "before-last-training.db"
    _copy_db(h.data_dir / "sim.db", snapshot)
    out = _last_training_and_audits(h, cfg, reasons)
    out.update(seed=cfg.seed, labels=n, seconds=time.perf_counter() - t0)
    h.close()
    out["redraws"] = []
    for r in range(redraws):
        db = h.data_dir / f"redraw-{r}.db"
        _copy_db(snapshot, db)
        settings = h.settings.model_copy(update={"database_url": f"sqlite:///{db}"})
        engine = engine_from_settings(settings)
        h2 = Harness(engine, settings, h.project_id, h.user, h.truth, ThreadExecutor(engine, settings),
                     random.Random(cfg.seed * 1000 + r + 1), h.data_dir)
        out["redraws"].append(_last_training_and_audits(h2, cfg, Counter()))
        h2.close()
        db.unlink()
    return out


def _copy_db(src: Path, dst: Path) -> None:
    import sqlite3

    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)


def _last_training_and_audits(h: Harness, cfg: ReviewConfig, reasons: Counter) -> dict[str, Any]:
    if labels_since_training(h):  # a last training on every label (a large retrain_every: this one only)
        with Session(h.engine) as s:
            enqueue(s, kind="train", project_id=h.project_id, payload={"reason": "simulation checkpoint"})
            s.commit()
        h.run_jobs()
    answer_audits(h, reasons)
    rows: list[dict[str, Any]] = []
    with Session(h.engine) as s:
        stats = {r["model_version_id"]: r for r in realised_precision(s, h.project_id, cfg.target)}
        autos = s.exec(select(Prediction).where(Prediction.project_id == h.project_id,
                                                Prediction.state == "auto")).all()
        per: dict[int, list[bool]] = {}
        for p in autos:
            per.setdefault(p.model_version_id, []).append(p.label == h.truth[p.item_id])
    for mv_id, ok in sorted(per.items()):
        st = stats.get(mv_id, {})
        lo, hi = st.get("interval", [None, None])
        true = float(np.mean(ok))
        rows.append({"model_version_id": mv_id, "version": st.get("version"), "auto_accepted": len(ok),
                     "audited": st.get("decided", 0), "audit_right": st.get("right", 0),
                     "reported_precision": st.get("precision"), "interval": [lo, hi], "true_precision": true,
                     "covered": None if lo is None or hi is None else bool(lo <= true <= hi)})
    k = sum(r["audit_right"] for r in rows)
    m = sum(r["audited"] for r in rows)
    lo, hi = interval(k, m)
    n_auto = sum(r["auto_accepted"] for r in rows)
    true_all = (sum(r["true_precision"] * r["auto_accepted"] for r in rows) / n_auto) if n_auto else None
    judged = [r for r in rows if r["covered"] is not None]
    return {"queue_reasons": dict(reasons), "versions": rows,
            "auto_accepted": n_auto, "audited": m, "true_precision": true_all,
            "versions_with_audits": len(judged), "versions_covered": sum(r["covered"] for r in judged),
            "all_versions_covered": bool(judged) and all(r["covered"] for r in judged),
            "pooled": {"audited": m, "right": k, "interval": [lo, hi],
                       "covered": None if lo is None or hi is None or true_all is None
                       else bool(lo <= true_all <= hi)}}


# -- running and reporting ---------------------------------------------------------------------


def _mean(xs: list[Any]) -> float | None:
    vals = [float(x) for x in xs if x is not None]
    return float(np.mean(vals)) if vals else None


def summarize(kind: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over seeds and the acceptance verdicts."""
    if kind == "actions":
        api = [r["actions_per_item"] for r in runs]
        purity = [r["grid_purity_mean"] for r in runs]
        return {"actions_per_item": api, "actions_per_item_mean": _mean(api), "grid_purity": purity,
                "grid_purity_mean": _mean(purity), "target_actions_met": all(a <= 0.35 for a in api),
                "target_purity_met": all(p is not None and p >= 0.9 for p in purity)}
    if kind == "label-errors":
        rec = [r["recall_at_cut"] for r in runs]
        return {"recall_at_cut": rec, "recall_mean": _mean(rec),
                "precision_at_cut": [r["precision_at_cut"] for r in runs],
                "precision_mean": _mean([r["precision_at_cut"] for r in runs]),
                "target_met": all(x is not None and x >= 0.7 for x in rec)}
    if kind == "audit":
        cov = [r["all_versions_covered"] for r in runs]
        pooled = [r["pooled"]["covered"] for r in runs]
        redraws = [d for r in runs for d in r.get("redraws", [])]
        draws = len(runs) + len(redraws)  # independent audit draws (a redraw keeps the labels, not the draw)
        covered = sum(bool(c) for c in cov) + sum(bool(d["all_versions_covered"]) for d in redraws)
        return {"seeds_all_versions_covered": sum(bool(c) for c in cov), "seeds": len(runs),
                "seeds_pooled_covered": sum(bool(c) for c in pooled),
                "seeds_with_audits": sum(r["audited"] > 0 for r in runs),
                "redraws": len(redraws), "redraws_covered": sum(bool(d["all_versions_covered"]) for d in redraws),
                "draws": draws, "draws_covered": covered,
                "target_met": covered >= 0.9 * draws if draws >= 10 else None}
    if kind == "strategies":
        names = sorted({n for r in runs for n in r["runs"]})
        keys = sorted({k for r in runs for v in r["runs"].values() for k in v["labels_to"]})
        table = {n: {k: [r["runs"][n]["labels_to"][k] for r in runs if n in r["runs"]] for k in keys} for n in names}
        at = {n: {b: _mean([r["runs"][n]["at"].get(b) for r in runs if n in r["runs"]])
                  for b in ("1000", "2000", "3000")} for n in names}
        ratios: dict[str, list[Any]] = {}
        for k in keys:  # how many times fewer labels the default strategy needs than random
            for r in runs:
                rand, default = (r["runs"].get(n, {}).get("labels_to", {}).get(k) for n in ("random", "margin"))
                ratios.setdefault(k, []).append(
                    None if default is None else rand / default if rand is not None
                    else f"> {r['budget'] / default:.2f} (random never reached it)")
        return {"labels_to": table, "pool_accuracy_at": at, "random_over_margin": ratios}
    return {}


def _f(x: Any, nd: int = 3) -> str:
    return "-" if x is None else f"{x:.{nd}f}" if isinstance(x, float) else str(x)


def _verdict(ok: bool | None) -> str:
    return "fewer than 10 draws, not judged" if ok is None else "met" if ok else "not met"


def _version_row(run: str, v: dict[str, Any]) -> str:
    lo, hi = v["interval"]
    return (f"| {run} | v{v['version']} | {v['auto_accepted']} | {v['audited']} | {v['audit_right']} | "
            f"{_f(v['reported_precision'])} | [{_f(lo)}, {_f(hi)}] | {_f(v['true_precision'])} | {v['covered']} |")


def markdown(report: dict[str, Any]) -> str:
    """A short table per experiment (the JSON holds everything)."""
    kind, runs, summ = report["experiment"], report["runs"], report["summary"]
    lines = [f"## {kind}", "", f"`{report.get('command', '')}`", ""]
    if kind == "actions":
        lines += ["| seed | actions / item | labelled | grid purity (pages) | purity (items) | pages served "
                  "| by kind | labels by route | trainings | seconds |", "|" + " --- |" * 10]
        lines += [f"| {r['seed']} | {_f(r['actions_per_item'])} | {_f(r['labelled_share'])} | "
                  f"{_f(r['grid_purity_mean'])} | {_f(r['grid_purity_items'])} | {r['grid_pages_served']} | "
                  f"{r['by_kind']} | {r['labels_by_route']} | {r['trainings']} | {r['seconds']:.0f} |" for r in runs]
        lines += ["", f"Mean actions per item {_f(summ['actions_per_item_mean'])} (target <= 0.35: "
                  f"{'met' if summ['target_actions_met'] else 'not met'}); mean grid purity "
                  f"{_f(summ['grid_purity_mean'])} (target >= 0.9: "
                  f"{'met' if summ['target_purity_met'] else 'not met'})."]
    elif kind == "strategies":
        keys = sorted({k for r in runs for v in r["runs"].values() for k in v["labels_to"]})
        lines += ["| seed | strategy | " + " | ".join(f"labels to {k}" for k in keys)
                  + " | pool acc. @1000 | @2000 | @3000 |", "|" + " --- |" * (len(keys) + 5)]
        for r in runs:
            for name, v in r["runs"].items():
                lines.append(f"| {r['seed']} | {name} | " + " | ".join(_f(v["labels_to"][k], 0) for k in keys)
                             + " | " + " | ".join(_f(v["at"].get(b)) for b in ("1000", "2000", "3000")) + " |")
        lines += ["", "A dash: not reached within the budget of " + str(runs[0]["budget"]) + " labels.", "",
                  "Labels random needs / labels margin (the default) needs, per seed: "
                  + "; ".join(f"{k}: {[_f(x, 2) for x in v]}" for k, v in summ["random_over_margin"].items())
                  + " (target >= 1.3 at 90% pool accuracy)."]
    elif kind == "label-errors":
        lines += ["| seed | labels | corrupted | flags | cut | hits in cut | recall@cut | precision@cut "
                  "| recall (all flags) | precision (all flags) |", "|" + " --- |" * 10]
        lines += [f"| {r['seed']} | {r['labels']} | {r['corrupted']} | {r['flags']} | {r['cut']} | {r['hits_in_cut']} "
                  f"| {_f(r['recall_at_cut'])} | {_f(r['precision_at_cut'])} | {_f(r['recall_all_flags'])} "
                  f"| {_f(r['precision_all_flags'])} |" for r in runs]
        lines += ["", f"Mean recall at the cut {_f(summ['recall_mean'])}, precision {_f(summ['precision_mean'])} "
                  f"(target recall >= 0.7 in every seed: {'met' if summ['target_met'] else 'not met'})."]
    elif kind == "audit":
        lines += ["| seed | version | auto-accepted | audited | audit right | reported | interval | true | covered |",
                  "|" + " --- |" * 9]
        for r in runs:
            lines += [_version_row(str(r["seed"]), v) for v in r["versions"]]
            lines += [_version_row(f"{r['seed']} redraw {j}", v) for j, d in enumerate(r.get("redraws", []))
                      for v in d["versions"]]
            lo, hi = r["pooled"]["interval"]
            lines.append(f"| {r['seed']} | all | {r['auto_accepted']} | {r['audited']} | {r['pooled']['right']} | "
                         f"- | [{_f(lo)}, {_f(hi)}] | {_f(r['true_precision'])} | {r['pooled']['covered']} |")
        lines += ["", f"Seeds whose every audited version's interval covers the truth: "
                  f"{summ['seeds_all_versions_covered']} of {summ['seeds']} (pooled over versions: "
                  f"{summ['seeds_pooled_covered']}; seeds with audits: {summ['seeds_with_audits']}); "
                  f"redraws of the audit (same labels, a new audit draw): {summ['redraws_covered']} of "
                  f"{summ['redraws']} covered; all draws: {summ['draws_covered']} of {summ['draws']}; target >= 9 of "
                  f"10: {_verdict(summ['target_met'])}."]
    return "\n".join(lines) + "\n"


def experiment(kind: str, *, seeds: list[int], out: Path, cfg: ReviewConfig, strategies: list[str] | None = None,
               budget: int = 3000, retrain_every: int | None = None, command: str = "",
               redraws: int = 0) -> dict[str, Any]:
    """Run ``kind`` for every seed; writes ``out/<kind>.json`` after each seed."""
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    (work / "embeddings").mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, Any]] = []
    path = out / f"{kind}.json"
    for seed in seeds:
        c = ReviewConfig(**{**asdict(cfg), "seed": seed})
        if kind == "actions":
            r = actions_run(c, work_dir=work)
        elif kind == "label-errors":
            r = label_errors_run(c, work_dir=work)
        elif kind == "audit":
            r = audit_run(c, work_dir=work, redraws=redraws)
        elif kind == "strategies":
            sc = SimConfig(pool=c.pool, seed=seed, budgets=[budget], retrain_every=retrain_every or c.retrain_every,
                           algorithm=c.algorithm, holdout_share=c.holdout_share, target=c.target, delta=c.delta,
                           calibration=c.calibration, image_size=c.image_size, dataset=c.dataset,
                           torch_threads=c.torch_threads)
            r = strategies_run(sc, strategies or ["random", "margin", "entropy", "margin_diverse"], work_dir=work)
        else:
            raise ValueError(f"unknown experiment {kind!r}")
        runs.append(r)
        report = {"experiment": kind, "config": {k: str(v) if isinstance(v, Path) else v
                                                 for k, v in asdict(cfg).items()},
                  "seeds": seeds, "command": command, "summary": summarize(kind, runs), "runs": runs}
        path.write_text(json.dumps(report, indent=1, default=str))
        path.with_suffix(".md").write_text(markdown(report))
        log.info("%s seed %d done: %s", kind, seed, json.dumps(report["summary"], default=str)[:2000])
    return report


def from_args(args: argparse.Namespace, torch_threads: int = 2, command: str = "") -> dict[str, Any]:
    kind = args.experiment
    default_budget = 3000 if kind == "strategies" else 2000
    cfg = ReviewConfig(pool=args.pool, algorithm=args.algorithm, strategy=args.strategy,
                       retrain_every=args.retrain_every or ReviewConfig.retrain_every,
                       holdout_share=args.holdout_share, calibration=args.calibration, image_size=args.image_size,
                       dataset=args.dataset, torch_threads=torch_threads, warmup=args.warmup,
                       page_size=args.page_size, min_share=args.min_share, relabel_pages=not args.no_relabel,
                       grid_corrections=not args.deselect_only,
                       extra_policy=({} if args.grid_min_confidence is None
                                     else {"grid_min_confidence": args.grid_min_confidence})
                       | ({} if args.grid_purity is False else {"grid_purity": args.grid_purity})
                       | ({} if args.epochs is None else {"epochs": args.epochs})
                       | ({} if args.features is None else {"features": args.features})
                       | dict(getattr(args, "policy", [])),
                       budget=args.budget or default_budget, noise=args.noise, pool_seed=args.pool_seed,
                       target=args.target, delta=args.delta)
    return experiment(kind, seeds=list(range(args.seed, args.seed + args.seeds)), out=args.out, cfg=cfg,
                      strategies=args.strategies.split(","), budget=args.budget or default_budget,
                      retrain_every=cfg.retrain_every, command=command, redraws=args.redraws)


def main(argv: list[str] | None = None) -> int:
    import os

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("apscheduler", "alembic", "matplotlib", "labelloop.jobs"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from service.cli_experiments import add_arguments

    p = argparse.ArgumentParser(prog="python -m service.sim_review")
    add_arguments(p)
    import sys

    report = from_args(p.parse_args(argv), command=" ".join([".venv/bin/python -m service.sim_review",
                                                             *(sys.argv[1:] if argv is None else argv)]))
    log.info("summary: %s", json.dumps(report["summary"], indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
