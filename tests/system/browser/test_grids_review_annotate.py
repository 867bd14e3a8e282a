"""Grid review and the review queue (classification and detection flags).

Grid pages and flags are written straight into the database (as the cluster and
hard-example jobs would leave them); what the page shows and sends is checked against
the real server.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.system.browser.conftest import Live, item_ids, shot

pytestmark = pytest.mark.browser





def test_grid_review_leave_out_two_fix_one_and_confirm(live: Live, new_page: Any) -> None:
    live.user("boss", "manager")
    live.user("ann", "labeler")
    pid = live.project("boss", n_images=12)["id"]
    live.member(pid, "ann", "labeler")
    ids = item_ids(live, pid)
    circles = [i for n, i in enumerate(ids) if n % 3 == 0]
    squares = [i for n, i in enumerate(ids) if n % 3 == 1]
    live.grid_pages(pid, {6: [
        {"item_ids": circles + squares[:2], "suggested_class": "circle", "confidence": 0.83, "agreement": 0.67},
        {"item_ids": squares[2:], "suggested_class": "square", "confidence": 0.7, "agreement": 1.0}]})

    page = new_page("ann")
    page.goto(f"/web/#/project/{pid}/grids")
    page.get_by_test_id("grid-size-6").click()
    page.get_by_test_id("grid-cell-6").wait_for()
    assert page.get_by_test_id("grid-suggested").inner_text() == "circle"
    page.get_by_test_id("grid-cell-5").click()  # the two squares do not belong
    page.keyboard.press("6")
    assert page.get_by_test_id("grid-selected-count").inner_text() == "4 selected"
    assert page.get_by_test_id("grid-fix-5").input_value() == ""  # left out: back to the queue by default
    page.get_by_test_id("grid-fix-6").select_option("square")  # ann knows what the last one is
    assert page.get_by_test_id("grid-cell-fix-6").inner_text() == "square"
    page.get_by_test_id("grid-cell-6").click()  # in, out again: its class is forgotten
    page.get_by_test_id("grid-cell-6").click()
    assert page.get_by_test_id("grid-cell-fix-6").is_hidden() and page.get_by_test_id("grid-fix-6").input_value() == ""
    page.get_by_test_id("grid-fix-6").select_option("square")
    assert page.get_by_test_id("grid-selected-count").inner_text() == "4 selected, 1 with their own class"
    shot(page, "grids")
    page.locator("[data-testid=grid-page][aria-busy=false]").wait_for()  # every image shown: confirm is on
    page.keyboard.press("Enter")  # one key confirms the page
    page.get_by_test_id("grid-suggested").filter(has_text="square").wait_for()
    page.get_by_test_id("toast-ok").filter(has_text="1 with their own class").wait_for()
    with live.api("boss") as c:
        for i in circles:
            got = c.get(f"/items/{i}/history").json()
            assert [(v["data"]["labels"], v["origin"]) for v in got] == [(["circle"], "grid")]
        got = c.get(f"/items/{squares[1]}/history").json()
        assert [(v["data"]["labels"], v["origin"]) for v in got] == [(["square"], "grid")]
        assert c.get(f"/items/{squares[0]}").json()["annotation"] is None
    # the one left out without a class went back to the queue: another labeler can be given it
    live.user("bob", "labeler")
    live.member(pid, "bob", "labeler")
    bob_items: set[int] = set()
    with live.api("bob") as c:
        for _ in range(8):
            r = c.post(f"/projects/{pid}/queue/next")
            if r.status_code != 200:
                break
            bob_items.add(r.json()["item"]["id"])
            c.post(f"/items/{r.json()['item']['id']}/skip", json={})
    assert squares[0] in bob_items and squares[1] not in bob_items
    assert not set(squares[2:]) & bob_items  # the page ann holds now stays hers
    assert not page.js_errors, page.js_errors


def test_review_queue_confirm_fix_dismiss(live: Live, new_page: Any) -> None:
    live.user("boss", "manager")
    live.user("rita", "reviewer")
    pid = live.project("boss", n_images=4)["id"]
    live.member(pid, "rita", "reviewer")
    ids = item_ids(live, pid)
    with live.api("boss") as c:
        for i in ids[:3]:
            assert c.post(f"/items/{i}/annotations", json={"labels": ["square"]}).status_code == 201
    mv = live.model_version(pid)
    [pred] = live.propose(pid, mv, [(ids[3], "circle", 0.91)])
    wrong = live.flag(pid, ids[0], "label error", 0.93, given="square", suggested="circle", self_confidence=0.04,
                     annotation_version=1)
    fine = live.flag(pid, ids[1], "label error", 0.71, given="square", suggested="triangle", self_confidence=0.2,
                    annotation_version=1)
    odd = live.flag(pid, ids[2], "label error", 0.55, given="square", suggested="circle", self_confidence=0.3,
                   annotation_version=1)
    unstable = live.flag(pid, ids[3], "unstable", 0.6, prediction_id=pred, proposed="circle")

    page = new_page("rita")
    page.goto(f"/web/#/project/{pid}/review")
    page.get_by_test_id(f"flag-{wrong}").wait_for()
    assert page.get_by_test_id("review-count").inner_text() == "4 open flags"
    shot(page, "review")
    page.get_by_test_id(f"review-apply-{wrong}").click()  # the model's suggestion is preselected
    page.get_by_test_id(f"flag-{wrong}").wait_for(state="detached")
    page.get_by_test_id(f"review-confirm-{fine}").click()
    page.get_by_test_id(f"flag-{fine}").wait_for(state="detached")
    page.get_by_test_id(f"review-dismiss-{odd}").click()
    page.get_by_test_id(f"flag-{odd}").wait_for(state="detached")
    page.get_by_test_id(f"review-confirm-{unstable}").click()  # the proposal is right
    page.get_by_test_id("review-empty").wait_for()
    with live.api("boss") as c:
        labels = {i: (c.get(f"/items/{i}").json()["annotation"] or {}).get("labels") for i in ids}
        states = {f["id"]: f["state"] for f in c.get(f"/projects/{pid}/review?state=all").json()["data"]}
    assert labels == {ids[0]: ["circle"], ids[1]: ["square"], ids[2]: ["square"], ids[3]: ["circle"]}
    assert states == {wrong: "fixed", fine: "confirmed", odd: "dismissed", unstable: "confirmed"}
    assert not page.js_errors, page.js_errors


def test_review_queue_fixes_boxes_in_one_click(live: Live, new_page: Any) -> None:
    """A detection flag lists its boxes; one click adds the model's box (false detection) or
    removes the labelled one (missed detection), as a reviewed human version."""
    live.user("boss", "manager")
    pid = live.project("boss", task="detection", n_images=2)["id"]
    ids = item_ids(live, pid)
    kept = {"label": "square", "bbox": [2.0, 2.0, 10.0, 10.0]}
    spurious = {"label": "circle", "bbox": [30.0, 20.0, 12.0, 12.0]}
    with live.api("boss") as c:
        for i, boxes in ((ids[0], [kept]), (ids[1], [kept, spurious])):
            assert c.post(f"/items/{i}/annotations", json={"boxes": boxes}).status_code == 201
    seen = live.flag(pid, ids[0], "false detection", 0.97, annotation_version=1, source="cross-fitted",
                     boxes=[{"box": [40.0, 5.0, 14.0, 16.0], "label": "triangle", "score": 0.97, "best_gt": 0,
                             "best_iou": 0.0}])
    ghost = live.flag(pid, ids[1], "missed detection", 1.0, annotation_version=1, source="cross-fitted",
                      boxes=[{"box": spurious["bbox"], "label": "circle", "score": 1.0, "best_same_class_iou": 0.0,
                              "best_pred": -1, "best_pred_score": 0.0}])
    page = new_page("boss")
    page.goto(f"/web/#/project/{pid}/review")
    page.get_by_test_id(f"flag-{seen}").wait_for()
    assert "triangle at 40, 5 (14 × 16)" in page.get_by_test_id(f"flag-{seen}").inner_text()
    assert page.get_by_test_id(f"review-fix-{seen}").count() == 0  # no class picker for boxes
    overlay = page.get_by_test_id(f"flag-{seen}").get_by_test_id("flag-overlay")
    assert overlay.get_attribute("viewBox") == "0 0 64 48" and overlay.locator("rect").count() == 1
    shot(page, "review-boxes")
    page.get_by_test_id(f"review-add-box-{seen}-0").click()
    page.get_by_test_id(f"flag-{seen}").wait_for(state="detached")
    page.get_by_test_id(f"review-remove-box-{ghost}-0").click()
    page.get_by_test_id("review-empty").wait_for()
    with live.api("boss") as c:
        boxes = {i: c.get(f"/items/{i}").json()["annotation"]["boxes"] for i in ids}
        hist = c.get(f"/items/{ids[0]}/history").json()
        states = {f["id"]: f["state"] for f in c.get(f"/projects/{pid}/review?state=all").json()["data"]}
    assert boxes[ids[0]] == [kept, {"label": "triangle", "bbox": [40.0, 5.0, 14.0, 16.0]}]
    assert boxes[ids[1]] == [kept]
    assert hist[-1]["provenance"] == "human" and hist[-1]["origin"] == "review"
    assert states == {seen: "fixed", ghost: "fixed"}
    assert not page.js_errors, page.js_errors
