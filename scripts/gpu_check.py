"""The checks that need a GPU, in one command (about 5 minutes on one H100):

    python scripts/gpu_check.py [--device cuda] [--quick]
    python scripts/gpu_check.py --device cpu --quick     # a dry run of the script itself

1. the adapter contract on CUDA (classifier multiclass / multilabel, detector): shapes,
   finite probabilities that sum to one, every parameter on the GPU, and a save/load round
   trip both onto the GPU and onto the CPU (a model trained on a GPU predicts on a CPU);
2. one ``fast`` and one ``precise`` training on CUDA: 2,000 drawn 96 px images, 4 classes,
   12 epochs (issue 26's target: under 60 s);
3. a detector training and inference on CUDA;
4. the embedding benchmark (``lab/benchmarks/bench_embed.py``) on CUDA, batch 32 and 256,
   decoding with every CPU core.

Needs only ``learning/``, ``lab/benchmarks/bench_embed.py``, torch, torchvision and timm
(no FastAPI, SQLModel or FAISS). Without the bundled Lite0 weights it runs on random
weights and says so. On a machine without CUDA it says so and exits with status 0.
Prints a short table last.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

Row = tuple[str, str, str]  # (check, result, figure)


def _shapes(n: int, size: int, seed: int) -> tuple[list[Image.Image], np.ndarray]:
    """``n`` images of 4 classes (disc, square, stripes, plain) in random colours, with noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    yy, xx = np.mgrid[0:size, 0:size]
    images = []
    for c in labels:
        arr = np.full((size, size, 3), rng.uniform(60, 200, 3))
        colour = rng.uniform(0, 255, 3)
        cx, cy, r = rng.uniform(0.3, 0.7) * size, rng.uniform(0.3, 0.7) * size, rng.uniform(0.15, 0.3) * size
        if c == 0:
            arr[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = colour
        elif c == 1:
            arr[(abs(xx - cx) < r) & (abs(yy - cy) < r)] = colour
        elif c == 2:
            arr[(xx // max(2, size // 12)) % 2 == 0] = colour
        arr += rng.normal(0, 18, arr.shape)
        images.append(Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)))
    return images, labels


def _boxes(n: int, seed: int) -> tuple[list[Image.Image], np.ndarray]:
    rng = np.random.default_rng(seed)
    images, anns = [], []
    for _ in range(n):
        arr = np.full((160, 160, 3), 230, np.uint8)
        boxes = []
        for _ in range(int(rng.integers(1, 4))):
            x, y, w = int(rng.integers(0, 120)), int(rng.integers(0, 120)), int(rng.integers(20, 40))
            arr[y : y + w, x : x + w] = (200, 30, 30)
            boxes.append({"label": "square", "bbox": [x, y, w, w]})
        images.append(Image.fromarray(arr))
        anns.append({"boxes": boxes})
    labels = np.empty(n, dtype=object)
    labels[:] = anns
    return images, labels


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _on(module: torch.nn.Module, device: torch.device) -> bool:
    return all(t.device == device for t in [*module.parameters(), *module.buffers()])


def contract(device: torch.device, pretrained: bool, tmp: Path) -> list[Row]:
    from learning.adapters import FitConfig, LabelledImages, create_adapter, load_adapter

    rows: list[Row] = []
    cases: list[tuple[str, dict[str, Any], Callable[[int], Any], FitConfig]] = [
        ("classifier multiclass", dict(classes=["a", "b", "c", "d"], task="multiclass", image_size=64),
         lambda s: _shapes(24, 64, s), FitConfig(algorithm="fast")),
        ("classifier multilabel", dict(classes=["a", "b", "c", "d"], task="multilabel", image_size=64),
         lambda s: (lambda im_lb: (im_lb[0], np.eye(4, dtype=np.int64)[im_lb[1]]))(_shapes(24, 64, s)),
         FitConfig(algorithm="precise", epochs=1, val_fraction=0.0)),
        ("detector", dict(classes=["square"], task="detection", image_size=160),
         lambda s: _boxes(8, s), FitConfig(algorithm="precise", epochs=1, batch_size=4)),
    ]
    for name, kwargs, data, config in cases:
        key = "detector" if name == "detector" else "classifier"
        adapter: Any = create_adapter(key, device=device, pretrained=pretrained, **kwargs)
        images, labels = data(0)
        ho_images, ho_labels = data(1)
        report = adapter.fit(LabelledImages(images, labels), LabelledImages(ho_images, ho_labels), config=config)
        probs = adapter.predict(ho_images).probs
        net = adapter.model if key == "detector" else adapter.net
        assert _on(net, device), f"{name}: parameters left the GPU"
        assert report.device == str(device), report.device
        assert probs.shape == (len(ho_images), len(adapter.classes)) and np.isfinite(probs).all()
        if kwargs["task"] == "multiclass":
            np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
        adapter.save(tmp / name)
        worst = 0.0
        for target in (device, torch.device("cpu")):
            back: Any = load_adapter(tmp / name, device=target)
            again = back.predict(ho_images).probs
            if key == "classifier":  # boxes may come and go near the score threshold
                worst = max(worst, float(np.abs(again - probs).max()))
        rows.append((f"contract: {name}", "ok", f"max |p(load) - p| {worst:.1e} (GPU and CPU)"))
    return rows


def training(device: torch.device, pretrained: bool, quick: bool) -> list[Row]:
    from learning.adapters import FitConfig, LabelledImages, create_adapter

    n, epochs = (120, 2) if quick else (2000, 12)
    images, labels = _shapes(n + 400, 96, 7)
    train, hold = LabelledImages(images[:n], labels[:n]), LabelledImages(images[n:], labels[n:])
    rows: list[Row] = []
    for algorithm in ("fast", "precise"):
        adapter: Any = create_adapter("classifier", classes=["disc", "square", "stripes", "plain"], image_size=96,
                                      device=device, pretrained=pretrained)
        config = FitConfig(algorithm=algorithm, epochs=epochs, batch_size=64, patience=epochs)  # type: ignore[arg-type]
        _sync(device)
        start = time.perf_counter()
        report = adapter.fit(train, hold, config=config)
        _sync(device)
        seconds = time.perf_counter() - start
        rows.append((f"{algorithm}: {n} images, 96 px" + (f", {epochs} epochs" if algorithm == "precise" else ""),
                     f"{seconds:.1f} s", f"hold-out accuracy {report.holdout_accuracy:.3f}, "
                     f"{report.epochs_run} epoch(s)"))
    return rows


def detector(device: torch.device, pretrained: bool, quick: bool) -> list[Row]:
    from learning.adapters import FitConfig, LabelledImages, create_adapter

    n, epochs = (8, 1) if quick else (128, 6)
    images, labels = _boxes(n + 16, 3)
    adapter: Any = create_adapter("detector", classes=["square"], image_size=160, device=device, pretrained=pretrained)
    _sync(device)
    start = time.perf_counter()
    adapter.fit(LabelledImages(images[:n], labels[:n]), None, config=FitConfig(epochs=epochs, batch_size=8, lr=1e-3))
    _sync(device)
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    pred = adapter.predict(images[n:])
    infer = 16 / (time.perf_counter() - start)
    found = sum(1 for dets, truth in zip(pred.boxes or [], labels[n:], strict=True)
                if any(d["score"] > 0.5 for d in dets) and truth["boxes"])
    return [(f"detector: {n} images x {epochs} epochs, 160 px", f"{fit_s:.1f} s",
             f"predict {infer:.1f} images/s; {found}/16 images with a box > 0.5")]


def embedding(device: torch.device, quick: bool) -> list[Row]:
    from lab.benchmarks.bench_embed import bench_size, make_photos

    folder = Path(tempfile.mkdtemp(prefix="gpu-check-photos-"))
    paths = make_photos(folder, 32 if quick else 512)
    workers = os.cpu_count() or 1
    rows: list[Row] = []
    for batch in (32,) if quick else (32, 256):
        for size in (96,) if quick else (96, 224):
            r = bench_size(paths, size, batch=batch, device=device, workers=workers,
                           runtime="torch" if device.type == "cuda" else "auto",
                           threads=workers if device.type == "cuda" else torch.get_num_threads(), model_images=256)
            rows.append((f"embed {size} px, batch {batch}", f"{r['labelloop_e2e']:.0f} img/s e2e",
                         f"model {r['labelloop_model']:.0f}; timm {r['timm_e2e']:.0f} e2e / {r['timm_model']:.0f} "
                         f"model; ratio {r['e2e_ratio']:.2f}x; diff {r['feature_rel_diff']:.1e}"))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="labelloop's GPU checks (issue 26)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="smaller data: a smoke test in about a minute")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available() and args.device != "cpu":
        print(f"gpu_check: torch {torch.__version__} sees no CUDA GPU on this machine; nothing to check.")  # noqa: T201
        return 0
    from learning.backbones import BackboneWeightsError, lite0_weights_path
    from learning.device import describe_device, resolve_device

    device = resolve_device(args.device)
    try:
        lite0_weights_path()
        pretrained = True
    except BackboneWeightsError:
        pretrained = False
    print(f"gpu_check on {describe_device(device)}, torch {torch.__version__}, "  # noqa: T201
          f"{os.cpu_count()} CPUs, weights {'Lite0 ImageNet' if pretrained else 'RANDOM (Lite0 package missing)'}",
          flush=True)
    rows: list[Row] = []
    failed = 0
    tmp = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    steps: list[tuple[str, Callable[[], list[Row]]]] = [
        ("contract", lambda: contract(device, pretrained, tmp)),
        ("training", lambda: training(device, pretrained, args.quick)),
        ("detector", lambda: detector(device, pretrained, args.quick)),
        ("embedding", lambda: embedding(device, args.quick)),
    ]
    for name, step in steps:
        start = time.perf_counter()
        try:
            got = step()
        except Exception as exc:  # noqa: BLE001 - report every check, then fail at the end
            traceback.print_exc()
            got, failed = [(name, "FAILED", f"{type(exc).__name__}: {exc}"[:120])], failed + 1
        rows += got
        print(f"[{name}] {time.perf_counter() - start:.1f} s: {got}", flush=True)  # noqa: T201
    width = max(len(r[0]) for r in rows)
    print(f"\n{'check':<{width}} | result | figures  ({describe_device(device)})")  # noqa: T201
    for check, result, figure in rows:
        print(f"{check:<{width}} | {result} | {figure}")  # noqa: T201
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
