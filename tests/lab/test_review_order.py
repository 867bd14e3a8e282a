"""Order of confirmation (lab.review_order): the arms' orders and walks on hand-made rows, and
the whole experiment on a tiny Fashion-MNIST pool."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from lab.fashion import FASHION_DIR
from lab.review_harness import ReviewConfig
from lab.review_order import ARMS, order_rows, order_run, table, walk

needs_data = pytest.mark.skipif(not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists(),
                                reason="Fashion-MNIST IDX files not installed (apt-get install dataset-fashion-mnist)")


def rows() -> list[dict]:
    """Pending's order: by class, then score high to low."""
    out = []
    for label in ("bag", "coat", "shirt"):
        for k in range(4):
            out.append({"prediction_id": len(out) + 1, "item_id": len(out) + 101, "label": label,
                        "score": 0.99 - k / 100})
    return out


def test_orders_keep_every_row_and_group_by_class() -> None:
    r = rows()
    assert order_rows("top-down", r, random.Random(0)) == r
    for arm in ARMS:
        got = order_rows(arm, r, random.Random(1))
        assert sorted(x["prediction_id"] for x in got) == [x["prediction_id"] for x in r]
    by_class = [x["label"] for x in order_rows("by class", r, random.Random(2))]
    assert all(len(set(by_class[i:i + 4])) == 1 for i in (0, 4, 8))  # one class at a time
    assert order_rows("random", r, random.Random(3)) != r
    with pytest.raises(ValueError, match="known: random"):
        order_rows("sideways", r, random.Random(0))


def test_walk_confirms_right_corrects_then_rejects_wrong() -> None:
    r = rows()
    truth = {x["item_id"]: x["label"] for x in r}
    truth[102] = "coat"  # rows 2, 6 and 10 are wrong proposals
    truth[106] = "bag"
    truth[110] = "bag"
    got = walk(r, truth, confirm=3)
    assert [(what, x["prediction_id"]) for what, x in got] == [
        ("confirm", 1), ("correct", 2), ("confirm", 3), ("confirm", 4), ("reject", 6)]
    # the walk goes past the confirmations until a correction and a rejection are made, never further
    assert [w for w, _ in walk(r, truth, confirm=1)] == ["confirm", "correct", "reject"]
    assert [w for w, _ in walk(r, truth, confirm=50)].count("confirm") == 9


@needs_data
def test_order_experiment_on_a_tiny_pool(tmp_path: Path) -> None:
    (tmp_path / "embeddings").mkdir()
    # a low target and pooled calibration, so that the tiny model's pre-labels are certified
    cfg = ReviewConfig(pool=160, seed=3, retrain_every=40, budget=80, image_size=32, holdout_share=0.4,
                       min_labels_per_class=2, target=0.3, delta=0.3, calibration="pooled",
                       extra_policy={"holdout_min": 0})
    out = order_run(cfg, work_dir=tmp_path, confirm=5)
    assert out["labels"] == 80 and out["pending"] > 0
    assert [a["arm"] for a in out["arms"]] == list(ARMS)
    before = out["before"]["holdout"]["calibrating"]
    for a in out["arms"]:
        d = a["decisions"]
        assert d["confirm"] == min(5, out["pending_right"]) and d["correct"] + d["reject"] <= 2
        assert a["holdout_before"] == before
        # Pending only takes hold-out images out of calibration, one for one
        assert a["holdout_after"] == before - a["taken_by_pending"] and a["taken_by_pending"] >= 0
        assert a["model_version"] == out["before"]["model_version"] + 1  # each arm trained once more
        assert 0.0 <= a["coverage"] <= 1.0
    # the arms started from one state: each copy's first new model has the same version number
    assert len({a["model_version"] for a in out["arms"]}) == 1
    text = table(out)
    assert text.count("\n| ") == 5 and "spread of certified coverage" in text  # header, rule, a row per arm
