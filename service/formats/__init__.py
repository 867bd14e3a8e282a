"""Annotation formats: import (``load``) and export (``dump``) of label sets.

``get_format("coco").load(data, image_sizes=...)`` gives a :class:`LabelSet`;
``.dump(labels)`` gives bytes of ``.media_type`` to save with ``.suffix``.
Every problem with the input is a :class:`FormatError`. Each module's
docstring states its conventions and what the format cannot carry.
"""

from __future__ import annotations

from .base import PROVENANCES, Format, FormatError, ImageLabels, LabelSet, Shape
from .coco import CocoFormat
from .csv_format import CsvFormat
from .cvat_xml import CvatFormat
from .labelstudio import LabelStudioFormat, labeling_config
from .voc import VocFormat
from .yolo import YoloFormat

FORMATS: dict[str, Format] = {
    fmt.name: fmt
    for fmt in (CocoFormat(), YoloFormat(), VocFormat(), CvatFormat(), LabelStudioFormat(),
                CsvFormat())
}
"""Registered formats by name: coco, yolo, voc, cvat, labelstudio, csv."""


def get_format(name: str) -> Format:
    """The format registered as ``name``; FormatError naming the known keys."""
    try:
        return FORMATS[name]
    except (KeyError, TypeError):
        raise FormatError(
            f"unknown annotation format {name!r} (known: {', '.join(sorted(FORMATS))})"
        ) from None


__all__ = [
    "FORMATS",
    "PROVENANCES",
    "CocoFormat",
    "CsvFormat",
    "CvatFormat",
    "Format",
    "FormatError",
    "ImageLabels",
    "LabelSet",
    "LabelStudioFormat",
    "Shape",
    "VocFormat",
    "YoloFormat",
    "get_format",
    "labeling_config",
]
