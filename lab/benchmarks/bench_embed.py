"""Embedding throughput: plain timm eager (its own transform) vs labelloop's path, in one run.

    python -m lab.benchmarks.bench_embed                      # 512 photos, 96 and 224 px, batch 32
    python -m lab.benchmarks.bench_embed --device cuda --workers 16 --batch 256

Generates ``--n`` textured 1024x768 JPEGs (seeded), then for each input size measures
images/s *end to end* (file -> features, decoding included) and *model only* (prepared
batches -> features) for:

* ``timm``: ``tf_efficientnet_lite0`` (the bundled ImageNet weights) in eager PyTorch, fp32,
  contiguous layout, with timm's own eval transform (full decode, resize, crop), decoding in
  the calling thread; on CUDA the model and batches simply moved there.
* ``labelloop``: :class:`~learning.adapters.classifier.ClassifierAdapter` ``embed()`` with the
  same weights and the same (``final``, no mirror) features: JPEG draft decoding to the input
  size, ``--workers`` decode threads, and on the CPU the ``--runtime`` (``auto``: the fastest
  installed, see :mod:`learning.runtime`), on CUDA autocast + channels-last + pinned memory.

Also reported: how far labelloop's features are from timm's on the same batch (max abs
difference / max |feature|), and OpenVINO's bf16 mode (model only) with its difference.
The table ends with the ratios labelloop / timm. Figures depend on how busy the machine
is: run it on an idle one, and say which machine gave which number.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from learning.adapters.classifier import ClassifierAdapter
from learning.backbones import create_backbone, set_num_threads
from learning.device import describe_device, resolve_device
from learning.runtime import load_or_export

WIDTH, HEIGHT = 1024, 768


def make_photos(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` seeded 1024x768 JPEGs (quality 90) of smooth colour fields, stripes, blobs and grain."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    paths = []
    for i in range(n):
        img = np.zeros((HEIGHT, WIDTH, 3), dtype=np.float32)
        for c in range(3):
            base = rng.uniform(40, 200)
            for _ in range(3):
                fx, fy, ph = rng.uniform(0.002, 0.05), rng.uniform(0.002, 0.05), rng.uniform(0, 6.3)
                img[..., c] += base / 3 + rng.uniform(10, 45) * np.sin(fx * xx + fy * yy + ph)
        for _ in range(int(rng.integers(3, 9))):  # blobs: objects with edges
            cx, cy, r = rng.uniform(0, WIDTH), rng.uniform(0, HEIGHT), rng.uniform(30, 220)
            mask = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
            img[mask] = img[mask] * 0.3 + rng.uniform(0, 255, 3) * 0.7
        img += rng.normal(0, 12, (HEIGHT, WIDTH, 1)).astype(np.float32)  # grain
        path = folder / f"photo_{i:04d}.jpg"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def _rate(n: int, fn: Callable[[], Any], device: torch.device) -> float:
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return n / (time.perf_counter() - start)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def bench_size(paths: list[Path], size: int, *, batch: int, device: torch.device, workers: int, runtime: str,
               threads: int, model_images: int) -> dict[str, Any]:
    """One input size: rates (images/s) and feature differences."""
    import timm

    row: dict[str, Any] = {"size": size}
    model = create_backbone().to(device).eval()
    cfg = timm.data.resolve_data_config({"input_size": (3, size, size)}, model=model)
    tf = timm.data.create_transform(**cfg)
    batches = [paths[i : i + batch] for i in range(0, len(paths), batch)]

    def timm_e2e(files: list[list[Path]]) -> None:
        with torch.inference_mode():
            for chunk in files:
                x = torch.stack([tf(Image.open(p).convert("RGB")) for p in chunk]).to(device)
                model(x)

    # prepared batches for "model only": the labelloop adapter's own preprocessing of the same files
    adapter = ClassifierAdapter(["a", "b"], image_size=size, features="final", mirror=False, device=device,
                                runtime=runtime, decode_workers=workers, num_threads=threads,
                                runtime_dir=Path(tempfile.gettempdir()) / "labelloop-bench-runtime")
    t0 = time.perf_counter()
    adapter.embed(paths[:batch], batch_size=batch)  # warm-up; exports and compiles once (cached after)
    row["labelloop_first_call_s"] = round(time.perf_counter() - t0, 2)
    row["runtime"] = adapter.runtime if device.type == "cpu" else "torch+autocast"
    from learning.backbones import make_transform

    ev = make_transform(adapter.backbone, image_size=size, train=False)
    from learning.data import load_rgb

    prepared = [torch.stack([ev(load_rgb(p, max_side=size)) for p in paths[i : i + batch]])
                for i in range(0, min(model_images, len(paths)), batch)]
    n_model = sum(len(x) for x in prepared)
    timm_e2e(batches[:1])  # warm-up
    with torch.inference_mode():
        model(prepared[0].to(device))
        row["timm_e2e"] = _rate(len(paths), lambda: timm_e2e(batches), device)
        row["timm_model"] = _rate(n_model, lambda: [model(x.to(device)) for x in prepared], device)
        ref = torch.nn.functional.normalize(model(prepared[0].to(device)).float(), dim=1).cpu().numpy()
    row["labelloop_e2e"] = _rate(len(paths), lambda: adapter.embed(paths, batch_size=batch), device)
    fast = adapter.fast_features()
    with torch.inference_mode():
        if fast is not None:
            row["labelloop_model"] = _rate(n_model, lambda: [fast(x.numpy()) for x in prepared], device)
            ours = fast(prepared[0].numpy())
        else:
            row["labelloop_model"] = _rate(n_model, lambda: [adapter._eager_features(x, False) for x in prepared],
                                           device)
            ours = adapter._eager_features(prepared[0], False).numpy()
    row["feature_rel_diff"] = _rel(ours, ref)
    if device.type == "cpu" and adapter.runtime == "openvino":  # the reduced-precision mode, model only
        half = load_or_export(adapter.backbone, backbone_name=adapter.backbone_name, layers="final", mirror=False,
                              image_size=size, runtime="openvino", precision="bf16", threads=threads,
                              cache_dir=Path(tempfile.gettempdir()) / "labelloop-bench-runtime")
        half(prepared[0].numpy())
        row["openvino_bf16_model"] = _rate(n_model, lambda: [half(x.numpy()) for x in prepared], device)
        row["bf16_feature_rel_diff"] = _rel(half(prepared[0].numpy()), ref)
    row["e2e_ratio"] = row["labelloop_e2e"] / row["timm_e2e"]
    row["model_ratio"] = row["labelloop_model"] / row["timm_model"]
    return row


def table(rows: list[dict[str, Any]]) -> str:
    head = "| px | timm e2e | labelloop e2e | ratio | timm model | labelloop model | ratio | runtime | diff |"
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        lines.append(f"| {r['size']} | {r['timm_e2e']:.1f} | {r['labelloop_e2e']:.1f} | {r['e2e_ratio']:.2f}x | "
                     f"{r['timm_model']:.1f} | {r['labelloop_model']:.1f} | {r['model_ratio']:.2f}x | "
                     f"{r['runtime']} | {r['feature_rel_diff']:.1e} |")
    for r in rows:
        if "openvino_bf16_model" in r:
            lines.append(f"{r['size']} px, OpenVINO bf16 (model only): {r['openvino_bf16_model']:.1f} images/s, "
                         f"feature difference {r['bf16_feature_rel_diff']:.1e} of max |feature|")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=512, help="photos (1024x768 JPEG)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[96, 224])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--device", default="cpu", help="auto, cpu, cuda, cuda:N")
    ap.add_argument("--workers", type=int, default=2, help="labelloop's decode threads")
    ap.add_argument("--threads", type=int, default=2, help="torch / runtime threads")
    ap.add_argument("--runtime", default="auto", help="labelloop's CPU runtime: auto, torch, openvino, onnxruntime")
    ap.add_argument("--model-images", type=int, default=128, help="images in the model-only measurement")
    ap.add_argument("--photos", type=Path, default=None, help="folder for the photos (default: a temp folder)")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    set_num_threads(args.threads)
    folder = args.photos or Path(tempfile.mkdtemp(prefix="bench-embed-"))
    t0 = time.perf_counter()
    paths = sorted(folder.glob("photo_*.jpg"))[: args.n]
    if len(paths) < args.n:
        paths = make_photos(folder, args.n)
    print(f"{len(paths)} photos {WIDTH}x{HEIGHT} in {folder} ({time.perf_counter() - t0:.1f} s); "  # noqa: T201
          f"device {describe_device(device)}, {os.cpu_count()} CPUs, batch {args.batch}", flush=True)
    rows = []
    for size in args.sizes:
        rows.append(bench_size(paths, size, batch=args.batch, device=device, workers=args.workers,
                               runtime=args.runtime, threads=args.threads, model_images=args.model_images))
        print(json.dumps(rows[-1]), flush=True)  # noqa: T201
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    print(table(rows))  # noqa: T201


if __name__ == "__main__":
    main()
