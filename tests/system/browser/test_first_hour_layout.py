"""Layout (issue 25): nothing overflows its card at 1366x768 or 1920x1080 on any page, the tab
bar scrolls on a narrow screen, and the Grids page uses the width it has."""

from __future__ import annotations

from typing import Any

import pytest

from tests.system.browser.conftest import Live, item_ids

pytestmark = pytest.mark.browser

VIEWPORTS = [{"width": 1366, "height": 768}, {"width": 1920, "height": 1080}]

# boxes whose content must stay inside them (a box that scrolls on purpose is not one of these)
BOXES = ".card, .tile, .thumb, .policy-group, .pol-field, .label-side, .grid-head, .toolbar, .notice, .chips"
OVERFLOWS = """sel => {
  const vw = document.documentElement.clientWidth, out = [];
  if (document.documentElement.scrollWidth > vw + 1) out.push(`page: ${document.documentElement.scrollWidth} > ${vw}`);
  const name = (el) => el.tagName.toLowerCase() + (el.dataset.testid ? `[${el.dataset.testid}]` : "")
    + (el.className && typeof el.className === "string" ? "." + el.className.trim().split(/\\s+/).join(".") : "");
  for (const el of document.querySelectorAll(sel)) {
    if (!el.getClientRects().length) continue;  // not shown
    if (el.scrollWidth > el.clientWidth + 1) out.push(`${name(el)}: ${el.scrollWidth} > ${el.clientWidth}`);
    const box = el.getBoundingClientRect();
    for (const child of el.querySelectorAll("*")) {
      const r = child.getBoundingClientRect();
      if (r.width && (r.right > box.right + 1 || r.left < box.left - 1)
          && !child.closest(".chart-box") && getComputedStyle(child).position !== "fixed") {
        out.push(`${name(child)} sticks out of ${name(el)}: ${Math.round(r.left)}..${Math.round(r.right)} not in `
          + `${Math.round(box.left)}..${Math.round(box.right)}`);
        break;
      }
    }
  }
  return out;
}"""


def populated_project(live: Live) -> tuple[int, dict[str, str]]:
    """A project with something on every page: labels, a model, proposals, a flag and grid pages;
    returns its id and, per tab, the test id that shows the page has drawn its content."""
    live.user("boss", "manager")
    pid = live.project("boss", name="a project with a long name to see how the breadcrumb copes", n_images=24)["id"]
    ids = item_ids(live, pid)
    with live.api("boss") as c:
        for item, label in zip(ids[:8], ["circle", "square", "triangle"] * 3, strict=False):
            assert c.post(f"/items/{item}/annotations", json={"labels": [label]}).status_code == 201
    mv = live.model_version(pid, algorithm="fast", n_train=8, n_holdout=40,
                            metrics={"n_holdout": 40, "holdout_accuracy": 0.925, "holdout_macro_f1": 0.9012},
                            thresholds={"mode": "per_class", "pooled": None, "per_class": {
                                "circle": {"threshold": 0.9994, "lower_bound": 0.95, "n_above": 30, "coverage": 0.7},
                                "square": {"threshold": None, "reason": "too few hold-out labels"},
                                "triangle": {"threshold": 0.8123, "lower_bound": 0.951, "n_above": 64,
                                             "coverage": 0.4}}})
    live.propose(pid, mv, [(i, "circle", 0.9) for i in ids[8:14]])
    flag = live.flag(pid, ids[0], "label error", 0.93, given="circle", suggested="square", self_confidence=0.04,
                     annotation_version=1)
    live.grid_pages(pid, {9: [{"item_ids": ids[14:23], "suggested_class": "triangle", "confidence": 0.83,
                               "agreement": 0.67}]})
    ready = {"label": "label-page", "pending": "pending-list", "grids": "grid-cell-1", "review": f"flag-{flag}",
             "dashboard": "stat-total", "data": "dropzone", "settings": "policy-save"}
    return pid, ready


def open_tab(page: Any, pid: int, tab: str, ready: str) -> None:
    page.goto(f"/web/#/project/{pid}/{tab}")
    page.get_by_test_id(ready).first.wait_for()
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(300)  # charts and images settle their size


def test_nothing_overflows_its_card(live: Live, new_page: Any) -> None:
    pid, ready = populated_project(live)
    problems = []
    for viewport in VIEWPORTS:
        page = new_page("boss", viewport=viewport)
        page.get_by_test_id("project-list").wait_for()
        problems += [f"{viewport['width']} projects: {p}" for p in page.evaluate(OVERFLOWS, BOXES)]
        for tab, marker in ready.items():
            open_tab(page, pid, tab, marker)
            problems += [f"{viewport['width']} {tab}: {p}" for p in page.evaluate(OVERFLOWS, BOXES)]
        assert not page.js_errors, page.js_errors
        page.close()
    assert not problems, "\n".join(problems)


def test_tab_bar_scrolls_on_a_narrow_screen(live: Live, new_page: Any) -> None:
    pid, _ = populated_project(live)
    page = new_page("boss", viewport={"width": 420, "height": 800})
    page.goto(f"/web/#/project/{pid}/label")
    page.get_by_test_id("label-page").wait_for()
    tabs = page.locator("#tabs")
    sizes = tabs.evaluate("t => [t.scrollWidth, t.clientWidth, getComputedStyle(t).overflowX]")
    assert sizes[0] > sizes[1] and sizes[2] in ("auto", "scroll"), sizes  # more tabs than room: it scrolls
    assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth + 1")
    box = tabs.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 421, box  # the bar itself stays on the screen
    assert box["width"] >= 0.9 * 420, box  # a row of its own, not the corner the crumbs leave
    last = page.get_by_test_id("tab-settings")
    last.scroll_into_view_if_needed()
    last.click()
    page.get_by_test_id("policy-save").wait_for()
    assert not page.js_errors, page.js_errors


def test_grids_page_uses_the_width(live: Live, new_page: Any) -> None:
    pid, ready = populated_project(live)
    for viewport in VIEWPORTS:
        page = new_page("boss", viewport=viewport)
        open_tab(page, pid, "grids", ready["grids"])
        room = page.locator("main .page").bounding_box()
        grid = page.get_by_test_id("grid-page").bounding_box()
        side = page.get_by_test_id("grid-side").bounding_box()
        used = max(grid["x"] + grid["width"], side["x"] + side["width"]) - room["x"]
        assert used >= 0.9 * room["width"], (viewport, used, room)  # no half-empty screen
        assert side["x"] >= grid["x"] + grid["width"] - 1, (grid, side)  # details beside the images, not below
        for what in (page.locator(".grid-cell").last, page.get_by_test_id("grid-confirm")):
            box = what.bounding_box()  # the whole page and its confirm button in view, no scrolling
            assert box["y"] + box["height"] <= viewport["height"] + 1, (viewport, box)
        assert grid["width"] >= 0.45 * room["width"] or grid["height"] >= 0.7 * (viewport["height"] - grid["y"]), \
            (viewport, grid)  # the images are as big as the screen lets them be
        page.close()
