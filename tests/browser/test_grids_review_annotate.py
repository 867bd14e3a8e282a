"""Grid review, the review queue and automatic annotation.

Where the server does not offer a route yet, the test puts a stand-in for it
in front of the page with ``page.route`` (shapes as in /work/shared/API.md), so
the page's own behaviour is still checked: what it shows, and exactly what it sends.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from sqlmodel import Session

from tests.browser.conftest import Live, shot

pytestmark = pytest.mark.browser


def has_route(live: Live, method: str, path: str) -> bool:
    return any(method in getattr(r, "methods", set()) and getattr(r, "path", "") == "/api/v1" + path
               for r in live.app.routes)


def item_ids(live: Live, pid: int) -> list[int]:
    with live.api("boss") as c:
        return [it["id"] for it in c.get(f"/projects/{pid}/items?limit=100").json()["data"]]


def test_grid_review_deselect_two_and_confirm(live: Live, new_page: Any) -> None:
    if has_route(live, "GET", "/projects/{project_id}/grids"):
        pytest.skip("the real grids route exists: see test_grid_review_real")  # replaced once it lands
    live.user("boss", "manager")
    pid = live.project("boss", n_images=12)["id"]
    ids = item_ids(live, pid)
    circles = [i for n, i in enumerate(ids) if n % 3 == 0]
    squares = [i for n, i in enumerate(ids) if n % 3 == 1]
    pages = [{"id": 7, "item_ids": circles + squares[:2], "suggested_class": "circle", "score": 0.83},
             {"id": 8, "item_ids": squares[2:], "suggested_class": "square", "score": 0.7}]
    sent: list[tuple[str, dict]] = []
    shown: dict[str, list[int]] = {}

    def grids(route: Any) -> None:
        size = int(route.request.url.split("size=")[1].split("&")[0])
        data = [dict(p, item_ids=p["item_ids"][:size]) for p in pages]
        shown.update({str(p["id"]): p["item_ids"] for p in data})
        route.fulfill(json={"data": data, "count": len(data)})

    def confirm(route: Any) -> None:  # stand-in: label the page's items that were not excluded
        grid_id = route.request.url.rsplit("/grids/", 1)[1].split("/")[0]
        body = json.loads(route.request.post_data)
        sent.append((grid_id, body))
        kept = [i for i in shown[grid_id] if i not in body["exclude"]]
        with live.api("boss") as c:
            for i in kept:
                assert c.post(f"/items/{i}/annotations", json={"labels": [body["label"]]}).status_code == 201
        pages[:] = [p for p in pages if str(p["id"]) != grid_id]
        route.fulfill(json={"labelled": len(kept)})

    page = new_page("boss")
    page.route("**/api/v1/projects/*/grids?*", grids)
    page.route("**/api/v1/grids/*/confirm", confirm)
    page.goto(f"/web/#/project/{pid}/grids")
    page.get_by_test_id("grid-size-6").click()
    page.get_by_test_id("grid-cell-6").wait_for()
    assert page.get_by_test_id("grid-suggested").inner_text() == "circle"
    page.get_by_test_id("grid-cell-5").click()  # the two squares do not belong
    page.keyboard.press("6")
    assert page.get_by_test_id("grid-selected-count").inner_text() == "4 selected"
    shot(page, "grids")
    page.keyboard.press("Enter")  # one key confirms the page
    page.get_by_test_id("grid-suggested").filter(has_text="square").wait_for()
    assert sent == [("7", {"label": "circle", "exclude": squares[:2]})]
    with live.api("boss") as c:
        for i in circles:
            assert c.get(f"/items/{i}").json()["annotation"]["labels"] == ["circle"]
        for i in squares[:2]:
            assert c.get(f"/items/{i}").json()["annotation"] is None
    assert not page.js_errors, page.js_errors


def test_review_queue_resolve(live: Live, new_page: Any) -> None:
    if has_route(live, "GET", "/projects/{project_id}/review"):
        pytest.skip("the real review route exists")
    live.user("boss", "manager")
    pid = live.project("boss", n_images=3)["id"]
    ids = item_ids(live, pid)
    flags = [{"id": 31, "item_id": ids[0], "kind": "label error", "score": 0.93, "state": "open",
              "labels": ["square"], "detail": {"predicted": "circle"}},
             {"id": 32, "item_id": ids[1], "kind": "unstable", "score": 0.61, "state": "open",
              "labels": ["square"], "detail": {}}]
    sent: list[tuple[int, dict]] = []

    def review(route: Any) -> None:
        route.fulfill(json={"data": flags, "count": len(flags)})

    def resolve(route: Any) -> None:
        fid = int(route.request.url.split("/review/")[1].split("/")[0])
        sent.append((fid, json.loads(route.request.post_data)))
        flags[:] = [f for f in flags if f["id"] != fid]
        route.fulfill(json={"id": fid, "state": "resolved"})

    page = new_page("boss")
    page.route("**/api/v1/projects/*/review*", review)
    page.route("**/api/v1/review/*/resolve", resolve)
    page.goto(f"/web/#/project/{pid}/review")
    page.get_by_test_id("flag-31").wait_for()
    shot(page, "review")
    page.get_by_test_id("review-apply-31").click()  # the model's suggestion is preselected
    page.get_by_test_id("flag-31").wait_for(state="detached")
    page.get_by_test_id("review-keep-32").click()
    page.get_by_test_id("review-empty").wait_for()
    assert sent == [(31, {"resolution": "fixed", "labels": ["circle"]}), (32, {"resolution": "dismissed"})]
    assert not page.js_errors, page.js_errors


def test_automatic_annotation_progress_and_cancel(live: Live, new_page: Any) -> None:
    if has_route(live, "POST", "/projects/{project_id}/annotate"):
        pytest.skip("the real annotate route exists")
    from service.jobs.runner import claim_next, enqueue, run_job
    from service.models import JobPublic

    live.user("boss", "manager")
    pid = live.project("boss", n_images=2)["id"]
    sent: list[dict] = []
    workers: list[threading.Thread] = []

    def models(route: Any) -> None:
        route.fulfill(json={"data": [{"id": 5, "name": "shapes-net", "kind": "onnx", "task": "multiclass",
                                      "labels": ["Circle", "box", "triangle"]}], "count": 1})

    def annotate(route: Any) -> None:  # stand-in: a real job that reports progress and can be cancelled
        sent.append(json.loads(route.request.post_data))
        with Session(live.engine) as s:
            job = enqueue(s, kind="sleep", project_id=pid, payload={"steps": 200, "seconds": 0.05})
            s.commit()
            out = JobPublic.model_validate(job, from_attributes=True).model_dump_json()
            jid = job.id

        def work() -> None:
            assert claim_next(live.engine, "test") == jid
            run_job(live.engine, live.settings, jid)

        workers.append(threading.Thread(target=work, daemon=True))
        workers[-1].start()
        route.fulfill(status=202, content_type="application/json", body=out)

    page = new_page("boss")
    page.route("**/api/v1/models", models)
    page.route("**/api/v1/projects/*/annotate", annotate)
    page.goto(f"/web/#/project/{pid}/dashboard")
    page.get_by_test_id("open-annotate").click()
    dialog = page.get_by_test_id("annotate-dialog")
    dialog.get_by_test_id("annotate-map").wait_for()
    selects = dialog.get_by_test_id("annotate-map").locator("select")
    assert [selects.nth(i).input_value() for i in range(3)] == ["circle", "", "triangle"]  # matched by name
    selects.nth(1).select_option("square")
    dialog.get_by_test_id("annotate-threshold").fill("0.7")
    dialog.get_by_test_id("annotate-clean-old").check()
    dialog.get_by_test_id("annotate-start").click()
    status = dialog.get_by_test_id("annotate-status")
    status.filter(has_text="step").wait_for()
    page.wait_for_function("() => Number(document.querySelector('[data-testid=annotate-progress]')"
                           ".getAttribute('aria-valuenow')) > 0")
    shot(page, "annotate")
    dialog.get_by_test_id("annotate-cancel").click()
    page.wait_for_function("() => document.querySelector('[data-testid=annotate-status]').dataset.state"
                           " === 'cancelled'")
    assert sent == [{"model_id": 5, "label_map": {"Circle": "circle", "box": "square", "triangle": "triangle"},
                     "threshold": 0.7, "clean_old": True, "masks_as_polygons": False}]
    for w in workers:
        w.join(timeout=10)
    with live.api("boss") as c:
        [job] = c.get(f"/projects/{pid}/jobs").json()["data"]
    assert job["state"] == "cancelled"
    assert not page.js_errors, page.js_errors
