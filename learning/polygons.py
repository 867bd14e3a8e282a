"""Polygons <-> masks and box helpers for detection/segmentation (pure, numpy + Pillow).

Points are flat ``[x1, y1, x2, y2, ...]`` in pixels (the annotation shape); masks are
``bool [H, W]``; boxes are COCO ``[x, y, w, h]``.

:func:`mask_to_polygon` traces the outer boundary of the largest connected component
(Moore-neighbour tracing through boundary pixel centres, so the polygon lies up to half a
pixel inside the mask edge) and simplifies it with Douglas-Peucker at ``tolerance`` pixels.
Holes and further components are dropped: one polygon per object, as CVAT's "masks as
polygons" does for simple shapes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

__all__ = ["mask_to_polygon", "polygon_bbox", "polygon_to_mask", "simplify"]

# (dy, dx) clockwise starting at west: W, NW, N, NE, E, SE, S, SW
_DIRS = [(0, -1), (-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1)]
_INDEX = {d: i for i, d in enumerate(_DIRS)}


def polygon_to_mask(points: Sequence[float], height: int, width: int) -> np.ndarray:
    """Rasterise one polygon ``[x1, y1, ...]`` -> ``bool [height, width]``."""
    canvas = Image.new("L", (int(width), int(height)), 0)
    xy = [(float(points[i]), float(points[i + 1])) for i in range(0, len(points) - 1, 2)]
    if len(xy) >= 3:
        ImageDraw.Draw(canvas).polygon(xy, fill=1, outline=1)
    return np.asarray(canvas, dtype=bool)


def polygon_bbox(points: Sequence[float]) -> list[float]:
    """Tight ``[x, y, w, h]`` of a polygon."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    lo, hi = p.min(axis=0), p.max(axis=0)
    return [float(lo[0]), float(lo[1]), float(hi[0] - lo[0]), float(hi[1] - lo[1])]


def simplify(points: np.ndarray, tolerance: float) -> np.ndarray:
    """Douglas-Peucker on a closed ring ``[K, 2]`` -> ``[M, 2]`` (M <= K, M >= 3 when K >= 3)."""
    pts = np.asarray(points, dtype=np.float64)
    if len(pts) <= 3 or tolerance <= 0:
        return pts
    far = int(np.argmax(((pts - pts[0]) ** 2).sum(axis=1)))
    keep = np.zeros(len(pts), dtype=bool)
    keep[[0, far]] = True
    ring = np.vstack([pts, pts[:1]])
    stack = [(0, far), (far, len(pts))]
    while stack:
        a, b = stack.pop()
        if b - a < 2:
            continue
        seg = ring[a + 1 : b]
        p, q = ring[a], ring[b]
        d = q - p
        norm = float(np.hypot(*d))
        if norm == 0:
            dist = np.hypot(*(seg - p).T)
        else:
            dist = np.abs(d[0] * (seg[:, 1] - p[1]) - d[1] * (seg[:, 0] - p[0])) / norm
        i = int(np.argmax(dist))
        if dist[i] > tolerance:
            mid = a + 1 + i
            keep[mid % len(pts)] = True
            stack += [(a, mid), (mid, b)]
    out = pts[keep]
    return out if len(out) >= 3 else pts[np.linspace(0, len(pts) - 1, 3).astype(int)]


def _trace(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels ``[K, 2]`` (x, y) of the component holding the first pixel in raster order."""
    padded = np.pad(mask, 1)
    ys, xs = np.nonzero(padded)
    start = (int(ys[0]), int(xs[0]))
    back = 0  # the west neighbour of the first raster pixel is background
    cur, contour, first_move = start, [start], None
    for _ in range(4 * padded.size + 8):
        for k in range(1, 9):
            d = (back + k) % 8
            ny, nx = cur[0] + _DIRS[d][0], cur[1] + _DIRS[d][1]
            if padded[ny, nx]:
                break
        else:
            break  # an isolated pixel
        if first_move is None:
            first_move = (cur, d)
        elif (cur, d) == first_move:
            break
        pd = _DIRS[(d - 1) % 8]
        prev = (cur[0] + pd[0], cur[1] + pd[1])
        cur = (ny, nx)
        back = _INDEX[(prev[0] - cur[0], prev[1] - cur[1])]
        contour.append(cur)
    arr = np.asarray(contour[:-1] if len(contour) > 1 and contour[-1] == start else contour, dtype=np.float64)
    return arr[:, ::-1] - 1.0  # (y, x) in the padded grid -> (x, y)


def mask_to_polygon(mask: np.ndarray, tolerance: float = 1.0) -> list[float] | None:
    """Largest component of ``bool [H, W]`` -> flat polygon (>= 3 points), or ``None`` if empty."""
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 2:
        raise ValueError(f"mask must be [H, W], got shape {m.shape}")
    if not m.any():
        return None
    labels, n = ndimage.label(m)
    if n > 1:
        sizes = np.bincount(labels.ravel())[1:]
        m = labels == (int(np.argmax(sizes)) + 1)
    ring = _trace(m)
    if len(ring) < 3:  # a pixel or a line: its box outline
        x0, y0 = ring.min(axis=0)
        x1, y1 = ring.max(axis=0) + 1.0
        ring = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    return [round(float(v), 2) for v in simplify(ring, tolerance).ravel()]
