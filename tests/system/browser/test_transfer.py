"""The Import / export page: upload with per-file results, import labels, export."""

from __future__ import annotations

from typing import Any

import pytest

from tests.system.browser.conftest import Live, shape_png, shot

pytestmark = pytest.mark.browser


def test_upload_import_export(live: Live, new_page: Any) -> None:
    live.user("boss", "manager")
    pid = live.project("boss", n_images=0)["id"]
    page = new_page("boss")
    page.goto(f"/web/#/project/{pid}/data")
    files = [{"name": f"new_{i}.png", "mimeType": "image/png", "buffer": shape_png(i + 20)} for i in range(3)]
    files.append({"name": "again.png", "mimeType": "image/png", "buffer": shape_png(20)})  # duplicate of new_0
    files.append({"name": "notes.png", "mimeType": "image/png", "buffer": b"this is not an image"})
    page.get_by_test_id("upload-input").set_input_files(files)
    page.get_by_test_id("upload-summary").filter(has_text="added").wait_for()
    rows = page.get_by_test_id("upload-row")
    assert rows.count() == 5
    status = {rows.nth(i).get_attribute("data-file"): rows.nth(i).get_attribute("data-status") for i in range(5)}
    assert status == {"new_0.png": "created", "new_1.png": "created", "new_2.png": "created",
                      "again.png": "duplicate", "notes.png": "rejected"}
    assert page.get_by_test_id("upload-summary").inner_text() == "3 added · 1 duplicates · 1 rejected"
    with live.api("boss") as c:
        assert c.get(f"/projects/{pid}/items").json()["count"] == 3

    csv = b"file_name,labels\nnew_0.png,circle\nnew_1.png,square\nmissing.png,circle\n"
    page.get_by_test_id("import-format").select_option("csv")
    page.get_by_test_id("import-file").set_input_files({"name": "labels.csv", "mimeType": "text/csv", "buffer": csv})
    page.get_by_test_id("import-submit").click()
    assert page.get_by_test_id("import-updated").inner_text() == "2"
    assert "1 not matched" in page.get_by_test_id("import-result").inner_text()
    shot(page, "import-export")

    with page.expect_download() as dl:
        page.get_by_test_id("export-csv").click()
    text = open(dl.value.path()).read()
    assert "new_0.png,circle" in text and "new_1.png,square" in text
    page.get_by_test_id("export-status").filter(has_text="Exported").wait_for()
    # a format that cannot hold this project shows the server's reason (or exports)
    page.get_by_test_id("export-coco").click()
    page.get_by_test_id("export-status").filter(has_text="coco").wait_for()
    assert not page.js_errors, page.js_errors
