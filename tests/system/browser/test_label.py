"""The Label page: keyboard labelling, undo, leases shared by two labelers, retries, conflicts."""

from __future__ import annotations

from typing import Any

import pytest

from tests.system.browser.conftest import Live, current_item, shot, wait_new_item

pytestmark = pytest.mark.browser






def test_keyboard_labelling_and_undo(live: Live, new_page: Any) -> None:
    live.user("boss", "manager")
    live.user("ann", "labeler")
    pid = live.project("boss")["id"]
    live.member(pid, "ann", "labeler")
    page = new_page("ann")
    page.goto(f"/web/#/project/{pid}/label")
    page.get_by_test_id("item-id").wait_for()
    keys = ["1", "2", "3", "2", "1"]
    names = ["circle", "square", "triangle", "square", "circle"]
    done: list[int] = []
    for k in keys:
        item = current_item(page)
        page.keyboard.press(k)
        wait_new_item(page, item)
        done.append(item)
    shot(page, "label")
    page.keyboard.press("u")  # undo the fifth
    page.get_by_test_id("save-status").filter(has_text="Undid").wait_for()
    with live.api("boss") as c:
        for item, name in zip(done[:4], names[:4], strict=True):
            got = c.get(f"/items/{item}").json()
            assert got["annotation"]["labels"] == [name], got
            assert got["status"] == "labelled"
        last = c.get(f"/items/{done[4]}").json()
        assert last["status"] == "unlabelled" and last["annotation"]["labels"] == []
        assert c.get(f"/projects/{pid}/items?status=labelled").json()["count"] == 4
    assert not page.js_errors, page.js_errors


def test_two_labelers_never_see_the_same_item(live: Live, new_page: Any) -> None:
    live.user("boss", "manager")
    pid = live.project("boss", n_images=10)["id"]
    for name in ("ann", "bob"):
        live.user(name, "labeler")
        live.member(pid, name, "labeler")
    pa, pb = new_page("ann"), new_page("bob")
    for p in (pa, pb):
        p.goto(f"/web/#/project/{pid}/label")
        p.get_by_test_id("item-id").wait_for()
    seen: list[tuple[int, int]] = []
    for _ in range(4):
        ia, ib = current_item(pa), current_item(pb)
        seen.append((ia, ib))
        assert ia != ib
        pa.keyboard.press("1")
        wait_new_item(pa, ia)
        assert current_item(pa) != current_item(pb)
        pb.keyboard.press("2")
        wait_new_item(pb, ib)
    assert current_item(pa) != current_item(pb)
    with live.api("boss") as c:
        items = c.get(f"/projects/{pid}/items?status=labelled&limit=100").json()["data"]
    labelled = {it["id"]: it for it in items}
    assert len(labelled) == 8
    for ia, ib in seen:
        assert labelled[ia]["annotation"]["labels"] == ["circle"] and labelled[ia]["version"] == 1
        assert labelled[ib]["annotation"]["labels"] == ["square"] and labelled[ib]["version"] == 1


def test_save_while_unreachable_is_retried_and_lands_once(live: Live, new_page: Any) -> None:
    live.user("boss", "manager")
    live.user("ann", "labeler")
    pid = live.project("boss", n_images=4)["id"]
    live.member(pid, "ann", "labeler")
    page = new_page("ann")
    page.goto(f"/web/#/project/{pid}/label")
    page.get_by_test_id("item-id").wait_for()
    item = current_item(page)
    calls: list[str] = []

    def flaky(route: Any) -> None:
        n = len(calls)
        if n == 0:  # the save reaches the server but its answer is lost
            route.fetch()
            calls.append("landed, answer lost")
            route.abort("connectionreset")
        elif n == 1:  # the server is unreachable
            calls.append("unreachable")
            route.abort("connectionrefused")
        else:
            calls.append("through")
            route.continue_()

    page.route("**/api/v1/items/*/annotations", flaky)
    page.keyboard.press("3")
    status = page.get_by_test_id("save-status")
    status.filter(has_text="Retrying").wait_for()
    assert status.get_attribute("data-state") == "error"
    wait_new_item(page, item)
    assert calls == ["landed, answer lost", "unreachable", "through"]
    assert "earlier attempt had landed" in status.inner_text()
    with live.api("boss") as c:
        hist = c.get(f"/items/{item}/history").json()
        assert [h["data"]["labels"] for h in hist] == [["triangle"]]  # exactly one version
    assert page.evaluate("JSON.parse(localStorage.getItem('labelloop.outbox.v1') || '[]').length") == 0


def test_stale_tab_gets_the_conflict_view(live: Live, new_page: Any) -> None:
    live.user("boss", "manager")
    live.user("ann", "labeler")
    pid = live.project("boss", n_images=4)["id"]
    live.member(pid, "ann", "labeler")
    first = new_page("ann")
    second = first.context.new_page()
    for p in (first, second):
        p.goto(f"/web/#/project/{pid}/label")
        p.get_by_test_id("item-id").wait_for()
    item = current_item(first)
    assert current_item(second) == item  # the same labeler's lease, shown in two tabs
    first.keyboard.press("1")
    wait_new_item(first, item)
    second.keyboard.press("2")  # this tab still shows version 0
    view = second.get_by_test_id("conflict-view")
    view.wait_for()
    assert second.get_by_test_id("conflict-mine-labels").inner_text() == "square"
    assert second.get_by_test_id("conflict-theirs-labels").inner_text() == "circle"
    shot(second, "conflict")
    second.get_by_test_id("conflict-use-mine").click()
    wait_new_item(second, item)
    with live.api("boss") as c:
        got = c.get(f"/items/{item}").json()
    assert got["annotation"]["labels"] == ["square"] and got["version"] == 2
    assert not first.js_errors, first.js_errors
