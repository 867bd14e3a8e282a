"""The Pending tab: filter, confirm one, correct, reject, confirm the page."""

from __future__ import annotations

from typing import Any

import pytest

from tests.system.browser.conftest import Live, shot

pytestmark = pytest.mark.browser


def test_pending_confirm_correct_reject_page(live: Live, new_page: Any) -> None:
    live.user("boss", "manager")
    live.user("ann", "labeler")
    pid = live.project("boss", n_images=8)["id"]
    live.member(pid, "ann", "labeler")
    with live.api("boss") as c:
        items = [it["id"] for it in c.get(f"/projects/{pid}/items?limit=100").json()["data"]]
    mv = live.model_version(pid)
    names = ["circle", "square", "triangle"]
    props = [(item, names[i % 3], round(0.99 - 0.03 * i, 2)) for i, item in enumerate(items[:7])]
    pred = live.propose(pid, mv, props, flags={items[1]: "label error"})
    by_pred = dict(zip(pred, props, strict=True))

    page = new_page("ann")
    page.goto(f"/web/#/project/{pid}/pending")
    # The list says when what it shows is the server's answer: aria-busy is "true" while a reload
    # or an action is in flight. (The "lost first click" once seen here was the server replying
    # before its commit, so the reload after a confirm could still read the old list.)
    settled = page.locator("[data-testid=pending-list][aria-busy=false]")
    count = page.get_by_test_id("pending-count")

    def shows(text: str) -> None:
        count.filter(has_text=text).wait_for()
        settled.wait_for()

    page.get_by_test_id(f"pending-{pred[0]}").wait_for()
    shows("7 proposals")
    assert page.get_by_test_id(f"pending-{pred[1]}").get_by_test_id("hard-badge").inner_text() == "label error"
    assert "model v1" in page.get_by_test_id(f"pending-{pred[0]}").inner_text()
    shot(page, "pending")

    # filter by class, then by score
    page.get_by_test_id("pending-class").select_option("circle")
    shows("3 proposals")
    page.get_by_test_id("pending-class").select_option("")
    shows("7 proposals")
    page.get_by_test_id("pending-min-score").fill("0.9")
    page.get_by_test_id("pending-min-score").dispatch_event("change")
    shows("4 proposals")
    page.get_by_test_id("pending-min-score").fill("")
    page.get_by_test_id("pending-min-score").dispatch_event("change")
    shows("7 proposals")
    page.get_by_test_id("pending-count").click()  # move focus off the filter (its blur must not reload)
    settled.wait_for()

    page.get_by_test_id(f"confirm-{pred[0]}").click()
    shows("6 proposals")
    page.get_by_test_id(f"correct-select-{pred[1]}").select_option("triangle")
    shows("5 proposals")
    page.get_by_test_id(f"reject-{pred[2]}").click()
    shows("4 proposals")
    page.evaluate("document.activeElement && document.activeElement.blur()")  # Enter on a focused button clicks it
    page.keyboard.press("Enter")  # confirm the page
    page.get_by_test_id("pending-empty").wait_for()
    settled.wait_for()

    with live.api("boss") as c:
        def item(pid_: int) -> dict:
            return c.get(f"/items/{by_pred[pid_][0]}").json()
        first = item(pred[0])
        assert first["annotation"]["labels"] == ["circle"] and first["provenance"] == "model-confirmed"
        corrected = item(pred[1])
        assert corrected["annotation"]["labels"] == ["triangle"] and corrected["provenance"] == "human"
        assert item(pred[2])["status"] == "unlabelled" and item(pred[2])["annotation"] is None
        for p in pred[3:]:
            got = item(p)
            assert got["annotation"]["labels"] == [by_pred[p][1]] and got["provenance"] == "model-confirmed"
        assert c.get(f"/projects/{pid}/pending").json()["count"] == 0
    assert not page.js_errors, page.js_errors
