"""Image loading, batching, splits, head fitting, the epoch loop and atomic writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from learning.adapters.base import EpochStats
from learning.data import TensorBatches, load_rgb, load_thumbnails, stratified_split
from learning.train import (
    LinearHead,
    atomic_directory,
    atomic_save,
    fit_linear_head,
    run_epochs,
    scaled,
    soft_target_loss,
)


def _odd_images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8))
    palette = rgb.convert("P")
    transparent = palette.copy()
    transparent.info["transparency"] = 0
    return [
        rgb,
        rgb.convert("L"),
        rgb.convert("RGBA"),
        rgb.convert("LA"),
        palette,
        transparent,
        rgb.convert("CMYK"),
        Image.fromarray(rng.integers(0, 65535, (20, 30), dtype=np.uint16)),
        rgb.convert("1"),
        Image.fromarray(rng.random((20, 30)).astype(np.float32)),
    ]


def test_load_rgb_accepts_any_mode_and_paths(tmp_path: Path) -> None:
    for i, image in enumerate(_odd_images()):
        out = load_rgb(image)
        assert out.mode == "RGB" and out.size == (30, 20), image.mode
        if image.mode in ("RGB", "L", "RGBA", "P", "CMYK"):
            path = tmp_path / f"{i}.{'jpg' if image.mode == 'CMYK' else 'png'}"
            image.save(path)
            assert load_rgb(path).mode == "RGB"
    white = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert load_rgb(white).getpixel((0, 0)) == (255, 255, 255)


def test_thumbnails_keep_aspect_and_cap_the_short_side() -> None:
    big = Image.new("RGB", (400, 200))
    small = Image.new("L", (28, 28))
    thumbs = load_thumbnails([big, small], image_size=64)
    assert thumbs[0].size == (160, 80)
    assert thumbs[1].size == (28, 28) and thumbs[1].mode == "RGB"


def test_tensor_batches_order_and_seeded_shuffle() -> None:
    sources = list(range(10))

    def transform(i: int) -> torch.Tensor:
        return torch.full((3, 2, 2), float(i))

    plain = list(TensorBatches(sources, transform, batch_size=4, loader=lambda s: s))
    assert [len(idx) for _, idx in plain] == [4, 4, 2]
    assert torch.cat([idx for _, idx in plain]).tolist() == sources
    for x, idx in plain:
        assert torch.equal(x[:, 0, 0, 0], idx.float())
    a = [idx.tolist() for _, idx in TensorBatches(sources, transform, shuffle=True, seed=3, loader=lambda s: s)]
    b = [idx.tolist() for _, idx in TensorBatches(sources, transform, shuffle=True, seed=3, loader=lambda s: s)]
    assert a == b and sorted(sum(a, [])) == sources


def test_stratified_split() -> None:
    labels = np.array([0] * 40 + [1] * 20 + [2])
    keep, held = stratified_split(labels, 0.25, seed=0)
    assert len(np.intersect1d(keep, held)) == 0 and len(keep) + len(held) == len(labels)
    assert np.bincount(labels[held], minlength=3).tolist() == [10, 5, 0]
    keep2, held2 = stratified_split(labels, 0.25, seed=0)
    assert np.array_equal(held, held2)
    assert len(stratified_split(labels[:10], 0.25)[1]) == 0  # too few to carve
    multi = np.array([[1, 0], [1, 1], [0, 1], [0, 0]] * 10)
    keep, held = stratified_split(multi, 0.2, seed=1)
    assert len(held) > 0 and len(keep) + len(held) == 40


def test_linear_head_separates_and_handles_multilabel() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(60, 8, generator=gen)
    y_cls = (x[:, 0] > 0).long()
    head = LinearHead(8, 2)
    fit_linear_head(head, x, nn.functional.one_hot(y_cls, 2).float(), "multiclass", l2=0.1)
    assert (head(x).argmax(1) == y_cls).float().mean() == 1.0
    y_ml = torch.stack([(x[:, 0] > 0), (x[:, 1] > 0), (x[:, 2] > 0)], 1).float()
    head3 = LinearHead(8, 3)
    fit_linear_head(head3, x, y_ml, "multilabel", l2=0.1)
    assert ((head3(x) > 0).float() == y_ml).float().mean() > 0.97
    mask = torch.zeros_like(y_ml)
    with torch.no_grad():
        loss = soft_target_loss(head3(x), y_ml, "multilabel", mask=mask)
    assert float(loss) == 0.0


def test_run_epochs_stops_early_and_restores_the_best_state() -> None:
    module = nn.Linear(1, 1)
    val_losses = [1.0, 0.5, 0.7, 0.8, 0.9, 0.95]
    messages: list[tuple[float, str]] = []

    def train_epoch(epoch: int) -> EpochStats:
        with torch.no_grad():
            module.weight.fill_(float(epoch))
        return EpochStats(epoch=epoch, train_loss=1.0, train_accuracy=0.5, val_loss=val_losses[epoch])

    history, best, stopped = run_epochs(
        epochs=6,
        patience=2,
        train_epoch=train_epoch,
        module=module,
        progress=lambda f, m: messages.append((f, m)),
    )
    assert best == 1 and stopped and len(history) == 4
    assert float(module.weight.detach()) == 1.0
    assert [round(f, 3) for f, _ in messages] == [0.167, 0.333, 0.5, 0.667]


def test_scaled_progress() -> None:
    seen: list[float] = []
    inner = scaled(lambda f, m: seen.append(f), 0.5, 0.7)
    assert inner is not None
    inner(0.5, "x")
    inner(2.0, "y")
    assert seen == pytest.approx([0.6, 0.7])
    assert scaled(None, 0, 1) is None


def test_atomic_save_leaves_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "ckpt.pt"
    atomic_save({"a": torch.ones(2)}, target)
    assert torch.equal(torch.load(target)["a"], torch.ones(2))
    with pytest.raises(Exception):  # noqa: B017 - pickling a lambda fails
        atomic_save({"bad": lambda: 0}, target)
    assert torch.equal(torch.load(target)["a"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]


def test_atomic_directory_swaps_in_or_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "model"
    with atomic_directory(target) as tmp:
        (tmp / "a.txt").write_text("one")
    assert (target / "a.txt").read_text() == "one"
    with pytest.raises(RuntimeError), atomic_directory(target) as tmp:
        (tmp / "a.txt").write_text("two")
        raise RuntimeError("crash while writing")
    assert (target / "a.txt").read_text() == "one"
    with atomic_directory(target) as tmp:
        (tmp / "b.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
