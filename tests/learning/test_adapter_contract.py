"""The same contract for every registered adapter (STYLE rule 9): shapes, finite values,
probabilities that sum to one, normalised embeddings, and an identical save/load round trip.

A new adapter registers a case in ``CASES``; an adapter without one fails here on purpose.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from learning.adapters import (
    FitConfig,
    LabelledImages,
    ModelAdapter,
    Predictions,
    create_adapter,
    list_adapters,
    load_adapter,
    read_manifest,
)

Data = tuple[list[Image.Image], np.ndarray]


@dataclass
class Case:
    name: str
    kwargs: dict[str, Any]
    data: Callable[[int], Data]  # seed -> (images, labels)
    config: FitConfig


def _multiclass(seed: int) -> Data:
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1, 2], 4)
    base = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200]])[labels]
    images = [Image.fromarray(np.clip(b + rng.normal(0, 25, (24, 24, 3)), 0, 255).astype(np.uint8)) for b in base]
    return images, labels


def _multilabel(seed: int) -> Data:
    rng = np.random.default_rng(seed)
    labels = np.array([[1, 0], [0, 1], [1, 1], [0, 0]] * 3)
    images = [
        Image.fromarray(
            np.clip(np.array([220 * a, 0, 220 * b]) + rng.normal(0, 20, (24, 24, 3)), 0, 255).astype(np.uint8)
        )
        for a, b in labels
    ]
    return images, labels


def _boxes(seed: int) -> Data:
    """A red square on grey per image; labels: object array of annotation dicts."""
    rng = np.random.default_rng(seed)
    images, anns = [], []
    for _ in range(4):
        arr = np.full((64, 64, 3), 235, np.uint8)
        x, y = (int(v) for v in rng.integers(4, 36, 2))
        arr[y : y + 20, x : x + 20] = (200, 30, 30)
        images.append(Image.fromarray(arr))
        anns.append({"boxes": [{"label": "square", "bbox": [x, y, 20, 20]}]})
    labels = np.empty(len(anns), dtype=object)
    labels[:] = anns
    return images, labels


FAST = FitConfig(algorithm="fast", image_size=32, seed=0)
CASES: dict[str, list[Case]] = {
    "classifier": [
        Case("multiclass", dict(classes=["r", "g", "b"], task="multiclass", image_size=32), _multiclass, FAST),
        Case("multilabel", dict(classes=["red", "blue"], task="multilabel", image_size=32), _multilabel, FAST),
    ],
    "detector": [
        Case(
            "detection",
            dict(classes=["square"], task="detection", image_size=64),
            _boxes,
            FitConfig(algorithm="precise", epochs=1, batch_size=4, seed=0),
        ),
    ],
}
# the test seam (tests/fakes.py) passes the same contract; registered here so the cases do not
# depend on which test module pytest collected first
from tests.fakes import register as _register_fake  # noqa: E402

CASES[_register_fake()] = [
    Case("multiclass", dict(classes=["r", "g", "b"], task="multiclass"), _multiclass, FAST),
]

PARAMS = [
    pytest.param(key, case, id=f"{key}-{case.name if case else 'no-case'}")
    for key in list_adapters()
    for case in CASES.get(key, [None])  # type: ignore[list-item]
]


def _check_predictions(adapter: ModelAdapter, preds: Predictions, n: int) -> None:
    probs = preds.probs
    assert preds.boxes is None or len(preds.boxes) == n
    assert probs.shape == (n, len(adapter.classes))
    assert probs.dtype == np.float32
    assert np.isfinite(probs).all()
    assert (probs >= 0).all() and (probs <= 1).all()
    if adapter.task == "multiclass":
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize(("key", "case"), PARAMS)
def test_adapter_contract(key: str, case: Case | None, tmp_path: Path) -> None:
    if case is None:
        pytest.fail(f"adapter {key!r} has no contract case: add one to CASES in {__file__}")
    adapter = create_adapter(key, **case.kwargs)
    assert isinstance(adapter, ModelAdapter)
    images, labels = case.data(0)
    n = len(images)

    _check_predictions(adapter, adapter.predict(images), n)  # untrained is still valid

    holdout = LabelledImages(*case.data(1))
    report = adapter.fit(LabelledImages(images, labels), holdout, config=case.config)
    assert report.epochs_run >= 1 and report.seconds > 0
    assert report.holdout_probs is not None and report.holdout_probs.shape[0] == len(holdout)

    preds = adapter.predict(images, batch_size=5)
    _check_predictions(adapter, preds, n)
    probs = preds.probs
    emb = adapter.embed(images, batch_size=5)
    assert emb.ndim == 2 and emb.shape[0] == n and emb.dtype == np.float32
    assert np.isfinite(emb).all()
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(adapter.embed(images[:3]), emb[:3], atol=1e-5)  # batch-independent

    path = tmp_path / "model"
    adapter.save(path)
    manifest = read_manifest(path)
    assert manifest["adapter"] == key and manifest["classes"] == adapter.classes
    assert json.loads((path / "manifest.json").read_text())["task"] == adapter.task
    restored = load_adapter(path)
    assert type(restored) is type(adapter)
    assert restored.classes == adapter.classes and restored.task == adapter.task
    np.testing.assert_array_equal(restored.predict(images, batch_size=5).probs, probs)
    np.testing.assert_array_equal(restored.embed(images, batch_size=5), emb)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temp leftovers
