"""Inference's shared parts: which model runs, the open pool, and publishing proposals.

The ``infer`` job itself is :func:`service.pipelines.jobs.infer_job`; each task's
pipeline predicts and decides (:mod:`service.pipelines`), and writes through
:func:`begin_publish` and :func:`settle` here.

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
from sqlalchemy import delete
from sqlmodel import Session, col, select

from learning.policy import Policy
from service.config import Settings
from service.crud.annotations import write_version
from service.loop.features import cached_embeddings
from service.models import Item, ItemStatus, ModelVersion, Prediction, Provenance, utcnow

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


def publish_summary(mv: ModelVersion, n_pool: int, tally: Tally, progress: Any) -> dict[str, Any]:
    progress(1.0, f"{tally.proposed} proposed, {tally.auto} auto-accepted of {n_pool}")
    return {"model_version_id": mv.id, "pool": n_pool, "proposed": tally.proposed, "auto_accepted": tally.auto,
            "audit": tally.audit, "coverage": (tally.proposed + tally.auto) / n_pool if n_pool else 0.0}


def predict_pool(adapter: Any, *, algorithm: str, n_classes: int, shas: list[str], paths: list, settings: Settings,
                 progress: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """``(probs [N, C], embeddings [N, D] or None)`` for the pool: with a frozen backbone
    (``fast``) the cached embeddings, which diversity-aware strategies also use.
    ``settings``: only ``data_dir`` is read (the embedding cache)."""
    if not shas:
        return np.zeros((0, n_classes), dtype=np.float32), None
    if algorithm == "fast" and hasattr(adapter, "predict_embeddings"):
        vecs = cached_embeddings(adapter, shas, paths, settings=settings,
                                 progress=lambda f, m: progress(0.05 + 0.6 * f, m))
        return np.asarray(adapter.predict_embeddings(vecs).probs), vecs
    out = []
    n = len(shas)
    for start in range(0, n, CHUNK):
        out.append(np.asarray(adapter.predict(paths[start:start + CHUNK]).probs))
        progress(0.05 + 0.6 * min(1.0, (start + CHUNK) / n), f"predicted {min(start + CHUNK, n)} of {n}")
    return np.concatenate(out), None


def job_rng(settings: Settings, job_id: int) -> random.Random | None:
    """The job's audit-draw generator: seeded from ``random_seed`` and the job when set."""
    seed = settings.random_seed
    return None if seed is None else random.Random(f"{seed}:job:{job_id}")
