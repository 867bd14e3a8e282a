"""``label_efficiency``: how many labels random sampling needs for the active run's coverage."""

from __future__ import annotations

from lab.metrics import efficiency_interval, label_efficiency, share_below

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


def _runs(coverages: list[list[float]], budgets: list[int]) -> list[list[dict]]:
    return [[{"labels": b, "coverage": c} for b, c in zip(budgets, cov, strict=True)] for cov in coverages]


def test_the_interval_holds_the_ratio_and_widens_with_the_spread_between_seeds() -> None:
    base = _runs([[0.2, 0.4, 0.8]] * 8, [1000, 2000, 3000])
    tight = efficiency_interval(_runs([[0.6]] * 8, [2000]), base, 2000, reps=400)
    assert tight["ratio"] == 1.25 and tight["low"] == tight["high"] == 1.25  # no spread, no width
    spread = efficiency_interval(_runs([[0.5], [0.7]] * 4, [2000]), base, 2000, reps=400)
    assert spread["ratio"] == 1.25
    assert 1.0 < spread["low"] < 1.25 < spread["high"] < 1.5
    assert 0.0 < share_below(spread, 1.25) < 1.0 and share_below(spread, 1.6) == 1.0


def test_coverage_random_sampling_never_reached_is_an_open_upper_end() -> None:
    base = _runs([[0.2, 0.4, 0.8]] * 4, [1000, 2000, 3000])
    e = efficiency_interval(_runs([[0.6], [0.95]] * 2, [2000]), base, 2000, reps=400)
    assert e["high"] == "> 1.50" and isinstance(e["low"], float)
    assert share_below(e, 10.0) < 1.0  # replicates with only the 0.95 runs never reach it


def test_the_interval_needs_runs_and_a_level() -> None:
    base = _runs([[0.2, 0.4]], [1000, 2000])
    for bad in ({"level": 1.0}, {"level": 0.0}):
        try:
            efficiency_interval(base, base, 1000, **bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad} was accepted")
    try:
        efficiency_interval([], base, 1000)
    except ValueError:
        return
    raise AssertionError("no active runs was accepted")


def test_paired_seeds_are_redrawn_together() -> None:
    # each seed's pool is easy or hard for both arms alike: redrawn in pairs, the ratio
    # does not move; redrawn apart, easy active seeds meet hard baseline seeds
    budgets = [1000, 2000, 3000]
    base = _runs([[0.1, 0.3, 0.5], [0.3, 0.5, 0.7]] * 4, budgets)
    active = _runs([[0.3, 0.5, 0.7], [0.5, 0.7, 0.9]] * 4, budgets)
    together = efficiency_interval(active, base, 1000, reps=400, paired=True)
    apart = efficiency_interval(active, base, 1000, reps=400)
    assert together["ratio"] == apart["ratio"] == 2.0
    assert together["high"] - together["low"] < apart["high"] - apart["low"]
    try:
        efficiency_interval(active, base[:-1], 1000, paired=True)
    except ValueError:
        return
    raise AssertionError("unequal paired arms were accepted")
