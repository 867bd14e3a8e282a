"""The simulated project of the review experiments (:mod:`lab.sim_review`): a throw-away
project on an in-process SQLite database holding a seeded Fashion-MNIST pool, the oracle
user, and one queue draw answered by the oracle."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlmodel import Session, col, func, select

from lab.fashion import FASHION_CLASSES, FASHION_DIR, load_fashion, png
from lab.simulate import workspace
from learning.policy import Policy
from service.config import Settings
from service.crud.annotations import AnnotationIn, submit
from service.crud.items import ingest
from service.crud.projects import create_project
from service.crud.queue import next_item
from service.crud.users import create_user
from service.jobs.runner import ThreadExecutor
from service.loop.clusters import clusters_check
from service.loop.state import maybe_train, project_state
from service.models import Item, ItemStatus, Project, ProjectCreate, Role, User

OPEN = (ItemStatus.unlabelled, ItemStatus.skipped, ItemStatus.proposed)


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
    checkpoints: tuple[int, ...] = (1000, 2000)  # label errors: where the flags are scored
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
    """Ingest the seeded Fashion-MNIST pool into a new project (as :func:`lab.simulate.run`)."""
    x, y = load_fashion(cfg.dataset, cfg.pool, cfg.seed if cfg.pool_seed is None else cfg.pool_seed)
    tmp, settings, engine = workspace(cfg, work_dir, "labelloop-review-")
    truth: dict[int, str] = {}
    with Session(engine, expire_on_commit=False) as s:
        user = create_user(s, name="oracle", role=Role.admin, password=None)
        project = create_project(s, data=ProjectCreate(name="sim", classes=FASHION_CLASSES, policy=cfg.policy()),
                                 user=user)
        for start in range(0, len(x), 1000):
            files = [(f"fm_{start + i:05d}.png", png(x[start + i])) for i in range(min(1000, len(x) - start))]
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


def labels_since_training(h: Harness) -> int:
    with Session(h.engine) as s:
        return project_state(s, h.project(s)).labels_since_training



def label_accuracy(h: Harness) -> float | None:
    """Share of current labels equal to the truth (the oracle never errs here: expect 1.0)."""
    from service.loop.data import current_labels

    with Session(h.engine) as s:
        rows = current_labels(s, h.project_id)
        ok = [ann.data.get("labels") == [h.truth[int(it.id or 0)]] for it, ann in rows]
    return float(np.mean(ok)) if ok else None

