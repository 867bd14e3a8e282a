"""Shared label model and checks for the annotation formats.

Every format turns bytes into a :class:`LabelSet` (``load``) and back (``dump``).
Coordinates are pixels with a top-left origin; a box is ``[x, y, w, h]`` and a
polygon is a flat ``[x1, y1, x2, y2, ...]`` list. A polygon shape loaded from a
format that stores no box of its own gets ``box = bbox_of(points)``, so the
canonical form of a polygon shape carries both.

Anything wrong with the input raises :class:`FormatError`, whose message names
the format and the place (file, line, element) that is wrong.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

PROVENANCES = ("human", "model", "model-confirmed", "import")
"""Allowed values of :attr:`ImageLabels.provenance`."""

PIXEL_DECIMALS = 6
"""Pixel coordinates computed from normalised, percent or corner values are
rounded to this many decimals, so that ``dump`` then ``load`` gives back the
same numbers (the float error of ``x / w * w`` is far below 1e-6 px)."""


class FormatError(ValueError):
    """Input that a format cannot read, or labels that it cannot write."""


@dataclass
class Shape:
    """One object: a box, a polygon (with its bounding box), or both."""

    label: str
    box: list[float] | None = None  # [x, y, w, h] in pixels, top-left origin
    points: list[float] | None = None  # flat [x1, y1, x2, y2, ...] in pixels
    score: float | None = None  # model score when it is a prediction


@dataclass
class ImageLabels:
    """The labels of one image."""

    file_name: str  # relative name as given in the file (basename or path)
    width: int | None = None
    height: int | None = None
    labels: list[str] = field(default_factory=list)  # image-level classes
    shapes: list[Shape] = field(default_factory=list)
    provenance: str | None = None  # one of PROVENANCES
    score: float | None = None  # image-level model score (pre-labels)


@dataclass
class LabelSet:
    """Ordered class names and the labelled images."""

    classes: list[str]
    images: list[ImageLabels]


@runtime_checkable
class Format(Protocol):
    """An annotation format that reads and writes a :class:`LabelSet`."""

    name: str
    media_type: str  # of the export
    suffix: str  # ".json", ".zip", ".xml", ".csv"

    def load(
        self, data: bytes, *, image_sizes: Mapping[str, tuple[int, int]] | None = None
    ) -> LabelSet: ...

    def dump(self, labels: LabelSet) -> bytes: ...


# --- value checks (used while loading) --------------------------------------


def fail(fmt: str, where: str, message: str) -> FormatError:
    """Build a FormatError reading ``"<fmt>: <where>: <message>"``."""
    return FormatError(f"{fmt}: {where}: {message}" if where else f"{fmt}: {message}")


def as_number(value: Any, fmt: str, where: str) -> float:
    """A finite float from a JSON/XML/text value, else FormatError."""
    if isinstance(value, bool):
        raise fail(fmt, where, f"expected a number, got {value!r}")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise fail(fmt, where, f"expected a number, got {value!r}") from None
    if not isinstance(value, numbers.Real):  # also numpy scalars
        raise fail(fmt, where, f"expected a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise fail(fmt, where, f"expected a finite number, got {value!r}")
    return number


def as_int(value: Any, fmt: str, where: str) -> int:
    """An integer (``3`` or ``"3"``; not ``3.5`` or ``True``), else FormatError."""
    if isinstance(value, bool):
        raise fail(fmt, where, f"expected an integer, got {value!r}")
    if isinstance(value, numbers.Integral):  # also numpy integers
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise fail(fmt, where, f"expected an integer, got {value!r}")


def as_str(value: Any, fmt: str, where: str) -> str:
    """A non-empty string, else FormatError."""
    if not isinstance(value, str) or not value:
        raise fail(fmt, where, f"expected a non-empty string, got {value!r}")
    return value


def as_size(value: Any, fmt: str, where: str) -> int:
    """A positive image dimension, else FormatError."""
    size = as_int(value, fmt, where)
    if size <= 0:
        raise fail(fmt, where, f"image size must be > 0, got {size}")
    return size


def as_provenance(value: Any, fmt: str, where: str) -> str | None:
    """One of PROVENANCES, or None for an empty value."""
    if value is None or value == "":
        return None
    if value not in PROVENANCES:
        raise fail(fmt, where, f"unknown provenance {value!r} (known: {', '.join(PROVENANCES)})")
    return str(value)


def px(value: float) -> float:
    """Round a computed pixel coordinate to PIXEL_DECIMALS (and -0.0 to 0.0)."""
    return round(value, PIXEL_DECIMALS) + 0.0


def check_box(box: list[float], fmt: str, where: str) -> list[float]:
    """``box`` if it has a positive width and height, else FormatError."""
    if box[2] <= 0 or box[3] <= 0:
        raise fail(fmt, where, f"box must have positive width and height, got {box}")
    return box


def check_points(points: list[float], fmt: str, where: str) -> list[float]:
    """``points`` if it is a polygon of >= 3 vertices spanning some area, else FormatError."""
    if len(points) < 6 or len(points) % 2:
        raise fail(fmt, where, f"polygon needs an even number (>= 6) of coordinates, "
                   f"got {len(points)}")
    if min(bbox_of(points)[2:]) <= 0:
        raise fail(fmt, where, "polygon has zero width or height")
    return points


def bbox_of(points: list[float]) -> list[float]:
    """Bounding box ``[x, y, w, h]`` of a flat polygon."""
    xs, ys = points[0::2], points[1::2]
    x0, y0 = min(xs), min(ys)
    return [x0, y0, px(max(xs) - x0), px(max(ys) - y0)]


def polygon_area(points: list[float]) -> float:
    """Area of a flat polygon (shoelace formula), always >= 0."""
    xs, ys = points[0::2], points[1::2]
    n = len(xs)
    twice = sum(xs[i] * ys[(i + 1) % n] - xs[(i + 1) % n] * ys[i] for i in range(n))
    return abs(twice) / 2.0


def shape_box(shape: Shape) -> list[float]:
    """The shape's box, or the bounding box of its polygon."""
    if shape.box is not None:
        return list(shape.box)
    assert shape.points is not None  # prepare() guarantees one of them
    return bbox_of(shape.points)


