"""The demo project: generated shapes on which the whole loop has already run once.

``labelloop demo`` opens on a project where a new user sees every part at once:

1. **Images**: ``n_images`` generated circles, squares and triangles
   (:mod:`service.demo_shapes`), a share of them hard.
2. **Imported labels**: ``n_imported`` of them arrive labelled through the product's own
   CSV import (provenance ``import``, training labels only), ``n_wrong`` of those
   deliberately mislabelled so that Review has real label-error flags to show.
3. **People's labels**: a scripted labeller (user ``demo-labeller``) answers the real
   queue with each image's true class (:func:`service.crud.queue.next_item` ->
   :func:`service.crud.annotations.submit`, as ``lab/simulate.py`` does), so the
   hold-out is whatever the queue's random stream drew: nothing here picks it.
4. **Models**: after each round of ``rounds`` labels the real ``train`` job (``fast``, the
   bundled weights) runs in-process, then its ``infer`` job (calibration, Pending); the
   dashboard shows one model version per round.
5. **Grids and Review**: the ``cluster`` and ``hard_examples`` jobs on the last model.

Every step checks what is already there, so a second run (or a run after an interrupted
one) reuses the project and only finishes what is missing. ``empty=True`` keeps the
small unlabelled project of earlier releases (60 images, nothing trained).
"""

from __future__ import annotations

import csv
import io
import logging
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from service.config import Settings
from service.crud.annotations import AnnotationIn, submit
from service.crud.items import ingest
from service.crud.projects import create_project, set_member
from service.crud.queue import next_item
from service.crud.transfer import import_labels
from service.crud.users import create_user
from service.demo_shapes import DEMO_CLASSES, Shape, shape_image, shape_set
from service.jobs.recovery import recover_stale
from service.jobs.runner import JobConflict, ThreadExecutor, enqueue
from service.loop.data import label_counts
from service.models import Annotation, Item, Job, JobState, ModelVersion, Project, ProjectCreate, Role, User
from service.security import hash_password

__all__ = ["DEMO_CLASSES", "DemoPlan", "ensure_demo", "shape_image"]
log = logging.getLogger("labelloop.demo")
NAME = "demo"
LABELLER = "demo-labeller"
INSTRUCTIONS = "Pick the shape you see. Keys 1-3 choose the class."
FULL_MARK = "This demo was built by `labelloop demo`"  # in the full demo's instructions
Say = Callable[[str], None]


@dataclass(frozen=True)
class DemoPlan:
    """How big the demo is. ``n_images`` arrive first; ``rounds``: labels the scripted
    labeller gives through the queue before each training (one model version per round);
    ``n_late`` more images arrive after the last model, so that grids have a pool to group
    (the last model's proposals take most of the first batch into Pending)."""

    n_images: int = 900
    n_late: int = 200
    n_imported: int = 120
    n_wrong: int = 6
    rounds: tuple[int, ...] = (140, 260)
    seed: int = 0

    def labels_before(self, round_index: int) -> int:
        """People's labels (imported included) the project has when round ``round_index`` trains."""
        return self.n_imported + sum(self.rounds[:round_index + 1])


def ensure_demo(session: Session, settings: Settings, *, empty: bool = False, plan: DemoPlan | None = None,
                say: Say | None = None) -> tuple[str, str | None]:
    """Create (or reuse) the admin and the demo project; returns (admin name, new password or None).

    ``say`` gets one line per step (the CLI prints them); ``empty``: the small unlabelled
    project instead of the one the loop has run on."""
    say = say or log.info
    admin, password = _admin(session)
    project = session.exec(select(Project).where(Project.name == NAME)).first()
    if project is None and empty:
        project = create_project(session, data=ProjectCreate(name=NAME, classes=DEMO_CLASSES,
                                                             instructions=INSTRUCTIONS), user=admin)
        rng = random.Random(0)
        files = [(f"shape_{i:03d}.png", shape_image(DEMO_CLASSES[i % 3], rng)) for i in range(60)]
        ingest(session, project=project, files=files, settings=settings)
    elif project is None or FULL_MARK in (project.instructions or ""):
        session.commit()
        _build(session, settings, admin=admin, plan=plan or DemoPlan(), say=say)
    else:
        say(f"demo: reusing the existing project {NAME!r} as it is")
    session.commit()
    return admin.name, password


