"""Cold start: before any model, the first queue items span the image clusters."""

from __future__ import annotations

import random

import numpy as np
import pytest
from sqlmodel import Session, col, select

from service.crud import queue
from service.loop.clusters import cold_start_check, farthest_first
from service.models import Item
from tests.conftest import Ctx
from tests.loop.helpers import colour_project, run_jobs


class NoHoldout(random.Random):
    """The queue's coin never sends a draw to the hold-out stream."""

    def random(self) -> float:
        return 0.99


def test_farthest_first_spreads_every_prefix() -> None:
    pts = np.asarray([[1.0, 0.0], [0.995, 0.0998], [0.0, 1.0], [-1.0, 0.0], [0.0998, 0.995]])
    assert farthest_first(pts).tolist()[:3] == [0, 3, 2]
    assert farthest_first(pts, np.asarray([[1.0, 0.0]]))[0] == 3  # away from what is labelled


def test_first_leases_of_a_fresh_project_span_the_colour_groups(ctx: Ctx, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(queue, "_rng", NoHoldout())
    admin = ctx.user("root", "admin")
    # unbalanced on purpose: random order would mostly serve red first
    pid, truth = colour_project(ctx, admin, {"red": 24, "green": 6, "blue": 4}, image_size=64,
                                policy={"holdout_share": 0.01})
    cold_start_check(ctx.engine, ctx.settings)
    assert run_jobs(ctx) == 1
    with Session(ctx.engine) as s:
        scored = s.exec(select(Item).where(Item.project_id == pid, col(Item.query_score) >= 1.0)).all()
        assert 3 <= len(scored) <= 17
    cold_start_check(ctx.engine, ctx.settings)  # picks are waiting: nothing to do
    assert run_jobs(ctx) == 0
    served = []
    for _ in range(3):
        r = ctx.client.post(f"/api/v1/projects/{pid}/queue/next", headers=admin)
        assert r.status_code == 200 and r.json()["reason"] == "strategy", r.text
        iid = r.json()["item"]["id"]
        served.append(truth[iid])
        r = ctx.client.post(f"/api/v1/items/{iid}/annotations",
                            json={"labels": [truth[iid]], "lease_id": r.json()["lease_id"]}, headers=admin)
        assert r.status_code == 201, r.text
    assert sorted(served) == ["blue", "green", "red"], served
