"""Automatic annotation keeps Pending and the item statuses in step.

Two runs of automatic annotation with different model versions (the first-hour path of a
new user: "model v1", later "model v2", without "clean old annotations") must leave one
open proposal per image, not one per model version; an item is ``proposed`` exactly when
it has an open proposal, so ``GET /stats`` (pending) and ``GET /pending`` (count) agree
after every run, with and without ``clean_old``; an image that gets a person's or a
confirmed label keeps no open proposal.

The model is a deterministic fake (one per seam): a "colour classifier" that reads each
image's mean colour, standing in for a trained version's adapter (``load_adapter``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from sqlmodel import Session, select

import service.loop.annotate as annotate_mod
from learning.adapters.base import Predictions
from service.crud.annotations import write_version
from service.jobs.runner import claim_next, run_job
from service.models import Item, ItemStatus, ModelVersion, Prediction, Provenance
from tests.conftest import Ctx
from tests.loop.helpers import COLOURS, colour_project

CLASSES = list(COLOURS)  # red, green, blue


class ColourModel:
    """``predict(paths) -> probs [N, 3]``: ``sharp`` * (mean RGB / its sum) + the rest spread
    evenly. ``sharp=1``: about 0.75 for the image's own colour; ``sharp=0``: 1/3 each (unsure)."""

    task = "multiclass"
    classes = CLASSES

    def __init__(self, sharp: float = 1.0, during_predict: Any = None) -> None:
        self.sharp, self.during_predict = sharp, during_predict

    def predict(self, paths: list[Path], **_: Any) -> Predictions:
        if self.during_predict is not None:
            self.during_predict()
        rows = []
        for path in paths:
            rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64).mean(axis=(0, 1))
            rows.append(self.sharp * rgb / rgb.sum() + (1 - self.sharp) / 3)
        return Predictions(probs=np.asarray(rows, dtype=np.float32))


@pytest.fixture
def models(monkeypatch: pytest.MonkeyPatch) -> dict[str, ColourModel]:
    """Model-version paths -> fake adapters (``service.loop.clusters.load_model`` looks
    ``load_adapter`` up when the job runs)."""
    import service.loop.clusters

    table: dict[str, ColourModel] = {}
    monkeypatch.setattr(service.loop.clusters, "load_adapter", lambda path, *a, **kw: table[str(path)])
    return table


def version(ctx: Ctx, pid: int, n: int, models: dict[str, ColourModel], model: ColourModel,
            current: bool = False) -> int:
    """A ready model version ``n`` of the project whose adapter is ``model``; its id."""
    path = f"fake://v{n}"
    models[path] = model
    with Session(ctx.engine) as s:
        mv = ModelVersion(project_id=pid, version=n, status="ready", path=path, classes=CLASSES, is_current=current)
        s.add(mv)
        s.commit()
        assert mv.id is not None
        return mv.id


def annotate(ctx: Ctx, headers: dict[str, str], pid: int, **body: Any) -> dict[str, Any]:
    """Start an ``annotate`` job over HTTP and run it here; the finished job."""
    r = ctx.client.post(f"/api/v1/projects/{pid}/annotate", json=body, headers=headers)
    assert r.status_code == 202, r.text
    job_id = claim_next(ctx.engine, "test", ["annotate"])
    assert job_id == r.json()["id"]
    run_job(ctx.engine, ctx.settings, job_id)
    job = ctx.client.get(f"/api/v1/jobs/{job_id}", headers=headers).json()
    assert job["state"] == "succeeded", job
    return job


def open_by_item(ctx: Ctx) -> dict[int, list[Prediction]]:
    out: dict[int, list[Prediction]] = {}
    with Session(ctx.engine) as s:
        for p in s.exec(select(Prediction).where(Prediction.state == "proposed")).all():
            out.setdefault(p.item_id, []).append(p)
    return out


def statuses(ctx: Ctx, pid: int) -> dict[int, str]:
    with Session(ctx.engine) as s:
        return {int(i.id or 0): i.status.value for i in s.exec(select(Item).where(Item.project_id == pid)).all()}


def assert_in_step(ctx: Ctx, headers: dict[str, str], pid: int) -> int:
    """Statuses and open proposals agree (``proposed`` iff an open proposal; at most one each),
    and so do the dashboard and Pending; the pending count."""
    opened, status = open_by_item(ctx), statuses(ctx, pid)
    assert all(len(v) == 1 for v in opened.values()), {k: len(v) for k, v in opened.items()}
    assert {i for i, s in status.items() if s == "proposed"} == set(opened), (status, sorted(opened))
    stats = ctx.client.get(f"/api/v1/projects/{pid}/stats", headers=headers).json()
    listed = ctx.client.get(f"/api/v1/projects/{pid}/pending?limit=200", headers=headers).json()
    assert stats["counts"]["pending"] == listed["count"] == len(opened)
    return len(opened)


