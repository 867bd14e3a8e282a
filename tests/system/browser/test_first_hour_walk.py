"""The first hour in the browser, at 1366x768.

* Undo in Pending (button and ``U``) and in Grids: the last confirm, rejection or page
  confirm comes back.
* Export as a job on the Import / export page: a subset, a split, progress, a download link.
* The walk on a fresh ``labelloop demo`` (a minute of CPU to build): as admin, proposals in
  Pending, a grid page and a Review flag within a minute; confirm one proposal and undo it;
  open an image on the Data page and edit its label; create a labeller on the People page;
  export a subset as a job and download it. A README screenshot of each page (``shot``).
"""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select

from service.jobs.runner import ThreadExecutor
from service.main import create_app
from tests.conftest import make_settings, serve_app
from tests.system.browser.conftest import Live, item_ids, shot, sign_in

pytestmark = pytest.mark.browser
VIEWPORT = {"width": 1366, "height": 768}


@pytest.fixture
def live(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Live]:
    """The app under test; for a test named ``*_demo``, on a freshly built ``labelloop demo``
    (the admin's password in ``live.tokens["admin-password"]``)."""
    settings = make_settings(tmp_path, login_attempts_per_minute=1000)
    password = None
    if request.node.name.endswith("_demo"):
        from service.db import engine_from_settings, upgrade_schema
        from service.demo import ensure_demo

        engine = engine_from_settings(settings)
        upgrade_schema(engine)
        with Session(engine) as s:
            _, password = ensure_demo(s, settings)
        engine.dispose()
    app = create_app(settings, background=False)
    with serve_app(app) as url:
        live = Live(url, app, settings)
        if password:
            live.tokens["admin-password"] = password
        # export jobs run as a worker beside the API would run them (nothing else runs here)
        worker = ThreadExecutor(live.engine, settings, kinds=["export"])
        worker.start()
        try:
            yield live
        finally:
            worker.stop()


def _pending(live: Live, pid: int) -> set[int]:
    with live.api("boss") as c:
        return {p["prediction_id"] for p in c.get(f"/projects/{pid}/pending", params={"limit": 500}).json()["data"]}


def test_undo_in_pending_and_grids(live: Live, new_page: Any) -> None:
    live.user("boss", "manager")
    pid = live.project("boss", n_images=10)["id"]
    items = item_ids(live, pid)
    mv = live.model_version(pid)
    preds = live.propose(pid, mv, [(item, "circle", 0.95 - i / 100) for i, item in enumerate(items[:4])])

    page = new_page("boss", viewport=VIEWPORT)
    page.goto(f"/web/#/project/{pid}/pending")
    settled = page.locator("[data-testid=pending-list][aria-busy=false]")
    count = page.get_by_test_id("pending-count")
    count.filter(has_text="4 proposals").wait_for()
    settled.wait_for()
    undo = page.get_by_test_id("pending-undo")
    assert undo.is_disabled()  # nothing done yet
    page.get_by_test_id(f"confirm-{preds[0]}").click()
    count.filter(has_text="3 proposals").wait_for()
    settled.wait_for()
    assert preds[0] not in _pending(live, pid)
    undo.click()
    count.filter(has_text="4 proposals").wait_for()
    settled.wait_for()
    page.get_by_test_id("toast-ok").filter(has_text="Undone").first.wait_for()
    assert preds[0] in _pending(live, pid) and undo.is_disabled()
    with live.api("boss") as c:
        history = c.get(f"/items/{items[0]}/history").json()
        assert [h["origin"] for h in history] == ["pending", "undo"] and history[-1]["data"]["labels"] == []
    # the keys: X rejects the current proposal, U brings it back
    page.evaluate("document.activeElement && document.activeElement.blur()")
    page.keyboard.press("x")
    count.filter(has_text="3 proposals").wait_for()
    settled.wait_for()
    page.keyboard.press("u")
    count.filter(has_text="4 proposals").wait_for()
    settled.wait_for()
    assert _pending(live, pid) == set(preds)

    # Grids: confirm a page, undo it, the page comes back whole
    page_ids = items[4:8]
    job = live.grid_pages(pid, {4: [{"item_ids": page_ids, "suggested_class": "square"}]})
    page.goto(f"/web/#/project/{pid}/grids")
    page.get_by_test_id("grid-size-4").click()
    grid = page.locator("[data-testid=grid-page][aria-busy=false]")
    page.get_by_test_id("grid-cell-4").wait_for()
    grid.wait_for()
    assert page.get_by_test_id("grid-undo").is_disabled()
    page.get_by_test_id("grid-confirm").click()
    page.get_by_test_id("grid-empty").wait_for()
    with live.api("boss") as c:
        assert {c.get(f"/items/{i}").json()["status"] for i in page_ids} == {"labelled"}
    page.keyboard.press("u")
    page.get_by_test_id("grid-cell-4").wait_for()
    grid.wait_for()
    page.get_by_test_id("toast-ok").filter(has_text="no longer square").wait_for()
    cells = [int(page.get_by_test_id(f"grid-cell-{i}").get_attribute("data-item-id") or 0) for i in range(1, 5)]
    assert sorted(cells) == sorted(page_ids)
    with live.api("boss") as c:
        assert {c.get(f"/items/{i}").json()["status"] for i in page_ids} == {"unlabelled"}
        assert c.get(f"/projects/{pid}/grids", params={"size": 4}).json()["data"][0]["id"] == f"{job}-4-0"
    assert not page.js_errors, page.js_errors


