"""Tiles for large images with small objects: a grid, training tiles, sliced inference (pure).

Coordinates: pixels of the full-resolution image, origin at the top-left corner, ``x`` to
the right and ``y`` down; a box is ``xyxy`` (``[x0, y0, x1, y1]``, ``x1``/``y1`` exclusive
edges, floats), a :class:`Window` is integer ``x, y, w, h`` (it covers columns ``x .. x+w-1``
and rows ``y .. y+h-1``). Images are ``uint8`` arrays ``[H, W, 3]``. Polygons are flat
``[x0, y0, x1, y1, ...]`` lists in the same pixels.

* :func:`tile_grid` - overlapping windows covering an image.
* :func:`clip_to_window` - objects seen through one window, with the edge rule below.
* :func:`sample_training_tiles` - windows around labelled objects plus random background.
* :func:`sliced_predict` - a tile predictor run over the grid (in batches, with progress
  and cancel), boxes mapped back to the image, one downscaled whole-image pass added, and
  duplicates across tile borders merged (:func:`merge_detections`).

**Objects cut by a tile edge** (training): an object is kept, with its box clipped to the
tile, when at least ``min_inside`` (default 0.5) of its box area lies inside the tile and
the clipped box is at least 2 px a side; otherwise it is dropped *and the part of it inside
the tile is erased* (``erase`` boxes, filled with neutral grey by :func:`erase_regions`).
Why: a sliver of a defect with no box would teach the detector that such pixels are
background, the opposite of the truth; a box around a sliver would teach it to fire on
fragments. Half the area matches what inference needs: a defect cut by one tile's edge is
whole in a neighbouring tile (the overlap), and a kept half-box there is merged into the
whole one by :func:`merge_detections`, whose intersection-over-smaller rule treats a
clipped box inside a whole one as the same object.

**Merging** follows SAHI's method (slicing-aided hyper inference, PyPI ``sahi``: overlapping
slices, a standard full-image prediction added, greedy non-maximum *merging* of matched
predictions per class, matched by intersection over the smaller box at 0.5). SAHI is not a
dependency: its model wrappers expect to own the model, its preprocessing and its batching
(one slice per call in the releases read), it pulls in OpenCV and Shapely, and it has no
hook for this project's progress/cancel convention; the part needed here is about sixty
lines of numpy below.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from learning.adapters.base import Progress
from learning.train import notify

__all__ = [
    "Detections",
    "TileSample",
    "Window",
    "clip_to_window",
    "erase_regions",
    "merge_detections",
    "sample_training_tiles",
    "sliced_predict",
    "tile_grid",
]

FILL = 128
"""Neutral grey (uint8) painted over erased regions (the detector's own padding is 0.5 grey)."""


@dataclass(frozen=True)
class Window:
    """A tile: columns ``x .. x+w-1``, rows ``y .. y+h-1`` of the full image."""

    x: int
    y: int
    w: int
    h: int

    @property
    def xyxy(self) -> tuple[int, int, int, int]:
        return self.x, self.y, self.x + self.w, self.y + self.h

    def crop(self, image: np.ndarray) -> np.ndarray:
        """``image[H, W, ...]`` -> ``[h, w, ...]`` view of this window."""
        return image[self.y : self.y + self.h, self.x : self.x + self.w]


def _starts(length: int, tile: int, stride: int) -> list[int]:
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)  # the last tile ends at the edge (shifted back, not padded)
    return starts


def tile_grid(width: int, height: int, tile: int, overlap: float) -> list[Window]:
    """Windows of ``min(tile, width) x min(tile, height)`` covering a ``width x height`` image,
    row by row. Neighbours overlap by at least ``overlap`` (a share of ``tile``, in ``[0, 1)``;
    the stride is ``round(tile * (1 - overlap))``, at least 1); the last window of a row or
    column is shifted back to end at the image edge, so no window is padded and every pixel
    is covered. An image no larger than ``tile`` is one window."""
    if width < 1 or height < 1 or tile < 1:
        raise ValueError(f"need a positive size and tile, got {width}x{height} and {tile}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    stride = max(1, round(tile * (1.0 - overlap)))
    tw, th = min(tile, width), min(tile, height)
    return [Window(x, y, tw, th) for y in _starts(height, tile, stride) for x in _starts(width, tile, stride)]


# ---------------------------------------------------------------------------------- training
@dataclass
class TileSample:
    """One training tile: ``window`` in image pixels; ``boxes [K, 4]`` float32 xyxy and
    ``labels [K]`` int64 in *tile* pixels (``labels`` as given: the caller's class ids);
    ``polygons`` per kept box (tile pixels, clipped to the tile, or ``None``); ``erase [M, 4]``
    int xyxy tile pixels to paint over (dropped objects' parts inside the tile)."""

    window: Window
    boxes: np.ndarray
    labels: np.ndarray
    polygons: list[list[float] | None] = field(default_factory=list)
    erase: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), dtype=np.int64))
    background: bool = False


