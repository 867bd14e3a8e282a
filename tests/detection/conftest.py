"""Tiny drawn canvases with exact boxes and polygons: red squares and blue circles on grey."""

from __future__ import annotations

import io
from typing import Any

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


def shapes_project(ctx: Any, headers: dict[str, str], policy: dict[str, Any], *, n: int, seed: int
                   ) -> tuple[int, dict[int, dict]]:
    """A detection project of ``n`` drawn canvases (64 px); returns (project id, {item id: true annotation})."""
    r = ctx.client.post("/api/v1/projects", json={"name": "shapes", "task": "detection", "classes": CLASSES,
                                                  "policy": policy}, headers=headers)
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    rng = np.random.default_rng(seed)
    drawn = [canvas(rng, 64) for _ in range(n)]
    files = [("files", (f"c{i:03d}.png", png(im), "image/png")) for i, (im, _) in enumerate(drawn)]
    created = ctx.client.post(f"/api/v1/projects/{pid}/items", files=files, headers=headers).json()["created"]
    return pid, {c["id"]: drawn[int(c["file"][1:4])][1] for c in created}


def iou(a: list[float], b: list[float]) -> float:
    """IoU of two [x, y, w, h] boxes."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return ix * iy / (a[2] * a[3] + b[2] * b[3] - ix * iy)


@pytest.fixture(autouse=True)
def _threads() -> None:
    import torch

    torch.set_num_threads(2)

