"""Boxes and polygons drawn with the mouse, nudged with the keyboard; zoom."""

from __future__ import annotations

from typing import Any

import pytest

from tests.system.browser.conftest import Live, image_point, shot

pytestmark = pytest.mark.browser




def test_detection_boxes_with_mouse_and_keyboard(live: Live, new_page: Any) -> None:
    live.user("boss", "manager")
    live.user("ann", "labeler")
    pid = live.project("boss", name="shapes", task="detection", n_images=3, size=(320, 240))["id"]
    live.member(pid, "ann", "labeler")
    page = new_page("ann")
    page.goto(f"/web/#/project/{pid}/label")
    page.get_by_test_id("item-id").wait_for()
    page.locator("[data-testid=stage][data-ready]").wait_for()
    item = int(page.get_by_test_id("item-id").inner_text())

    page.keyboard.press("2")  # class "square" for new boxes
    x0, y0 = image_point(page, 40, 30)
    x1, y1 = image_point(page, 140, 110)
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move((x0 + x1) / 2, (y0 + y1) / 2)
    page.mouse.move(x1, y1)
    page.mouse.up()
    assert page.get_by_test_id("box-0").get_attribute("data-label") == "square"
    for _ in range(3):
        page.keyboard.press("ArrowRight")
    page.keyboard.press("Shift+ArrowDown")  # 10 px
    page.keyboard.press("Alt+ArrowRight")  # one px wider

    page.keyboard.press("Escape")  # deselect (a digit would relabel the selected box)
    page.keyboard.press("1")  # a second box as "circle"
    a = image_point(page, 200, 150)
    b = image_point(page, 260, 200)
    page.mouse.move(*a)
    page.mouse.down()
    page.mouse.move(*b)
    page.mouse.up()
    page.keyboard.press("+")
    shot(page, "label-detection")
    page.keyboard.press("0")
    page.keyboard.press("Enter")
    page.wait_for_function("old => Number(document.querySelector('[data-testid=item-id]').textContent) !== old",
                           arg=item)
    with live.api("boss") as c:
        boxes = c.get(f"/items/{item}").json()["annotation"]["boxes"]
    assert [b["label"] for b in boxes] == ["square", "circle"]
    bx, by, bw, bh = boxes[0]["bbox"]
    assert abs(bx - 43) < 1.5 and abs(by - 40) < 1.5 and abs(bw - 101) < 1.5 and abs(bh - 80) < 1.5, boxes[0]
    cx, cy, cw, ch = boxes[1]["bbox"]
    assert abs(cx - 200) < 1.5 and abs(cy - 150) < 1.5 and abs(cw - 60) < 1.5 and abs(ch - 50) < 1.5, boxes[1]
    assert not page.js_errors, page.js_errors


def test_segmentation_polygon(live: Live, new_page: Any) -> None:
    live.user("boss", "manager")
    pid = live.project("boss", name="seg", task="segmentation", n_images=2, size=(200, 150))["id"]
    page = new_page("boss")
    page.goto(f"/web/#/project/{pid}/label")
    page.get_by_test_id("item-id").wait_for()
    page.locator("[data-testid=stage][data-ready]").wait_for()
    item = int(page.get_by_test_id("item-id").inner_text())
    page.keyboard.press("3")
    for x, y in [(20, 20), (120, 30), (90, 110)]:
        page.mouse.click(*image_point(page, x, y))
    page.keyboard.press("Enter")  # closes the polygon
    assert page.get_by_test_id("polygon-0").get_attribute("data-label") == "triangle"
    page.keyboard.press("Enter")  # submits
    page.wait_for_function("old => Number(document.querySelector('[data-testid=item-id]').textContent) !== old",
                           arg=item)
    with live.api("boss") as c:
        [poly] = c.get(f"/items/{item}").json()["annotation"]["polygons"]
    assert poly["label"] == "triangle"
    pts = poly["points"]
    assert len(pts) == 6
    for got, want in zip(pts, [20, 20, 120, 30, 90, 110], strict=True):
        assert abs(got - want) < 1.5, pts
