"""learning.tiling: the grid, the edge rule, background share, back-mapping and border merging."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from learning.adapters.base import Cancelled
from learning.tiling import (
    Detections,
    Window,
    clip_to_window,
    erase_regions,
    merge_detections,
    sample_training_tiles,
    sliced_predict,
    tile_grid,
)


@pytest.mark.parametrize(("w", "h", "tile", "overlap"), [(2048, 2048, 640, 0.2), (1000, 300, 256, 0.0),
                                                          (641, 640, 640, 0.5), (100, 50, 640, 0.2),
                                                          (4097, 333, 512, 0.25)])
def test_grid_covers_image_with_overlap(w: int, h: int, tile: int, overlap: float) -> None:
    grid = tile_grid(w, h, tile, overlap)
    cover = np.zeros((h, w), dtype=np.int32)
    for win in grid:
        assert win.w == min(tile, w) and win.h == min(tile, h)
        assert 0 <= win.x and win.x + win.w <= w and 0 <= win.y and win.y + win.h <= h
        cover[win.y : win.y + win.h, win.x : win.x + win.w] += 1
    assert (cover >= 1).all()
    xs = sorted({win.x for win in grid})
    for a, b in zip(xs, xs[1:], strict=False):  # neighbours overlap by at least the share asked for
        assert min(tile, w) - (b - a) >= round(overlap * tile) - 1


def test_grid_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        tile_grid(100, 100, 64, 1.0)
    with pytest.raises(ValueError):
        tile_grid(0, 100, 64, 0.2)


def test_clip_rule_keeps_half_inside_and_erases_the_rest() -> None:
    win = Window(100, 100, 200, 200)
    boxes = np.array([[150, 150, 170, 170],   # whole inside: kept as is
                      [90, 150, 110, 170],    # half inside: kept, clipped
                      [92, 150, 104, 170],    # a third inside: dropped, its part erased
                      [0, 0, 20, 20]])        # outside: ignored
    polys = [[150, 150, 170, 150, 170, 170], [90, 150, 110, 150, 110, 170], None, None]
    s = clip_to_window(boxes, np.array([0, 1, 0, 1]), win, polygons=polys)
    np.testing.assert_allclose(s.boxes, [[50, 50, 70, 70], [0, 50, 10, 70]])
    assert s.labels.tolist() == [0, 1]
    assert s.polygons[1] == [0, 50, 10, 50, 10, 70]  # shifted and clipped to the tile
    assert s.erase.tolist() == [[0, 50, 4, 70]]
    tile = np.full((200, 200, 3), 7, dtype=np.uint8)
    out = erase_regions(tile, s.erase)
    assert (out[50:70, 0:4] == 128).all() and (out[50:70, 4:] == 7).all() and (tile == 7).all()


def test_training_tiles_hold_every_object_whole_and_the_background_share() -> None:
    rng = np.random.default_rng(0)
    gen = np.random.default_rng(5)
    xy = gen.integers(0, 2000, (12, 2))
    size = gen.integers(8, 40, (12, 1))
    boxes = np.concatenate([xy, xy + size], axis=1).astype(float)
    labels = gen.integers(0, 3, 12)
    tiles = sample_training_tiles(2048, 2048, boxes, labels, tile=256, rng=rng, background_share=0.25)
    obj = [t for t in tiles if not t.background]
    bg = [t for t in tiles if t.background]
    assert len(bg) == round(len(obj) * 0.25 / 0.75)
    for b in boxes:  # each object whole inside at least one tile
        assert any(t.window.x <= b[0] and t.window.y <= b[1] and b[2] <= t.window.x + t.window.w
                   and b[3] <= t.window.y + t.window.h for t in obj)
    for t in tiles:
        assert t.window.w == 256 and t.window.h == 256
        assert ((t.boxes >= 0) & (t.boxes <= 256)).all()
    # seeded: the same generator state gives the same tiles; another seed jitters them
    again = sample_training_tiles(2048, 2048, boxes, labels, tile=256, rng=np.random.default_rng(0))
    assert [t.window for t in again] == [t.window for t in tiles]
    other = sample_training_tiles(2048, 2048, boxes, labels, tile=256, rng=np.random.default_rng(1))
    assert [t.window for t in other] != [t.window for t in tiles]


def test_clean_image_gets_a_background_tile_and_share_zero_none() -> None:
    empty = np.zeros((0, 4))
    tiles = sample_training_tiles(1000, 800, empty, np.zeros(0), tile=256, rng=np.random.default_rng(0))
    assert len(tiles) == 1 and tiles[0].background and len(tiles[0].boxes) == 0
    assert sample_training_tiles(1000, 800, empty, np.zeros(0), tile=256, rng=np.random.default_rng(0),
                                 background_share=0.0) == []


def _white_boxes(tiles: list[np.ndarray]) -> list[Detections]:
    """A stand-in detector: per tile, the box around its white pixels (score 0.9, class 0)."""
    out = []
    for t in tiles:
        ys, xs = np.nonzero(t[:, :, 0] > 200)
        if len(xs):
            out.append(Detections([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], [0.9], [0]))
        else:
            out.append(Detections.empty())
    return out


def test_sliced_predict_maps_back_and_merges_border_duplicates() -> None:
    image = np.zeros((600, 900, 3), dtype=np.uint8)
    image[240:260, 250:270] = 255  # one square on the border between tiles (stride 205)
    calls: list[float] = []
    dets = sliced_predict(image, _white_boxes, tile=256, overlap=0.2, batch_size=4,
                          progress=lambda f, m: calls.append(f))
    assert len(dets) == 1  # seen whole by one tile, cut by others: merged into one box
    np.testing.assert_allclose(dets.boxes[0], [250, 240, 270, 260])
    assert calls == sorted(calls) and calls[-1] == pytest.approx(1.0) and len(calls) == 4  # 12 tiles / 4


def test_merge_is_classwise_and_keeps_distinct_objects() -> None:
    d = Detections([[0, 0, 20, 20], [0, 0, 10, 20], [0, 0, 10, 20], [100, 100, 110, 110]],
                   [0.9, 0.5, 0.6, 0.4], [0, 0, 1, 0])
    m = merge_detections(d)
    assert len(m) == 3
    assert m.labels.tolist() == [0, 1, 0] and m.scores.tolist() == pytest.approx([0.9, 0.6, 0.4])
    iou = merge_detections(d, metric="iou")  # a half box is IoU 0.5 with the whole one: merged
    assert len(iou) == 3
    low = merge_detections(Detections([[0, 0, 20, 20], [0, 0, 8, 20]], [0.9, 0.5], [0, 0]), metric="iou")
    assert len(low) == 2  # IoU 0.4 would keep the sliver, IoS 1.0 merges it
    assert len(merge_detections(Detections([[0, 0, 20, 20], [0, 0, 8, 20]], [0.9, 0.5], [0, 0]))) == 1


def test_whole_image_pass_adds_only_large_objects_and_cancel_stops() -> None:
    image = np.zeros((1000, 1000, 3), dtype=np.uint8)

    def whole(img: np.ndarray) -> tuple[Detections, float]:
        # in the shrunk pixels (scale 0.25): one big object (600 px) and one small (20 px)
        return Detections([[25, 25, 175, 175], [10, 10, 15, 15]], [0.8, 0.7], [1, 1]), 0.25

    dets = sliced_predict(image, _white_boxes, tile=256, overlap=0.2, predict_whole=whole)
    assert len(dets) == 1
    np.testing.assert_allclose(dets.boxes[0], [100, 100, 700, 700])

    def cancel(f: float, m: str) -> None:
        raise Cancelled("stop")

    with pytest.raises(Cancelled):
        sliced_predict(image, _white_boxes, tile=256, overlap=0.2, progress=cancel)

EPOCHS = 16  # at 10 the tiled recall was 1.0 or 0.625 depending on the detector's random start


def _board(rng: np.random.Generator, size: int, n: int) -> tuple[Image.Image, dict]:
    """A textured grey canvas with ``n`` yellow squares of 12-20 px (class ``defect``)."""
    low = rng.integers(70, 110, (size // 8, size // 8, 3), dtype=np.uint8)
    arr = np.asarray(Image.fromarray(low).resize((size, size), Image.Resampling.BILINEAR)).astype(np.int16)
    arr = arr + rng.integers(-12, 13, (size, size, 3), dtype=np.int16)
    im = Image.fromarray(arr.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    boxes = []
    for _ in range(n):
        s = int(rng.integers(12, 21))
        x, y = (int(v) for v in rng.integers(8, size - s - 8, 2))
        draw.rectangle([x, y, x + s - 1, y + s - 1], fill=(230, 200, 40))
        boxes.append({"label": "defect", "bbox": [float(x), float(y), float(s), float(s)]})
    return im, {"boxes": boxes, "polygons": []}


def _recall(pred: list[list[dict]], truth: list[dict], cut: float = 0.5) -> float:
    hit = total = 0
    for dets, ann in zip(pred, truth, strict=True):
        for g in ann["boxes"]:
            total += 1
            gx, gy, gw, gh = g["bbox"]
            for d in dets:
                x, y, w, h = d["bbox"]
                ix = max(0.0, min(x + w, gx + gw) - max(x, gx))
                iy = max(0.0, min(y + h, gy + gh) - max(y, gy))
                if d["score"] >= cut and ix * iy / (w * h + gw * gh - ix * iy) >= 0.3:
                    hit += 1
                    break
    return hit / total


@pytest.mark.slow
def test_tiny_squares_on_a_large_canvas_found_by_tiles_not_by_the_whole_image() -> None:
    import torch

    from learning.adapters.base import FitConfig, LabelledImages
    from learning.adapters.detector import DetectorAdapter

    rng = np.random.default_rng(0)
    train = [_board(rng, 2048, 4) for _ in range(6)]
    test = [_board(rng, 2048, 4) for _ in range(2)]
    labels = np.empty(len(train), dtype=object)
    labels[:] = [a for _, a in train]
    recall = {}
    for tile in (256, None):
        torch.manual_seed(0)  # the detector's new layers start from torch's random state
        ad = DetectorAdapter(["defect"], image_size=256, tile_size=tile, num_threads=2)
        ad.fit(LabelledImages([im for im, _ in train], labels), None,
               config=FitConfig(algorithm="precise", epochs=EPOCHS, batch_size=8, seed=0))
        recall[tile] = _recall(ad.predict([im for im, _ in test]).boxes or [], [a for _, a in test])
    assert recall[256] >= 0.8, recall
    assert recall[None] < recall[256], recall


def test_policy_tiling_knobs_and_bounds() -> None:
    from learning.policy import Policy

    p = Policy()
    assert (p.tile_size, p.tile_overlap, p.background_share) == (640, 0.2, 0.25)
    assert Policy.from_dict({"tile_size": 1024, "tile_overlap": 0.0, "background_share": 0.5}).tile_size == 1024
    for bad in ({"tile_size": 32}, {"tile_size": 10_000}, {"tile_size": 640.0}, {"tile_overlap": 0.95},
                {"tile_overlap": -0.1}, {"background_share": 1.0}, {"background_share": float("nan")}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            Policy.from_dict(bad)