def _admin(session: Session) -> tuple[User, str | None]:
    admin = session.exec(select(User).where(User.name == "admin")).first()
    password = None
    if admin is None:
        password = secrets.token_urlsafe(9)
        admin = create_user(session, name="admin", role=Role.admin, password=password)
    elif admin.password_hash is None:
        password = secrets.token_urlsafe(9)
        admin.password_hash = hash_password(password)
        session.add(admin)
    return admin, password


def _build(session: Session, settings: Settings, *, admin: User, plan: DemoPlan, say: Say) -> None:
    """Build the full demo, or finish an unfinished one (every step skips what is done)."""
    t0 = time.perf_counter()
    engine = session.get_bind()
    assert isinstance(engine, Engine)
    # the build's randomness (queue ranks, stream draws, job seeds) from the plan's seed, so the
    # demo comes out the same each time; the ranks stay the product's uniform random order
    settings = settings.model_copy(update={"random_seed": plan.seed})
    project = session.exec(select(Project).where(Project.name == NAME)).first()
    if project is None:
        project = create_project(session, data=ProjectCreate(
            name=NAME, classes=DEMO_CLASSES,
            instructions=f"{INSTRUCTIONS}\n\n{FULL_MARK}: shapes, some labels imported (a few on purpose "
                         "wrong: see Review), the rest from the queue, two models trained."), user=admin)
    assert project.id is not None
    labeller = session.exec(select(User).where(User.name == LABELLER)).first()
    if labeller is None:
        labeller = create_user(session, name=LABELLER, role=Role.labeler, password=None)
        set_member(session, project=project, user_name=LABELLER, role=Role.labeler, by=admin)
    session.commit()
    if _finished(session, project.id, len(plan.rounds)):
        say(f"demo: reusing the demo project ({_summary(session, project.id)})")
        return
    say(f"demo: drawing {plan.n_images + plan.n_late} shape images...")
    every = shape_set(plan.n_images + plan.n_late, plan.seed)
    shapes, late = every[:plan.n_images], every[plan.n_images:]
    truth = {s.file_name: s.kind for s in every}
    _add_images(session, settings, project, shapes, say)
    if session.exec(select(Annotation.id).join(Item, col(Item.id) == Annotation.item_id).where(
            Item.project_id == project.id, Annotation.origin == "import").limit(1)).first() is None:
        say(f"demo: importing the labels of {plan.n_imported} images ({plan.n_wrong} of them wrong on purpose)...")
        import_labels(session, project=project, fmt="csv", data=_import_csv(shapes, plan), user=admin)
        session.commit()
    executor = ThreadExecutor(engine, settings)
    rng = random.Random(plan.seed)
    for k in range(len(plan.rounds)):
        _label_until(session, project, labeller, truth, plan.labels_before(k), rng, say)
        if _versions(session, project.id) <= k:
            say(f"demo: training model v{k + 1} on {label_counts(session, project.id)[2]} labels "
                "and pre-labelling the rest...")
            _run_job(session, executor, project.id, "train", f"demo: round {k + 1} of {len(plan.rounds)}")
    _add_images(session, settings, project, late, say, batch="a second batch of")
    for kind, what in (("cluster", "cutting grid pages"), ("hard_examples", "scanning for label errors")):
        if not _job_done(session, project.id, kind):
            say(f"demo: {what}...")
            _run_job(session, executor, project.id, kind, "demo")
    say(f"demo: built in {time.perf_counter() - t0:.0f} s ({_summary(session, project.id)})")


def _run_job(session: Session, executor: ThreadExecutor, project_id: int, kind: str, reason: str) -> None:
    """Queue a ``kind`` job and run it (and the jobs it queues: a training's inference) here;
    a job an interrupted build left behind is recovered or run first. Raises when it fails."""
    session.commit()  # hold no transaction while other sessions write (SQLite begins each one IMMEDIATE)
    recover_stale(executor.engine, timeout_seconds=executor.settings.job_heartbeat_timeout_seconds)
    before = session.exec(select(func.max(Job.id))).one() or 0
    try:
        enqueue(session, kind=kind, project_id=project_id, payload={"reason": reason})
        session.commit()
    except JobConflict:  # one is queued already (run it now) or still running elsewhere
        session.rollback()
    executor.run_pending()
    for job in session.exec(select(Job).where(Job.project_id == project_id, col(Job.id) > before,
                                              col(Job.state).in_([JobState.failed, JobState.cancelled]))).all():
        raise RuntimeError(f"demo: the {job.kind} job #{job.id} {job.state.value}: {job.error or job.message}")
    newest = session.exec(select(Job).where(Job.project_id == project_id, Job.kind == kind)
                          .order_by(col(Job.id).desc())).first()
    if newest is None or newest.state != JobState.succeeded:
        state = newest.state.value if newest else "missing"
        raise RuntimeError(f"demo: the {kind} job is {state}; run `labelloop demo` again once it has finished")


