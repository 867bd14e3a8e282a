"""Fashion-MNIST for the simulators: the IDX files Debian's ``dataset-fashion-mnist`` installs."""

from __future__ import annotations

import gzip
import io
import struct
from pathlib import Path

import numpy as np
from PIL import Image

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                   "ankle-boot"]


def load_idx(images: Path, labels: Path) -> tuple[np.ndarray, np.ndarray]:
    """IDX files (gzipped or not) -> ``uint8 [N, H, W]``, ``int64 [N]``."""
    def read(p: Path) -> bytes:
        data = p.read_bytes()
        return gzip.decompress(data) if p.suffix == ".gz" else data
    raw = read(images)
    _, n, h, w = struct.unpack(">IIII", raw[:16])
    x = np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(n, h, w)
    rawy = read(labels)
    y = np.frombuffer(rawy, dtype=np.uint8, offset=8).astype(np.int64)
    return x, y


def load_fashion(root: Path, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` training images of the set in ``root``, a seeded draw: ``uint8 [n, 28, 28]``, ``int64 [n]``."""
    x, y = load_idx(root / "train-images-idx3-ubyte.gz", root / "train-labels-idx1-ubyte.gz")
    idx = np.random.default_rng(seed).permutation(len(x))[:n]
    return x[idx], y[idx]


def png(a: np.ndarray) -> bytes:
    """``uint8 [H, W]`` (or ``[H, W, 3]``) -> PNG bytes."""
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()
