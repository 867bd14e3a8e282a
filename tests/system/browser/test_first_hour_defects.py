"""Defects a new user hit in the first hour, in the browser (the API side of the duplicate
proposals and the pending counts: tests/loop/test_annotate_proposals.py).

* Pending and grid pages: bulk confirm (button and Enter) waits until every image on the page
  is shown; thumbnails are held back here with a route, as a slow server would.
* Grid pages without a suggestion (no model yet): the labeller picks the class; nothing is
  preset, and confirm stays off until a class is chosen.
* The automatic-annotation dialog chooses the current model, and shows "Cancel job" only while
  a job runs.
* The Label page says why an item was served before any model exists (a cold-start pick, not
  "the model is unsure"), and its toasts carry no version tags.
* Settings: a policy the server refuses is explained under the field, the prefix said once.
"""

from __future__ import annotations

import random
import re
from typing import Any

import pytest
from sqlmodel import Session

from tests.system.browser.conftest import Live, item_ids

pytestmark = pytest.mark.browser

THUMBNAIL = re.compile(r".*/items/\d+/thumbnail$")


class Held:
    """Serve the first ``let_through`` thumbnails; hold the others (a slow server) until
    :meth:`release`, after which every thumbnail goes through."""

    def __init__(self, page: Any, let_through: int) -> None:
        self.routes: list[Any] = []
        self.left: int | None = let_through
        page.route(THUMBNAIL, self.handle)

    def handle(self, route: Any) -> None:
        if self.left is None or self.left > 0:
            if self.left is not None:
                self.left -= 1
            route.continue_()
        else:
            self.routes.append(route)

    def release(self) -> None:
        self.left = None
        routes, self.routes = self.routes, []
        for route in routes:
            route.continue_()


def test_pending_confirm_page_waits_for_the_images(live: Live, new_page: Any) -> None:
    live.user("boss", "manager")
    live.user("ann", "labeler")
    pid = live.project("boss", n_images=12)["id"]
    live.member(pid, "ann", "labeler")
    items = item_ids(live, pid)
    mv = live.model_version(pid)
    live.propose(pid, mv, [(item, "circle", 0.97) for item in items])

    page = new_page("ann")
    held = Held(page, 3)
    page.goto(f"/web/#/project/{pid}/pending")
    page.get_by_test_id("pending-count").filter(has_text="12 proposals").wait_for()
    button = page.get_by_test_id("pending-confirm-page")
    assert button.is_disabled()  # 9 of the 12 images are not there yet
    page.get_by_test_id("pending-images").filter(has_text="3 of 12 shown").wait_for()
    assert page.get_by_test_id("pending-list").get_attribute("aria-busy") == "true"
    page.evaluate("document.activeElement && document.activeElement.blur()")
    page.keyboard.press("Enter")  # nothing is confirmed unseen: the page says why
    page.get_by_test_id("toast-info").filter(has_text="still loading").wait_for()
    with live.api("boss") as c:
        assert c.get(f"/projects/{pid}/pending").json()["count"] == 12

    held.release()
    page.locator("[data-testid=pending-list][aria-busy=false]").wait_for()
    assert button.is_enabled() and page.get_by_test_id("pending-images").inner_text() == ""
    page.keyboard.press("Enter")
    page.get_by_test_id("pending-empty").wait_for()
    with live.api("boss") as c:
        assert c.get(f"/projects/{pid}/pending").json()["count"] == 0
    assert not page.js_errors, page.js_errors


def test_grid_page_without_a_suggestion_needs_a_class(live: Live, new_page: Any) -> None:
    live.user("boss", "manager")
    live.user("ann", "labeler")
    pid = live.project("boss", n_images=6)["id"]
    live.member(pid, "ann", "labeler")
    ids = item_ids(live, pid)
    live.grid_pages(pid, {6: [{"item_ids": ids}]})  # clustered before any model: no suggestion

    page = new_page("ann")
    held = Held(page, 2)
    page.goto(f"/web/#/project/{pid}/grids")
    page.get_by_test_id("grid-size-6").click()
    page.get_by_test_id("grid-cell-6").wait_for()
    assert page.get_by_test_id("grid-suggested").inner_text() == "no model yet"
    label = page.get_by_test_id("grid-label")
    confirm = page.get_by_test_id("grid-confirm")
    assert label.input_value() == ""  # not the first class
    assert label.locator("option:checked").inner_text() == "choose a class"
    assert confirm.is_disabled()
    label.select_option("square")
    assert confirm.is_disabled()  # 2 of 6 images shown
    assert page.get_by_test_id("grid-page").get_attribute("aria-busy") == "true"
    held.release()
    page.locator("[data-testid=grid-page][aria-busy=false]").wait_for()
    assert confirm.is_enabled()

    label.select_option("")  # back to no class: Enter labels nothing
    assert confirm.is_disabled()
    page.evaluate("document.activeElement && document.activeElement.blur()")
    page.keyboard.press("Enter")
    page.get_by_test_id("toast-info").filter(has_text="Choose the class").wait_for()
    with live.api("boss") as c:
        assert c.get(f"/projects/{pid}/items?status=labelled").json()["count"] == 0
    page.keyboard.press("l")  # L from no class: the first class
    assert label.input_value() == "circle"
    page.keyboard.press("l")
    assert label.input_value() == "square" and confirm.is_enabled()
    page.keyboard.press("Enter")
    page.get_by_test_id("grid-empty").wait_for()
    with live.api("boss") as c:
        for i in ids:
            assert c.get(f"/items/{i}").json()["annotation"]["labels"] == ["square"]
    assert not page.js_errors, page.js_errors


