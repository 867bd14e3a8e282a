"""Readiness and retraining decisions on hand-made project states, every branch."""

from __future__ import annotations

import pytest

from learning.policy import (
    Decision,
    Policy,
    ProjectState,
    next_training_progress,
    readiness,
    should_retrain,
)

READY_COUNTS = {"cat": 5, "dog": 7}


def state(**kw: object) -> ProjectState:
    base: dict[str, object] = {"train_counts": dict(READY_COUNTS), "unlabelled": 100}
    base.update(kw)
    return ProjectState(**base)  # type: ignore[arg-type]


# -- Policy ----------------------------------------------------------------------


def test_policy_defaults_and_round_trip() -> None:
    p = Policy()
    assert (p.min_labels_per_class, p.retrain_every_labels, p.algorithm) == (5, 100, "fast")
    assert Policy.from_dict(p.to_dict()) == p
    q = Policy.from_dict({"algorithm": "precise", "retrain_every_minutes": 30})
    assert q.algorithm == "precise" and q.retrain_every_minutes == 30 and q.batch_size == 32


def test_policy_rejects_unknown_keys_by_name() -> None:
    with pytest.raises(ValueError, match="unknown policy setting.*colour.*known: .*algorithm"):
        Policy.from_dict({"colour": "red"})


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"min_labels_per_class": 0}, "min_labels_per_class must be an integer >= 1"),
        ({"min_labels_per_class": True}, "min_labels_per_class"),
        ({"retrain_every_labels": 0}, "retrain_every_labels must be an integer >= 1 or None"),
        ({"retrain_every_minutes": -5}, "retrain_every_minutes must be a number > 0"),
        ({"algorithm": "slow"}, "algorithm must be one of fast, precise, got 'slow'"),
        ({"target_precision": 1.0}, "target_precision must be strictly between 0 and 1"),
        ({"delta": 0}, "delta must be strictly between 0 and 1"),
        ({"holdout_share": 1.5}, "holdout_share"),
        ({"audit_share": -0.1}, "audit_share must be between 0 and 1"),
        ({"strategy": "psychic"}, r"strategy must be a known query strategy \(.*margin"),
        ({"auto_accept": "yes"}, "auto_accept must be true or false"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1"),
        ({"calibration": "vibes"}, "calibration must be one of auto, per_class, pooled"),
        ({"epochs": 0}, "epochs must be an integer >= 1"),
        ({"semi_supervised": 1}, "semi_supervised must be true, false or null"),
        ({"image_size": 8}, "image_size must be an integer >= 16 or None"),
        ({"features": "middle"}, "features must be one of stages, final"),
        ({"mirror": "yes"}, "mirror must be true or false"),
    ],
)
def test_policy_validation_messages(kw: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Policy(**kw)


def test_policy_lists_every_problem_at_once() -> None:
    with pytest.raises(ValueError, match="algorithm.*; batch_size"):
        Policy(algorithm="x", batch_size=0)  # type: ignore[arg-type]


# -- readiness -------------------------------------------------------------------


def test_ready_with_two_classes_at_minimum() -> None:
    r = readiness(state(holdout_counts={"cat": 60, "dog": 60}), Policy())
    assert r.ready and r.reasons == [] and r.notes == []


def test_not_ready_names_short_classes() -> None:
    r = readiness(state(train_counts={"cat": 3, "dog": 7, "bird": 0}), Policy())
    assert not r.ready
    assert r.reasons[0] == "needs at least two classes with 5 human labels each (only 'dog')"
    assert "class 'cat' has 3 of 5 human labels for training" in r.reasons
    assert "class 'bird' has 0 of 5 human labels for training" in r.reasons


def test_not_ready_with_no_class_at_minimum() -> None:
    r = readiness(state(train_counts={"cat": 1, "dog": 1}), Policy())
    assert r.reasons[0] == "needs at least two classes with 5 human labels each"


def test_not_ready_with_one_class() -> None:
    r = readiness(state(train_counts={"cat": 50}), Policy())
    assert r.reasons == ["needs at least two classes; the project has 1"]


def test_not_ready_without_unlabelled_items() -> None:
    r = readiness(state(unlabelled=0), Policy())
    assert r.reasons == ["no unlabelled items left"]


def test_ready_notes_short_classes_and_thin_holdout() -> None:
    r = readiness(state(train_counts={"cat": 5, "dog": 9, "bird": 2}), Policy())
    assert r.ready
    assert "class 'bird' has 2 of 5 human labels for training; it will not be pre-labelled yet" in (
        r.notes
    )
    # auto (the default) proves pooled first: the note counts the whole hold-out (delta 0.04: 63)
    assert any("the hold-out has 0 labels" in n and "at least 63" in n for n in r.notes)
    r = readiness(state(train_counts={"cat": 5, "dog": 9}), Policy(calibration="per_class"))
    assert any("'cat' has 0 hold-out labels" in n and "at least 59" in n for n in r.notes)
    r = readiness(state(train_counts={"cat": 5, "dog": 9}, holdout_counts={"cat": 40, "dog": 40}),
                  Policy(calibration="pooled"))
    assert not any("hold-out" in n for n in r.notes)


def test_min_labels_is_the_policys() -> None:
    assert readiness(state(train_counts={"cat": 2, "dog": 2}), Policy(min_labels_per_class=2)).ready


# -- should_retrain --------------------------------------------------------------


def test_never_while_training_runs() -> None:
    d = should_retrain(state(training_running=True), Policy())
    assert d == Decision(False, "a training job is already running")


def test_not_when_not_ready() -> None:
    d = should_retrain(state(unlabelled=0), Policy())
    assert not d.train and d.reason == "not ready: no unlabelled items left"


def test_first_model_as_soon_as_ready() -> None:
    d = should_retrain(state(has_model=False, labels_since_training=0), Policy())
    assert d.train and d.reason.startswith("first model")


def test_label_trigger() -> None:
    p = Policy(retrain_every_labels=100)
    assert not should_retrain(state(has_model=True, labels_since_training=99), p).train
    d = should_retrain(state(has_model=True, labels_since_training=100), p)
    assert d.train and d.reason == "100 new labels since the last training (every 100)"


def test_waiting_reason_shows_both_triggers() -> None:
    p = Policy(retrain_every_labels=100, retrain_every_minutes=30)
    d = should_retrain(
        state(has_model=True, labels_since_training=40, minutes_since_training=12), p
    )
    assert d == Decision(False, "waiting: 40 of 100 new labels; 12 of 30 minutes")


def test_time_trigger_needs_new_labels() -> None:
    p = Policy(retrain_every_labels=None, retrain_every_minutes=30)
    fired = should_retrain(
        state(has_model=True, labels_since_training=3, minutes_since_training=31), p
    )
    assert fired.train and fired.reason == "31 minutes and 3 new labels since the last training"
    idle = should_retrain(
        state(has_model=True, labels_since_training=0, minutes_since_training=90), p
    )
    assert not idle.train and "no new labels" in idle.reason
    early = should_retrain(
        state(has_model=True, labels_since_training=3, minutes_since_training=5), p
    )
    assert early == Decision(False, "waiting: 5 of 30 minutes")


def test_time_trigger_without_a_finished_training() -> None:
    p = Policy(retrain_every_labels=None, retrain_every_minutes=30)
    d = should_retrain(state(has_model=True, labels_since_training=3), p)
    assert d == Decision(False, "waiting: no trigger can fire yet")


def test_both_triggers_off() -> None:
    p = Policy(retrain_every_labels=None, retrain_every_minutes=None)
    d = should_retrain(state(has_model=True, labels_since_training=1000), p)
    assert not d.train and "automatic retraining is off" in d.reason
    assert should_retrain(state(has_model=False), p).train  # the first model still trains


# -- progress --------------------------------------------------------------------


def test_progress_for_dashboard() -> None:
    p = Policy(retrain_every_labels=100, retrain_every_minutes=60)
    prog = next_training_progress(
        state(has_model=True, labels_since_training=25, minutes_since_training=90), p
    )
    assert prog["labels"] == 25 and prog["labels_needed"] == 100
    assert prog["labels_share"] == 0.25 and prog["minutes_share"] == 1.0
    assert prog["ready"] and prog["will_train"] and not prog["training_running"]
    off = next_training_progress(state(), Policy(retrain_every_labels=None))
    assert off["labels_share"] is None and off["minutes_share"] is None
    assert off["will_train"] and off["reason"].startswith("first model")


def test_short_classes_are_those_below_the_minimum_outside_the_hold_out() -> None:
    from learning.policy import short_classes

    counts = {"cat": 7, "dog": 4, "owl": 5}
    assert short_classes(counts, ["cat", "dog", "owl", "emu"], 5) == ["dog", "emu"]
    assert short_classes(counts, ["cat", "owl"], 5) == []


def test_first_hold_out_labels_come_sooner_not_more_of_them() -> None:
    from learning.policy import front_load_labels, holdout_draw_share

    assert front_load_labels(0.2, 300) == 1500 and front_load_labels(0.3, 300) == 1000
    assert front_load_labels(0.2, 0) == 0
    assert holdout_draw_share(0.2, 300, 0, 0) == pytest.approx(0.3)
    assert holdout_draw_share(0.2, 300, 299, 999) == pytest.approx(0.3)
    assert holdout_draw_share(0.2, 300, 300, 1000) == 0.0  # ahead of its share: paused
    assert holdout_draw_share(0.2, 300, 300, 1500) == 0.2  # caught up
    assert holdout_draw_share(0.2, 300, 100, 1500) == 0.2  # past 1,500 labels: plain share
    assert holdout_draw_share(0.2, 0, 0, 0) == 0.2  # 0 switches it off
    assert holdout_draw_share(0.4, 300, 10, 10) == 0.5  # capped
    assert holdout_draw_share(0.6, 300, 10, 10) == 0.6  # never lowered while short
    assert Policy().holdout_min == 300
    for bad in (-1, 1.5, True, None):
        with pytest.raises(ValueError, match="holdout_min"):
            Policy(holdout_min=bad)  # type: ignore[arg-type]