def _add_images(session: Session, settings: Settings, project: Project, shapes: list[Shape], say: Say,
                batch: str = "") -> None:
    """Ingest the ``shapes`` not in the project yet (thumbnails are made when first shown)."""
    names = set(session.exec(select(Item.file_name).where(Item.project_id == project.id)).all())
    new = [(s.file_name, s.png) for s in shapes if s.file_name not in names]
    if new:
        say(f"demo: importing {batch + ' ' if batch else ''}{len(new)} images...")
        ingest(session, project=project, files=new, settings=settings, thumbnails=False)
        session.commit()


def _import_csv(shapes: list[Shape], plan: DemoPlan) -> bytes:
    """The CSV a team might bring: ``n_imported`` images picked at random, ``n_wrong`` of
    the clear ones (not drawn hard) given the next class instead of their own."""
    rng = random.Random(f"{plan.seed}:import")
    picked = rng.sample(shapes, plan.n_imported)
    clear = [i for i, s in enumerate(picked) if not s.hard]
    wrong = set(rng.sample(clear, min(plan.n_wrong, len(clear))))
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["file_name", "labels"])
    for i, s in enumerate(picked):
        label = DEMO_CLASSES[(DEMO_CLASSES.index(s.kind) + 1) % len(DEMO_CLASSES)] if i in wrong else s.kind
        w.writerow([s.file_name, label])
    return buf.getvalue().encode()


def _label_until(session: Session, project: Project, labeller: User, truth: dict[str, str], target: int,
                 rng: random.Random, say: Say) -> None:
    """The scripted labeller answers the queue with each image's true class until the project
    has ``target`` people's labels (imported ones included)."""
    assert project.id is not None
    have = label_counts(session, project.id)[2]
    if have >= target:
        return
    say(f"demo: labelling {target - have} images through the queue (its random stream draws the hold-out)...")
    while have < target:
        got = next_item(session, project=project, user=labeller, ttl_seconds=600, rng=rng)
        if got is None:
            break
        assert got.lease.id is not None
        submit(session, item=got.item, project=project, user=labeller, if_match=None,
               body=AnnotationIn(labels=[truth[got.item.file_name]], lease_id=got.lease.id))
        session.commit()
        have += 1


def _versions(session: Session, project_id: int) -> int:
    return len(session.exec(select(ModelVersion.id).where(ModelVersion.project_id == project_id,
                                                          ModelVersion.status == "ready")).all())


def _job_done(session: Session, project_id: int, kind: str) -> bool:
    """A ``kind`` job succeeded after the newest inference."""
    newest = session.exec(select(Job).where(Job.project_id == project_id, Job.kind == kind,
                                            Job.state == JobState.succeeded).order_by(col(Job.id).desc())).first()
    infer = session.exec(select(Job.id).where(Job.project_id == project_id, Job.kind == "infer")
                         .order_by(col(Job.id).desc())).first()
    return newest is not None and (infer is None or int(newest.id or 0) > int(infer))


def _finished(session: Session, project_id: int, rounds: int) -> bool:
    return _versions(session, project_id) >= rounds and all(
        _job_done(session, project_id, k) for k in ("cluster", "hard_examples"))


def _summary(session: Session, project_id: int) -> str:
    from service.models import Prediction, ReviewFlag

    pending = session.exec(select(func.count()).select_from(Prediction).where(
        Prediction.project_id == project_id, Prediction.state == "proposed")).one()
    flags = session.exec(select(func.count()).select_from(ReviewFlag).where(
        ReviewFlag.project_id == project_id, ReviewFlag.state == "open")).one()
    return (f"{label_counts(session, project_id)[2]} labels, {_versions(session, project_id)} model versions, "
            f"{pending} proposals in Pending, {flags} open review flags")
