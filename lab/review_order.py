"""Order of confirmation (issue 23): does the order a person works Pending in change what the
next model certifies?

One simulated project (:mod:`lab.review_harness`: the product's queue, retraining policy and
jobs, an oracle labeller) is labelled from the queue to ``budget`` human labels on its policy,
with a last training on every label. That state (the SQLite database and the data dir) is
copied once per arm, so the arms start identical. In each arm the oracle walks Pending's
proposals in the arm's order, through the product's own Pending decisions
(:func:`service.loop.pending.confirm` / ``correct`` / ``reject``, never the HTTP routes):

* a right proposal is confirmed, until ``confirm`` are;
* the first wrong one it meets is corrected (its true class), the second rejected, later
  wrong ones skipped; the walk goes on past the confirmations until both are done (as the
  issue's original finding did: 50 confirmations, one correction, one rejection).

Arms (:data:`ARMS`): ``random`` (Pending's proposals shuffled), ``by class`` (the classes
in a random order, all proposals of one class in a random order before the next class)
and ``top-down`` (Pending's own order, :func:`service.loop.pending.list_pending`: by class,
then score high to low). Then the real ``train`` job runs (and the inference after it) and
the arm is measured: the calibrating hold-out (:func:`service.crud.holdout.calibration_items`)
before and after the decisions, hold-out images taken by Pending, and the new model's
certified coverage of the pool (:func:`lab.simulate.measure`).
"""

from __future__ import annotations

import logging
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, func, select

from lab.review_harness import Harness, ReviewConfig, labels_since_training, make_harness, single_label
from lab.simulate import measure
from service.crud.holdout import calibration_items
from service.db import engine_from_settings
from service.jobs.runner import ThreadExecutor, enqueue
from service.loop import pending
from service.models import Item

log = logging.getLogger("labelloop.sim_review")
ARMS = ("random", "by class", "top-down")
Row = dict[str, Any]


def order_rows(arm: str, rows: list[Row], rng: random.Random) -> list[Row]:
    """Pending's ``rows`` (in Pending's order) in the order the arm's person works them."""
    if arm == "top-down":
        return list(rows)
    if arm == "random":
        return rng.sample(rows, len(rows))
    if arm == "by class":
        classes = sorted({r["label"] for r in rows})
        rng.shuffle(classes)
        return [r for c in classes for r in rng.sample([r for r in rows if r["label"] == c],
                                                       sum(r["label"] == c for r in rows))]
    raise ValueError(f"unknown arm {arm!r}; known: {', '.join(ARMS)}")


def walk(rows: list[Row], truth: dict[int, str], confirm: int) -> list[tuple[str, Row]]:
    """The decisions of a person walking ``rows``: ``("confirm" | "correct" | "reject", row)``
    (see the module's doc)."""
    out: list[tuple[str, Row]] = []
    confirmed = wrong = 0
    for r in rows:
        if confirmed >= confirm and wrong >= 2:
            break
        if r["label"] == truth[r["item_id"]]:
            if confirmed < confirm:
                out.append(("confirm", r))
                confirmed += 1
        elif wrong < 2:
            out.append(("correct" if wrong == 0 else "reject", r))
            wrong += 1
    return out


def holdout_state(h: Harness) -> dict[str, int]:
    """Calibrating hold-out images, and hold-out images taken by each route so far."""
    with Session(h.engine) as s:
        taken = dict(s.exec(select(Item.holdout_taken_by, func.count()).where(
            Item.project_id == h.project_id, col(Item.is_holdout).is_(True),
            col(Item.holdout_taken_by).is_not(None)).group_by(col(Item.holdout_taken_by))).all())
        return {"calibrating": len(calibration_items(s, h.project_id)),
                **{f"taken_by_{k}": int(v) for k, v in taken.items()}}


def decide(h: Harness, decisions: list[tuple[str, Row]]) -> dict[str, int]:
    """Apply the decisions one by one through the product's Pending functions."""
    done = {"confirm": 0, "correct": 0, "reject": 0}
    for what, r in decisions:
        with Session(h.engine, expire_on_commit=False) as s:
            project = h.project(s)
            if what == "confirm":
                pending.confirm(s, project=project, ids=[r["prediction_id"]], user=h.user)
            elif what == "correct":
                pending.correct(s, project=project, prediction_id=r["prediction_id"],
                                labels=[h.truth[r["item_id"]]], user=h.user)
            else:
                pending.reject(s, project=project, ids=[r["prediction_id"]], user=h.user)
            s.commit()
        done[what] += 1
    return done


def train(h: Harness, reason: str) -> None:
    """The real ``train`` job (and the inference it starts)."""
    with Session(h.engine) as s:
        enqueue(s, kind="train", project_id=h.project_id, payload={"reason": reason})
        s.commit()
    h.run_jobs()


def copy_state(h: Harness, dst: Path, seed: int) -> Harness:
    """A copy of ``h``'s data dir (its SQLite database by the backup API) as a new harness."""
    import sqlite3

    shutil.copytree(h.data_dir, dst, symlinks=True, ignore=shutil.ignore_patterns("sim.db*", "arm-*"))
    with sqlite3.connect(h.data_dir / "sim.db") as a, sqlite3.connect(dst / "sim.db") as b:
        a.backup(b)
    settings = h.settings.model_copy(update={"data_dir": dst, "database_url": f"sqlite:///{dst / 'sim.db'}"})
    engine = engine_from_settings(settings)
    return Harness(engine, settings, h.project_id, h.user, h.truth, ThreadExecutor(engine, settings),
                   random.Random(seed), dst)


