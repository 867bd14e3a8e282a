"""Settings for ML engineers (issue 25): the policy page shows what is saved, in groups with
defaults, help and inline range checks, a reset to defaults and a calibration preview whose
numbers are the server's own Clopper-Pearson rule."""

from __future__ import annotations

from typing import Any

import pytest

from learning.calibration import min_evidence_for
from learning.calibration_auto import PER_CLASS_SHARE, POOLED_SHARE
from learning.policy import ALGORITHMS, CALIBRATIONS, FEATURES, Policy
from learning.query import STRATEGIES
from tests.system.browser.conftest import Live

pytestmark = pytest.mark.browser

GROUPS = {
    "train-when": ["min_labels_per_class", "retrain_every_labels", "retrain_every_minutes"],
    "train-what": ["algorithm", "epochs", "image_size", "features", "mirror", "semi_supervised", "tile_size",
                   "tile_overlap", "background_share"],
    "sure": ["target_precision", "delta", "calibration", "holdout_share", "holdout_min", "auto_accept", "audit_share"],
    "next": ["strategy", "batch_size"],
    "grids": ["grid_min_confidence", "grid_purity"],
}


def serve_defaults(page: Any, live: Live, *, missing: bool = False) -> None:
    """The page reads GET /policy/defaults; where this server has no such route yet, answer it
    in the browser with learning.policy's own defaults (or, ``missing``, with the 404 it gives)."""
    if missing:
        page.route("**/api/v1/policy/defaults", lambda r: r.fulfill(status=404, json={"detail": "Not Found"}))
    elif not live.has_route("get", "/policy/defaults"):
        choices = {"algorithm": list(ALGORITHMS), "calibration": list(CALIBRATIONS), "features": list(FEATURES),
                   "strategy": sorted(STRATEGIES)}
        page.route("**/api/v1/policy/defaults",
                   lambda r: r.fulfill(json={"defaults": Policy().to_dict(), "choices": choices}))


def open_settings(page: Any, pid: int) -> None:
    page.goto(f"/web/#/project/{pid}/settings")
    page.get_by_test_id("policy-save").wait_for()


def test_calibration_select_shows_the_saved_auto_and_saving_keeps_it(live: Live, new_page: Any) -> None:
    live.user("boss", "manager")
    pid = live.project("boss", n_images=0)["id"]
    with live.api("boss") as c:
        assert c.get(f"/projects/{pid}/policy").json()["calibration"] == "auto"
    page = new_page("boss")
    open_settings(page, pid)
    select = page.get_by_test_id("policy-calibration")
    assert select.input_value() == "auto"
    options = select.locator("option").evaluate_all("os => os.map(o => o.value)")
    assert sorted(options) == sorted(CALIBRATIONS)
    page.get_by_test_id("policy-epochs").fill("9")  # save another field: calibration must not change
    page.get_by_test_id("policy-save").click()
    page.get_by_test_id("policy-status").filter(has_text="Saved").wait_for()
    assert "calibration" not in page.get_by_test_id("policy-status").inner_text()
    with live.api("boss") as c:
        pol = c.get(f"/projects/{pid}/policy").json()
    assert pol["calibration"] == "auto" and pol["epochs"] == 9
    assert not page.js_errors, page.js_errors


def test_groups_help_defaults_and_reset(live: Live, new_page: Any) -> None:
    live.user("boss", "manager")
    pid = live.project("boss", n_images=0)["id"]
    with live.api("boss") as c:
        changed = {"target_precision": 0.9, "retrain_every_minutes": 30, "mirror": False}
        r = c.put(f"/projects/{pid}/policy", json=changed)
        assert r.status_code == 200, r.text
    page = new_page("boss", viewport={"width": 1366, "height": 768})
    serve_defaults(page, live)
    open_settings(page, pid)
    defaults = Policy().to_dict()
    assert sorted(k for keys in GROUPS.values() for k in keys) == sorted(defaults)  # every knob, once
    for gid, keys in GROUPS.items():
        group = page.get_by_test_id(f"policy-group-{gid}")
        for key in keys:
            assert group.get_by_test_id(f"policy-{key}").count() == 1, (gid, key)
            help_line = page.get_by_test_id(f"policy-help-{key}")
            assert help_line.is_visible() and len(help_line.inner_text()) > 15, key  # shown, not a tooltip
            assert page.get_by_test_id(f"policy-default-{key}").is_visible(), key
    mark = page.get_by_test_id("policy-default-target_precision")
    assert mark.inner_text().startswith("default: 0.95") and "changed" in (mark.get_attribute("class") or "")
    assert page.get_by_test_id("policy-default-retrain_every_minutes").inner_text().startswith("default: off")
    assert page.get_by_test_id("policy-default-semi_supervised").inner_text().startswith("default: auto")
    assert page.get_by_test_id("policy-default-calibration").inner_text().startswith("default: auto")
    assert "changed" not in (page.get_by_test_id("policy-default-epochs").get_attribute("class") or "")

    page.get_by_test_id("policy-reset").click()
    assert page.get_by_test_id("policy-target_precision").input_value() == "0.95"
    assert page.get_by_test_id("policy-retrain_every_minutes").input_value() == ""
    assert page.get_by_test_id("policy-mirror").is_checked()
    assert "changed" not in (mark.get_attribute("class") or "")
    with live.api("boss") as c:  # nothing is saved until Save
        assert c.get(f"/projects/{pid}/policy").json()["target_precision"] == 0.9
    page.get_by_test_id("policy-save").click()
    page.get_by_test_id("policy-status").filter(has_text="Saved").wait_for()
    with live.api("boss") as c:
        assert c.get(f"/projects/{pid}/policy").json() == defaults
    assert not page.js_errors, page.js_errors


