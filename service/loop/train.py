"""Training's shared parts: classification's fit config and calibration, and a model
version's life (the ``train`` job itself is :func:`service.pipelines.jobs.train_job`).

A model version row is created as ``training`` and becomes ``ready`` (and the
project's current model) only after its files are written completely and its
thresholds computed; a failed or cancelled run is marked ``failed`` and the
previous current model stays in place.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from sqlmodel import Session, col, func, select

from learning import calibration
from learning.adapters.base import FitConfig
from learning.calibration_auto import calibrate_auto
from learning.policy import Policy
from service.loop.data import Snapshot, label_counts
from service.models import ModelVersion, Project, Task, utcnow

# unlabelled images a semi-supervised fit uses (a seeded sample of pool + hold-out): fast
# fits a head on cached embeddings (20,000 x 1,752 floats: 140 MB); precise predicts its
# sample each epoch
FAST_MAX_UNLABELLED = 20_000
PRECISE_MAX_UNLABELLED = FitConfig.max_unlabelled


def calibrate_version(task_: Task, classes: list[str], probs: np.ndarray, y: np.ndarray,
                      policy: Policy) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(thresholds, metrics, risk-coverage) from hold-out ``probs [H, C]`` and labels ``y``."""
    target, delta = policy.target_precision, policy.delta
    metrics: dict[str, Any] = {"n_holdout": int(len(y))}
    if len(y) == 0:
        none: dict[str, Any] = {"mode": policy.calibration, "pooled": None, "per_class": {},
                "reason": "no hold-out labels yet",
                "statement": "nothing is pre-labelled: no hold-out labels yet"}
        return none, metrics, {}
    if task_ == Task.multilabel:
        per = calibration.calibrate_multilabel(probs, y.astype(bool), target=target, delta=delta)
        metrics["holdout_f1_micro"] = _micro_f1(probs >= 0.5, y.astype(bool))
        ths = {"mode": "per_class", "pooled": None,
               "per_class": {c: t.to_dict() for c, t in zip(classes, per, strict=True)}}
        ths["statement"] = statement(replace(policy, calibration="per_class"), classes, ths)
        return ths, metrics, {}
    pred = probs.argmax(1)
    metrics["holdout_accuracy"] = float((pred == y).mean())
    curve = calibration.risk_coverage_curve(probs.max(1), pred == y, delta=delta)
    if policy.calibration == "auto":
        auto = calibrate_auto(probs, y, target=target, delta=delta)
        decided = auto.to_dict(classes)
        return {"mode": "auto", "pooled": auto.pooled.to_dict(),
                "per_class": {c: t.to_dict() for c, t in zip(classes, auto.per_class, strict=True)},
                "auto": decided, "statement": decided["statement"]}, metrics, curve
    per = calibration.calibrate_per_class(probs, y, target=target, delta=delta)
    pooled = calibration.calibrate_pooled(probs, y, target=target, delta=delta)
    ths = {"mode": policy.calibration, "pooled": pooled.to_dict(),
           "per_class": {c: t.to_dict() for c, t in zip(classes, per, strict=True)}}
    ths["statement"] = statement(policy, classes, ths)
    return ths, metrics, curve


def statement(policy: Policy, classes: list[str], ths: dict[str, Any]) -> str:
    """``pooled`` / ``per_class`` thresholds' statement in words (``auto`` writes its own)."""
    conf = f"with {1 - policy.delta:.0%} confidence"
    if policy.calibration == "pooled":
        pooled = ths.get("pooled") or {}
        if pooled.get("threshold") is None:
            return f"nothing is pre-labelled: {pooled.get('reason') or 'no threshold proven yet'}"
        return f"pooled: proposals are right at least {policy.target_precision:.0%} of the time overall, {conf}"
    on = [c for c in classes if ((ths.get("per_class") or {}).get(c) or {}).get("threshold") is not None]
    if not on:
        return "nothing is pre-labelled: no class has proven its own threshold yet"
    return (f"per class: each of {', '.join(on)} is right at least {policy.target_precision:.0%} of the time, "
            f"{conf} each")


