"""Simulator experiments for "make every human action count" (Fashion-MNIST, oracle labeler).

Every experiment drives the service's own code on an in-process SQLite database
(:mod:`lab.simulate` sets up the same way): the queue (``next_item`` /
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

**2. Strategies** (:func:`strategies_run`): :func:`lab.simulate.run` per strategy
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
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lab.review_actions import actions_run
from lab.review_checks import audit_run, label_errors_run
from lab.review_harness import ReviewConfig
from lab.review_report import markdown, summarize
from lab.review_strategies import labels_to, strategies_run
from lab.simulate import SimConfig

__all__ = ["ReviewConfig", "actions_run", "audit_run", "experiment", "from_args", "label_errors_run", "labels_to",
           "strategies_run"]
log = logging.getLogger("labelloop.sim_review")


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
