"""Generated shape images for the demo project: circles, squares and triangles.

Cheap to make (a few milliseconds each with Pillow) and varied enough that a model
learns them well but not perfectly: position, size, rotation, colours, outline or
filled, a background gradient, clutter lines, pixel noise and, now and then, blur.
Most images are clear; a ``hard`` share is small, faint, blurred or cluttered, which
is where the model errs (and so where Pending stops and grids and the queue go on).
"""

from __future__ import annotations

import io
import math
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

DEMO_CLASSES = ["circle", "square", "triangle"]
SIZE = 96


def _colour(rng: random.Random, lo: int, hi: int) -> tuple[int, int, int]:
    return (rng.randint(lo, hi), rng.randint(lo, hi), rng.randint(lo, hi))


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    corners = 4 if kind == "square" else 3
    start = angle + (math.pi / 4 if corners == 4 else -math.pi / 2)
    # a square of half-side r has its corners at r * sqrt(2); a triangle's at r * 1.15
    radius = r * (math.sqrt(2) if corners == 4 else 1.15)
    return [(cx + radius * math.cos(start + 2 * math.pi * k / corners),
             cy + radius * math.sin(start + 2 * math.pi * k / corners)) for k in range(corners)]


def shape_image(kind: str, rng: random.Random, size: int = SIZE, *, hard: bool = False) -> bytes:
    """PNG bytes of one ``kind`` (a :data:`DEMO_CLASSES` name) drawn at random; ``hard``:
    small, low-contrast, cluttered and blurred (the images a model gets wrong)."""
    dark = rng.random() < 0.2  # light shape on a dark ground
    bg0, bg1 = (_colour(rng, 10, 70), _colour(rng, 10, 70)) if dark else (
        _colour(rng, 170, 255), _colour(rng, 170, 255))
    ramp = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None, None]
    ground = (np.array(bg0, np.float32) * (1 - ramp) + np.array(bg1, np.float32) * ramp)
    im = Image.fromarray(np.broadcast_to(ground, (size, size, 3)).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(im)
    for _ in range(rng.randint(0, 6 if hard else 2)):  # clutter: thin lines in muted colours
        d.line([(rng.uniform(0, size), rng.uniform(0, size)), (rng.uniform(0, size), rng.uniform(0, size))],
               fill=_colour(rng, 60, 200), width=rng.randint(1, 2))
    if hard:
        fg = tuple(min(255, max(0, c + rng.choice((-1, 1)) * rng.randint(45, 80))) for c in bg0)
        r = rng.uniform(size / 11, size / 7)
    else:
        fg = _colour(rng, 180, 255) if dark else _colour(rng, 0, 110)
        r = rng.uniform(size / 7, size / 3.2)
    cx, cy = rng.uniform(r * 1.2, size - r * 1.2), rng.uniform(r * 1.2, size - r * 1.2)
    outline = rng.random() < 0.25
    width = max(2, int(r / 5))
    if kind == "circle":
        ry = r * rng.uniform(0.85, 1.15)  # a little out of round
        box = [cx - r, cy - ry, cx + r, cy + ry]
        d.ellipse(box, outline=fg, width=width) if outline else d.ellipse(box, fill=fg)
    elif kind in ("square", "triangle"):
        pts = _polygon(kind, cx, cy, r, rng.uniform(0, 2 * math.pi))
        if outline:
            d.line([*pts, pts[0]], fill=fg, width=width, joint="curve")
        else:
            d.polygon(pts, fill=fg)
    else:
        raise ValueError(f"unknown shape {kind!r}; known: {', '.join(DEMO_CLASSES)}")
    if hard or rng.random() < 0.15:
        im = im.filter(ImageFilter.GaussianBlur(rng.uniform(0.6, 1.5 if hard else 1.2)))
    noise = np.random.default_rng(rng.getrandbits(32)).normal(0.0, 10.0 if hard else 5.0, (size, size, 3))
    pixels = np.clip(np.asarray(im, np.float32) + noise, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, format="PNG", compress_level=1)  # noise packs badly anyway
    return buf.getvalue()


@dataclass(frozen=True)
class Shape:
    """One generated image: its file name, true class, whether it was drawn hard, PNG bytes."""

    file_name: str
    kind: str
    hard: bool
    png: bytes


def shape_set(n: int, seed: int, *, hard_share: float = 0.2) -> list[Shape]:
    """``n`` images, classes in turn, about ``hard_share`` of them hard; the same for the
    same ``(n, seed)``."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        kind = DEMO_CLASSES[i % len(DEMO_CLASSES)]
        hard = rng.random() < hard_share
        out.append(Shape(f"shape_{i:04d}.png", kind, hard, shape_image(kind, rng, hard=hard)))
    return out
