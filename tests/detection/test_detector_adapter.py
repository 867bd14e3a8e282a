"""Contract of the detector adapter on tiny canvases: shapes, finite values, save/load, cancel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from learning.adapters import create_adapter, list_adapters, load_adapter
from learning.adapters.base import Cancelled, FitConfig, LabelledImages
from learning.adapters.detector import DetectorAdapter
from tests.detection.conftest import CLASSES, canvas


def data(n: int, seed: int) -> tuple[list, np.ndarray]:
    rng = np.random.default_rng(seed)
    pairs = [canvas(rng, 48) for _ in range(n)]
    labels = np.empty(n, dtype=object)
    labels[:] = [a for _, a in pairs]
    return [im for im, _ in pairs], labels


@pytest.mark.parametrize("task", ["detection", "segmentation"])
def test_contract_shapes_finite_save_load(task: str, tmp_path: Path) -> None:
    images, labels = data(4, 0)
    adapter = DetectorAdapter(CLASSES, task=task, image_size=48, num_threads=2)  # type: ignore[arg-type]
    report = adapter.fit(LabelledImages(images, labels), LabelledImages(images[:2], labels[:2]),
                         config=FitConfig(algorithm="precise", epochs=1, batch_size=4))
    assert report.n_train == 4 and np.isfinite(report.history[0].train_loss)
    assert report.holdout_probs is not None and report.holdout_probs.shape == (2, 2)
    pred = adapter.predict(images[:3])
    assert pred.probs.shape == (3, 2) and pred.probs.dtype == np.float32
    assert np.isfinite(pred.probs).all() and ((pred.probs >= 0) & (pred.probs <= 1)).all()
    assert pred.boxes is not None and len(pred.boxes) == 3
    for dets, row in zip(pred.boxes, pred.probs, strict=True):
        for d in dets:
            assert d["label"] in CLASSES and len(d["bbox"]) == 4 and np.isfinite(d["bbox"]).all()
            assert d["score"] <= row[CLASSES.index(d["label"])] + 1e-6
            if task == "segmentation":
                assert d["points"] is None or len(d["points"]) >= 6
    emb = adapter.embed(images[:3])
    assert emb.shape == (3, 320) and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
    adapter.save(tmp_path / "m")
    again = load_adapter(tmp_path / "m")
    assert isinstance(again, DetectorAdapter) and again.task == task
    p2 = again.predict(images[:3])
    assert np.allclose(pred.probs, p2.probs, atol=1e-5)
    assert [len(b) for b in pred.boxes] == [len(b) for b in p2.boxes or []]


def test_registered_and_cancel_restores(tmp_path: Path) -> None:
    assert "detector" in list_adapters()  # registered on import (and by the registry's builtins)
    adapter = create_adapter("detector", classes=CLASSES, task="detection", image_size=48)
    assert isinstance(adapter, DetectorAdapter)
    images, labels = data(4, 1)
    before = {k: v.clone() for k, v in adapter.model.state_dict().items()}  # type: ignore[attr-defined]

    def stop(fraction: float, message: str) -> None:
        if fraction > 0.3:
            raise Cancelled("stop")

    with pytest.raises(Cancelled):
        adapter.fit(LabelledImages(images, labels), None, config=FitConfig(algorithm="precise", epochs=2,
                                                                            batch_size=2), progress=stop)
    after = adapter.model.state_dict()  # type: ignore[attr-defined]
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_rejects_bad_classes_and_task() -> None:
    with pytest.raises(ValueError):
        DetectorAdapter(["a", "a"])
    with pytest.raises(ValueError):
        DetectorAdapter(["a"], task="multiclass")  # type: ignore[arg-type]

