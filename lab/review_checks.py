"""Experiments 3 and 4 of :mod:`lab.sim_review`: label-error flags against the corrupted labels,
and the audits' precision interval against the truth."""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from sqlmodel import Session, col, select

from lab.fashion import FASHION_CLASSES
from lab.review_harness import Harness, ReviewConfig, labels_since_training, make_harness, single_label
from service.crud.annotations import AnnotationIn, submit
from service.db import engine_from_settings
from service.jobs.runner import ThreadExecutor, enqueue
from service.loop.stats import interval, realised_precision
from service.models import Annotation, Item, Prediction, ReviewFlag

# -- 3. label errors ---------------------------------------------------------------------------


def label_errors_run(cfg: ReviewConfig, *, work_dir: Path | None = None) -> dict[str, Any]:
    """Noisy oracle for ``budget`` queue labels on the product's schedule: every training is
    followed, as the scheduler does (:func:`service.pipelines.jobs.hard_examples_check`), by
    the ``hard_examples`` scan, and nobody resolves a flag. At each of ``cfg.checkpoints`` (and
    at the end) the ``label error`` flags raised so far, less those a later scan withdrew, are
    scored against the corrupted
    labels: the share of human labels flagged, and precision and recall over all flags; then
    the old figure, recall and precision among the top ``cut`` of labels by flag score after
    one last scan.

    With ``work_dir``, each scan's evidence goes to ``work_dir/evidence-<seed>/scan-NNN.npz``
    (the checked labels' item ids, given classes, the cross-fits ``[R, N, C]`` and the labels
    skipped as open or judged) with ``truth.json`` beside it, so that
    ``lab/benchmarks/flag_replay.py`` can replay any flag rule over the same scans."""
    from service.loop.review import LABEL_ERROR
    from service.pipelines import classification_scans
    from service.pipelines.jobs import hard_examples_check

    t0 = time.perf_counter()
    h = make_harness(cfg, work_dir)
    noise_rng = random.Random(cfg.seed + 7919)
    corrupted: set[int] = set()
    n, scans, job_seconds = 0, 0, 0.0
    checkpoints: list[dict[str, Any]] = []
    marks = sorted({c for c in cfg.checkpoints if c <= cfg.budget} | {cfg.budget})

    def flagged() -> tuple[list[int], set[int]]:
        with Session(h.engine) as s:
            flags = s.exec(select(ReviewFlag).where(ReviewFlag.project_id == h.project_id,
                                                    ReviewFlag.kind == LABEL_ERROR)
                           .order_by(col(ReviewFlag.score).desc(), col(ReviewFlag.id))).all()
            holdout = {int(i or 0) for i in s.exec(select(Item.id).where(
                Item.project_id == h.project_id, col(Item.is_holdout).is_(True))).all()}
        return [f.item_id for f in flags if not f.detail.get("withdrawn")], holdout

    def scan() -> None:
        nonlocal scans, job_seconds
        tj = time.perf_counter()
        hard_examples_check(h.engine, h.settings)
        h.run_jobs()
        job_seconds += time.perf_counter() - tj
        scans += 1

    evidence = None if work_dir is None else work_dir / f"evidence-{cfg.seed}"
    restore = _record_evidence(classification_scans, h, evidence) if evidence is not None else None

    while n < cfg.budget:
        got = single_label(h, noise=cfg.noise, rng=noise_rng)
        if got is None:
            break
        n += 1
        if got[2] != h.truth[got[0]]:
            corrupted.add(got[0])
        if n % 20 == 0 and h.train_if_due():
            scan()
        if n in marks:
            ranked, holdout = flagged()
            items = set(ranked)
            hits = len(items & corrupted)
            checkpoints.append({
                "labels": n, "corrupted": len(corrupted), "flagged": len(items),
                "flagged_share": len(items) / n, "hits": hits,
                "precision": hits / len(items) if items else None,
                "recall": hits / len(corrupted) if corrupted else None,
                "flagged_in_holdout": len(items & holdout), "scans": scans})
    with Session(h.engine) as s:
        enqueue(s, kind="hard_examples", project_id=h.project_id, payload={"reason": "simulation"})
        s.commit()
    tj = time.perf_counter()
    h.run_jobs()
    job_seconds += time.perf_counter() - tj
    ranked, holdout = flagged()
    cut = int(round(cfg.cut * n))
    top = ranked[:cut]
    hits = len(set(top) & corrupted)
    all_hits = len(set(ranked) & corrupted)
    out = {"seed": cfg.seed, "strategy": cfg.strategy, "noise": cfg.noise, "labels": n,
           "corrupted": len(corrupted), "checkpoints": checkpoints, "scans": scans + 1,
           "flags": len(ranked), "cut": cut, "top_flagged": len(top), "hits_in_cut": hits,
           "recall_at_cut": hits / len(corrupted) if corrupted else None,
           "precision_at_cut": hits / len(top) if top else None,
           "recall_all_flags": all_hits / len(corrupted) if corrupted else None,
           "precision_all_flags": all_hits / len(ranked) if ranked else None,
           "flagged_share": len(set(ranked)) / n if n else None,
           "corrupted_in_holdout": len(corrupted & holdout),
           "job_seconds": job_seconds, "seconds": time.perf_counter() - t0}
    if evidence is not None and restore is not None:
        restore()
        given = _given_labels(h)
        (evidence / "truth.json").write_text(json.dumps({
            "classes": FASHION_CLASSES, "truth": {str(k): v for k, v in h.truth.items()},
            "given": {str(k): v for k, v in given.items()}, "corrupted": sorted(corrupted),
            "checkpoints": marks, "noise": cfg.noise, "seed": cfg.seed}))
        out["evidence"] = str(evidence)
    h.close()
    return out


