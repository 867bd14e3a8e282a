"""A detection project end to end: a few labelled canvases -> train (scheduled by the
retraining policy, through the detection pipeline) -> calibrated box thresholds -> infer ->
proposals in Pending."""

from __future__ import annotations

import pytest
from sqlmodel import Session, select

from service.jobs.runner import ThreadExecutor
from service.models import Job, ModelVersion, Prediction, ReviewFlag
from service.pipelines.jobs import retraining_check
from tests.conftest import Ctx
from tests.detection.conftest import CLASSES, iou, shapes_project


@pytest.mark.usefixtures("seeded_streams")  # which items are held out decides this test
def test_labelled_canvases_to_detector_to_proposals(ctx: Ctx) -> None:
    admin = ctx.user("root", "admin")
    policy = {"min_labels_per_class": 3, "holdout_share": 0.5, "target_precision": 0.7, "delta": 0.2,
              "retrain_every_labels": 1000, "epochs": 10, "image_size": 64}
    pid, truth = shapes_project(ctx, admin, policy, n=80, seed=0)
    for _ in range(64):  # 32 hold-out canvases: with 22 some draws certified no class
        lease = ctx.client.post(f"/api/v1/projects/{pid}/queue/next", headers=admin).json()
        ann = truth[lease["item"]["id"]]
        r = ctx.client.post(f"/api/v1/items/{lease['item']['id']}/annotations", headers=admin,
                            json={"boxes": ann["boxes"], "lease_id": lease["lease_id"]})
        assert r.status_code == 201, r.text
    retraining_check(ctx.engine, ctx.settings)  # the periodic check enqueues the first training
    with Session(ctx.engine) as s:
        assert [j.kind for j in s.exec(select(Job)).all()] == ["train"]
    ThreadExecutor(ctx.engine, ctx.settings).run_pending()  # train, then infer
    with Session(ctx.engine) as s:
        jobs = {j.kind: j for j in s.exec(select(Job)).all()}
        assert jobs["train"].state == "succeeded", jobs["train"].error
        assert jobs["infer"].state == "succeeded", jobs["infer"].error
        assert jobs["train"].result["flags"] == len(s.exec(select(ReviewFlag)).all())  # hold-out flags
        mv = s.exec(select(ModelVersion)).one()
        assert mv.status == "ready" and mv.is_current and mv.n_holdout >= 8
        assert mv.thresholds["kind"] == "boxes" and set(mv.thresholds["in_force"]) == set(CLASSES)
        assert mv.metrics["holdout_map50"] > 0.5, mv.metrics
        preds = s.exec(select(Prediction).where(Prediction.state == "proposed")).all()
    assert any(t is not None for t in mv.thresholds["in_force"].values()), mv.thresholds
    assert preds, (mv.thresholds["in_force"], mv.thresholds["possible"], mv.metrics["holdout_map50"], mv.n_holdout)
    right = total = 0
    for p in preds:
        gt = truth[p.item_id]["boxes"]
        for b in p.data["boxes"]:
            total += 1
            right += any(g["label"] == b["label"] and iou(g["bbox"], b["bbox"]) >= 0.5 for g in gt)
    # the promise is the policy's target (0.7 here); the detector's training does not repeat exactly
    # from one process to the next, and one CI run saw 18 of 23 boxes right (0.78)
    assert right / total >= policy["target_precision"]
    listed = ctx.client.get(f"/api/v1/projects/{pid}/pending", headers=admin).json()
    assert listed["count"] == len(preds)
    first = listed["data"][0]
    r = ctx.client.post(f"/api/v1/projects/{pid}/pending/confirm", json={"ids": [first["prediction_id"]]},
                        headers=admin)
    assert r.status_code == 200
    hist = ctx.client.get(f"/api/v1/items/{first['item_id']}/history", headers=admin).json()
    assert hist[-1]["provenance"] == "model-confirmed" and hist[-1]["data"]["boxes"]

    # a scan mirrors every open proposal once (and cross-fits the labelled images)
    assert ctx.client.post(f"/api/v1/projects/{pid}/review/scan", headers=admin).status_code == 202
    ThreadExecutor(ctx.engine, ctx.settings).run_pending()
    with Session(ctx.engine) as s:
        scan = s.exec(select(Job).where(Job.kind == "hard_examples")).one()
        assert scan.state == "succeeded", scan.error
        still = s.exec(select(Prediction).where(Prediction.state == "proposed")).all()
        assert scan.result["checked_proposals"] == len(still) == len(preds) - 1
        assert all("tta_flip" in p.data for p in still)
        flags = s.exec(select(ReviewFlag)).all()
    assert scan.result["unstable_boxes"] == sum(f.detail.get("source") == "test-time augmentation" for f in flags)
