"""``label_efficiency``: how many labels random sampling needs for the active run's coverage."""

from __future__ import annotations

from service.simulate import label_efficiency

BASE = [{"labels": 1000, "coverage": 0.2}, {"labels": 2000, "coverage": 0.4}, {"labels": 3000, "coverage": 0.8}]


def test_interpolates_linearly_between_the_baselines_budgets() -> None:
    e = label_efficiency([{"labels": 2000, "coverage": 0.6}], BASE, 2000)
    assert e["random_labels_needed"] == 2500.0 and e["ratio"] == 1.25


def test_a_coverage_random_never_reaches_gives_a_lower_bound() -> None:
    e = label_efficiency([{"labels": 1000, "coverage": 0.9}], BASE, 1000)
    assert e["random_labels_needed"] == "> 3000" and e["ratio"] == "> 3.00"


def test_a_coverage_random_had_at_its_first_budget_counts_that_budget() -> None:
    e = label_efficiency([{"labels": 2000, "coverage": 0.1}], BASE, 2000)
    assert e["random_labels_needed"] == 1000 and e["ratio"] == 0.5


def test_no_checkpoint_at_the_budget_gives_no_ratio() -> None:
    assert label_efficiency([{"labels": 1800, "coverage": 0.5}], BASE, 2000)["ratio"] is None