def _clip_polygon(points: Sequence[float], w: int, h: int) -> list[float]:
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    pts[:, 0] = pts[:, 0].clip(0, w)
    pts[:, 1] = pts[:, 1].clip(0, h)
    return [float(v) for v in pts.reshape(-1)]


def clip_to_window(boxes: np.ndarray, labels: np.ndarray, window: Window, *, min_inside: float = 0.5,
                   polygons: Sequence[Sequence[float] | None] | None = None) -> TileSample:
    """Objects (``boxes [N, 4]`` xyxy image pixels, ``labels [N]``, optional ``polygons`` in
    image pixels) as seen through ``window``, by the edge rule of the module docstring: kept
    (clipped) when ``>= min_inside`` of the box area is inside and the clip is >= 2 px a
    side, erased otherwise; objects wholly outside are ignored."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    labels = np.asarray(labels).reshape(-1)
    x0, y0, x1, y1 = window.xyxy
    shifted = boxes - np.array([x0, y0, x0, y0], dtype=np.float64)
    clipped = shifted.copy()
    clipped[:, [0, 2]] = clipped[:, [0, 2]].clip(0, window.w)
    clipped[:, [1, 3]] = clipped[:, [1, 3]].clip(0, window.h)
    cw, ch = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
    area = np.maximum((shifted[:, 2] - shifted[:, 0]) * (shifted[:, 3] - shifted[:, 1]), 1e-9)
    inside = (cw > 0) & (ch > 0)
    keep = inside & (cw * ch >= min_inside * area) & (cw >= 2) & (ch >= 2)
    drop = inside & ~keep
    polys: list[list[float] | None] = []
    if polygons is not None:
        for i in np.flatnonzero(keep):
            p = polygons[int(i)]
            polys.append(None if p is None else _clip_polygon(
                [v - (x0 if k % 2 == 0 else y0) for k, v in enumerate(p)], window.w, window.h))
    else:
        polys = [None] * int(keep.sum())
    erase = np.stack([np.floor(clipped[drop, 0]), np.floor(clipped[drop, 1]),
                      np.ceil(clipped[drop, 2]), np.ceil(clipped[drop, 3])], axis=1).astype(np.int64)
    return TileSample(window=window, boxes=clipped[keep].astype(np.float32), labels=labels[keep].astype(np.int64),
                      polygons=polys, erase=erase.reshape(-1, 4))


def erase_regions(tile: np.ndarray, erase: np.ndarray, fill: int = FILL) -> np.ndarray:
    """A copy of ``tile [h, w, 3]`` uint8 with each ``erase`` box (int xyxy tile pixels) painted ``fill``."""
    if len(erase) == 0:
        return tile
    out = tile.copy()
    for x0, y0, x1, y1 in np.asarray(erase, dtype=np.int64):
        out[max(0, y0) : max(0, y1), max(0, x0) : max(0, x1)] = fill
    return out


def _window_around(box: np.ndarray, width: int, height: int, tile: int, rng: np.random.Generator) -> Window:
    """A ``tile`` window (shrunk to the image) holding ``box`` whole at a random (jittered)
    place when it fits, centred on it otherwise; always inside the image."""
    tw, th = min(tile, width), min(tile, height)

    def start(lo: float, hi: float, size: int, length: int) -> int:
        # window starts s with s <= lo and s + size >= hi, within [0, length - size]
        a, b = math.ceil(hi - size), math.floor(lo)
        a, b = max(0, a), min(length - size, b)
        if a <= b:
            return int(rng.integers(a, b + 1))
        return int(min(max(0, round((lo + hi) / 2 - size / 2)), length - size))

    return Window(start(box[0], box[2], tw, width), start(box[1], box[3], th, height), tw, th)


def sample_training_tiles(width: int, height: int, boxes: np.ndarray, labels: np.ndarray, *, tile: int,
                          rng: np.random.Generator, background_share: float = 0.25, min_inside: float = 0.5,
                          polygons: Sequence[Sequence[float] | None] | None = None,
                          max_tries: int = 20) -> list[TileSample]:
    """Training tiles of one ``width x height`` image at native resolution.

    Object tiles: objects are visited in random order, and each one not yet whole inside an
    earlier tile gets a ``tile`` window at a random place that holds it whole (centred on it
    when it is larger than a tile), so every object is whole in at least one tile and tiles
    around clusters are shared. Every object a tile touches is clipped or erased by
    :func:`clip_to_window`. Background tiles: ``round(n * share / (1 - share))`` more
    (``n`` object tiles; at least one when ``share > 0`` and ``n == 0``, so clean images
    teach "nothing here"), at uniform random places, preferring (``max_tries`` draws) ones
    that touch no object; one that touches objects still follows the edge rule.
    ``rng`` is the only source of randomness. Returns object tiles first."""
    if not 0.0 <= background_share < 1.0:
        raise ValueError(f"background_share must be in [0, 1), got {background_share}")
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    labels = np.asarray(labels).reshape(-1)
    out: list[TileSample] = []
    covered = np.zeros(len(boxes), dtype=bool)
    for i in rng.permutation(len(boxes)):
        if covered[i]:
            continue
        win = _window_around(boxes[i], width, height, tile, rng)
        x0, y0, x1, y1 = win.xyxy
        covered |= (boxes[:, 0] >= x0) & (boxes[:, 1] >= y0) & (boxes[:, 2] <= x1) & (boxes[:, 3] <= y1)
        covered[i] = True
        out.append(clip_to_window(boxes, labels, win, min_inside=min_inside, polygons=polygons))
    n_obj = len(out)
    n_bg = round(n_obj * background_share / (1.0 - background_share)) if n_obj else int(background_share > 0)
    tw, th = min(tile, width), min(tile, height)
    for _ in range(n_bg):
        best: Window | None = None
        for _try in range(max_tries):
            win = Window(int(rng.integers(0, width - tw + 1)), int(rng.integers(0, height - th + 1)), tw, th)
            best = win
            x0, y0, x1, y1 = win.xyxy
            if not ((boxes[:, 0] < x1) & (boxes[:, 2] > x0) & (boxes[:, 1] < y1) & (boxes[:, 3] > y0)).any():
                break
        assert best is not None
        sample = clip_to_window(boxes, labels, best, min_inside=min_inside, polygons=polygons)
        sample.background = True
        out.append(sample)
    return out


# ---------------------------------------------------------------------------------- inference
@dataclass
class Detections:
    """Boxes of one image (or tile): ``boxes [K, 4]`` float32 xyxy, ``scores [K]`` float32,
    ``labels [K]`` int64 (class ids), ``points`` per box (flat polygon or ``None``)."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    points: list[list[float] | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        if not self.points:
            self.points = [None] * len(self.boxes)

    def __len__(self) -> int:
        return len(self.boxes)

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros(0))

    def shifted(self, dx: float, dy: float, scale: float = 1.0) -> Detections:
        """Coordinates ``v / scale + (dx, dy)``: tile (or shrunk-image) pixels -> image pixels."""
        off = np.array([dx, dy, dx, dy], dtype=np.float32)
        pts = [None if p is None else [v / scale + (dx if k % 2 == 0 else dy) for k, v in enumerate(p)]
               for p in self.points]
        return Detections(self.boxes / scale + off, self.scores.copy(), self.labels.copy(), pts)

    def take(self, idx: np.ndarray) -> Detections:
        return Detections(self.boxes[idx], self.scores[idx], self.labels[idx], [self.points[int(i)] for i in idx])

    @classmethod
    def concat(cls, parts: Sequence[Detections]) -> Detections:
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        return cls(np.concatenate([p.boxes for p in parts]), np.concatenate([p.scores for p in parts]),
                   np.concatenate([p.labels for p in parts]), [q for p in parts for q in p.points])


