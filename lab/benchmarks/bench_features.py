"""How good a ``fast`` head is on each ``features`` setting, on random Fashion-MNIST labels.

Embeds ``--images`` Fashion-MNIST training images (seeded draw) once per setting with
the classifier adapter, then, for each number of labels and each of ``--reps`` random
splits, fits the adapter's ``fast`` head (the same code and regularisation as a project's
training) on that many images and predicts the rest. Prints accuracy on the rest and the
best-in-hindsight coverage: the largest share of the rest, most confident first, whose
precision is still the target (what a perfect certificate could pre-label).

    .venv/bin/python lab/benchmarks/bench_features.py --images 6000 --labels 800,1600 --reps 3
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lab.fashion import FASHION_CLASSES, FASHION_DIR, load_fashion  # noqa: E402
from learning.adapters import FitConfig, FitEmbeddings, LabelledImages, create_adapter  # noqa: E402
from learning.adapters.classifier import ClassifierAdapter  # noqa: E402
from learning.backbones import FEATURE_LAYERS  # noqa: E402


def hindsight_coverage(scores: np.ndarray, correct: np.ndarray, target: float) -> float:
    """Largest share of items, highest score first, whose precision is at least ``target``."""
    order = np.argsort(-scores, kind="stable")
    precision = np.cumsum(correct[order]) / np.arange(1, len(order) + 1)
    ok = np.flatnonzero(precision >= target)
    return float(ok.max() + 1) / len(order) if len(ok) else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=6000)
    ap.add_argument("--labels", default="800,1600", help="labelled images per fit, comma-separated")
    ap.add_argument("--reps", type=int, default=3, help="random splits per number of labels")
    ap.add_argument("--seed", type=int, default=200, help="the images' draw")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--target", type=float, default=0.95)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    x, y = load_fashion(FASHION_DIR, args.images, args.seed)
    images = [Image.fromarray(a) for a in x]
    print(f"{args.images} Fashion-MNIST images (seed {args.seed}), {args.image_size} px, target {args.target}")
    print("| features | labels | accuracy on the rest | best-in-hindsight coverage | embed seconds |")
    print("| --- | --- | --- | --- | --- |")
    for layers in FEATURE_LAYERS:
        adapter = create_adapter("classifier", classes=FASHION_CLASSES, image_size=args.image_size,
                                 num_threads=args.threads, features=layers)
        assert isinstance(adapter, ClassifierAdapter)  # its fit takes precomputed embeddings
        t0 = time.perf_counter()
        vecs = adapter.embed(images)
        embed_s = time.perf_counter() - t0
        for n in (int(v) for v in args.labels.split(",")):
            rng = np.random.default_rng(0)
            acc, cov = [], []
            for _ in range(args.reps):
                idx = rng.permutation(len(y))
                tr, rest = idx[:n], idx[n:]
                report = adapter.fit(
                    LabelledImages([images[i] for i in tr], y[tr]), LabelledImages([images[i] for i in rest], y[rest]),
                    config=FitConfig(image_size=args.image_size), embeddings=FitEmbeddings(vecs[tr], vecs[rest]))
                probs = report.holdout_probs
                assert probs is not None
                right = probs.argmax(1) == y[rest]
                acc.append(right.mean())
                cov.append(hindsight_coverage(probs.max(1), right, args.target))
            print(f"| {layers} | {n} | {np.mean(acc):.3f} | {np.mean(cov):.3f} | {embed_s:.0f} |", flush=True)


if __name__ == "__main__":
    main()
