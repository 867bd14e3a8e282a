"""The simulator experiments on a tiny Fashion-MNIST pool: they run end to end and count honestly."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.fashion import FASHION_DIR
from lab.sim_review import ReviewConfig, actions_run, audit_run, label_errors_run, labels_to

needs_data = pytest.mark.skipif(not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists(),
                                reason="Fashion-MNIST IDX files not installed (apt-get install dataset-fashion-mnist)")


def work(tmp_path: Path) -> Path:
    (tmp_path / "embeddings").mkdir(parents=True, exist_ok=True)
    return tmp_path


def test_labels_to_interpolates_between_checkpoints() -> None:
    curve = [{"labels": 100, "acc": 0.5}, {"labels": 200, "acc": 0.7}, {"labels": 300, "acc": 0.9}]
    assert labels_to(curve, "acc", 0.8) == pytest.approx(250.0)
    assert labels_to(curve, "acc", 0.4) == 100.0
    assert labels_to(curve, "acc", 0.95) is None
    assert labels_to([{"labels": 1, "acc": None}], "acc", 0.5) is None


@needs_data
def test_experiments_on_a_tiny_pool(tmp_path: Path) -> None:
    w = work(tmp_path)
    cfg = ReviewConfig(pool=100, seed=3, warmup=30, retrain_every=50, budget=60, image_size=32,
                       holdout_share=0.4, min_labels_per_class=2)
    out = actions_run(cfg, work_dir=w)
    # the whole pool ends labelled, and right (a truthful oracle)
    assert out["labelled_share"] == 1.0 and out["label_accuracy"] == 1.0
    assert out["actions"] == sum(out["by_kind"].values())
    assert sum(out["labels_by_route"].values()) == out["pool"]
    assert out["by_kind"]["single"] >= 30 and out["by_kind"]["grid_confirm"] > 0
    # a grid page costs one confirm plus one per look-alike given its own class, and one per class change
    for p in out["pages"]:
        if p.get("action") == "confirm":
            assert p["actions"] == 1 + round(p["size"] * (1 - p["majority_share"])) + int(p["label"] != p["suggested"])
    acts = [a for a, _ in out["curve"]]
    shares = [s for _, s in out["curve"]]
    assert acts == sorted(acts) and shares == sorted(shares) and shares[-1] == 1.0

    noisy = label_errors_run(ReviewConfig(**{**cfg.__dict__, "noise": 0.2, "checkpoints": (30,)}), work_dir=w)
    assert noisy["labels"] == 60 and noisy["corrupted"] > 0
    assert noisy["cut"] == 6 and noisy["hits_in_cut"] <= min(noisy["cut"], noisy["corrupted"])
    # scored at the checkpoint and at the end, scanning after each training as the scheduler does
    assert [c["labels"] for c in noisy["checkpoints"]] == [30, 60]
    first, last = noisy["checkpoints"]
    assert first["corrupted"] <= last["corrupted"] == noisy["corrupted"]
    assert last["scans"] >= 1 and noisy["scans"] == last["scans"] + 1
    for c in noisy["checkpoints"]:
        assert c["hits"] <= min(c["flagged"], c["corrupted"])
        assert c["flagged_share"] == c["flagged"] / c["labels"]

    # a low target, so that the tiny model's pre-labels are certified and auto-accepted (pooled:
    # auto's classes each need 10 hold-out images predicted as them, more than this pool holds)
    audit = audit_run(ReviewConfig(**{**cfg.__dict__, "target": 0.3, "delta": 0.3, "calibration": "pooled"}),
                      work_dir=w)
    assert 0 < audit["labels"] <= 60 and audit["auto_accepted"] > 0  # auto-accepted items leave the queue
    reasons = audit["queue_reasons"]
    assert reasons.get("audit", 0) + reasons.get("audit (answered on the item)", 0) == audit["audited"]
    for row in audit["versions"]:  # every auto-accepted label is counted once, audits come from them
        assert row["audited"] <= row["auto_accepted"]
        assert 0.0 <= row["true_precision"] <= 1.0
