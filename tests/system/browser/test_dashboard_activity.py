"""The dashboard's manager numbers (labels over time, people, agreement, model versions over
time) are those GET /projects/{id}/activity returns, in plain words."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlmodel import Session

from service.models import Project, Provenance
from tests.service.test_activity import Builder, seed_history
from tests.system.browser.conftest import Live, shot

pytestmark = pytest.mark.browser

KINDS = ("human", "confirmed", "auto_accepted")


def pct(x: float | None) -> str:
    return "–" if x is None else f"{x * 100:.1f}%"


def one(x: float | None) -> str:
    return "–" if x is None else f"{x:.1f}"


def make(live: Live, created: datetime) -> tuple[int, Builder]:
    pid = live.project("boss", n_images=16)["id"]
    for name in ("ann", "bob"):
        live.member(pid, name, "labeler")
    with Session(live.engine) as s:
        p = s.get(Project, pid)
        assert p is not None
        p.created_at = created
        s.add(p)
        s.commit()
    return pid, Builder(live.engine, pid)


def check_page(page: Any, act: dict[str, Any]) -> None:
    """Every number of the activity cards equals ``act``'s."""
    t = act["totals"]
    assert page.get_by_test_id("labels-total").inner_text() == str(t["total"])
    for k in KINDS:
        assert page.get_by_test_id(f"labels-{k}").inner_text() == str(t[k]), k
    hourly = act["bucket"] == "hour"
    filled = [r for r in act["labels"] if r["total"]]
    page.get_by_test_id("labels-over-time").locator("summary").click()
    assert page.get_by_test_id("labels-table").locator("tbody tr").count() == len(filled)
    for r in filled:
        key = r["start"][:13 if hourly else 10]
        for k in (*KINDS, "total"):
            assert page.get_by_test_id(f"labels-{key}-{k}").inner_text() == str(r[k]), (key, k)
    assert page.get_by_test_id("people-table").locator("tbody tr").count() == len(act["people"])
    for p in act["people"]:
        uid = p["user_id"]
        assert page.get_by_test_id(f"person-{uid}-name").inner_text() == p["name"]
        assert page.get_by_test_id(f"person-{uid}-labels").inner_text() == str(p["labels"])
        assert page.get_by_test_id(f"person-{uid}-per-hour").inner_text() == one(p["labels_per_hour"])
        assert page.get_by_test_id(f"person-{uid}-median").inner_text() == one(p["median_seconds"])
    ag = act["agreement"]
    assert page.get_by_test_id("agreement-images").inner_text() == str(ag["images"])
    if ag["images"]:
        assert page.get_by_test_id("agreement-agreeing").inner_text() == str(ag["agreeing"])
        assert page.get_by_test_id("agreement-share").inner_text() == pct(ag["share"])
    for v in act["versions"]:
        n = v["version"]
        assert page.get_by_test_id(f"mv-{n}-coverage").inner_text() == pct(v["coverage"]), n
        assert page.get_by_test_id(f"mv-{n}-precision").inner_text() == pct(v["precision"]), n
        if v["decided"]:
            assert page.get_by_test_id(f"mv-{n}-decided").inner_text() == str(v["decided"])
            assert page.get_by_test_id(f"mv-{n}-right").inner_text() == str(v["right"])
    # plain words only: no internal names in the new cards
    text = page.get_by_test_id("activity").inner_text()
    for internal in ("queue:", "auto_accepted", "model-confirmed", "model_confirmed", "predictions", "inference",
                     "session_gap", "null", "undefined", "NaN"):
        assert internal not in text, internal


def test_dashboard_activity_equals_api(live: Live, new_page: Any) -> None:
    live.user("boss", "manager")
    live.user("ann")
    live.user("bob")
    pid, b = make(live, datetime(2026, 1, 5, 8, 0, tzinfo=UTC))
    seed_history(b, "circle", "square")
    with live.api("boss") as c:
        act = c.get(f"/projects/{pid}/activity").json()
    assert act["bucket"] == "day" and act["totals"]["total"] == 14  # the history of tests/service/test_activity.py
    assert act["agreement"]["images"] == 3 and len(act["versions"]) == 3

    page = new_page("boss", viewport={"width": 1366, "height": 768})
    page.goto(f"/web/#/project/{pid}/dashboard")
    page.get_by_test_id("activity").wait_for()
    page.get_by_test_id("chart-labels-over-time").locator("canvas").wait_for()
    page.get_by_test_id("chart-versions-over-time").locator("canvas").wait_for()
    check_page(page, act)
    assert "2026-01-05" in page.get_by_test_id("labels-table").inner_text()
    page.get_by_test_id("labels-over-time").scroll_into_view_if_needed()
    shot(page, "dashboard-activity")
    assert not page.js_errors, page.js_errors


def test_young_project_per_hour(live: Live, new_page: Any) -> None:
    live.user("boss", "manager")
    live.user("ann")
    live.user("bob")
    now = datetime.now(UTC)
    pid, b = make(live, now - timedelta(hours=3))
    hour = now.replace(minute=0, second=0, microsecond=0)
    b.save(0, "ann", ["circle"], hour - timedelta(hours=2) + timedelta(minutes=1))
    b.save(1, "ann", ["square"], hour - timedelta(hours=2) + timedelta(minutes=1, seconds=9))
    b.save(2, "bob", ["circle"], hour - timedelta(hours=1), provenance=Provenance.model_confirmed, origin="pending")
    with live.api("boss") as c:
        act = c.get(f"/projects/{pid}/activity").json()
    assert act["bucket"] == "hour" and act["totals"]["total"] == 3
    page = new_page("boss")
    page.goto(f"/web/#/project/{pid}/dashboard")
    page.get_by_test_id("activity").wait_for()
    check_page(page, act)
    assert "Hour (UTC)" in page.get_by_test_id("labels-table").inner_text()
    assert page.get_by_test_id("agreement").inner_text() == "Agreement: 0 images labelled by two or more people yet."
    assert "No model trained yet." in page.get_by_test_id("versions-over-time").inner_text()
    assert not page.js_errors, page.js_errors
