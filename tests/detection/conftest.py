"""Tiny drawn canvases with exact boxes and polygons: red squares and blue circles on grey."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

CLASSES = ["square", "circle"]


def canvas(rng: np.random.Generator, size: int = 64) -> tuple[Image.Image, dict]:
    im = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(90, 150, 3)))
    draw = ImageDraw.Draw(im)
    boxes: list[dict] = []
    polygons: list[dict] = []
    for _ in range(int(rng.integers(1, 3))):
        c, s = int(rng.integers(0, 2)), int(rng.integers(size // 4, size // 2.5))
        for _try in range(10):
            x, y = (int(v) for v in rng.integers(0, size - s, 2))
            if all(x + s < b[0] or b[0] + b[2] < x or y + s < b[1] or b[1] + b[3] < y
                   for b in (bb["bbox"] for bb in boxes)):
                break
        else:
            continue
        if c == 0:
            draw.rectangle([x, y, x + s - 1, y + s - 1], fill=(220, 40, 40))
        else:
            draw.ellipse([x, y, x + s - 1, y + s - 1], fill=(40, 40, 220))
        boxes.append({"label": CLASSES[c], "bbox": [float(x), float(y), float(s), float(s)]})
        polygons.append({"label": CLASSES[c], "points": [x, y, x + s, y, x + s, y + s, x, y + s]})
    return im, {"labels": [], "boxes": boxes, "polygons": polygons}


def png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(autouse=True)
def _threads() -> None:
    import torch

    torch.set_num_threads(2)
