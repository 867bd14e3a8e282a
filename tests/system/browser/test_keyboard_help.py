"""Every action on the Label, Pending and Grids pages has a key, listed by `?`.

Each page declares one keymap (service/web/js/keys.js); its key handler and its `?` overlay are
both built from it, and every key it handles is announced as a ``labelloop:key`` event
({id, key, used}). These tests open the overlay on each page, read the listed keys (the
rows carry their binding id and key specs), then press every listed key, in an order
that makes sense for the page, checking that it reached the binding the overlay names and
that the binding did something; the API confirms the effects.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.system.browser.conftest import Live, current_item, image_point, item_ids, wait_new_item

pytestmark = pytest.mark.browser

LOG = """() => { if (!window.__keys) { window.__keys = [];
  window.addEventListener('labelloop:key', (e) => window.__keys.push(e.detail)); } }"""
ROWS = """rows => rows.map((r) => ({ id: r.dataset.keyId, keys: JSON.parse(r.dataset.keys),
  label: r.querySelector('kbd').textContent, text: r.querySelector('td').textContent }))"""


def pw_key(spec: str) -> str:
    """A keymap key spec ("Ctrl+z", "Shift+l", "Space") as Playwright's key name."""
    *mods, key = spec.split("+") if spec != "+" else ["+"]
    if "Shift" in mods and len(key) == 1:
        key = key.upper()
    return "+".join([*("Control" if m == "Ctrl" else m for m in mods), key])