def _export_job(page: Any, *, provenance: str, val_share: str, images: bool) -> tuple[dict, bytes]:
    """Start an export job on the Import / export page; wait for its link; download it."""
    page.get_by_test_id(f"export-job-provenance-{provenance}").check()
    page.get_by_test_id("export-job-val").fill(val_share)
    if images:
        page.get_by_test_id("export-job-images").check()
    page.get_by_test_id("export-job-start").click()
    link = page.get_by_test_id("export-job-result").get_by_test_id("export-job-download")
    link.wait_for()
    bar = page.get_by_test_id("export-job-progress")
    assert bar.get_attribute("aria-valuenow") == "100"
    with page.expect_download() as info:
        link.click()
    download = info.value
    body = Path(download.path()).read_bytes()
    manifest = json.loads(zipfile.ZipFile(io.BytesIO(body)).read("export.json"))
    return manifest, body


def test_export_job_on_the_import_export_page(live: Live, new_page: Any) -> None:
    live.user("boss", "manager")
    pid = live.project("boss", n_images=10)["id"]
    items = item_ids(live, pid)
    with live.api("boss") as c:
        for i, item in enumerate(items[:8]):
            r = c.post(f"/items/{item}/annotations", json={"labels": [["circle", "square"][i % 2]]})
            assert r.status_code == 201, r.text
    page = new_page("boss", viewport=VIEWPORT)
    page.goto(f"/web/#/project/{pid}/data")
    page.get_by_test_id("export-job-start").wait_for()
    manifest, body = _export_job(page, provenance="human", val_share="0.25", images=True)
    assert manifest["subset"]["provenance"] == ["human"] and manifest["split"]["val"] == 2
    names = zipfile.ZipFile(io.BytesIO(body)).namelist()
    assert sum("/images/" in n for n in names) == 8
    page.get_by_test_id("export-job-list").get_by_test_id("export-job-download").first.wait_for()
    assert not page.js_errors, page.js_errors


