"""Automatic annotation end to end in the browser, with nothing stood in for the server.

A small (deliberately slow) torch classifier is exported to ONNX here and registered as the
manager over ``POST /api/v1/models``; the manager then opens the dashboard's "Automatic
annotation…" dialog, picks that model, matches its labels to the project's classes, starts,
sees the progress bar move, and cancels. The real ``annotate`` job runs on a worker thread of
the test (the live app is made with ``background=False``). Afterwards the API must say the job
was cancelled, how far it got, and every prediction it wrote must be whole: a whole batch of
items in order, each prediction with its item.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select

from tests.system.browser.conftest import Live

pytestmark = [pytest.mark.browser,
              pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")]

LABELS = ["Circle", "box", "triangle"]  # "Circle" and "triangle" match by name; "box" is mapped by hand
SIZE = 96
N_IMAGES = 200


def slow_classifier_onnx(folder: Path) -> bytes:
    """``[1, 3, 96, 96]`` -> logits ``[1, 3]`` through a stack of convolutions (some ms per image)."""
    torch = pytest.importorskip("torch")
    nn = torch.nn
    torch.manual_seed(0)
    layers: list[Any] = [nn.Conv2d(3, 48, 3, padding=1), nn.ReLU()]
    for _ in range(6):
        layers += [nn.Conv2d(48, 48, 3, padding=1), nn.ReLU()]
    net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(48, len(LABELS))).eval()
    path = folder / "slow.onnx"
    torch.onnx.export(net, (torch.zeros(1, 3, SIZE, SIZE),), str(path), input_names=["image"],
                      output_names=["logits"], dynamo=False)
    return path.read_bytes()


def test_real_annotation_progress_cancel_and_whole_batches(live: Live, new_page: Any, tmp_path: Path) -> None:
    assert live.has_route("POST", "/projects/{project_id}/annotate")
    import service.loop.annotate as annotate_mod
    from service.jobs.runner import claim_next, run_job
    from service.models import Item, Prediction

    live.user("boss", "manager")
    model = slow_classifier_onnx(tmp_path)
    with live.api("boss") as c:
        r = c.post("/models", files={"file": ("slow.onnx", model)},
                   data={"name": "shapes-net", "kind": "onnx", "task": "multiclass", "default_threshold": "0.5",
                         "labels": json.dumps(LABELS),
                         "input_spec": json.dumps({"size": SIZE, "mean": [0.5] * 3, "std": [0.25] * 3,
                                                   "layout": "NCHW"})})
        assert r.status_code == 201, r.text
        model_id = r.json()["id"]
    pid = live.project("boss", name="shapes", n_images=N_IMAGES)["id"]
    with Session(live.engine) as s:
        item_ids = sorted(int(i.id) for i in s.exec(select(Item).where(Item.project_id == pid)).all()
                          if i.id is not None)
    assert len(item_ids) == N_IMAGES

    ran: dict[str, Any] = {}
    stop = threading.Event()

    def worker() -> None:  # the job runner the live app leaves out: wait for the dialog's job, run it
        while not stop.is_set():
            jid = claim_next(live.engine, "browser-test", ["annotate"])
            if jid is not None:
                ran["id"] = jid
                ran["state"] = run_job(live.engine, live.settings, jid)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    try:
        page = new_page("boss")
        page.goto(f"/web/#/project/{pid}/dashboard")
        page.get_by_test_id("open-annotate").click()
        dialog = page.get_by_test_id("annotate-dialog")
        dialog.get_by_test_id("annotate-map").wait_for()
        dialog.get_by_test_id("annotate-model").select_option(f"model:{model_id}")
        selects = dialog.get_by_test_id("annotate-map").locator("select")
        assert selects.count() == 3
        assert [selects.nth(i).input_value() for i in range(3)] == ["circle", "", "triangle"]  # matched by name
        selects.nth(1).select_option("square")
        dialog.get_by_test_id("annotate-threshold").fill("0")  # every processed item gets its proposal
        dialog.get_by_test_id("annotate-start").click()
        page.wait_for_function("() => Number(document.querySelector('[data-testid=annotate-progress]')"
                               ".getAttribute('aria-valuenow')) > 0", timeout=30_000)
        status = dialog.get_by_test_id("annotate-status")
        assert f"of {N_IMAGES} items" in status.inner_text()
        dialog.get_by_test_id("annotate-cancel").click()
        page.wait_for_function("() => document.querySelector('[data-testid=annotate-status]').dataset.state"
                               " === 'cancelled'", timeout=30_000)
        assert status.inner_text() == "Cancelled."
        page.wait_for_timeout(150)
        page.screenshot(path=str(tmp_path / "annotate-real.png"))
        assert not page.js_errors, page.js_errors
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive()

    with live.api("boss") as c:
        job = c.get(f"/jobs/{ran['id']}").json()
        assert [j["id"] for j in c.get(f"/projects/{pid}/jobs").json()["data"]] == [ran["id"]]
    assert ran["state"].value == "cancelled" and job["state"] == "cancelled", job
    assert job["kind"] == "annotate" and job["payload"]["model_id"] == model_id
    assert job["payload"]["label_map"] == {"Circle": "circle", "box": "square", "triangle": "triangle"}
    res = job["result"]
    done, batch = res["processed"], annotate_mod.BATCH
    assert res["cancelled"] is True and res["items"] == N_IMAGES
    assert 0 < done < N_IMAGES and done % batch == 0, res  # stopped between whole batches, before the end
    assert res["proposed"] == done  # threshold 0: one proposal for each processed item
    assert job["message"] == f"cancelled: stopped after {done} of {N_IMAGES} items; {done} proposals kept"
    assert 0 < job["progress"] < 1
    with Session(live.engine) as s:
        preds = s.exec(select(Prediction).where(Prediction.model_version_id == res["model_version_id"])).all()
        assert all(s.get(Item, p.item_id) is not None for p in preds)  # each with its item
        assert sorted(p.item_id for p in preds) == item_ids[:done]  # exactly the first whole batches, once each
        assert {p.project_id for p in preds} == {pid} and {p.state for p in preds} == {"proposed"}
        assert all(p.data["model"] == "shapes-net" and len(p.data["labels"]) == 1
                   and p.data["labels"][0] in ("circle", "square", "triangle") for p in preds)
        statuses = {int(i.id): i.status.value for i in s.exec(select(Item).where(Item.project_id == pid)).all()
                    if i.id is not None}
    assert all(statuses[i] == "proposed" for i in item_ids[:done])
    assert all(statuses[i] == "unlabelled" for i in item_ids[done:])