class Keys:
    """Presses keys on a page and checks which keymap binding each one reached."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.pressed: set[tuple[str, str]] = set()
        page.evaluate(LOG)

    def press(self, spec: str, expect: str, *, used: bool = True) -> None:
        n = self.page.evaluate("window.__keys.length")
        self.page.keyboard.press(pw_key(spec))
        self.page.wait_for_function("n => window.__keys.length > n", arg=n)
        got = self.page.evaluate("n => window.__keys.slice(n)", n)
        assert [g["id"] for g in got] == [expect], (spec, got)
        assert got[0]["used"] is used, (spec, got)
        self.pressed.add((expect, spec))

    def help_rows(self) -> list[dict[str, Any]]:
        """Open the overlay with `?`, check it and return its rows; `?` closes it again."""
        overlay = self.page.get_by_test_id("keyhelp")
        self.press("?", "help")
        overlay.wait_for()
        assert overlay.is_visible()
        rows: list[dict[str, Any]] = self.page.get_by_test_id("keyhelp-row").evaluate_all(ROWS)
        assert rows and rows[-1]["id"] == "help"
        ids = [r["id"] for r in rows]
        assert len(ids) == len(set(ids)), ids
        specs = [k for r in rows for k in r["keys"]]
        assert len(specs) == len(set(specs)), f"a key listed twice: {specs}"
        for r in rows:  # each row shows its keys and says what they do
            assert r["label"].strip() and r["text"].strip() and r["keys"], r
            assert r["label"] in overlay.inner_text() and r["text"] in overlay.inner_text()
        self.page.keyboard.press("?")  # closes it
        overlay.wait_for(state="detached")
        # the page's own button opens it too; Esc closes it
        self.page.get_by_test_id("keyhelp-button").click()
        overlay.wait_for()
        self.page.keyboard.press("Escape")
        overlay.wait_for(state="detached")
        # closing gives the focus back to that button, where Enter would press it again
        self.page.evaluate("document.activeElement && document.activeElement.blur()")
        return rows

    def missing(self, rows: list[dict[str, Any]], skip: frozenset[str] = frozenset()) -> set[tuple[str, str]]:
        """Listed (binding, key) pairs this test has not pressed."""
        return {(r["id"], k) for r in rows for k in r["keys"] if r["id"] not in skip} - self.pressed










def drag(page: Any, a: tuple[float, float], b: tuple[float, float]) -> None:
    page.mouse.move(*image_point(page, *a))
    page.mouse.down()
    page.mouse.move(*image_point(page, (a[0] + b[0]) / 2, (a[1] + b[1]) / 2))
    page.mouse.move(*image_point(page, *b))
    page.mouse.up()


def test_label_page_keys_detection(live: Live, new_page: Any) -> None:
    live.user("boss", "manager")
    live.user("ann", "labeler")
    pid = live.project("boss", name="shapes", task="detection", n_images=3, size=(320, 240))["id"]
    live.member(pid, "ann", "labeler")
    page = new_page("ann")
    page.goto(f"/web/#/project/{pid}/label")
    page.get_by_test_id("item-id").wait_for()
    page.locator("[data-testid=stage][data-ready]").wait_for()
    keys = Keys(page)
    rows = keys.help_rows()
    assert {r["id"] for r in rows} == {
        "class", "submit", "skip", "undo", "again", "zoom-in", "zoom-out", "fit", "arrows", "pan", "resize",
        "tool-box", "tool-polygon", "tool-pan", "next-shape", "delete", "cancel", "keep-current", "save-mine", "help"}
    # the side panel lists the same keys (built from the same keymap)
    listed = page.get_by_test_id("key-list").locator("li").evaluate_all("ls => ls.map((l) => l.dataset.keyId)")
    assert listed == [r["id"] for r in rows]
    first = current_item(page)

    keys.press("2", "class")
    assert page.get_by_test_id("class-2").get_attribute("aria-pressed") == "true"
    keys.press("3", "class")
    keys.press("2", "class")
    keys.press("b", "tool-box")
    assert page.get_by_test_id("tool-box").get_attribute("aria-pressed") == "true"
    drag(page, (40, 30), (140, 110))  # a "square" box, selected
    assert page.get_by_test_id("box-0").get_attribute("data-label") == "square"
    for k in ("ArrowRight", "ArrowDown", "ArrowLeft", "ArrowUp"):  # round trip
        keys.press(k, "arrows")
    keys.press("Shift+ArrowRight", "arrows")  # 10 px right
    for k in ("Alt+ArrowRight", "Alt+ArrowDown", "Alt+ArrowLeft", "Alt+ArrowUp"):
        keys.press(k, "resize")
    keys.press("Alt+ArrowRight", "resize")  # one px wider
    keys.press("Escape", "cancel")  # deselect
    world = page.locator(".stage .world")
    before = world.get_attribute("style")
    keys.press("ArrowLeft", "arrows")  # nothing selected: pans the image
    assert world.get_attribute("style") != before
    keys.press("0", "fit")
    keys.press("1", "class")
    drag(page, (200, 150), (260, 200))  # a "circle" box, selected
    keys.press("Tab", "next-shape")
    assert "selected" in page.get_by_test_id("box-0").get_attribute("class")
    keys.press("Shift+Tab", "next-shape")
    assert "selected" in page.get_by_test_id("box-1").get_attribute("class")
    drag(page, (10, 150), (50, 200))  # a third box, taken back with Delete
    page.get_by_test_id("box-2").wait_for()
    keys.press("Delete", "delete")
    page.get_by_test_id("box-2").wait_for(state="detached")
    keys.press("p", "tool-polygon")
    for x, y in [(20, 20), (60, 20)]:
        page.mouse.click(*image_point(page, x, y))
    keys.press("Backspace", "delete")  # drops the draft's last point
    keys.press("Escape", "cancel")  # drops the draft
    assert page.locator(".stage-svg polyline").count() == 0
    keys.press("h", "tool-pan")
    assert page.get_by_test_id("tool-pan").get_attribute("aria-pressed") == "true"
    zoom = page.get_by_test_id("zoom-level")
    fitted = zoom.inner_text()
    keys.press("+", "zoom-in")
    keys.press("=", "zoom-in")
    assert zoom.inner_text() != fitted
    keys.press("-", "zoom-out")
    keys.press("_", "zoom-out")
    keys.press("0", "fit")
    assert zoom.inner_text() == fitted
    n = page.evaluate("window.__keys.length")
    page.keyboard.down("Space")  # held: dragging pans
    page.wait_for_function("n => window.__keys.length > n", arg=n)
    assert page.evaluate("n => window.__keys[n]", n) == {"page": "Label", "id": "pan", "key": " ", "used": True}
    assert "panning" in page.get_by_test_id("stage").get_attribute("class")
    page.keyboard.up("Space")
    assert "panning" not in page.get_by_test_id("stage").get_attribute("class")
    keys.pressed.add(("pan", "Space"))
    keys.press("Enter", "submit")
    second = wait_new_item(page, first)
    with live.api("boss") as c:
        boxes = c.get(f"/items/{first}").json()["annotation"]["boxes"]
    assert [b["label"] for b in boxes] == ["square", "circle"]
    for got, want in zip(boxes[0]["bbox"] + boxes[1]["bbox"], [50, 30, 101, 80, 200, 150, 60, 50], strict=True):
        assert abs(got - want) < 1.5, boxes

    page.locator("[data-testid=stage][data-ready]").wait_for()
    keys.press("b", "tool-box")
    drag(page, (100, 100), (150, 140))
    keys.press("Enter", "submit")
    third = wait_new_item(page, second)
    keys.press("s", "skip")
    page.get_by_test_id("queue-empty").wait_for()  # the other two are labelled, the third skipped
    keys.press("u", "undo")
    page.get_by_test_id("save-status").filter(has_text="Undid").wait_for()
    keys.press("Ctrl+z", "undo")
    page.locator("[data-testid=undo][disabled]").wait_for()  # nothing left to undo
    with live.api("boss") as c:
        for item in (first, second):
            got = c.get(f"/items/{item}").json()
            assert got["status"] == "unlabelled" and got["annotation"]["boxes"] == [], got
        assert c.get(f"/items/{third}").json()["annotation"] is None
    keys.press("r", "again")  # check the queue again: the undone images are back
    page.get_by_test_id("item-id").wait_for()
    assert current_item(page) in (first, second)
    assert keys.missing(rows, skip=frozenset({"keep-current", "save-mine"})) == set()  # those two: the conflict test
    assert not page.js_errors, page.js_errors


def test_label_page_keys_conflict_and_recheck(live: Live, new_page: Any) -> None:
    live.user("boss", "manager")
    live.user("ann", "labeler")
    pid = live.project("boss", n_images=2)["id"]
    live.member(pid, "ann", "labeler")
    a = new_page("ann")
    b = a.context.new_page()  # a second tab of the same labeler
    for p in (a, b):
        p.goto(f"/web/#/project/{pid}/label")
        p.get_by_test_id("item-id").wait_for()
    ka, kb = Keys(a), Keys(b)
    rows = kb.help_rows()
    assert [r["id"] for r in rows] == ["class", "submit", "skip", "undo", "again", "zoom-in", "zoom-out", "fit",
                                       "arrows", "pan", "keep-current", "save-mine", "help"]  # no drawing tools
    assert rows[0]["label"] == "1–3"
    x1 = current_item(a)
    assert current_item(b) == x1
    ka.press("1", "class")  # circle, and on
    x2 = wait_new_item(a, x1)
    kb.press("2", "class")  # this tab still shows version 0: conflict
    b.get_by_test_id("conflict-view").wait_for()
    kb.press("m", "save-mine")
    b.get_by_test_id("conflict-view").wait_for(state="detached")
    assert wait_new_item(b, x1) == x2
    ka.press("3", "class")  # triangle
    a.get_by_test_id("queue-empty").wait_for()
    kb.press("1", "class")
    b.get_by_test_id("conflict-view").wait_for()
    kb.press("k", "keep-current")
    b.get_by_test_id("queue-empty").wait_for()
    with live.api("boss") as c:
        one, two = c.get(f"/items/{x1}").json(), c.get(f"/items/{x2}").json()
    assert one["annotation"]["labels"] == ["square"] and one["version"] == 2
    assert two["annotation"]["labels"] == ["triangle"] and two["version"] == 1
    ka.press("u", "undo")  # x2 back to the queue
    a.get_by_test_id("save-status").filter(has_text="Undid").wait_for()
    ka.press("r", "again")
    a.get_by_test_id("item-id").wait_for()
    assert current_item(a) == x2
    with live.api("boss") as c:
        assert c.get(f"/items/{x2}").json()["status"] == "unlabelled"
    assert {("keep-current", "k"), ("save-mine", "m")} <= kb.pressed
    assert not a.js_errors, a.js_errors


def test_pending_page_keys(live: Live, new_page: Any) -> None:
    live.user("boss", "manager")
    live.user("ann", "labeler")
    pid = live.project("boss", n_images=30)["id"]
    live.member(pid, "ann", "labeler")
    items = item_ids(live, pid)
    mv = live.model_version(pid)
    names = ["circle", "square", "triangle"]
    props = [(item, names[i % 3], round(0.99 - 0.01 * i, 2)) for i, item in enumerate(items)]
    pred = live.propose(pid, mv, props)
    label_of = {p: props[i][1] for i, p in enumerate(pred)}
    page = new_page("ann")
    page.goto(f"/web/#/project/{pid}/pending")
    settled = page.locator("[data-testid=pending-list][aria-busy=false]")
    count = page.get_by_test_id("pending-count")
    cards = page.locator("[data-testid=pending-list] > li")

    def wait(text: str) -> None:
        count.filter(has_text=text).wait_for()
        settled.wait_for()

    def shown() -> list[int]:
        return [int(t.removeprefix("pending-")) for t in cards.evaluate_all("ls => ls.map((l) => l.dataset.testid)")]

    def at() -> int:
        return int(page.locator("[data-testid=pending-list] > li[aria-current=true]").get_attribute("data-testid")
                   .removeprefix("pending-"))

    wait("30 proposals")
    keys = Keys(page)
    rows = keys.help_rows()
    assert {r["id"] for r in rows} == {
        "next", "previous", "down", "up", "confirm", "reject", "correct", "correct-list", "confirm-page",
        "next-page", "previous-page", "filter-class", "filter-score", "clear-filters", "leave-field", "undo", "help"}
    order = shown()
    assert at() == order[0]
    keys.press("j", "next")
    assert at() == order[1]
    keys.press("ArrowRight", "next")
    assert at() == order[2]
    keys.press("k", "previous")
    keys.press("ArrowLeft", "previous")
    assert at() == order[0]
    per_row = page.evaluate("""() => { const cs = [...document.querySelectorAll('[data-testid=pending-list] > li')];
      return cs.filter((c) => c.offsetTop === cs[0].offsetTop).length; }""")
    keys.press("ArrowDown", "down")
    assert at() == order[per_row]
    keys.press("ArrowUp", "up")
    assert at() == order[0]

    want: dict[int, tuple[list[str], str]] = {}  # prediction -> (labels, provenance) once decided
    confirmed = at()
    keys.press("c", "confirm")
    wait("29 proposals")
    want[confirmed] = ([label_of[confirmed]], "model-confirmed")
    rejected = at()
    keys.press("x", "reject")
    wait("28 proposals")
    keys.press("u", "undo")  # the rejection comes back, then is made again
    wait("29 proposals")
    assert at() == rejected
    keys.press("x", "reject")
    wait("28 proposals")
    for n, key in enumerate(("2", "3")):  # the first cards are circles: correct them to square, triangle
        p = at()
        assert label_of[p] == "circle"
        keys.press(key, "correct")
        wait(f"{27 - n} proposals")
        want[p] = ([names[int(key) - 1]], "human")
    keys.press("e", "correct-list")
    assert page.evaluate("document.activeElement.dataset.testid") == f"correct-select-{at()}"
    keys.press("Escape", "leave-field")
    assert page.evaluate("document.activeElement === document.body")
    keys.press("f", "filter-class")
    assert page.evaluate("document.activeElement.dataset.testid") == "pending-class"
    page.keyboard.press("ArrowDown")  # in the focused list: all classes -> circle -> square
    page.keyboard.press("ArrowDown")
    wait("10 proposals")
    keys.press("Escape", "leave-field")
    assert page.evaluate("document.activeElement === document.body")
    p = at()
    assert label_of[p] == "square"
    keys.press("1", "correct")  # square -> circle
    wait("9 proposals")
    want[p] = (["circle"], "human")
    keys.press("a", "clear-filters")
    wait("25 proposals")
    keys.press("m", "filter-score")
    page.keyboard.type("0.895")  # typed into the field, not taken as keys
    keys.press("Escape", "leave-field")  # leaving the field applies it
    with live.api("boss") as c:
        high = c.get(f"/projects/{pid}/pending?min_score=0.895").json()["count"]
    assert 0 < high < 25
    wait(f"{high} proposals")
    keys.press("a", "clear-filters")
    wait("25 proposals")
    keys.press("n", "next-page")
    page.get_by_test_id("pending-prev").wait_for()
    settled.wait_for()
    [last] = shown()
    keys.press("p", "previous-page")
    page.get_by_test_id("pending-next").wait_for()
    settled.wait_for()
    first_page = shown()
    assert len(first_page) == 24 and last not in first_page
    keys.press("Enter", "confirm-page")
    wait("1 proposals")
    for p in first_page:
        want[p] = ([label_of[p]], "model-confirmed")

    with live.api("boss") as c:
        item_of = dict(zip(pred, items, strict=True))
        for p, (labels, provenance) in want.items():
            got = c.get(f"/items/{item_of[p]}").json()
            assert got["annotation"]["labels"] == labels and got["provenance"] == provenance, (p, got)
        got = c.get(f"/items/{item_of[rejected]}").json()
        assert got["status"] == "unlabelled" and got["annotation"] is None, got
        left = c.get(f"/projects/{pid}/pending").json()
        assert left["count"] == 1 and left["data"][0]["prediction_id"] == last
    assert len(want) == 29 - 1  # all but the rejected one and the one left
    assert keys.missing(rows) == set()
    assert not page.js_errors, page.js_errors


def test_grids_page_keys(live: Live, new_page: Any) -> None:
    live.user("boss", "manager")
    live.user("ann", "labeler")
    pid = live.project("boss", n_images=37)["id"]
    live.member(pid, "ann", "labeler")
    ids = item_ids(live, pid)
    nines = [ids[10:19], ids[19:28], ids[28:37]]
    live.grid_pages(pid, {4: [{"item_ids": ids[0:4]}], 6: [{"item_ids": ids[4:10]}],
                          9: [{"item_ids": p, "suggested_class": s} for p, s in
                              zip(nines, ["circle", "square", "triangle"], strict=True)]})
    page = new_page("ann")
    page.goto(f"/web/#/project/{pid}/grids")
    settled = page.locator("[data-testid=grid-page][aria-busy=false]")
    selected = page.get_by_test_id("grid-selected-count")
    page.get_by_test_id("grid-cell-9").wait_for()
    settled.wait_for()
    keys = Keys(page)
    rows = keys.help_rows()
    assert {r["id"] for r in rows} == {"toggle", "fix", "include-all", "invert", "confirm", "skip", "label", "size",
                                       "undo", "help"}

    for size in (4, 6, 9):  # 9 -> 4 -> 6 -> 9
        keys.press("g", "size")
        page.locator(f"[data-testid=grid-size-{size}][aria-checked=true]").wait_for()
        settled.wait_for()
        assert page.locator("[data-testid=grid-page] .grid-cell").count() == size
    assert page.get_by_test_id("grid-suggested").inner_text() == "circle"
    keys.press("s", "skip")
    page.get_by_test_id("grid-suggested").filter(has_text="square").wait_for()
    settled.wait_for()
    keys.press("ArrowRight", "skip")
    page.get_by_test_id("grid-suggested").filter(has_text="triangle").wait_for()
    settled.wait_for()
    for n in range(1, 10):
        keys.press(str(n), "toggle")
    assert selected.inner_text() == "0 selected"
    keys.press("a", "include-all")
    assert selected.inner_text() == "9 selected"
    keys.press("i", "invert")
    assert selected.inner_text() == "0 selected"
    keys.press("i", "invert")
    keys.press("1", "toggle")
    keys.press("2", "toggle")  # the first two do not belong
    assert selected.inner_text() == "7 selected"
    keys.press("x", "fix")  # the second is a circle: X steps the image left out last through the classes
    assert page.get_by_test_id("grid-cell-fix-2").inner_text() == "circle"
    assert page.get_by_test_id("grid-fix-2").input_value() == "circle"
    assert page.get_by_test_id("grid-fix-1").input_value() == ""
    label = page.get_by_test_id("grid-label")
    assert label.input_value() == "triangle"
    keys.press("l", "label")
    assert label.input_value() == "circle"
    keys.press("Shift+l", "label")
    assert label.input_value() == "triangle"
    keys.press("l", "label")
    keys.press("Enter", "confirm")
    page.get_by_test_id("grid-empty").wait_for()
    settled.wait_for()
    with live.api("boss") as c:
        for i in nines[2][1:]:  # the page's label, and the one fixed with X
            got = c.get(f"/items/{i}/history").json()
            assert [(v["data"]["labels"], v["origin"]) for v in got] == [(["circle"], "grid")], got
        for i in nines[0] + nines[1] + nines[2][:1]:
            assert c.get(f"/items/{i}").json()["annotation"] is None
    keys.press("u", "undo")  # the page comes back, its labels undone
    page.get_by_test_id("grid-cell-1").wait_for()
    settled.wait_for()
    with live.api("boss") as c:
        for i in nines[2][1:]:
            got = c.get(f"/items/{i}/history").json()
            assert [v["origin"] for v in got] == ["grid", "undo"] and got[-1]["data"]["labels"] == [], got
    assert keys.missing(rows) == set()

    # a manager on a project with no pages yet: C clusters now
    other = live.project("boss", name="fresh", n_images=2)["id"]
    boss = new_page("boss")
    boss.goto(f"/web/#/project/{other}/grids")
    boss.get_by_test_id("grid-empty").wait_for()
    bkeys = Keys(boss)
    brows = bkeys.help_rows()
    assert "cluster" in {r["id"] for r in brows}
    bkeys.press("c", "cluster")
    boss.get_by_test_id("toast-ok").filter(has_text="Clustering started").wait_for()
    with live.api("boss") as c:
        assert [j["kind"] for j in c.get(f"/projects/{other}/jobs").json()["data"]] == ["cluster"]
    assert not page.js_errors and not boss.js_errors, (page.js_errors, boss.js_errors)
