"""An open Label page keeps its lease alive past the lease's TTL."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.system.browser.conftest import Live

pytestmark = pytest.mark.browser


@pytest.fixture
def live_settings() -> dict[str, Any]:
    return {"lease_ttl_seconds": 3}


def test_open_page_keeps_its_lease(live: Live, new_page: Any) -> None:
    live.user("boss", "manager")
    live.user("ann", "labeler")
    live.user("bob", "labeler")
    pid = live.project("boss", n_images=1)["id"]
    for name in ("ann", "bob"):
        live.member(pid, name, "labeler")
    page = new_page("ann")
    page.goto(f"/web/#/project/{pid}/label")
    page.get_by_test_id("item-id").wait_for()
    time.sleep(4.5)  # 1.5 TTLs: without heartbeats the lease would have lapsed
    with live.api("bob") as c:
        r = c.post(f"/projects/{pid}/queue/next")
        assert r.status_code == 204, r.text  # the only image is still ann's
    with live.api("boss") as c:
        item = c.get(f"/projects/{pid}/items").json()["data"][0]["id"]
    assert page.get_by_test_id("item-id").inner_text() == str(item)
    assert "Reserved for you until" in page.get_by_test_id("lease-status").inner_text()