def test_a_newer_model_supersedes_the_older_proposal_without_clean_old(ctx: Ctx, models: dict) -> None:
    boss = ctx.user("boss", "manager")
    pid, truth = colour_project(ctx, boss, {"red": 3, "green": 3, "blue": 3}, name="first-hour")
    v1 = version(ctx, pid, 1, models, ColourModel())
    v2 = version(ctx, pid, 2, models, ColourModel(), current=True)
    first = annotate(ctx, boss, pid, model_version_id=v1, threshold=0.5)
    assert first["result"]["proposed"] == 9
    assert assert_in_step(ctx, boss, pid) == 9
    second = annotate(ctx, boss, pid, model_version_id=v2, threshold=0.5)  # clean_old off (the default)
    assert second["result"]["proposed"] == 9
    assert assert_in_step(ctx, boss, pid) == 9  # not 18: one open proposal per image
    assert {p.model_version_id for ps in open_by_item(ctx).values() for p in ps} == {v2}

    listed = ctx.client.get(f"/api/v1/projects/{pid}/pending?limit=200", headers=boss).json()["data"]
    one = listed[0]
    assert one["label"] == truth[one["item_id"]]
    r = ctx.client.post(f"/api/v1/projects/{pid}/pending/confirm", json={"ids": [one["prediction_id"]]}, headers=boss)
    assert r.status_code == 200, r.text
    assert one["item_id"] not in open_by_item(ctx)  # the labelled image keeps no open proposal
    assert statuses(ctx, pid)[one["item_id"]] == "labelled"
    assert assert_in_step(ctx, boss, pid) == 8

    # a person's label closes the image's proposal too (and a third run leaves it alone)
    two = listed[1]
    r = ctx.client.post(f"/api/v1/items/{two['item_id']}/annotations", json={"labels": [truth[two["item_id"]]]},
                        headers=boss)
    assert r.status_code == 201, r.text
    assert assert_in_step(ctx, boss, pid) == 7
    assert annotate(ctx, boss, pid, model_version_id=v1, threshold=0.5)["result"]["proposed"] == 7
    assert {one["item_id"], two["item_id"]}.isdisjoint(open_by_item(ctx))
    assert assert_in_step(ctx, boss, pid) == 7


@pytest.mark.parametrize("clean_old", [True, False])
def test_an_item_that_loses_its_proposal_is_no_longer_proposed(ctx: Ctx, models: dict, clean_old: bool) -> None:
    """Defect: after annotation with clean old, /stats said 15 pending while /pending listed 14."""
    boss = ctx.user("boss", "manager")
    pid, _ = colour_project(ctx, boss, {"red": 2, "green": 2, "blue": 2})
    v1 = version(ctx, pid, 1, models, ColourModel())
    assert annotate(ctx, boss, pid, model_version_id=v1, threshold=0.5)["result"]["proposed"] == 6
    assert assert_in_step(ctx, boss, pid) == 6
    # the same model, stricter: nothing clears 0.95, so every old proposal goes
    job = annotate(ctx, boss, pid, model_version_id=v1, threshold=0.95, clean_old=clean_old)
    assert job["result"]["proposed"] == 0
    assert assert_in_step(ctx, boss, pid) == 0
    assert set(statuses(ctx, pid).values()) == {"unlabelled"}  # back in the queue


def test_clean_old_with_an_unsure_model_and_a_mixed_pool(ctx: Ctx, models: dict) -> None:
    """Some items keep a proposal, some lose theirs, one had an auto-accepted label."""
    boss = ctx.user("boss", "manager")
    pid, truth = colour_project(ctx, boss, {"red": 3, "green": 3, "blue": 3})
    sure = version(ctx, pid, 1, models, ColourModel())
    unsure = version(ctx, pid, 2, models, ColourModel(sharp=0.0))
    assert annotate(ctx, boss, pid, model_version_id=sure, threshold=0.5)["result"]["proposed"] == 9
    ids = sorted(truth)
    with Session(ctx.engine) as s:  # the model's proposal on ids[0] is gone and an auto-accepted label stands
        for p in s.exec(select(Prediction).where(Prediction.item_id == ids[0])).all():
            p.state = "auto"
            s.add(p)
        item = s.get(Item, ids[0])
        assert item is not None
        write_version(s, item=item, data={"labels": [truth[ids[0]]], "boxes": [], "polygons": []},
                      provenance=Provenance.model, origin="auto", author=None)
        s.commit()
    assert assert_in_step(ctx, boss, pid) == 8
    # the unsure model (1/3 each) proposes nothing at 0.5: clean old takes every old proposal
    job = annotate(ctx, boss, pid, model_version_id=unsure, threshold=0.5, clean_old=True)
    assert job["result"]["proposed"] == 0 and job["result"]["cleaned"] == 1
    assert assert_in_step(ctx, boss, pid) == 0
    job = annotate(ctx, boss, pid, model_version_id=sure, threshold=0.5, filter={"status": ["unlabelled"]})
    assert job["result"]["proposed"] == 9
    assert assert_in_step(ctx, boss, pid) == 9


