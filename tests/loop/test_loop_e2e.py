"""From labels to a trained model to Pending to confirm, on tiny two-colour images."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
from PIL import Image
from sqlmodel import Session, select

from service.jobs.runner import ThreadExecutor
from service.models import Job
from tests.conftest import Ctx


def colour_png(red: bool, rng: random.Random) -> bytes:
    base = np.array([200, 30, 30] if red else [30, 30, 200], dtype=np.int16)
    arr = np.clip(base + np.array([[[rng.randint(-40, 40) for _ in range(3)]]]) +
                  np.random.default_rng(rng.randint(0, 10**6)).integers(-25, 25, size=(24, 24, 3)), 0, 255)
    buf = io.BytesIO()
    Image.fromarray(arr.astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def run_jobs(ctx: Ctx) -> None:
    ThreadExecutor(ctx.engine, ctx.settings).run_pending()


def label_from_queue(ctx: Ctx, headers: dict[str, str], pid: int, truth: dict[int, str], n: int) -> None:
    """Answer the queue's next ``n`` items truthfully, as a labeler would."""
    for _ in range(n):
        lease = ctx.client.post(f"/api/v1/projects/{pid}/queue/next", headers=headers).json()
        iid = lease["item"]["id"]
        r = ctx.client.post(f"/api/v1/items/{iid}/annotations",
                            json={"labels": [truth[iid]], "lease_id": lease["lease_id"]}, headers=headers)
        assert r.status_code == 201, r.text


@pytest.mark.usefixtures("seeded_streams")  # which items are held out decides this test
def test_labels_to_model_to_pending_to_confirm(ctx: Ctx) -> None:
    ctx.settings.image_size = 32
    admin = ctx.user("root", "admin")
    rng = random.Random(0)
    r = ctx.client.post("/api/v1/projects", json={
        "name": "colours", "classes": ["red", "blue"],
        "policy": {"min_labels_per_class": 5, "holdout_share": 0.5, "target_precision": 0.8, "delta": 0.2,
                   "retrain_every_labels": 1000, "calibration": "pooled"}}, headers=admin)
    pid = r.json()["id"]
    truth = {}
    files = []
    for i in range(120):
        red = i % 2 == 0
        files.append(("files", (f"c{i:03d}.png", colour_png(red, rng), "image/png")))
    r = ctx.client.post(f"/api/v1/projects/{pid}/items", files=files, headers=admin)
    for c in r.json()["created"]:
        truth[c["id"]] = "red" if int(c["file"][1:4]) % 2 == 0 else "blue"
    ready = ctx.client.get(f"/api/v1/projects/{pid}/readiness", headers=admin).json()
    assert not ready["ready"] and any("5" in x for x in ready["reasons"])
    assert ctx.client.post(f"/api/v1/projects/{pid}/train", headers=admin).status_code == 422
    label_from_queue(ctx, admin, pid, truth, 50)
    ready = ctx.client.get(f"/api/v1/projects/{pid}/readiness", headers=admin).json()
    assert ready["ready"], ready
    assert sum(ready["holdout_labels"].values()) >= 12
    r = ctx.client.post(f"/api/v1/projects/{pid}/train", headers=admin)
    assert r.status_code == 202, r.text
    run_jobs(ctx)  # train, then the infer job it enqueues
    job = ctx.client.get(f"/api/v1/jobs/{r.json()['id']}", headers=admin).json()
    assert job["state"] == "succeeded", job
    with Session(ctx.engine) as s:  # every class has its labels: pure uncertainty sampling
        assert s.exec(select(Job).where(Job.kind == "infer")).one().result["exploring_for"] == []
    mvs = ctx.client.get(f"/api/v1/projects/{pid}/model-versions", headers=admin).json()
    assert len(mvs) == 1 and mvs[0]["status"] == "ready" and mvs[0]["is_current"]
    assert mvs[0]["metrics"]["holdout_accuracy"] >= 0.9
    assert mvs[0]["thresholds"]["pooled"]["threshold"] is not None
    assert mvs[0]["policy"]["target_precision"] == 0.8
    pending = ctx.client.get(f"/api/v1/projects/{pid}/pending?limit=500", headers=admin).json()
    assert pending["count"] >= 30, pending["count"]
    right = [p for p in pending["data"] if p["label"] == truth[p["item_id"]]]
    assert len(right) / len(pending["data"]) >= 0.9
    first, second = pending["data"][0], pending["data"][1]
    r = ctx.client.post(f"/api/v1/projects/{pid}/pending/confirm", json={"ids": [first["prediction_id"]]},
                        headers=admin)
    assert r.status_code == 200
    hist = ctx.client.get(f"/api/v1/items/{first['item_id']}/history", headers=admin).json()
    assert hist[-1]["provenance"] == "model-confirmed" and hist[-1]["model_version_id"] == mvs[0]["id"]
    assert ctx.client.post(f"/api/v1/projects/{pid}/pending/confirm", json={"ids": [first["prediction_id"]]},
                           headers=admin).status_code == 409
    r = ctx.client.post(f"/api/v1/projects/{pid}/pending/reject", json={"ids": [second["prediction_id"]]},
                        headers=admin)
    assert r.status_code == 200
    item = ctx.client.get(f"/api/v1/items/{second['item_id']}", headers=admin).json()
    assert item["status"] == "unlabelled"
    # a rejected label is not proposed again by the same model version
    ctx.client.post(f"/api/v1/projects/{pid}/train", headers=admin)
    stats = ctx.client.get(f"/api/v1/projects/{pid}/stats", headers=admin).json()
    assert stats["counts"]["labelled"] == 51 and stats["model"]["version"] == 1
    assert stats["precision"][0]["decided"] == 2 and stats["precision"][0]["right"] == 1


@pytest.mark.usefixtures("seeded_streams")
def test_the_queue_explores_while_a_class_has_no_labels(ctx: Ctx, monkeypatch: pytest.MonkeyPatch) -> None:
    # "green" exists in the project but nobody has labelled one: the model cannot know it,
    # so uncertainty sampling alone would never ask about one; the infer job explores, and says so
    from service.pipelines import classification

    asked: list[bool] = []
    real = classification.query_scores

    def spy(*args: object, **kw: object) -> np.ndarray:
        asked.append(bool(kw.get("explore")))
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(classification, "query_scores", spy)

    ctx.settings.image_size = 32
    admin = ctx.user("root", "admin")
    rng = random.Random(1)
    r = ctx.client.post("/api/v1/projects", json={
        "name": "colours", "classes": ["red", "blue", "green"],
        "policy": {"min_labels_per_class": 5, "holdout_share": 0.3, "retrain_every_labels": 1000}}, headers=admin)
    pid = r.json()["id"]
    files = [("files", (f"c{i:03d}.png", colour_png(i % 2 == 0, rng), "image/png")) for i in range(60)]
    created = ctx.client.post(f"/api/v1/projects/{pid}/items", files=files, headers=admin).json()["created"]
    truth = {c["id"]: "red" if int(c["file"][1:4]) % 2 == 0 else "blue" for c in created}
    label_from_queue(ctx, admin, pid, truth, 30)
    assert ctx.client.post(f"/api/v1/projects/{pid}/train", headers=admin).status_code == 202
    run_jobs(ctx)
    with Session(ctx.engine) as s:
        infer = s.exec(select(Job).where(Job.kind == "infer", Job.project_id == pid)).one()
    assert infer.state == "succeeded", infer.error
    assert infer.result["exploring_for"] == ["green"] and asked == [True]