def dedupe(names: Iterable[str]) -> list[str]:
    """Names in first-seen order without repeats."""
    return list(dict.fromkeys(names))


def lookup_size(
    image_sizes: Mapping[str, tuple[int, int]] | None, file_name: str
) -> tuple[int, int] | None:
    """``(width, height)`` for ``file_name`` by exact name, else by basename."""
    if not image_sizes:
        return None
    key: str | None = file_name if file_name in image_sizes else None
    base = file_name.replace("\\", "/").rsplit("/", 1)[-1]
    for name in sorted(image_sizes) if key is None else ():
        if name.replace("\\", "/").rsplit("/", 1)[-1] == base:
            key = name
            break
    if key is None:
        return None
    try:
        width, height = image_sizes[key]
    except (TypeError, ValueError):
        raise fail("image_sizes", key, "expected (width, height)") from None
    return as_size(width, "image_sizes", key), as_size(height, "image_sizes", key)


# --- whole-set check (used before dumping) ----------------------------------


def prepare(labels: LabelSet, fmt: str) -> LabelSet:
    """A checked copy of ``labels`` with plain Python values (no numpy scalars).

    Raises FormatError when ``labels`` is not something any format may write:
    duplicate classes or file names, labels outside ``classes``, bad sizes,
    provenance or scores, shapes without geometry or with a non-positive box.
    """
    classes = [as_str(name, fmt, "classes") for name in labels.classes]
    if len(set(classes)) != len(classes):
        raise fail(fmt, "classes", "duplicate class names")
    known = set(classes)
    seen: set[str] = set()
    images = []
    for index, image in enumerate(labels.images):
        file_name = as_str(image.file_name, fmt, f"images[{index}].file_name")
        where = f"image {file_name!r}"
        if file_name in seen:
            raise fail(fmt, where, "file name appears twice")
        seen.add(file_name)
        width, height = (None if dim is None else as_size(dim, fmt, where)
                         for dim in (image.width, image.height))
        names = [as_str(name, fmt, where) for name in image.labels]
        if len(set(names)) != len(names):
            raise fail(fmt, where, f"duplicate image labels {names}")
        for name in names:
            if name not in known:
                raise fail(fmt, where, f"label {name!r} is not in classes")
        images.append(ImageLabels(
            file_name, width, height, names,
            [_prepare_shape(shape, known, fmt, f"{where} shape {number}")
             for number, shape in enumerate(image.shapes)],
            as_provenance(image.provenance, fmt, where),
            None if image.score is None else as_number(image.score, fmt, f"{where} score"),
        ))
    return LabelSet(classes, images)


def check_line_names(classes: list[str], fmt: str) -> None:
    """FormatError when a class name cannot be one line of a class-list file."""
    for name in classes:
        if "\n" in name or "\r" in name or name != name.strip():
            raise fail(fmt, "classes", f"class name {name!r} has a line break or outer spaces")


def _prepare_shape(shape: Shape, known: set[str], fmt: str, where: str) -> Shape:
    if shape.label not in known:
        raise fail(fmt, where, f"label {shape.label!r} is not in classes")
    if shape.box is None and shape.points is None:
        raise fail(fmt, where, "shape has neither box nor points")
    box = points = score = None
    if shape.box is not None:
        if len(shape.box) != 4:
            raise fail(fmt, where, f"box needs 4 numbers, got {len(shape.box)}")
        box = check_box([as_number(v, fmt, where) for v in shape.box], fmt, where)
    if shape.points is not None:
        points = check_points([as_number(v, fmt, where) for v in shape.points], fmt, where)
    if shape.score is not None:
        score = as_number(shape.score, fmt, where)
    return Shape(str(shape.label), box, points, score)