def _overlap(box: np.ndarray, others: np.ndarray, metric: str) -> np.ndarray:
    ix = np.clip(np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1]), 0, None)
    inter = ix * iy
    a = max(float((box[2] - box[0]) * (box[3] - box[1])), 0.0)
    b = np.clip((others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1]), 0, None)
    if metric == "ios":
        return inter / np.maximum(np.minimum(a, b), 1e-9)
    return inter / np.maximum(a + b - inter, 1e-9)


def merge_detections(dets: Detections, *, threshold: float = 0.5, metric: str = "ios") -> Detections:
    """Greedy non-maximum merging per class (SAHI's default): the best-scoring box left takes
    every remaining box of its class that overlaps it by ``>= threshold`` (``metric``:
    ``"ios"`` intersection over the smaller box, or ``"iou"``); the group becomes one box,
    the union of the group's boxes, with the best score and the best member's polygon.
    Intersection over the smaller box is the right match here: a box clipped by one tile's
    edge lies inside the whole box from the neighbouring tile (IoS near 1) but can have an
    IoU far below 0.5. Output sorted by score, best first."""
    if metric not in ("ios", "iou"):
        raise ValueError(f"metric must be 'ios' or 'iou', got {metric!r}")
    if len(dets) == 0:
        return Detections.empty()
    order = np.argsort(-dets.scores, kind="stable")
    used = np.zeros(len(dets), dtype=bool)
    boxes, scores, labels, points = [], [], [], []
    for i in order:
        if used[i]:
            continue
        rest = np.flatnonzero(~used & (dets.labels == dets.labels[i]))
        rest = rest[rest != i]
        group = [int(i)]
        if len(rest):
            hit = rest[_overlap(dets.boxes[i], dets.boxes[rest], metric) >= threshold]
            group += [int(j) for j in hit]
        used[group] = True
        g = dets.boxes[group]
        boxes.append([g[:, 0].min(), g[:, 1].min(), g[:, 2].max(), g[:, 3].max()])
        scores.append(dets.scores[i])
        labels.append(dets.labels[i])
        points.append(dets.points[int(i)])
    return Detections(np.array(boxes), np.array(scores), np.array(labels), points)


