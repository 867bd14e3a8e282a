"""The dashboard shows the numbers of GET /stats, model versions and live runs."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlmodel import Session

from tests.system.browser.conftest import Live, shot

pytestmark = pytest.mark.browser


def test_dashboard_numbers_equal_stats(live: Live, new_page: Any) -> None:
    from service.jobs.runner import claim_next, enqueue, run_job

    live.user("boss", "manager")
    pid = live.project("boss", n_images=14)["id"]
    with live.api("boss") as c:
        items = [it["id"] for it in c.get(f"/projects/{pid}/items?limit=100").json()["data"]]
        for item, label in zip(items[:6], ["circle", "circle", "circle", "square", "square", "triangle"], strict=True):
            assert c.post(f"/items/{item}/annotations", json={"labels": [label]}).status_code == 201
        assert c.post(f"/items/{items[6]}/skip", json={}).status_code == 204
    mv = live.model_version(pid, algorithm="fast", n_train=5, n_holdout=40,
                            metrics={"n_holdout": 40, "holdout_accuracy": 0.925, "device": "cuda:0"},
                            thresholds={"mode": "per_class", "pooled": None, "per_class": {
                                "circle": {"threshold": 0.81, "lower_bound": 0.95, "n_above": 30, "coverage": 0.7},
                                "square": {"threshold": None, "reason": "too few hold-out labels"}}})
    preds = live.propose(pid, mv, [(items[7], "circle", 0.97), (items[8], "circle", 0.93),
                                   (items[9], "square", 0.9), (items[10], "circle", 0.88)])
    with live.api("boss") as c:
        assert c.post(f"/projects/{pid}/pending/confirm", json={"ids": preds[:2]}).status_code == 200
        assert c.post(f"/projects/{pid}/pending/reject", json={"ids": preds[2:3]}).status_code == 200
        stats = c.get(f"/projects/{pid}/stats").json()
    with Session(live.engine) as s:
        job = enqueue(s, kind="sleep", project_id=pid, payload={"steps": 12, "seconds": 0.15})
        s.commit()
        assert job.id is not None
        job_id: int = job.id

    page = new_page("boss")
    page.goto(f"/web/#/project/{pid}/dashboard")
    page.get_by_test_id("stat-total").wait_for()
    for key in ("total", "labelled", "unlabelled", "proposed", "skipped", "review"):
        assert page.get_by_test_id(f"stat-{key}").inner_text() == str(stats["counts"][key]), key
    assert page.get_by_test_id("stat-holdout").inner_text() == str(stats["queue"]["holdout_labels"])
    for name, n in stats["label_distribution"].items():
        assert page.get_by_test_id(f"dist-{name}").inner_text() == str(n)
    assert page.get_by_test_id("target-precision").inner_text() == f"{stats['target_precision'] * 100:.1f}%"
    [prec] = stats["precision"]
    assert page.get_by_test_id("precision-v1").get_by_test_id("precision-value").inner_text() == \
        f"{prec['precision'] * 100:.1f}%"
    assert "circle ≥ 0.81" in page.get_by_test_id("version-1").inner_text()
    # each version says where it was trained; the card says where this deployment's jobs run
    assert "trained on cuda:0" in page.get_by_test_id("version-1-meta").inner_text()
    with live.api("boss") as c:
        health = c.get("/health").json()
    page.get_by_test_id("jobs-device").wait_for()
    assert page.get_by_test_id("jobs-device").inner_text() == f"Jobs run on {health['device']}."
    assert page.get_by_test_id(f"run-state-{job_id}").inner_text() == "queued"

    # the run's progress is live: run the job now and watch it finish on the page
    def work() -> None:
        assert claim_next(live.engine, "test") == job_id
        run_job(live.engine, live.settings, job_id)

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    page.get_by_test_id(f"run-state-{job_id}").filter(has_text="running").wait_for()
    shot(page, "dashboard")
    page.get_by_test_id(f"run-state-{job_id}").filter(has_text="succeeded").wait_for()
    worker.join(timeout=10)
    page.set_viewport_size({"width": 1280, "height": 1500})
    shot(page, "dashboard-full")
    assert not page.js_errors, page.js_errors
