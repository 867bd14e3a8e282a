"""The inference job gives diversity-aware strategies the pool's embeddings: a batch of the
queue's next items is spread out, not only the most uncertain look-alikes."""

from __future__ import annotations

from sqlmodel import Session, col, select

from service.models import Item
from tests.conftest import Ctx
from tests.loop.helpers import colour_project, label, run_jobs, start_job


def _scores(ctx: Ctx, pid: int) -> list[float]:
    with Session(ctx.engine) as s:
        return [float(x) for x in s.exec(select(Item.query_score).where(
            Item.project_id == pid, col(Item.query_score).is_not(None))).all()]


def test_margin_diverse_ranks_a_selected_batch_first(ctx: Ctx) -> None:
    admin = ctx.user("root", "admin")
    pid, truth = colour_project(ctx, admin, {"red": 20, "green": 20, "blue": 20},
                                policy={"strategy": "margin_diverse", "algorithm": "fast"})
    for colour in ("red", "green", "blue"):
        for iid in [i for i, c in truth.items() if c == colour][:6]:
            label(ctx, admin, iid, colour)
    start_job(ctx, "train", pid)
    run_jobs(ctx)  # train, then infer with the new model
    scores = _scores(ctx, pid)
    assert scores, "inference wrote no query scores"
    # the diverse selection ranks its batch above every plain margin score (those are <= 1);
    # a pool smaller than the batch (200) is selected whole, each item with its own rank
    picked = [x for x in scores if x >= 2.0]
    assert len(picked) == len(scores) == len(set(picked))
