"""The dashboard's numbers (``GET /projects/{id}/stats``)."""

from __future__ import annotations

from typing import Any

from scipy.stats import beta
from sqlmodel import Session, col, func, select

from service.loop.data import label_rows, labels_in
from service.loop.state import readiness_report
from service.models import Annotation, Item, Job, ModelVersion, Prediction, Project, Provenance


def interval(k: int, n: int, delta: float = 0.05) -> tuple[float | None, float | None]:
    """Two-sided 1-delta Clopper-Pearson interval for k successes in n."""
    if n == 0:
        return None, None
    lo = 0.0 if k == 0 else float(beta.ppf(delta / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - delta / 2, k + 1, n - k))
    return lo, hi


def realised_precision(session: Session, project_id: int, target: float) -> list[dict[str, Any]]:
    """Per model version: share of decided proposals that people found right (audits included)."""
    out = []
    rows = session.exec(select(Prediction.model_version_id, Prediction.state, Prediction.audit_correct,
                               func.count()).where(Prediction.project_id == project_id)
                        .group_by(col(Prediction.model_version_id), col(Prediction.state),
                                  col(Prediction.audit_correct))).all()
    per: dict[int, dict[str, int]] = {}
    for mv_id, state, audit_ok, n in rows:
        d = per.setdefault(mv_id, {"right": 0, "wrong": 0, "open": 0, "auto": 0})
        if state == "confirmed" or (state == "auto" and audit_ok is True):
            d["right"] += n
        elif state in ("corrected", "rejected") or (state == "auto" and audit_ok is False):
            d["wrong"] += n
        elif state == "proposed":
            d["open"] += n
        if state == "auto":
            d["auto"] += n
    versions = {mv.id: mv for mv in session.exec(select(ModelVersion).where(ModelVersion.project_id == project_id))}
    for mv_id, d in sorted(per.items()):
        n = d["right"] + d["wrong"]
        lo, hi = interval(d["right"], n)
        mv = versions.get(mv_id)
        out.append({"model_version_id": mv_id, "version": mv.version if mv else None, "decided": n,
                    "right": d["right"], "wrong": d["wrong"], "open": d["open"], "auto_accepted": d["auto"],
                    "precision": d["right"] / n if n else None, "interval": [lo, hi], "target": target})
    return out


def project_stats(session: Session, *, project: Project) -> dict[str, Any]:
    assert project.id is not None
    counts = {str(s.value if hasattr(s, "value") else s): int(n) for s, n in session.exec(
        select(Item.status, func.count()).where(Item.project_id == project.id).group_by(col(Item.status))).all()}
    for k in ("unlabelled", "labelled", "proposed", "skipped", "review"):
        counts.setdefault(k, 0)
    counts["total"] = sum(v for k, v in counts.items() if k != "total")
    counts["pending"] = counts["proposed"]
    dist: dict[str, int] = {}
    provenance: dict[str, int] = {}
    for _, prov, data in label_rows(session, project.id):
        provenance[prov.value] = provenance.get(prov.value, 0) + 1
        for lab in labels_in(data):
            dist[lab] = dist.get(lab, 0) + 1
    # hold-out items still calibrating, and those another route would have taken (loop/holdout.py)
    held = {by or "calibration": int(n) for by, n in session.exec(
        select(Item.holdout_taken_by, func.count()).where(Item.project_id == project.id, col(Item.is_holdout).is_(True))
        .group_by(col(Item.holdout_taken_by))).all()}
    holdout = sum(held.values())
    origins = dict(session.exec(select(Annotation.origin, func.count()).where(
        Annotation.project_id == project.id, Annotation.provenance == Provenance.human)
        .group_by(col(Annotation.origin))).all())
    audit_open = session.exec(select(func.count()).select_from(Prediction).where(
        Prediction.project_id == project.id, col(Prediction.audit).is_(True),
        col(Prediction.audit_correct).is_(None))).one()
    current = session.exec(select(ModelVersion).where(ModelVersion.project_id == project.id,
                                                      col(ModelVersion.is_current).is_(True))).first()
    jobs = session.exec(select(Job).where(Job.project_id == project.id).order_by(col(Job.id).desc())
                        .limit(20)).all()
    readiness = readiness_report(session, project)
    target = float((project.policy or {}).get("target_precision", 0.95))
    pool = counts["unlabelled"] + counts["skipped"] + counts["proposed"]
    return {
        "project_id": project.id,
        "counts": counts,
        "queue": {"holdout_labels": int(holdout), "holdout_calibrating": held.pop("calibration", 0),
                  "holdout_taken_by": held, "human_labels_by_origin": origins,
                  "audit_open": int(audit_open), "unlabelled_pool": pool},
        "label_distribution": dist,
        "provenance": provenance,
        "model": None if current is None else {
            "id": current.id, "version": current.version, "algorithm": current.algorithm,
            "created_at": current.created_at.isoformat(), "metrics": {
                k: v for k, v in current.metrics.items() if k != "history"},
            "n_train": current.n_train, "n_holdout": current.n_holdout},
        "readiness": {"ready": readiness["ready"], "reasons": readiness["reasons"]},
        "next_training": readiness["next_training"],
        "runs": [{"id": j.id, "kind": j.kind, "state": j.state.value, "progress": j.progress,
                  "message": j.message, "created_at": j.created_at.isoformat(),
                  "finished_at": j.finished_at.isoformat() if j.finished_at else None} for j in jobs],
        "precision": realised_precision(session, project.id, target),
        "target_precision": target,
        "coverage": (counts["proposed"] / pool) if pool else 0.0,
    }