def test_annotate_dialog_chooses_the_current_model_and_cancel_only_while_running(live: Live, new_page: Any) -> None:
    from service.models import ModelVersion

    live.user("boss", "manager")
    pid = live.project("boss", n_images=2)["id"]
    with Session(live.engine) as s:
        rows = [ModelVersion(project_id=pid, version=n, status="ready", path=f"/nowhere/v{n}", is_current=n == 2,
                             classes=["circle", "square", "triangle"]) for n in (1, 2, 3)]
        s.add_all(rows)
        s.commit()
        v1, v2, v3 = (int(r.id or 0) for r in rows)

    page = new_page("boss")
    page.goto(f"/web/#/project/{pid}/dashboard")
    page.get_by_test_id("open-annotate").click()
    dialog = page.get_by_test_id("annotate-dialog")
    dialog.get_by_test_id("annotate-map").wait_for()
    model = dialog.get_by_test_id("annotate-model")
    assert model.input_value() == f"version:{v2}"  # the current one, not v1
    assert model.locator("option").evaluate_all("os => os.map((o) => o.value)") == [
        f"version:{v2}", f"version:{v3}", f"version:{v1}"]
    cancel = dialog.get_by_test_id("annotate-cancel")
    assert not cancel.is_visible()  # no job runs
    dialog.get_by_test_id("annotate-start").click()  # queued (no worker here): a job to cancel
    cancel.wait_for()
    with live.api("boss") as c:
        [job] = c.get(f"/projects/{pid}/jobs").json()["data"]
        assert job["payload"]["model_version_id"] == v2
    cancel.click()
    page.wait_for_function("() => document.querySelector('[data-testid=annotate-status]').dataset.state"
                           " === 'cancelled'")
    assert not cancel.is_visible()  # the job ended
    assert not page.js_errors, page.js_errors


class _StrategyFirst(random.Random):
    """The queue's stream draw always goes to the strategy stream (no hold-out draw)."""

    def random(self) -> float:
        return 0.99


def test_label_page_says_why_before_a_model_and_toasts_in_words(live: Live, new_page: Any,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import service.crud.queue
    from service.models import Item

    monkeypatch.setattr(service.crud.queue, "_rng", _StrategyFirst())
    live.user("boss", "manager")
    live.user("ann", "labeler")
    pid = live.project("boss", n_images=3)["id"]
    live.member(pid, "ann", "labeler")
    ids = item_ids(live, pid)
    with Session(live.engine) as s:  # as the cold-start job leaves them: one pick, the rest ranked 0
        for i in ids:
            item = s.get(Item, i)
            assert item is not None
            item.query_score = 1.5 if i == ids[1] else 0.0
            s.add(item)
        s.commit()

    page = new_page("ann")
    page.goto(f"/web/#/project/{pid}/label")
    page.get_by_test_id("item-id").wait_for()
    assert int(page.get_by_test_id("item-id").inner_text()) == ids[1]
    reason = page.get_by_test_id("reason")
    assert reason.inner_text() == "Cold start"
    info = page.locator(".item-info").inner_text()
    assert "unsure" not in info and "before the first model" in info, info

    live.model_version(pid)  # a model now exists: the next strategy pick is the model's
    page.keyboard.press("1")
    page.get_by_test_id("reason").filter(has_text="Model asked").wait_for()
    page.keyboard.press("u")
    toast = page.get_by_test_id("toast-ok").filter(has_text="Undone")
    toast.wait_for()
    assert not re.search(r'"?\bv\d+\b"?', toast.inner_text()), toast.inner_text()  # no "v2" version tag
    assert not page.js_errors, page.js_errors


def test_settings_policy_error_under_its_field(live: Live, new_page: Any) -> None:
    live.user("boss", "manager")
    pid = live.project("boss", n_images=0)["id"]
    page = new_page("boss")
    page.goto(f"/web/#/project/{pid}/settings")
    epochs = page.get_by_test_id("policy-epochs")
    epochs.fill("0")
    page.get_by_test_id("policy-save").click()
    error = page.get_by_test_id("policy-error-epochs")
    error.wait_for()
    assert "epochs must be an integer >= 1" in error.inner_text()
    assert epochs.get_attribute("aria-invalid") == "true"
    status = page.get_by_test_id("policy-status").inner_text()
    assert "Not saved" in status and "invalid policy: invalid policy" not in status, status
    epochs.fill("8")
    page.get_by_test_id("policy-save").click()
    page.get_by_test_id("policy-status").filter(has_text="Saved").wait_for()
    assert not error.is_visible() and epochs.get_attribute("aria-invalid") is None
    with live.api("boss") as c:
        assert c.get(f"/projects/{pid}/policy").json()["epochs"] == 8
    assert not page.js_errors, page.js_errors
