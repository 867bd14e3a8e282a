"""The ``infer`` job: predict the unlabelled pool, score it for the queue, propose pre-labels.

An item is proposed (state ``proposed``, shown in Pending) when the current
model's top class clears that class's calibrated threshold (or the pooled
threshold, by policy). Proposals of an older model version are superseded,
not piled up; a label a person rejected is never proposed again for that
item by the same model version. With ``auto_accept`` the proposal becomes a
label with provenance ``model`` at once, and a random ``audit_share`` of them
is queued for a person to check.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import bindparam, delete, update
from sqlmodel import Session, col, select

from learning.adapters import load_adapter
from learning.policy import Policy, short_classes
from service.config import Settings
from service.crud.annotations import write_version
from service.crud.items import blob_store
from service.jobs.runner import JobContext, task
from service.loop import holdout
from service.loop.data import label_counts
from service.loop.features import cached_embeddings
from service.loop.holdout import calibration_items
from service.loop.scoring import query_scores
from service.models import Item, ItemStatus, ModelVersion, Prediction, Project, Provenance, Task, utcnow

CHUNK = 256


def current_model(session: Session, project_id: int) -> ModelVersion | None:
    return session.exec(select(ModelVersion).where(ModelVersion.project_id == project_id,
                                                   col(ModelVersion.is_current).is_(True),
                                                   ModelVersion.status == "ready")).first()


def model_to_run(session: Session, project_id: int, model_version_id: int | None) -> ModelVersion:
    """The version an inference job was started for (default: the current one); it must be ready."""
    mv = session.get(ModelVersion, model_version_id) if model_version_id else current_model(session, project_id)
    if mv is None or mv.status != "ready" or mv.path is None:
        raise ValueError("no ready model version to run")
    return mv


def thresholds_for(mv: ModelVersion, classes: list[str]) -> list[float | None]:
    """Per class, the threshold in force (``None``: this class is not pre-labelled)."""
    ths = mv.thresholds or {}
    if ths.get("mode") == "auto" and ths.get("auto"):
        in_force = ths["auto"].get("thresholds") or {}
        return [in_force.get(c) for c in classes]
    if ths.get("mode") == "pooled" and ths.get("pooled"):
        t = ths["pooled"].get("threshold")
        return [t for _ in classes]
    per = ths.get("per_class") or {}
    return [(per.get(c) or {}).get("threshold") for c in classes]


OPEN = (ItemStatus.unlabelled, ItemStatus.skipped, ItemStatus.proposed)


def open_pool(session: Session, project_id: int) -> list[Item]:
    """Items waiting for a label (what inference predicts), by id."""
    return list(session.exec(select(Item).where(Item.project_id == project_id, col(Item.status).in_(OPEN))
                             .order_by(col(Item.id))).all())


def begin_publish(session: Session, ids: list[int]) -> dict[int, Item]:
    """After predicting ``ids``: the items among them that still wait for a label.

    People labelled items while the model predicted, so the pool is re-read inside this
    write transaction (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: row locks) and every item
    that is no longer open is left alone. Old predictions of the pool go: plain ones are
    deleted, open proposals superseded."""
    session.expire_all()
    fresh = {i.id: i for i in session.exec(select(Item).where(col(Item.id).in_(ids)).with_for_update()).all()}
    session.exec(delete(Prediction).where(col(Prediction.item_id).in_(ids), col(Prediction.state) == "none"))
    for p in session.exec(select(Prediction).where(col(Prediction.item_id).in_(ids),
                                                   Prediction.state == "proposed")).all():
        p.state, p.decided_at = "superseded", utcnow()
        session.add(p)
    return {int(i): it for i, it in fresh.items() if i is not None and it.status in OPEN}


@dataclass
class Tally:
    proposed: int = 0
    auto: int = 0
    audit: int = 0


def settle(session: Session, *, item: Item, pred: Prediction, version_data: dict[str, Any], policy: Policy,
           rng: random.Random, tally: Tally) -> None:
    """Write one prediction (state ``proposed`` or ``none`` on entry). A proposal becomes a
    ``model`` label at once under ``auto_accept`` (a random ``audit_share`` of those is
    queued for a person to check), else the item waits in Pending."""
    if pred.state == "proposed" and policy.auto_accept:
        write_version(session, item=item, data=version_data, provenance=Provenance.model, origin="auto",
                      author=None, model_version_id=pred.model_version_id, score=pred.score)
        pred.state = "auto"
        pred.audit = rng.random() < policy.audit_share
        tally.auto += 1
        tally.audit += int(pred.audit)
    elif pred.state == "proposed":
        item.status = ItemStatus.proposed
        tally.proposed += 1
    elif item.status == ItemStatus.proposed:
        item.status = ItemStatus.unlabelled
    session.add(item)
    session.add(pred)


def publish_summary(mv: ModelVersion, pool: list[Item], tally: Tally, progress: Any) -> dict[str, Any]:
    progress(1.0, f"{tally.proposed} proposed, {tally.auto} auto-accepted of {len(pool)}")
    return {"model_version_id": mv.id, "pool": len(pool), "proposed": tally.proposed, "auto_accepted": tally.auto,
            "audit": tally.audit, "coverage": (tally.proposed + tally.auto) / len(pool) if pool else 0.0}


def predict_pool(adapter: Any, mv: ModelVersion, shas: list[str], paths: list, *, settings: Settings,
                 progress: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """``(probs [N, C], embeddings [N, D] or None)`` for the pool: with a frozen backbone
    (``fast``) the cached embeddings, which diversity-aware strategies also use."""
    if not shas:
        return np.zeros((0, len(mv.classes)), dtype=np.float32), None
    if mv.algorithm == "fast" and hasattr(adapter, "predict_embeddings"):
        vecs = cached_embeddings(adapter, shas, paths, settings=settings,
                                 progress=lambda f, m: progress(0.05 + 0.6 * f, m))
        return np.asarray(adapter.predict_embeddings(vecs).probs), vecs
    out = []
    n = len(shas)
    for start in range(0, n, CHUNK):
        out.append(np.asarray(adapter.predict(paths[start:start + CHUNK]).probs))
        progress(0.05 + 0.6 * min(1.0, (start + CHUNK) / n), f"predicted {min(start + CHUNK, n)} of {n}")
    return np.concatenate(out), None


def infer_project(session: Session, *, project: Project, settings: Settings, progress: Any,
                  model_version_id: int | None = None, rng: random.Random | None = None) -> dict[str, Any]:
    assert project.id is not None
    rng = rng or random.Random()
    mv = model_to_run(session, project.id, model_version_id)
    if not mv.is_current:
        return {"skipped": f"model v{mv.version} is no longer current"}
    policy = Policy.from_dict(project.policy or {})
    adapter = load_adapter(str(mv.path))
    store = blob_store(settings)
    pool = open_pool(session, project.id)
    ids = [int(i.id) for i in pool if i.id is not None]
    # hold-out items keep their place in the pool (service/loop/holdout.py): predicted and
    # scored with it, so the queue and Pending can tell when they would have been taken
    ghosts = calibration_items(session, project.id) if project.task in holdout.CLASSIFICATION else []
    every = pool + [g for g, _ in ghosts]
    short = short_classes(label_counts(session, project.id)[0], list(mv.classes), policy.min_labels_per_class)
    session.commit()  # end the read transaction: SQLite must not hold its lock while we predict
    probs, vecs = predict_pool(adapter, mv, [i.sha256 for i in every], [store.path(i.sha256) for i in every],
                               settings=settings, progress=progress)
    progress(0.7, "scoring and proposing")
    # diversity-aware strategies spread a batch over the embeddings (fast models have them
    # cached; for precise ones they fall back to their uncertainty score)
    # while a class has too few labels to train on, uncertainty sampling also draws at random
    scores = query_scores(policy.strategy, probs, multilabel=project.task == Task.multilabel, embeddings=vecs,
                          rng=np.random.default_rng(rng.getrandbits(32)), explore=bool(short))
    classes = list(mv.classes)
    ths = thresholds_for(mv, classes)
    fresh = begin_publish(session, ids)
    _publish_holdout(session, project=project, mv=mv, ghosts=ghosts, probs=probs[len(pool):],
                     scores=scores[len(pool):], ths=ths, auto=policy.auto_accept)
    rejected = {(p.item_id, p.label) for p in session.exec(select(Prediction).where(
        Prediction.model_version_id == mv.id, Prediction.state == "rejected")).all()}
    tally = Tally()
    for k, item_id in enumerate(ids):  # ids[k] is pool[k], the row probs[k] belongs to
        item = fresh.get(item_id)
        if item is None:
            continue
        labels, score = _decide(project.task, classes, probs[k], ths)
        label = labels[0] if len(labels) == 1 else (";".join(labels) if labels else None)
        proposed = bool(labels) and (item.id, label) not in rejected
        item.query_score = float(scores[k])
        pred = Prediction(item_id=item_id, project_id=project.id, model_version_id=mv.id,  # type: ignore[arg-type]
                          label=label, score=score, state="proposed" if proposed else "none",
                          data={"labels": labels, "top": _top(classes, probs[k])})
        settle(session, item=item, pred=pred, version_data={"labels": labels, "boxes": [], "polygons": []},
               policy=policy, rng=rng, tally=tally)
    session.commit()
    return publish_summary(mv, pool, tally, progress) | {"exploring_for": short}


def _publish_holdout(session: Session, *, project: Project, mv: ModelVersion, ghosts: list[tuple[Item, list[str]]],
                     probs: np.ndarray, scores: np.ndarray, ths: list[float | None], auto: bool) -> None:
    """Hold-out items' query scores and predictions (state ``holdout``; ``label`` only where
    the model would propose it rightly); with ``auto_accept`` a proposal takes the item."""
    if not ghosts:
        return
    ids = [int(g.id or 0) for g, _ in ghosts]
    session.exec(delete(Prediction).where(col(Prediction.item_id).in_(ids), col(Prediction.state) == holdout.STATE))
    session.connection().execute(update(Item).where(col(Item.id) == bindparam("iid")).values(
        query_score=bindparam("qs")), [{"iid": i, "qs": float(q)} for i, q in zip(ids, scores, strict=True)])
    proposed = []
    classes = list(mv.classes)
    for (item, truth), p in zip(ghosts, probs, strict=True):
        labels, score = _decide(project.task, classes, p, ths)
        right = bool(labels) and sorted(labels) == sorted(truth)
        session.add(Prediction(item_id=int(item.id or 0), project_id=int(project.id or 0),
                               model_version_id=int(mv.id or 0), label=";".join(labels) if right else None,
                               score=score, state=holdout.STATE, data={"labels": labels, "top": _top(classes, p)}))
        if labels:
            proposed.append(int(item.id or 0))
    if auto:
        holdout.take_after_auto(session, proposed)


def _decide(task_: Task, classes: list[str], p: np.ndarray, ths: list[float | None]) -> tuple[list[str], float]:
    if task_ == Task.multilabel:
        chosen = [c for c, s, t in zip(classes, p, ths, strict=True) if t is not None and s >= t]
        return chosen, float(max((p[classes.index(c)] for c in chosen), default=float(p.max())))
    c = int(p.argmax())
    s = float(p[c])
    t = ths[c]
    return ([classes[c]] if t is not None and s >= t else []), s


def _top(classes: list[str], p: np.ndarray, k: int = 3) -> list[list[Any]]:
    idx = np.argsort(-p)[:k]
    return [[classes[int(i)], round(float(p[int(i)]), 5)] for i in idx]


def job_rng(ctx: JobContext) -> random.Random | None:
    """The job's audit-draw generator: seeded from ``random_seed`` and the job when set."""
    seed = ctx.settings.random_seed
    return None if seed is None else random.Random(f"{seed}:job:{ctx.job_id}")


@task("infer")
def infer_task(ctx: JobContext) -> dict[str, Any]:
    with Session(ctx.engine, expire_on_commit=False) as s:
        project = s.get(Project, ctx.project_id)
        if project is None:
            raise ValueError("project was deleted")
        return infer_project(s, project=project, settings=ctx.settings, progress=ctx.progress,
                             model_version_id=ctx.payload.get("model_version_id"), rng=job_rng(ctx))
