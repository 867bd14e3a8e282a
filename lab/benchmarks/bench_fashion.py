"""Timing / accuracy check of the classifier adapter on Fashion-MNIST (not collected by pytest).

Needs Debian's ``dataset-fashion-mnist`` (IDX files under /usr/share/datasets/fashion-mnist/).
Writes the chosen items as 28x28 PNGs into a temp folder so that decoding is counted.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python lab/benchmarks/bench_fashion.py \
        --n-train 1000 --n-test 2000 --image-size 64 --algorithms fast precise
"""

from __future__ import annotations

import argparse
import gzip
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from learning.adapters import FitConfig, LabelledImages, create_adapter

ROOT = Path("/usr/share/datasets/fashion-mnist")


def read_idx(name: str) -> np.ndarray:
    with gzip.open(ROOT / name, "rb") as fh:
        data = fh.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def write_pngs(images: np.ndarray, folder: Path, prefix: str) -> list[Path]:
    paths = []
    for i, img in enumerate(images):
        path = folder / f"{prefix}{i:05d}.png"
        Image.fromarray(img, mode="L").save(path)
        paths.append(path)
    return paths


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-train", type=int, default=1000)
    ap.add_argument("--n-test", type=int, default=2000)
    ap.add_argument("--n-unlabelled", type=int, default=0)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--algorithms", nargs="+", default=["fast"])
    ap.add_argument("--head-l2", type=float, default=FitConfig.head_l2)
    ap.add_argument("--lr", type=float, default=FitConfig.lr)
    ap.add_argument("--backbone-lr-mult", type=float, default=FitConfig.backbone_lr_mult)
    ap.add_argument("--unfreeze-stages", type=int, default=FitConfig.unfreeze_stages)
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    x_train, y_train = read_idx("train-images-idx3-ubyte.gz"), read_idx("train-labels-idx1-ubyte.gz")
    x_test, y_test = read_idx("t10k-images-idx3-ubyte.gz"), read_idx("t10k-labels-idx1-ubyte.gz")
    order = rng.permutation(len(x_train))
    tr = order[: args.n_train]
    un = order[args.n_train : args.n_train + args.n_unlabelled]
    te = rng.permutation(len(x_test))[: args.n_test]
    classes = [str(c) for c in range(10)]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        train_paths = write_pngs(x_train[tr], folder, "tr")
        unl_paths = write_pngs(x_train[un], folder, "un")
        test_paths = write_pngs(x_test[te], folder, "te")
        for algo in args.algorithms:
            adapter = create_adapter(
                "classifier", classes=classes, image_size=args.image_size, num_threads=args.threads
            )
            config = FitConfig(
                algorithm=algo,
                epochs=args.epochs,
                image_size=args.image_size,
                num_threads=args.threads,
                head_l2=args.head_l2,
                lr=args.lr,
                backbone_lr_mult=args.backbone_lr_mult,
                unfreeze_stages=args.unfreeze_stages,
                use_unlabelled=bool(len(unl_paths)),
                unlabelled=unl_paths,
            )
            t0 = time.perf_counter()
            report = adapter.fit(LabelledImages(train_paths, y_train[tr].astype(np.int64)), None, config=config)
            fit_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            probs = adapter.predict(test_paths, batch_size=64).probs
            pred_s = time.perf_counter() - t0
            acc = float((probs.argmax(1) == y_test[te]).mean())
            print(
                f"{algo}: size {args.image_size}px, {args.n_train} train, "
                f"{len(unl_paths)} unlabelled, threads {args.threads}"
            )
            print(
                f"  fit {fit_s:.1f}s (embedding {report.embed_seconds:.1f}s, "
                f"rest {fit_s - report.embed_seconds:.1f}s), epochs {report.epochs_run}, "
                f"stopped_early {report.stopped_early}"
            )
            if algo == "fast":
                print(f"  embedding rate {args.n_train / report.embed_seconds:.0f} img/s (train)")
            print(
                f"  predict {len(test_paths)} test images: {pred_s:.1f}s "
                f"({len(test_paths) / pred_s:.0f} img/s); test accuracy {acc:.3f}"
            )
            for h in report.history:
                print(f"    {h}")


if __name__ == "__main__":
    main()
