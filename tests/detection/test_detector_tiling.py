"""Detector tiling options: small images keep the whole-image path draw for draw; the
options travel in the manifest; a large image takes the sliced path (with progress and cancel)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from learning.adapters import load_adapter
from learning.adapters.base import Cancelled, FitConfig, LabelledImages
from learning.adapters.detector import DetectorAdapter
from tests.detection.conftest import CLASSES, canvas


def data(n: int, seed: int, size: int = 48) -> tuple[list, np.ndarray]:
    rng = np.random.default_rng(seed)
    pairs = [canvas(rng, size) for _ in range(n)]
    labels = np.empty(n, dtype=object)
    labels[:] = [a for _, a in pairs]
    return [im for im, _ in pairs], labels


def test_small_images_train_and_predict_as_without_tiling() -> None:
    images, labels = data(4, 0)
    cfg = FitConfig(algorithm="precise", epochs=2, batch_size=2, seed=3)
    runs = []
    start = None
    for tile in (640, 32, None):  # 48 px images: tiled only at tile_size 32
        ad = DetectorAdapter(CLASSES, image_size=48, num_threads=2, tile_size=tile)
        if start is None:  # the new layers start from torch's random state: give each run the same start
            start = {k: v.clone() for k, v in ad.model.state_dict().items()}
        ad.model.load_state_dict(start)
        ad.fit(LabelledImages(images, labels), None, config=cfg)
        runs.append((ad.model.state_dict(), ad.predict(images)))
    (w640, p640), (w32, _), (woff, poff) = runs
    assert all(torch.equal(w640[k], woff[k]) for k in woff)
    np.testing.assert_array_equal(p640.probs, poff.probs)
    assert p640.boxes == poff.boxes
    assert any(not torch.equal(w32[k], woff[k]) for k in woff)  # tiles do change training


def test_options_saved_and_restored(tmp_path: Path) -> None:
    ad = DetectorAdapter(CLASSES, image_size=48, tile_size=256, tile_overlap=0.3, background_share=0.4)
    ad.save(tmp_path / "m")
    again = load_adapter(tmp_path / "m")
    assert isinstance(again, DetectorAdapter)
    assert (again.tile_size, again.tile_overlap, again.background_share) == (256, 0.3, 0.4)
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    for key in ("tile_size", "tile_overlap", "background_share"):
        manifest.pop(key)
    (tmp_path / "m" / "manifest.json").write_text(json.dumps(manifest))
    old = load_adapter(tmp_path / "m")  # saved before tiling existed: never trained on tiles
    assert isinstance(old, DetectorAdapter) and old.tile_size is None
    with pytest.raises(ValueError):
        DetectorAdapter(CLASSES, tile_size=8)


@pytest.mark.parametrize("task", ["detection", "segmentation"])
def test_large_image_fits_and_predicts_in_tiles(task: str) -> None:
    images, labels = data(2, 1, size=150)
    ad = DetectorAdapter(CLASSES, task=task, image_size=64, tile_size=64, num_threads=2)  # type: ignore[arg-type]
    messages: list[str] = []
    ad.fit(LabelledImages(images, labels), None, config=FitConfig(algorithm="precise", epochs=1, batch_size=4),
           progress=lambda f, m: messages.append(m))
    assert any("tiles" in m for m in messages)
    seen: list[float] = []
    pred = ad.predict(images + [Image.new("RGB", (40, 30))], batch_size=4, progress=lambda f, m: seen.append(f))
    assert pred.probs.shape == (3, 2) and pred.boxes is not None and len(pred.boxes) == 3
    assert seen == sorted(seen) and seen[-1] == pytest.approx(1.0) and len(seen) >= 4  # 9 tiles an image
    for dets, row in zip(pred.boxes, pred.probs, strict=True):
        for d in dets:
            x, y, w, h = d["bbox"]
            assert -1 <= x and -1 <= y and x + w <= 151 and y + h <= 151
            assert d["score"] <= row[CLASSES.index(d["label"])] + 1e-6
            if task == "segmentation":
                assert "points" in d

    def cancel(f: float, m: str) -> None:
        if "tiles" in m:
            raise Cancelled("stop")

    with pytest.raises(Cancelled):
        ad.predict(images, progress=cancel)
