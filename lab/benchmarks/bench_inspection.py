"""Inspection-like boards: tiled training + sliced inference against the whole-image path.

Boards are drawn (seeded): a green substrate with a fine texture, copper traces (horizontal
and vertical runs), pads and drilled holes; defects of 6 classes are drawn at known places,
``--min-defect``..``--max-defect`` px across (default 6-40):

* ``open`` - a gap cut across a trace;          * ``short`` - copper bridging two traces;
* ``mouse_bite`` - a notch bitten out of a trace edge; * ``spur`` - copper sticking out of a trace;
* ``pinhole`` - a dark hole in copper;          * ``spurious_copper`` - a copper blob on bare substrate.

3-8 defects a board; ``--clean`` of the boards have none. Both detectors train on the same
``--train`` boards for the same ``--epochs`` at the same ``--image-size``; the tiled one
(``tile_size=--tile``) sees native-resolution tiles, the whole-image one (``tile_size=None``)
sees boards shrunk to ``--image-size``. Reported on ``--test`` boards: defect recall at IoU
>= 0.3 and >= 0.5 among boxes scoring >= ``--score`` (class must match), box precision
(share of those boxes matching a defect at IoU >= 0.3), training seconds, inference
seconds a board::

    .venv/bin/python lab/benchmarks/bench_inspection.py --size 2048 --train 20 --test 10 --epochs 8
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from learning.adapters.base import FitConfig, LabelledImages
from learning.adapters.detector import DetectorAdapter

CLASSES = ["open", "short", "mouse_bite", "spur", "pinhole", "spurious_copper"]
SUBSTRATE, COPPER, HOLE = (38, 92, 58), (196, 142, 72), (20, 20, 18)


def board(rng: np.random.Generator, size: int, *, clean: bool, lo: int, hi: int) -> tuple[Image.Image, dict]:
    """One board and its annotation dict (``{"boxes": [{"label", "bbox": [x, y, w, h]}]}``)."""
    small = rng.normal(0, 6, (size // 16 + 1, size // 16 + 1, 1))
    tex = np.asarray(Image.fromarray(small[:, :, 0].astype(np.float32)).resize((size, size), Image.Resampling.BILINEAR))
    base = np.array(SUBSTRATE, dtype=np.float32)[None, None] + tex[:, :, None] + rng.normal(0, 4, (size, size, 1))
    im = Image.fromarray(base.clip(0, 255).astype(np.uint8))
    d = ImageDraw.Draw(im)
    traces: list[tuple[int, int, int, int]] = []  # xyxy of straight copper runs
    pitch = int(rng.integers(60, 120))
    for y in range(pitch, size - pitch, pitch):  # horizontal runs, broken into segments
        w = int(rng.integers(8, 18))
        x = int(rng.integers(0, size // 4))
        while x < size - 100:
            length = int(rng.integers(150, size // 2))
            x1 = min(size - 10, x + length)
            traces.append((x, y, x1, y + w))
            d.rectangle([x, y, x1, y + w], fill=COPPER)
            pad = int(rng.integers(24, 44))
            d.rectangle([x1 - pad // 2, y + w // 2 - pad // 2, x1 + pad // 2, y + w // 2 + pad // 2], fill=COPPER)
            hole = pad // 3
            d.ellipse([x1 - hole, y + w // 2 - hole, x1 + hole, y + w // 2 + hole], fill=HOLE)
            x = x1 + int(rng.integers(60, 200))
    for _ in range(int(rng.integers(3, 8))):  # a few vertical runs
        x, w = int(rng.integers(50, size - 50)), int(rng.integers(8, 16))
        y0 = int(rng.integers(0, size // 2))
        y1 = min(size - 10, y0 + int(rng.integers(200, size // 2)))
        d.rectangle([x, y0, x + w, y1], fill=COPPER)
        traces.append((x, y0, x + w, y1))
    boxes: list[dict[str, Any]] = []
    if not clean:
        for _ in range(int(rng.integers(3, 9))):
            cls = CLASSES[int(rng.integers(len(CLASSES)))]
            s = int(rng.integers(lo, hi + 1))
            box = _defect(d, rng, cls, s, traces, size)
            if box is not None and all(_far(box, b["bbox"]) for b in boxes):
                boxes.append({"label": cls, "bbox": box})
    return im, {"boxes": boxes, "polygons": []}


def _far(a: list[float], b: list[float]) -> bool:
    return a[0] + a[2] + 4 < b[0] or b[0] + b[2] + 4 < a[0] or a[1] + a[3] + 4 < b[1] or b[1] + b[3] + 4 < a[1]


def _defect(d: ImageDraw.ImageDraw, rng: np.random.Generator, cls: str, s: int,
            traces: list[tuple[int, int, int, int]], size: int) -> list[float] | None:
    """Draw one defect about ``s`` px across; its box ``[x, y, w, h]``."""
    horiz = [t for t in traces if t[2] - t[0] > t[3] - t[1] and t[2] - t[0] > 2 * s + 20]
    if cls == "spurious_copper" or not horiz:
        x, y = (int(v) for v in rng.integers(20, size - s - 20, 2))
        h = int(s * rng.uniform(0.6, 1.0))
        d.ellipse([x, y, x + s, y + h], fill=COPPER)
        return [float(x), float(y), float(s + 1), float(h + 1)]
    x0, y0, x1, y1 = horiz[int(rng.integers(len(horiz)))]
    x = int(rng.integers(x0 + 10, x1 - s - 10))
    tw = y1 - y0
    if cls == "open":  # a gap of width s/3..s across the trace
        g = max(3, s // 2)
        d.rectangle([x, y0 - 1, x + g, y1 + 1], fill=SUBSTRATE)
        return [float(x), float(y0 - 1), float(g + 1), float(tw + 3)]
    if cls == "short":  # a bridge down from the trace
        g = max(3, s // 3)
        d.rectangle([x, y1, x + g, y1 + s], fill=COPPER)
        return [float(x), float(y1), float(g + 1), float(s + 1)]
    if cls == "mouse_bite":
        r = max(3, s // 2)
        d.ellipse([x, y0 - r, x + 2 * r, y0 + r], fill=SUBSTRATE)
        return [float(x), float(y0), float(2 * r + 1), float(r + 1)]
    if cls == "spur":
        r = max(3, s // 2)
        d.polygon([(x, y0), (x + r, y0 - s), (x + 2 * r, y0)], fill=COPPER)
        return [float(x), float(y0 - s), float(2 * r + 1), float(s + 1)]
    # pinhole: a dark dot in copper (at most the trace's width)
    r = max(2, min(s, tw - 2) // 2)
    cy = (y0 + y1) // 2
    d.ellipse([x, cy - r, x + 2 * r, cy + r], fill=HOLE)
    return [float(x), float(cy - r), float(2 * r + 1), float(2 * r + 1)]


def _iou(a: list[float], b: list[float]) -> float:
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / max(1e-9, a[2] * a[3] + b[2] * b[3] - inter)


def score(preds: list[list[dict]], truth: list[dict], cut: float) -> dict[str, float]:
    """Recall at IoU 0.3 / 0.5 (one prediction per defect, same class, best score first) and
    the precision of predictions scoring >= ``cut`` at IoU 0.3."""
    out: dict[str, float] = {}
    for thr in (0.3, 0.5):
        hit = total = 0
        for dets, ann in zip(preds, truth, strict=True):
            used: set[int] = set()
            for g in ann["boxes"]:
                total += 1
                best, bj = thr, -1
                for j, p in enumerate(dets):
                    if j in used or p["score"] < cut or p["label"] != g["label"]:
                        continue
                    v = _iou(p["bbox"], g["bbox"])
                    if v >= best:
                        best, bj = v, j
                if bj >= 0:
                    used.add(bj)
                    hit += 1
        out[f"recall@{thr}"] = hit / max(1, total)
    kept = right = 0
    for dets, ann in zip(preds, truth, strict=True):
        for p in dets:
            if p["score"] >= cut:
                kept += 1
                right += any(p["label"] == g["label"] and _iou(p["bbox"], g["bbox"]) >= 0.3 for g in ann["boxes"])
    out["precision"] = right / kept if kept else float("nan")
    out["boxes"] = float(kept)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--train", type=int, default=20)
    ap.add_argument("--test", type=int, default=10)
    ap.add_argument("--clean", type=float, default=0.2, help="share of boards without defects")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--image-size", type=int, default=320)
    ap.add_argument("--tile", type=int, default=320)
    ap.add_argument("--overlap", type=float, default=0.2)
    ap.add_argument("--background", type=float, default=0.25)
    ap.add_argument("--min-defect", type=int, default=6)
    ap.add_argument("--max-defect", type=int, default=40)
    ap.add_argument("--score", type=float, default=0.5, help="score a box needs to count as a proposal")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", choices=["tiled", "whole"], default=None)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    boards = [board(rng, a.size, clean=rng.random() < a.clean, lo=a.min_defect, hi=a.max_defect)
              for _ in range(a.train + a.test)]
    train, test = boards[: a.train], boards[a.train :]
    labels = np.empty(len(train), dtype=object)
    labels[:] = [ann for _, ann in train]
    n_def = sum(len(ann["boxes"]) for _, ann in test)
    print(f"boards {a.size}px: {a.train} train ({sum(len(x['boxes']) for x in labels)} defects), {a.test} test "
          f"({n_def} defects), epochs {a.epochs}, image_size {a.image_size}, tile {a.tile}, seed {a.seed}",
          flush=True)
    for name, tile in (("tiled", a.tile), ("whole", None)):
        if a.only and a.only != name:
            continue
        ad = DetectorAdapter(CLASSES, image_size=a.image_size, tile_size=tile, tile_overlap=a.overlap,
                             background_share=a.background, num_threads=a.threads, device=a.device)
        t0 = time.perf_counter()
        ad.fit(LabelledImages([im for im, _ in train], labels), None,
               config=FitConfig(algorithm="precise", epochs=a.epochs, batch_size=8, seed=a.seed,
                                num_threads=a.threads))
        t1 = time.perf_counter()
        pred = ad.predict([im for im, _ in test]).boxes or []
        t2 = time.perf_counter()
        m = score(pred, [ann for _, ann in test], a.score)
        print(f"{name:5s}: recall@0.3 {m['recall@0.3']:.3f}  recall@0.5 {m['recall@0.5']:.3f}  "
              f"precision {m['precision']:.3f} ({int(m['boxes'])} boxes >= {a.score})  "
              f"train {t1 - t0:.0f} s  inference {(t2 - t1) / max(1, a.test):.2f} s/board", flush=True)


if __name__ == "__main__":
    main()
