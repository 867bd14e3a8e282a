"""The unstable-proposal check looks at a view the model does not already average over."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from learning.adapters.base import Predictions
from service.pipelines.classification_scans import second_view, tta_views


class Recorder:
    """An adapter that remembers the images it was shown and scores their left half's brightness."""

    def __init__(self, mirrored: bool) -> None:
        self.mirrored = mirrored
        self.seen: list[np.ndarray] = []

    def predict(self, images: list[Image.Image]) -> Predictions:
        arrs = [np.asarray(im, dtype=np.float32) for im in images]
        self.seen.extend(arrs)
        left = np.array([a[:, : a.shape[1] // 2].mean() / 255 for a in arrs])
        return Predictions(probs=np.stack([left, 1 - left], axis=1), boxes=None)


def _half_white(tmp_path: Path) -> Path:
    a = np.zeros((20, 20, 3), np.uint8)
    a[:, :10] = 255
    a[:2] = 128  # a border the zoomed view cuts off
    path = tmp_path / "half.png"
    Image.fromarray(a).save(path)
    return path


def test_a_flip_for_a_single_view_model_and_a_zoom_for_a_mirror_averaging_one(tmp_path: Path) -> None:
    path = _half_white(tmp_path)
    flip = Recorder(mirrored=False)
    views = tta_views(flip, [path])
    assert views.shape == (2, 1, 2)
    assert np.array_equal(flip.seen[1], flip.seen[0][:, ::-1])  # the mirror image
    assert views[0, 0, 0] > 0.8 and views[1, 0, 0] < 0.2
    zoom = Recorder(mirrored=True)
    tta_views(zoom, [path])
    second = zoom.seen[1]
    assert second.shape == zoom.seen[0].shape and not np.array_equal(second, zoom.seen[0][:, ::-1])
    assert second[0].mean() != zoom.seen[0][0].mean()  # the border row is gone: a different view


def test_second_view_keeps_the_size(tmp_path: Path) -> None:
    im = Image.open(_half_white(tmp_path)).convert("RGB")
    assert second_view(im, True).size == im.size == second_view(im, False).size
