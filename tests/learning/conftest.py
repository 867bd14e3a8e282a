"""Fixtures for the learning tests: tiny images drawn here (no downloads, no datasets)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from PIL import Image

COLOURS = {"red": (200, 40, 40), "blue": (40, 40, 200), "green": (40, 190, 40)}


def _colour_images(
    labels: list[int], colours: list[str], *, size: int = 32, noise: float = 35.0, seed: int = 0
) -> list[Image.Image]:
    """One noisy image of ``colours[label]`` per label, with a random darker square in it."""
    rng = np.random.default_rng(seed)
    images = []
    for label in labels:
        base = np.array(COLOURS[colours[label]], dtype=np.float64)
        arr = base * rng.uniform(0.7, 1.15) + rng.normal(0, noise, (size, size, 3))
        x, y, w = rng.integers(0, size // 2), rng.integers(0, size // 2), rng.integers(4, size // 2)
        arr[y : y + w, x : x + w] *= 0.6
        images.append(Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)))
    return images


def _two_colour(n_per_class: int, *, seed: int) -> tuple[list[Image.Image], np.ndarray]:
    """Red vs blue images: ``(images [2n], labels [2n])`` shuffled."""
    labels = np.random.default_rng(seed).permutation(np.repeat([0, 1], n_per_class))
    return _colour_images(labels.tolist(), ["red", "blue"], seed=seed), labels


def _channel_presence(n: int, *, seed: int, size: int = 32) -> tuple[list[Image.Image], np.ndarray]:
    """Multilabel: each of R, G, B is present (bright) or absent; ``labels [n, 3]`` {0, 1}."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, (n, 3))
    images = []
    for row in labels:
        arr = np.where(row[None, None, :] > 0, 210.0, 25.0) + rng.normal(0, 20, (size, size, 3))
        images.append(Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)))
    return images, labels


@pytest.fixture
def two_colour() -> Callable[..., tuple[list[Image.Image], np.ndarray]]:
    """Factory ``two_colour(n_per_class, seed=...)`` -> (images, labels [N] in {0, 1})."""
    return _two_colour


@pytest.fixture
def channel_presence() -> Callable[..., tuple[list[Image.Image], np.ndarray]]:
    """Factory ``channel_presence(n, seed=...)`` -> (images, labels [N, 3])."""
    return _channel_presence


@pytest.fixture(autouse=True)
def _two_threads() -> None:
    torch.set_num_threads(2)
