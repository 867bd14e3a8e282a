"""Decoding in threads gives the same batches as decoding in order; the adapter modules form no cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from learning.data import TensorBatches
from learning.runtime_batches import ParallelBatches


def _images(n: int) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)) for _ in range(n)]


def _tf(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image.resize((16, 16)), dtype=np.float32)).permute(2, 0, 1) / 255.0


@pytest.mark.parametrize("workers", [1, 3])
def test_threads_give_the_same_batches(workers: int) -> None:
    images = _images(11)
    ref = list(TensorBatches(images, _tf, batch_size=4, loader=lambda im: im))
    got = list(ParallelBatches(images, _tf, batch_size=4, loader=lambda im: im, workers=workers))
    assert len(got) == len(ref) == 3
    for (x, i), (xr, ir) in zip(got, ref, strict=True):
        assert torch.equal(i, ir) and torch.equal(x, xr) and i.dtype == torch.int64


def test_a_bad_image_raises_in_the_caller() -> None:
    def loader(item: object) -> Image.Image:
        if item == "bad":
            raise ValueError("cannot decode bad")
        return _images(1)[0]

    with pytest.raises(ValueError, match="cannot decode bad"):
        list(ParallelBatches(["ok"] * 5 + ["bad"], _tf, batch_size=2, loader=loader, workers=2))


def test_classifier_fit_does_not_import_the_adapter() -> None:
    import learning.adapters.classifier_fit as fit

    tree = ast.parse(Path(str(fit.__file__)).read_text(encoding="utf-8"))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert "learning.adapters.classifier" not in imported
    assert not any(name and name.startswith("learning.adapters.classifier.") for name in imported)
