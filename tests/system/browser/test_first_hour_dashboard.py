"""Dashboard in plain words and the empty states (issue 25): internal names become words,
thresholds keep the digits that tell 0.999 from 1, a proposal set with too few decisions gets no
"below target" badge, and Pending, Grids, Review and the Dashboard say what is missing and how
far it is, with the numbers the API returns."""

from __future__ import annotations

import re
from typing import Any

import pytest
from sqlmodel import Session, select

from learning.calibration import min_evidence_for
from learning.calibration_auto import POOLED_SHARE
from tests.system.browser.conftest import Live, item_ids

pytestmark = pytest.mark.browser


def label(live: Live, pid: int, items: list[int], names: list[str]) -> None:
    with live.api("boss") as c:
        for item, name in zip(items, names, strict=True):
            assert c.post(f"/items/{item}/annotations", json={"labels": [name]}).status_code == 201


def set_origin(live: Live, items: list[int], origin: str) -> None:
    """Human labels as if made there (the queue's streams need leases; only the word is tested here)."""
    from service.models import Annotation

    with Session(live.engine) as s:
        for ann in s.exec(select(Annotation).where(Annotation.item_id.in_(items))).all():  # type: ignore[attr-defined]
            ann.origin = origin
            s.add(ann)
        s.commit()


def hold_out(live: Live, items: list[int]) -> None:
    from service.models import Item

    with Session(live.engine) as s:
        for item in s.exec(select(Item).where(Item.id.in_(items))).all():  # type: ignore[union-attr]
            item.is_holdout = True
            s.add(item)
        s.commit()


def test_plain_words_thresholds_and_too_few_decisions(live: Live, new_page: Any) -> None:
    live.user("boss", "manager")
    pid = live.project("boss", n_images=16)["id"]
    ids = item_ids(live, pid)
    label(live, pid, ids[:8], ["circle", "square", "triangle", "circle", "square", "triangle", "circle", "square"])
    set_origin(live, ids[:3], "queue:holdout")
    set_origin(live, ids[3:5], "queue:strategy")
    v1 = live.model_version(pid, 1, algorithm="fast", n_train=8, n_holdout=40, metrics={"holdout_accuracy": 0.925},
                            thresholds={"mode": "per_class", "pooled": None, "per_class": {
                                "circle": {"threshold": 0.9996, "lower_bound": 0.951, "n_above": 70, "coverage": 0.3},
                                "square": {"threshold": 0.999, "lower_bound": 0.95, "n_above": 60, "coverage": 0.2},
                                "triangle": {"threshold": 0.81, "lower_bound": 0.96, "n_above": 90, "coverage": 0.6}}})
    v2 = live.model_version(pid, 2, algorithm="fast", n_train=8, n_holdout=40, metrics={},
                            thresholds={"mode": "per_class", "pooled": None, "per_class": {}})
    [one] = live.propose(pid, v1, [(ids[8], "circle", 0.99)])
    three = live.propose(pid, v2, [(i, "square", 0.99) for i in ids[9:12]])
    live.grid_pages(pid, {})  # a finished clustering run
    with live.api("boss") as c:
        assert c.post(f"/projects/{pid}/pending/reject", json={"ids": [one, *three]}).status_code == 200
        stats = c.get(f"/projects/{pid}/stats").json()

    page = new_page("boss", viewport={"width": 1366, "height": 768})
    page.goto(f"/web/#/project/{pid}/dashboard")
    page.get_by_test_id("stat-total").wait_for()
    body = page.get_by_test_id("dashboard").inner_text()
    assert "queue:" not in body and "holdout_accuracy" not in body, body

    origins = stats["queue"]["human_labels_by_origin"]
    assert origins == {"queue:holdout": 3, "queue:strategy": 2, "edit": 3}
    chips = page.get_by_test_id("labels-by-origin").inner_text()
    assert "hold-out draws: 3" in chips and "model's picks: 2" in chips and "edits: 3" in chips, chips
    for key, n in origins.items():
        assert page.get_by_test_id(f"origin-{key}").inner_text() == str(n)
    assert "hold-out accuracy 0.925" in page.get_by_test_id("version-1").inner_text()
    run = page.locator("[data-testid^=run-]").filter(has_text="grid pages").first
    assert run.count() == 1 and not re.search(r"#\d+ cluster\b", page.get_by_test_id("runs").inner_text())

    # thresholds: 0.9996 is not 1 and 0.999 is not 1.00
    assert page.get_by_test_id("threshold-1-circle").inner_text().endswith("≥ 0.9996")
    assert page.get_by_test_id("threshold-1-square").inner_text().endswith("≥ 0.999")
    assert page.get_by_test_id("threshold-1-triangle").inner_text().endswith("≥ 0.81")

    # one wrong decision proves nothing; three wrong of three do
    by_version = {p["version"]: p for p in stats["precision"]}
    assert by_version[1]["decided"] == 1 and by_version[2]["decided"] == 3
    for version, badge in ((1, "too few decisions"), (2, "below target")):
        p = by_version[version]
        box = page.get_by_test_id(f"precision-v{version}")
        assert box.get_by_test_id("precision-badge").inner_text() == badge
        lo, hi = p["interval"]
        assert f"interval {lo * 100:.1f}% – {hi * 100:.1f}%" in box.inner_text()
        assert hi >= p["target"] if version == 1 else hi < p["target"]
    assert not page.js_errors, page.js_errors


