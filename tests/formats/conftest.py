"""Shared label sets for the format tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from service.formats import ImageLabels, LabelSet, Shape


def make_sample() -> LabelSet:
    """Boxes, polygons, scores, multilabel, every provenance, an unused class.

    Images are in file-name order (zip formats read members in name order) and
    each polygon's box is its bounding box (the canonical form).
    """
    return LabelSet(
        classes=["cat", "dog", "bird", "unused"],
        images=[
            ImageLabels(
                file_name="a.jpg", width=640, height=480, labels=["cat"], provenance="human",
                shapes=[
                    Shape("cat", box=[10.0, 20.0, 30.5, 40.25]),
                    Shape("dog", box=[100.0, 100.0, 100.0, 120.0],
                          points=[100.0, 100.0, 200.0, 110.5, 150.0, 220.0]),
                ],
            ),
            ImageLabels(
                file_name="b.png", width=320, height=240, labels=["cat", "dog"],
                provenance="model", score=0.875,
                shapes=[
                    Shape("bird", box=[0.0, 0.0, 320.0, 240.0], score=0.75),
                    Shape("cat", box=[33.3, 12.1, 20.7, 8.9], score=0.5),
                ],
            ),
            ImageLabels(
                file_name="d.jpg", width=64, height=64, provenance="import",
                shapes=[Shape("bird", box=[1.5, 2.5, 30.0, 40.0],
                              points=[1.5, 2.5, 31.5, 2.5, 31.5, 42.5, 1.5, 42.5], score=0.9)],
            ),
            ImageLabels(file_name="e.jpg", width=10, height=20),
            ImageLabels(file_name="sub/c.jpg", width=100, height=50,
                        provenance="model-confirmed", score=0.6),
        ],
    )


def make_classification() -> LabelSet:
    """Image-level labels only, no sizes (what CSV can carry)."""
    return LabelSet(
        classes=["cat", "dog", "bird"],
        images=[
            ImageLabels(file_name="a.jpg", labels=["cat"], provenance="human"),
            ImageLabels(file_name="b.png", labels=["dog", "cat"], provenance="model",
                        score=0.875),
            ImageLabels(file_name="dir/c d,e.jpg", labels=["bird"], provenance="model-confirmed",
                        score=1.0),
            ImageLabels(file_name="e.jpg"),
        ],
    )


def make_source(name: str) -> LabelSet:
    """The richest label set format ``name`` can write."""
    return make_classification() if name == "csv" else make_sample()


@pytest.fixture
def sample() -> LabelSet:
    return make_sample()


@pytest.fixture
def classification() -> LabelSet:
    return make_classification()


@pytest.fixture
def source() -> Callable[[str], LabelSet]:
    """``source(format_name)``: a fresh copy of the label set to test it with."""
    return make_source