@pytest.mark.slow
def test_first_hour_walk_on_a_fresh_demo(live: Live, new_page: Any) -> None:
    from service.demo import NAME
    from service.models import Project, User
    from service.security import issue_token

    with Session(live.engine) as s:
        admin = s.exec(select(User).where(User.name == "admin")).one()
        _, token, _ = issue_token(s, admin, name="test")
        pid = s.exec(select(Project.id).where(Project.name == NAME)).one()
        s.commit()
    live.tokens["boss"] = token  # the API as the admin, for the checks

    page = new_page(viewport=VIEWPORT)
    start = time.monotonic()
    sign_in(page, "admin", live.tokens["admin-password"])

    # Pending: proposals with their certificate
    page.goto(f"/web/#/project/{pid}/pending")
    page.get_by_test_id("pending-count").filter(has_text="proposals").wait_for()
    page.locator("[data-testid=pending-list][aria-busy=false]").wait_for()
    page.get_by_test_id("pending-statement").filter(has_text="Model v").wait_for()
    shot(page, "demo-pending")

    # Grids: a page of look-alikes
    page.goto(f"/web/#/project/{pid}/grids")
    page.get_by_test_id("grid-cell-1").wait_for()
    page.locator("[data-testid=grid-page][aria-busy=false]").wait_for()
    shot(page, "demo-grids")

    # Review: flags
    page.goto(f"/web/#/project/{pid}/review")
    page.locator("[data-testid=review-list] [data-testid^=flag-]").first.wait_for()
    shot(page, "demo-review")
    assert time.monotonic() - start < 60, "Pending, a grid page and a flag take more than a minute to see"

    # confirm one proposal, then undo it
    page.goto(f"/web/#/project/{pid}/pending")
    settled = page.locator("[data-testid=pending-list][aria-busy=false]")
    page.get_by_test_id("pending-count").filter(has_text="proposals").wait_for()
    settled.wait_for()
    before = _pending(live, pid)
    first = page.locator("[data-testid=pending-list] [data-testid^=confirm-]").first
    pred = int((first.get_attribute("data-testid") or "").removeprefix("confirm-"))
    first.click()
    page.get_by_test_id("toast-ok").filter(has_text="Confirmed").first.wait_for()
    settled.wait_for()
    assert pred not in _pending(live, pid)
    page.get_by_test_id("pending-undo").click()
    page.get_by_test_id("toast-ok").filter(has_text="Undone").first.wait_for()
    settled.wait_for()
    assert _pending(live, pid) == before

    # Data: find an image the model flags as mislabelled, open it, give it the class the flag suggests
    with live.api("boss") as c:
        flags = c.get(f"/projects/{pid}/review", params={"kind": "label error"}).json()["data"]
    suggested = {f["item_id"]: (f.get("detail") or {}).get("suggested") for f in flags}
    page.goto(f"/web/#/project/{pid}/browse")
    page.get_by_test_id("data-flag").select_option("label error")
    page.wait_for_function("""() => {
      const rows = [...document.querySelectorAll('[data-testid=data-rows] tr')];
      return rows.length > 0 && rows.every((r) => r.children[9] && r.children[9].textContent === 'label error');
    }""")  # the filtered list has replaced the first one
    first_row = page.locator("[data-testid=data-rows] [data-testid^=data-row-]").first
    item = int(first_row.get_attribute("data-item-id") or 0)
    page.get_by_test_id(f"data-row-{item}").click()
    page.get_by_test_id("data-detail-image").wait_for()
    current = page.get_by_test_id("data-detail-labels").inner_text()
    new = suggested.get(item) or next(c for c in ("circle", "square", "triangle") if c != current)
    assert new != current
    page.get_by_test_id("data-edit-class").select_option(new)
    page.get_by_test_id("data-edit-save").click()
    page.get_by_test_id("data-detail-labels").filter(has_text=new).wait_for()
    with live.api("boss") as c:
        assert c.get(f"/items/{item}/history").json()[-1]["data"]["labels"] == [new]
    shot(page, "data")

    # People: create a labeller
    page.goto(f"/web/#/project/{pid}/people")
    page.get_by_test_id("user-name").fill("lena")
    page.get_by_test_id("user-role").select_option("labeler")
    page.get_by_test_id("user-password").fill("a-long-password-1")
    page.get_by_test_id("user-create").click()
    page.get_by_test_id("user-lena").wait_for()
    shot(page, "people")

    # Import / export: the imported labels as a job, split 80/20, downloaded
    page.goto(f"/web/#/project/{pid}/data")
    page.get_by_test_id("export-job-start").wait_for()
    manifest, _ = _export_job(page, provenance="import", val_share="0.2", images=False)
    assert manifest["subset"]["provenance"] == ["import"]
    n = manifest["split"]["train"] + manifest["split"]["val"]
    assert n > 0 and manifest["split"]["val"] == round(0.2 * n)
    page.get_by_test_id("export-job-card").scroll_into_view_if_needed()
    shot(page, "export-job")

    # the dashboard the manager opens last
    page.goto(f"/web/#/project/{pid}/dashboard")
    page.get_by_test_id("stat-total").wait_for()
    page.wait_for_load_state("networkidle")
    with live.api("boss") as c:  # the tiles say what the API says
        counts = c.get(f"/projects/{pid}/stats").json()["counts"]
    for key in ("total", "labelled", "unlabelled", "proposed"):
        assert page.get_by_test_id(f"stat-{key}").inner_text() == str(counts.get(key, 0)), key
    shot(page, "demo-dashboard")
    assert not page.js_errors, page.js_errors
