"""Experiment 1 of :mod:`lab.sim_review`: actions per item (the oracle's policy is in that module's doc)."""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlmodel import Session, col, func, select

from lab.review_harness import (
    OPEN,
    Harness,
    ReviewConfig,
    label_accuracy,
    labels_since_training,
    make_harness,
    single_label,
)
from service.loop import pending
from service.loop.grids import confirm_page, find_page, lease_pages, skip_page
from service.models import Item, ItemStatus

log = logging.getLogger("labelloop.sim_review")


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