def _coverage(point: dict[str, Any]) -> dict[str, Any]:
    keys = ("model_version", "pool", "proposed", "precision", "coverage", "fresh_holdout_coverage", "holdout",
            "pool_accuracy")
    return {k: point.get(k) for k in keys}


def order_run(cfg: ReviewConfig, *, work_dir: Path | None = None, confirm: int = 50,
              arms: tuple[str, ...] = ARMS, log_fn: Callable[[str], None] = log.info) -> dict[str, Any]:
    """Label to ``cfg.budget`` on the policy, then each arm from a copy of that state."""
    t0 = time.perf_counter()
    h = make_harness(cfg, work_dir)
    n = 0
    while n < cfg.budget:
        if single_label(h) is None:
            break
        n += 1
        if n % 20 == 0:
            h.train_if_due()
        if n % 100 == 0:
            log_fn(f"labelled {n}")
    if labels_since_training(h):  # a last training on every label
        train(h, "simulation checkpoint")
    before = measure(h.engine, h.project_id, h.truth, n)
    hold = holdout_state(h)
    with Session(h.engine) as s:
        rows, count = pending.list_pending(s, project=h.project(s), limit=10**6)
    h.engine.dispose()
    out: dict[str, Any] = {"seed": cfg.seed, "pool": cfg.pool, "labels": n, "confirm": confirm,
                           "pending": count, "pending_right": sum(r["label"] == h.truth[r["item_id"]] for r in rows),
                           "before": {**_coverage(before), "holdout": hold}, "arms": [],
                           "label_seconds": round(time.perf_counter() - t0, 1)}
    log_fn(f"at {n} labels: coverage {before['coverage']:.3f}, {count} pending, hold-out {hold}")
    for k, arm in enumerate(arms):
        ta = time.perf_counter()
        a = copy_state(h, h.data_dir / f"arm-{k}", cfg.seed * 1000 + k)
        decisions = walk(order_rows(arm, rows, random.Random(cfg.seed * 1000 + k)), h.truth, confirm)
        done = decide(a, decisions)
        after_decisions = holdout_state(a)
        train(a, f"order of confirmation: {arm}")
        after = measure(a.engine, a.project_id, a.truth, n + len(decisions))
        taken = after_decisions.get("taken_by_pending", 0) - hold.get("taken_by_pending", 0)
        row = {"arm": arm, "decisions": done, "walked": len(decisions),
               "holdout_before": hold["calibrating"], "holdout_after": after_decisions["calibrating"],
               "taken_by_pending": taken, "holdout_state": after_decisions, **_coverage(after),
               "seconds": round(time.perf_counter() - ta, 1)}
        out["arms"].append(row)
        log_fn(f"arm {arm}: {row}")
        a.close()
    covs = [r["coverage"] for r in out["arms"]]
    out["coverage_spread"] = max(covs) - min(covs) if covs else None
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def table(report: dict[str, Any]) -> str:
    """The result as a markdown table."""
    b = report["before"]
    lines = [f"seed {report['seed']}, pool {report['pool']}, {report['labels']} human labels: certified coverage "
             f"{b['coverage']:.3f} (model v{b['model_version']}), {report['pending']} proposals pending "
             f"({report['pending_right']} right), calibrating hold-out {b['holdout']['calibrating']}", "",
             "| arm | confirmed / corrected / rejected | calibrating hold-out before -> after | taken by Pending "
             "| certified coverage after | precision of proposals after |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in report["arms"]:
        d = r["decisions"]
        prec = "-" if r["precision"] is None else f"{r['precision']:.3f}"
        lines.append(f"| {r['arm']} | {d['confirm']} / {d['correct']} / {d['reject']} | {r['holdout_before']} -> "
                     f"{r['holdout_after']} | {r['taken_by_pending']} | {r['coverage']:.3f} | {prec} |")
    if report.get("coverage_spread") is not None:
        lines += ["", f"spread of certified coverage across arms: {report['coverage_spread']:.3f} "
                  f"(target: within 0.05)"]
    return "\n".join(lines)


def config_dict(cfg: ReviewConfig) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()}


def from_args(args: Any, torch_threads: int = 2, command: str = "") -> dict[str, Any]:
    """``labelloop simulate-review order``: one run per seed; writes ``out/order.json`` and ``.md``."""
    import json

    extra = dict(getattr(args, "policy", []))
    for key, value in (("grid_min_confidence", args.grid_min_confidence), ("epochs", args.epochs),
                       ("features", args.features)):
        if value is not None:
            extra[key] = value
    if args.grid_purity is not False:
        extra["grid_purity"] = args.grid_purity
    cfg = ReviewConfig(pool=args.pool, pool_seed=args.pool_seed, algorithm=args.algorithm, strategy=args.strategy,
                       retrain_every=args.retrain_every or ReviewConfig.retrain_every,
                       holdout_share=args.holdout_share, target=args.target, delta=args.delta,
                       calibration=args.calibration, image_size=args.image_size, dataset=args.dataset,
                       torch_threads=torch_threads, budget=args.budget or 1000, extra_policy=extra)
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.out / "work"
    (work / "embeddings").mkdir(parents=True, exist_ok=True)
    runs = []
    for seed in range(args.seed, args.seed + args.seeds):
        c = ReviewConfig(**{**asdict(cfg), "seed": seed})
        runs.append(order_run(c, work_dir=work, confirm=args.confirm))
        report = {"experiment": "order", "command": command, "config": config_dict(cfg), "runs": runs}
        (args.out / "order.json").write_text(json.dumps(report, indent=1, default=str))
        (args.out / "order.md").write_text(f"`{command}`\n\n" + "\n\n".join(table(r) for r in runs) + "\n")
    return report