def test_no_defaults_route_hides_the_marks(live: Live, new_page: Any) -> None:
    live.user("boss", "manager")
    pid = live.project("boss", n_images=0)["id"]
    page = new_page("boss")
    serve_defaults(page, live, missing=True)
    open_settings(page, pid)
    assert page.get_by_test_id("policy-help-delta").is_visible()
    assert page.locator("[data-testid^=policy-default-]").count() == 0
    assert page.get_by_test_id("policy-reset").count() == 0
    assert page.get_by_test_id("policy-calibration").input_value() == "auto"


def test_ranges_checked_as_typed(live: Live, new_page: Any) -> None:
    live.user("boss", "manager")
    pid = live.project("boss", n_images=0)["id"]
    page = new_page("boss")
    open_settings(page, pid)
    cases = [("holdout_share", "3", "strictly between 0 and 1"), ("epochs", "0", "an integer >= 1"),
             ("grid_min_confidence", "1", "between 0 (inclusive) and 1"), ("image_size", "8", "an integer >= 16"),
             ("retrain_every_minutes", "-5", "a number > 0"), ("strategy", "fastest", "a known query strategy")]
    for key, bad, rule in cases:
        field, error = page.get_by_test_id(f"policy-{key}"), page.get_by_test_id(f"policy-error-{key}")
        old = field.input_value()
        field.fill(bad)  # no click on Save: the note shows as it is typed
        error.filter(has_text=rule).wait_for()
        assert field.get_attribute("aria-invalid") == "true", key
        field.fill(old)
        error.wait_for(state="hidden")
        assert field.get_attribute("aria-invalid") is None, key
    page.get_by_test_id("policy-retrain_every_labels").fill("")  # empty: this trigger off, which is valid
    assert not page.get_by_test_id("policy-error-retrain_every_labels").is_visible()
    assert not page.js_errors, page.js_errors


def test_calibration_preview_uses_the_servers_rule(live: Live, new_page: Any) -> None:
    live.user("boss", "manager")
    pid = live.project("boss", n_images=0)["id"]  # three classes
    page = new_page("boss")
    open_settings(page, pid)
    preview = page.get_by_test_id("policy-preview")
    text = preview.inner_text()
    pooled, alone = min_evidence_for(0.95, 0.05 * POOLED_SHARE), min_evidence_for(0.95, 0.05 * PER_CLASS_SHARE / 3)
    assert f"at least {pooled} images" in text and f"at least {alone} of its own" in text, text

    page.get_by_test_id("policy-calibration").select_option("per_class")
    preview.filter(has_text="certified alone").wait_for()
    text = preview.inner_text()
    assert min_evidence_for(0.95, 0.05) == 59
    assert "at target 0.95 and δ 0.05 a class needs at least 59 hold-out images, all right" in text.lower(), text
    assert f"one wrong {min_evidence_for(0.95, 0.05, 1)}, with two {min_evidence_for(0.95, 0.05, 2)}" in text

    page.get_by_test_id("policy-calibration").select_option("pooled")
    page.get_by_test_id("policy-target_precision").fill("0.99")
    page.get_by_test_id("policy-delta").fill("0.01")
    n = min_evidence_for(0.99, 0.01)
    preview.filter(has_text=f"at least {n} images").wait_for()
    assert "all classes together" in preview.inner_text()
    page.get_by_test_id("policy-delta").fill("2")
    preview.filter(has_text="strictly between 0 and 1").wait_for()
    assert not page.js_errors, page.js_errors