def _record_evidence(module: Any, h: Harness, folder: Path) -> Callable[[], None]:
    """Wrap the scan's ``compute`` and ``label_evidence`` in ``module`` so each scan's evidence
    is saved to ``folder`` (see :func:`label_errors_run`); returns the function that unwraps them."""
    folder.mkdir(parents=True, exist_ok=True)
    compute, evidence = module.compute, module.label_evidence
    state: dict[str, Any] = {}

    def label_evidence(x: Any, y: Any, n: int, **kw: Any) -> Any:
        fits = evidence(x, y, n, **kw)
        state["fits"] = fits
        return fits

    def wrapped(inputs: Any, ctx: Any) -> Any:
        state.clear()
        out = compute(inputs, ctx)
        if "fits" in state and inputs.y is not None:
            with Session(h.engine) as s:
                ids = dict(s.exec(select(Item.sha256, Item.id).where(Item.project_id == h.project_id)).all())
            k = len(list(folder.glob("scan-*.npz")))
            np.savez_compressed(folder / f"scan-{k:03d}.npz", item_ids=np.asarray([ids[x] for x in inputs.shas]),
                                y=np.asarray(inputs.y), fits=np.asarray(state["fits"], dtype=np.float32),
                                skip=np.asarray(inputs.skip, dtype=bool), open_flags=inputs.open_flags,
                                flagged=np.asarray([f.index for f in out.flags], dtype=np.int64))
        return out

    module.compute, module.label_evidence = wrapped, label_evidence

    def restore() -> None:
        module.compute, module.label_evidence = compute, evidence
    return restore


def _given_labels(h: Harness) -> dict[int, str]:
    """The current human label of every labelled item."""
    with Session(h.engine) as s:
        rows = s.exec(select(Item, Annotation).join(Annotation, (col(Annotation.item_id) == Item.id) & (
            col(Annotation.version) == Item.version)).where(Item.project_id == h.project_id)).all()
    return {int(it.id or 0): a.data["labels"][0] for it, a in rows if len(a.data.get("labels", [])) == 1}


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