def test_without_clean_old_an_auto_accepted_label_is_left_alone(ctx: Ctx, models: dict) -> None:
    """A proposal on an item that has its (model) label would sit in Pending while the
    dashboard counts the item as labelled; without clean old such items are not annotated."""
    boss = ctx.user("boss", "manager")
    pid, truth = colour_project(ctx, boss, {"red": 2, "green": 2})
    v1 = version(ctx, pid, 1, models, ColourModel())
    auto = sorted(truth)[0]
    with Session(ctx.engine) as s:
        item = s.get(Item, auto)
        assert item is not None
        write_version(s, item=item, data={"labels": [truth[auto]], "boxes": [], "polygons": []},
                      provenance=Provenance.model, origin="auto", author=None)
        s.commit()
    job = annotate(ctx, boss, pid, model_version_id=v1, threshold=0.5)
    assert job["result"]["items"] == 3 and job["result"]["proposed"] == 3
    assert auto not in open_by_item(ctx) and statuses(ctx, pid)[auto] == "labelled"
    assert assert_in_step(ctx, boss, pid) == 3


def test_an_item_labelled_while_the_model_runs_gets_no_proposal(ctx: Ctx, models: dict,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    boss = ctx.user("boss", "manager")
    pid, truth = colour_project(ctx, boss, {"red": 2, "blue": 2})
    ids = sorted(truth)
    monkeypatch.setattr(annotate_mod, "BATCH", 2)

    def person_labels() -> None:  # the first batch is being predicted: a person labels its first item
        if ids[0] not in statuses(ctx, pid) or statuses(ctx, pid)[ids[0]] == "labelled":
            return
        r = ctx.client.post(f"/api/v1/items/{ids[0]}/annotations", json={"labels": [truth[ids[0]]]}, headers=boss)
        assert r.status_code == 201, r.text

    v1 = version(ctx, pid, 1, models, ColourModel(during_predict=person_labels))
    job = annotate(ctx, boss, pid, model_version_id=v1, threshold=0.5)
    assert job["result"]["items"] == 4
    assert ids[0] not in open_by_item(ctx) and statuses(ctx, pid)[ids[0]] == "labelled"
    assert assert_in_step(ctx, boss, pid) == 3


def test_confirming_one_of_two_legacy_proposals_closes_the_other(ctx: Ctx) -> None:
    """Data written before the fix can hold two open proposals on one image; a label on the
    image (here: confirming one of them) must close the other."""
    boss = ctx.user("boss", "manager")
    pid, truth = colour_project(ctx, boss, {"red": 2})
    item_id = sorted(truth)[0]
    with Session(ctx.engine) as s:
        preds = []
        for n in (1, 2):
            mv = ModelVersion(project_id=pid, version=n, status="ready", classes=CLASSES)
            s.add(mv)
            s.flush()
            p = Prediction(item_id=item_id, project_id=pid, model_version_id=mv.id, label="red",  # type: ignore[arg-type]
                           score=0.8 + n / 100, state="proposed", data={"labels": ["red"]})
            s.add(p)
            preds.append(p)
        item = s.get(Item, item_id)
        assert item is not None
        item.status = ItemStatus.proposed
        s.add(item)
        s.commit()
        first = preds[0].id
    r = ctx.client.post(f"/api/v1/projects/{pid}/pending/confirm", json={"ids": [first]}, headers=boss)
    assert r.status_code == 200, r.text
    assert item_id not in open_by_item(ctx)
    assert ctx.client.get(f"/api/v1/projects/{pid}/pending", headers=boss).json()["count"] == 0


def test_rejecting_one_of_two_legacy_proposals_keeps_the_image_in_pending(ctx: Ctx) -> None:
    boss = ctx.user("boss", "manager")
    pid, truth = colour_project(ctx, boss, {"blue": 2})
    item_id = sorted(truth)[0]
    with Session(ctx.engine) as s:
        ids = []
        for n in (1, 2):
            mv = ModelVersion(project_id=pid, version=n, status="ready", classes=CLASSES)
            s.add(mv)
            s.flush()
            p = Prediction(item_id=item_id, project_id=pid, model_version_id=mv.id, label="blue",  # type: ignore[arg-type]
                           score=0.8, state="proposed", data={"labels": ["blue"]})
            s.add(p)
            s.flush()
            ids.append(p.id)
        item = s.get(Item, item_id)
        assert item is not None
        item.status = ItemStatus.proposed
        s.add(item)
        s.commit()
    r = ctx.client.post(f"/api/v1/projects/{pid}/pending/reject", json={"ids": [ids[0]]}, headers=boss)
    assert r.status_code == 200, r.text
    assert assert_in_step(ctx, boss, pid) == 1