def _micro_f1(pred: np.ndarray, y: np.ndarray) -> float:
    tp = float((pred & y).sum())
    denom = float(pred.sum() + y.sum())
    return 2 * tp / denom if denom else 0.0


def fit_config(policy: Policy, snap: Snapshot, *, seed: int, sample: list[int] | None = None) -> FitConfig:
    """How the adapter trains under ``policy``. With ``semi_supervised`` the unlabelled images
    are a seeded sample of the pool's and the calibrating hold-out's (its labels unseen): a
    model that learnt from the pool's images but not the hold-out's could be surer of the
    pool's mistakes than of the hold-out's, and the hold-out would no longer calibrate it.
    ``sample``: :func:`unlabelled_sample` for this ``seed``, when the caller has drawn it already."""
    unlabelled = policy.uses_unlabelled
    paths = unlabelled_paths(snap)
    picked = (unlabelled_sample(policy, snap, seed) if sample is None else sample) if unlabelled else []
    return FitConfig(algorithm=policy.algorithm, seed=seed, epochs=policy.epochs, use_unlabelled=unlabelled,
                     unlabelled=[paths[i] for i in picked],
                     max_unlabelled=max_unlabelled(policy), image_size=policy.image_size or None)


def max_unlabelled(policy: Policy) -> int:
    return FAST_MAX_UNLABELLED if policy.algorithm == "fast" else PRECISE_MAX_UNLABELLED


def unlabelled_paths(snap: Snapshot) -> list[Path]:
    return list(snap.pool_paths) + list(snap.holdout_paths)


def unlabelled_sample(policy: Policy, snap: Snapshot, seed: int) -> list[int]:
    """Indices into :func:`unlabelled_paths` that a fit uses, drawn here (as the adapter would,
    same seed) so that only their embeddings are read: all of them up to ``max_unlabelled``."""
    n = len(snap.pool_paths) + len(snap.holdout_paths)
    return np.sort(np.random.default_rng(seed).permutation(n)[: max_unlabelled(policy)]).tolist()


def next_version(session: Session, project_id: int) -> int:
    """The number the project's next model version gets."""
    return (session.exec(select(func.max(ModelVersion.version))
                         .where(ModelVersion.project_id == project_id)).one() or 0) + 1


def fail_version(session: Session, mv: ModelVersion, path: Path, exc: BaseException) -> None:
    """A training that raised (or was cancelled): the version is ``failed`` with the error, its
    partial files are removed, and the current version stays current."""
    session.rollback()
    mv.status = "failed"
    mv.metrics = {"error": f"{type(exc).__name__}: {exc}"}
    session.add(mv)
    session.commit()
    shutil.rmtree(path, ignore_errors=True)


def publish_version(session: Session, project: Project, mv: ModelVersion, path: Path, *, thresholds: dict[str, Any],
                    metrics: dict[str, Any], risk_coverage: Any = None, labels_at: int | None = None) -> None:
    """Make a complete model version (files saved at ``path``) the project's current one,
    in one transaction with the retraining bookkeeping. ``labels_at``: the project's label
    count when the training took its labels (labels that arrived while it trained count
    towards the next retraining); ``None``: the count now."""
    assert project.id is not None
    for old in session.exec(select(ModelVersion).where(ModelVersion.project_id == project.id,
                                                       col(ModelVersion.is_current).is_(True))).all():
        old.is_current = False
        session.add(old)
    mv.status, mv.is_current, mv.path = "ready", True, str(path)
    mv.thresholds, mv.metrics = thresholds, metrics
    if risk_coverage is not None:
        mv.risk_coverage = risk_coverage
    project.last_trained_at = utcnow()
    project.labels_at_last_training = label_counts(session, project.id)[2] if labels_at is None else labels_at
    session.add(mv)
    session.add(project)
    session.commit()
