"""Sign-in, project list, settings, and the pages whose server routes may not exist yet."""

from __future__ import annotations

from typing import Any

import pytest

from tests.system.browser.conftest import Live, shot

pytestmark = pytest.mark.browser


def test_sign_in_and_project_list_by_role(live: Live, new_page: Any) -> None:
    live.user("boss", "manager")
    live.user("ann", "labeler")
    live.user("zed", "labeler")
    p1 = live.project("boss", name="pets", n_images=0)["id"]
    live.project("boss", name="cells", task="segmentation", classes=["nucleus", "membrane"], n_images=0)
    live.member(p1, "ann", "labeler")

    page = new_page()
    page.goto("/")
    page.get_by_test_id("login-name").wait_for()
    shot(page, "login")
    page.get_by_test_id("login-name").fill("ann")
    page.get_by_test_id("login-password").fill("wrong password")
    page.get_by_test_id("login-submit").click()
    page.get_by_test_id("login-error").filter(has_text="wrong name or password").wait_for()
    page.get_by_test_id("login-password").fill("correct-horse-1")
    page.get_by_test_id("login-submit").click()
    page.get_by_test_id("project-list").wait_for()
    assert page.get_by_test_id("project-list").locator("li").count() == 1  # only her project
    page.get_by_test_id(f"open-label-{p1}").click()
    page.get_by_test_id("label-page").wait_for()
    tabs = page.locator("#tabs a").all_inner_texts()
    assert tabs == ["Label", "Pending", "Grids"]  # a labeler sees no manager pages
    page.goto(f"/web/#/project/{p1}/settings")  # and is sent to her first tab
    page.wait_for_url(f"**/#/project/{p1}/label")
    page.get_by_test_id("logout").click()
    page.get_by_test_id("login-name").wait_for()

    other = new_page("zed")
    other.get_by_test_id("no-projects").wait_for()

    boss = new_page("boss")
    boss.get_by_test_id("project-list").wait_for()
    assert boss.get_by_test_id("project-list").locator("li").count() == 2
    shot(boss, "projects")
    assert not page.js_errors and not boss.js_errors, page.js_errors + boss.js_errors


def test_settings_classes_policy_members(live: Live, new_page: Any) -> None:
    live.user("boss", "manager")
    live.user("rev", "labeler")
    pid = live.project("boss", n_images=0)["id"]
    page = new_page("boss")
    page.goto(f"/web/#/project/{pid}/settings")
    page.get_by_test_id("settings-classes").wait_for()

    page.get_by_test_id("class-name-3").fill("tri")
    page.get_by_test_id("class-name-3").press("Enter")
    page.get_by_test_id("class-name-3").press("Tab")
    page.get_by_test_id("settings-new-class").fill("star")
    page.get_by_test_id("settings-add-class").click()
    page.get_by_test_id("class-row-4").wait_for()
    page.get_by_test_id("class-up-4").click()  # star becomes hotkey 3
    page.wait_for_function("() => document.querySelector('[data-testid=class-name-3]').value === 'star'")

    page.get_by_test_id("policy-retrain_every_labels").fill("50")
    page.get_by_test_id("policy-algorithm").select_option("precise")
    page.get_by_test_id("policy-target_precision").fill("0.9")
    page.get_by_test_id("policy-grid_purity").fill("0.92")
    assert page.get_by_test_id("policy-semi_supervised").input_value() == "auto"
    page.get_by_test_id("policy-semi_supervised").select_option("on")
    page.get_by_test_id("policy-save").click()
    page.get_by_test_id("policy-status").filter(has_text="Saved").wait_for()
    page.get_by_test_id("policy-holdout_share").fill("3")
    page.get_by_test_id("policy-save").click()
    # the server's reason, under the field it is about
    page.get_by_test_id("policy-error-holdout_share").filter(has_text="strictly between 0 and 1").wait_for()
    page.get_by_test_id("policy-holdout_share").fill("0.2")

    page.get_by_test_id("member-name").fill("rev")
    page.get_by_test_id("member-role").select_option("reviewer")
    page.get_by_test_id("member-add").click()
    page.get_by_test_id("member-role-rev").wait_for()
    page.get_by_test_id("settings-instructions").fill("Label the biggest shape.")
    page.get_by_test_id("settings-save-project").click()
    page.get_by_test_id("toast-ok").filter(has_text="Project saved").wait_for()
    page.set_viewport_size({"width": 1280, "height": 1100})
    shot(page, "settings")

    with live.api("boss") as c:
        p = c.get(f"/projects/{pid}").json()
        assert [x["name"] for x in sorted(p["classes"], key=lambda x: x["position"])] == \
            ["circle", "square", "star", "tri"]
        assert p["instructions"] == "Label the biggest shape."
        pol = c.get(f"/projects/{pid}/policy").json()
        assert pol["retrain_every_labels"] == 50 and pol["algorithm"] == "precise"
        assert pol["target_precision"] == 0.9 and pol["holdout_share"] == 0.2 and pol["grid_purity"] == 0.92
        assert pol["semi_supervised"] is True
        members = {m["user_name"]: m["role"] for m in c.get(f"/projects/{pid}/members").json()}
        assert members["rev"] == "reviewer"
    assert not page.js_errors, page.js_errors
