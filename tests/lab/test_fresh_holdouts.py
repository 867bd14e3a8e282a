"""``fresh_holdouts``: what fresh random hold-outs from the pool would certify, and the
simulator reporting it next to each run's own certificate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lab.fashion import FASHION_DIR
from lab.metrics import fresh_holdouts
from lab.simulate import SimConfig, run

needs_data = pytest.mark.skipif(not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists(),
                                reason="Fashion-MNIST IDX files not installed (apt-get install dataset-fashion-mnist)")


def _pool(n: int, error_rate: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random(n), rng.random(n) >= error_rate  # mistakes spread evenly over the scores


def test_a_model_that_is_always_right_is_certified_on_almost_all_of_the_pool() -> None:
    scores, correct = _pool(5000, 0.0)
    f = fresh_holdouts(scores, correct, 300, draws=50)
    assert f["none"] == 0.0 and f["below_target"] == 0.0
    assert f["coverage"] > 0.98  # down to the lowest of 300 hold-out scores


def test_too_few_hold_out_items_certify_nothing() -> None:
    scores, correct = _pool(5000, 0.0)
    f = fresh_holdouts(scores, correct, 58, draws=20)  # 59 right items are the least for 0.95 / 0.05
    assert f == {"coverage": 0.0, "none": 1.0, "below_target": 0.0}
    assert fresh_holdouts(scores, correct, 59, draws=20)["none"] == 0.0


def test_a_pool_below_the_target_everywhere_is_rarely_certified() -> None:
    # 10% mistakes at every score: any threshold is wrong, so a certificate is a false one,
    # which the bound allows in at most delta of the draws
    scores, correct = _pool(20_000, 0.10)
    f = fresh_holdouts(scores, correct, 300, draws=400)
    assert f["below_target"] <= 0.05 and f["none"] >= 0.95
    # the same mistakes, all among the lower half of the scores: the top half is certified
    low_half = correct | (scores >= 0.5)
    low_half[scores < 0.5] = np.random.default_rng(1).random(int((scores < 0.5).sum())) >= 0.2
    good = fresh_holdouts(scores, low_half, 300, draws=400)
    assert good["none"] < 0.05 and good["below_target"] <= 0.05
    assert 0.5 < good["coverage"] < 0.7  # precision above t is 0.95 at t = 1/3: at most 2/3 of the pool
    # a bound at 50% confidence certifies the bad pool now and then, and those draws are counted
    assert fresh_holdouts(scores, correct, 300, draws=400, delta=0.5)["below_target"] > 0.02


def test_draws_are_seeded_and_inputs_checked() -> None:
    scores, correct = _pool(3000, 0.02)
    assert fresh_holdouts(scores, correct, 200, draws=30, seed=4) == fresh_holdouts(scores, correct, 200, draws=30,
                                                                                    seed=4)
    with pytest.raises(ValueError, match="n_holdout"):
        fresh_holdouts(scores, correct, 3001)
    with pytest.raises(ValueError, match="n_holdout"):
        fresh_holdouts(scores, correct, 0)
    with pytest.raises(ValueError, match="draws"):
        fresh_holdouts(scores, correct, 100, draws=0)


@needs_data
def test_each_checkpoint_reports_fresh_hold_outs_next_to_its_own(tmp_path: Path) -> None:
    (tmp_path / "embeddings").mkdir()
    # a low target, so that the tiny model is certified on its own hold-out or fresh ones
    cfg = SimConfig(pool=150, seed=3, budgets=[60, 90], retrain_every=30, image_size=32, holdout_share=0.4,
                    holdout_min=0, min_labels_per_class=2, target=0.3, delta=0.3, torch_threads=1)
    out = run(cfg, work_dir=tmp_path)
    points = [p for p in out["curve"] if p["holdout"]]
    assert points, out["curve"]
    for p in points:
        assert 0.0 <= p["fresh_holdout_coverage"] <= 1.0
    assert any(p["fresh_holdout_coverage"] > 0 for p in points)


def test_fresh_holdouts_calibrate_under_the_runs_own_policy() -> None:
    """``auto`` and ``per_class`` need each item's class; ``per_class`` asks far more of a
    300-item hold-out than ``pooled`` (about 59 right items per class), and ``auto`` keeps
    out a class the hold-out barely sees predicted."""
    rng = np.random.default_rng(1)
    n, c = 6000, 10
    pred = rng.integers(0, c, n)
    pred[rng.random(n) < 0.5] = 0  # class 0 is half of the predictions, the others about 5% each
    truth = pred.copy()
    scores = rng.random(n)
    correct = truth == pred
    pooled = fresh_holdouts(scores, correct, 300, draws=20)
    per = fresh_holdouts(scores, correct, 300, draws=20, mode="per_class", pred=pred, truth=truth, n_classes=c)
    auto = fresh_holdouts(scores, correct, 300, draws=20, mode="auto", pred=pred, truth=truth, n_classes=c)
    assert pooled["coverage"] > 0.95
    assert per["coverage"] < 0.6  # only class 0 has 59 hold-out items predicted as it
    assert 0.4 < auto["coverage"] < pooled["coverage"]  # classes seen fewer than 20 times take no part
    with pytest.raises(ValueError, match="needs pred, truth and n_classes"):
        fresh_holdouts(scores, correct, 300, mode="auto")