def test_empty_states_say_what_is_missing(live: Live, new_page: Any) -> None:
    live.user("boss", "manager")
    pid = live.project("boss", n_images=20)["id"]
    ids = item_ids(live, pid)
    label(live, pid, ids[:8], ["circle"] * 3 + ["square"] * 5)  # triangle none: 2 more circles make it trainable
    with live.api("boss") as c:
        ready = c.get(f"/projects/{pid}/readiness").json()
    assert not ready["ready"] and ready["human_labels"] == {"circle": 3, "square": 5, "triangle": 0}

    page = new_page("boss")
    first = "two classes have 5 human labels each: circle 3 of 5, square 5 of 5, triangle 0 of 5"
    for tab, block in (("pending", "pending-why"), ("grids", "grids-why"), ("review", "review-why"),
                       ("dashboard", "dash-why")):
        page.goto(f"/web/#/project/{pid}/{tab}")
        why = page.get_by_test_id(block)
        why.wait_for()
        assert first in why.inner_text() and "At least 2 more labels to go" in why.inner_text(), (tab, why.inner_text())

    # a model, and a hold-out that is still too small to prove its pre-labels
    label(live, pid, ids[8:12], ["circle", "circle", "triangle", "triangle"])
    hold_out(live, ids[8:12])
    live.model_version(pid, 1, algorithm="fast", n_train=8, n_holdout=4)
    with live.api("boss") as c:
        ready = c.get(f"/projects/{pid}/readiness").json()
        policy = c.get(f"/projects/{pid}/policy").json()
    held = sum(ready["holdout_labels"].values())
    assert held == 4 and policy["calibration"] == "auto"
    need = min_evidence_for(policy["target_precision"], policy["delta"] * POOLED_SHARE)
    nt = ready["next_training"]
    page.goto(f"/web/#/project/{pid}/pending")
    why = page.get_by_test_id("pending-why")
    why.wait_for()
    text = why.inner_text()
    assert f"Pre-labels start when {need} hold-out images are labelled" in text, text
    assert f"{held} so far ({need - held} to go)" in text, text
    assert f"after {nt['labels_needed']} new labels: {nt['labels']} so far" in text, text
    assert page.get_by_test_id("why-evidence-bar").get_attribute("aria-valuenow") == f"{100 * held / need:.0f}"
    page.goto(f"/web/#/project/{pid}/dashboard")
    page.get_by_test_id("dash-why").filter(has_text=f"{held} so far").wait_for()
    assert not page.js_errors, page.js_errors