TilePredict = Callable[[list[np.ndarray]], list[Detections]]
"""``tiles ([h, w, 3] uint8 each) -> Detections per tile, in that tile's pixels``."""
WholePredict = Callable[[np.ndarray], tuple[Detections, float]]
"""``image [H, W, 3] uint8 -> (Detections in the pixels the model saw, the scale used)``:
the downscaled whole-image pass (image pixels = model pixels / scale)."""


def sliced_predict(image: np.ndarray, predict_tiles: TilePredict, *, tile: int, overlap: float,
                   batch_size: int = 8, predict_whole: WholePredict | None = None,
                   whole_min_side: float | None = None, threshold: float = 0.5, metric: str = "ios",
                   progress: Progress | None = None, message: str = "") -> Detections:
    """Detections of one full-resolution ``image [H, W, 3]`` uint8, in image pixels.

    ``predict_tiles`` runs on the windows of :func:`tile_grid` (``tile``, ``overlap``) in
    batches of ``batch_size``; ``progress(fraction, message)`` is called after each batch (it
    may raise :class:`~learning.adapters.base.Cancelled`, which propagates). Tile boxes are
    shifted by their window's origin. ``predict_whole`` (if given) adds one pass over the
    whole image shrunk to the model's input, for objects larger than a tile; of its boxes
    only those whose longer side is at least ``whole_min_side`` image pixels are kept
    (default ``overlap * tile``: any smaller object is whole in some tile, where it is seen
    at native resolution, while the shrunk pass would add coarse duplicates and false
    alarms). Everything is merged by :func:`merge_detections` (``threshold``, ``metric``)."""
    h, w = int(image.shape[0]), int(image.shape[1])
    windows = tile_grid(w, h, tile, overlap)
    steps = math.ceil(len(windows) / max(1, batch_size)) + (predict_whole is not None)
    parts: list[Detections] = []
    for k, b0 in enumerate(range(0, len(windows), max(1, batch_size))):
        batch = windows[b0 : b0 + batch_size]
        results = predict_tiles([win.crop(image) for win in batch])
        parts += [r.shifted(win.x, win.y) for r, win in zip(results, batch, strict=True)]
        notify(progress, (k + 1) / steps, f"{message}tiles {min(b0 + len(batch), len(windows))}/{len(windows)}")
    if predict_whole is not None:
        whole, scale = predict_whole(image)
        whole = whole.shifted(0.0, 0.0, scale)
        side = np.maximum(whole.boxes[:, 2] - whole.boxes[:, 0], whole.boxes[:, 3] - whole.boxes[:, 1])
        floor = overlap * tile if whole_min_side is None else whole_min_side
        parts.append(whole.take(np.flatnonzero(side >= floor)))
        notify(progress, 1.0, f"{message}whole-image pass")
    return merge_detections(Detections.concat(parts), threshold=threshold, metric=metric)


def shrink(image: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """``image [H, W, 3]`` uint8 resized so its longer side is at most ``size`` (PIL's default filter,
    as :func:`learning.data.load_rgb` images are by the detector), and the scale used."""
    h, w = image.shape[:2]
    scale = min(1.0, size / max(h, w))
    if scale >= 1.0:
        return image, 1.0
    im = Image.fromarray(image).resize((max(1, round(w * scale)), max(1, round(h * scale))))
    return np.asarray(im), scale
