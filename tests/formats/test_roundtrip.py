"""dump -> load gives back what each format can carry; output is deterministic.

What each format cannot carry (and so what ``expected`` removes):

* coco, yolo: nothing lost.
* voc: polygons (written as their boxes).
* cvat: scores; provenance of an image without shapes or tags.
* labelstudio: classes no image uses.
* csv: shapes (refused), image sizes, unused classes.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from service.formats import FORMATS, Format, FormatError, LabelSet, get_format


def _used_classes(labels: LabelSet) -> list[str]:
    """Classes in order of first use, image by image, shapes before image labels."""
    first: list[str] = []
    for image in labels.images:
        for name in [s.label for s in image.shapes] + image.labels:
            if name not in first:
                first.append(name)
    return first


def _voc(labels: LabelSet) -> LabelSet:
    for image in labels.images:
        for shape in image.shapes:
            shape.points = None
    return labels


def _cvat(labels: LabelSet) -> LabelSet:
    for image in labels.images:
        image.score = None
        for shape in image.shapes:
            shape.score = None
        if not image.shapes and not image.labels:
            image.provenance = None
    return labels


def _labelstudio(labels: LabelSet) -> LabelSet:
    labels.classes = _used_classes(labels)
    return labels


def _csv(labels: LabelSet) -> LabelSet:
    labels.classes = _used_classes(labels)
    for image in labels.images:
        image.width = image.height = None
    return labels


Source = Callable[[str], LabelSet]

EXPECTED: dict[str, Callable[[LabelSet], LabelSet]] = {
    "coco": lambda labels: labels,
    "yolo": lambda labels: labels,
    "voc": _voc,
    "cvat": _cvat,
    "labelstudio": _labelstudio,
    "csv": _csv,
}


def test_registry_has_all_formats() -> None:
    assert sorted(FORMATS) == ["coco", "csv", "cvat", "labelstudio", "voc", "yolo"]
    for name, fmt in FORMATS.items():
        assert fmt.name == name and isinstance(fmt, Format)
        assert fmt.suffix.startswith(".") and "/" in fmt.media_type
        assert get_format(name) is fmt


def test_unknown_format_names_the_known_keys() -> None:
    with pytest.raises(FormatError, match="coco.*yolo|known: coco, csv, cvat"):
        get_format("tfrecord")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_round_trip(name: str, source: Source) -> None:
    fmt = get_format(name)
    loaded = fmt.load(fmt.dump(source(name)))
    assert loaded == EXPECTED[name](source(name))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_dump_is_deterministic_and_idempotent(name: str, source: Source) -> None:
    fmt = get_format(name)
    first = fmt.dump(source(name))
    assert fmt.dump(source(name)) == first
    assert fmt.dump(fmt.load(first)) == first


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_dump_does_not_modify_its_input(name: str, source: Source) -> None:
    labels = source(name)
    get_format(name).dump(labels)
    assert labels == source(name)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_empty_label_set_round_trips(name: str) -> None:
    fmt = get_format(name)
    empty = LabelSet(classes=[], images=[])
    if name == "voc":  # VOC needs at least one annotation file to be recognised
        with pytest.raises(FormatError, match="no VOC XML"):
            fmt.load(fmt.dump(empty))
        return
    assert fmt.load(fmt.dump(empty)) == empty


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_dump_refuses_labels_outside_classes(name: str, source: Source) -> None:
    labels = source(name)
    labels.classes.remove("cat")
    with pytest.raises(FormatError, match="'cat' is not in classes"):
        get_format(name).dump(labels)


def test_unicode_names_round_trip(source: Source) -> None:
    for name in ("coco", "yolo", "voc", "cvat", "labelstudio", "csv"):
        fmt = get_format(name)
        labels = source(name)
        labels.classes[0] = "chat noir é"
        for image in labels.images:
            image.labels = ["chat noir é" if x == "cat" else x for x in image.labels]
            for shape in image.shapes:
                if shape.label == "cat":
                    shape.label = "chat noir é"
        loaded = fmt.load(fmt.dump(copy.deepcopy(labels)))
        assert loaded == EXPECTED[name](copy.deepcopy(labels)), name


def _numpy(value: float) -> Any:
    """float32 where that is exact (so that bytes can be compared), else float64."""
    return np.float32(value) if float(np.float32(value)) == value else np.float64(value)


def _int(kind: Any, value: int) -> Any:
    return kind(value)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_numpy_values_are_written_as_plain_numbers(name: str, source: Source) -> None:
    labels = source(name)
    for image in labels.images:
        if image.width is not None and image.height is not None:
            image.width, image.height = _int(np.int64, image.width), _int(np.int32, image.height)
        image.score = None if image.score is None else _numpy(image.score)
        for shape in image.shapes:
            shape.box = None if shape.box is None else [_numpy(v) for v in shape.box]
            shape.score = None if shape.score is None else _numpy(shape.score)
    fmt = get_format(name)
    assert fmt.dump(labels) == fmt.dump(source(name))
