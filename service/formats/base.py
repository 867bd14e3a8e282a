"""Shared label model and checks for the annotation formats.

Every format turns bytes into a :class:`LabelSet` (``load``) and back (``dump``).
Coordinates are pixels with a top-left origin; a box is ``[x, y, w, h]`` and a
polygon is a flat ``[x1, y1, x2, y2, ...]`` list. A polygon shape loaded from a
format that stores no box of its own gets ``box = bbox_of(points)``, so the
canonical form of a polygon shape carries both.

Anything wrong with the input raises :class:`FormatError`, whose message names
the format and the place (file, line, element) that is wrong.

``load`` checks that every number in the file is finite, but not that shapes
lie on their image: arithmetic on huge finite input (percent or normalised
values, corners) can still give infinite or out-of-image coordinates.
:func:`fit_image` (with :func:`fit_box` / :func:`fit_points`) is the one
geometry check: it clips a shape that overlaps its image to the image and
refuses, with a reason, one that is non-finite, wholly outside or empty after
clipping. Imports and exports (``service.crud.transfer``) run it on every shape.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
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


class GeometryError(FormatError):
    """A shape that cannot be placed on its image (non-finite, outside, or empty)."""


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


# --- geometry on the image (used before storing and before exporting) --------


@dataclass
class Rejected:
    """A shape that :func:`fit_image` refused: where it was and why."""

    file_name: str
    shape: int  # index in the image's shapes as loaded
    label: str
    reason: str


def _finite(values: Any, count: int | None, what: str) -> list[float]:
    """``values`` as finite floats, else GeometryError (``count`` = exact length)."""
    if not isinstance(values, Sequence) or isinstance(values, str):
        raise GeometryError(f"{what} must be a list of numbers, got {type(values).__name__}")
    if count is not None and len(values) != count:
        raise GeometryError(f"{what} needs {count} numbers, got {len(values)}")
    out = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise GeometryError(f"{what} has a non-finite or missing coordinate {value!r}")
        number = float(value)
        if not math.isfinite(number):
            raise GeometryError(f"{what} has a non-finite coordinate {value!r}")
        out.append(number)
    return out


def _short(values: list[float]) -> str:
    text = ", ".join(f"{v:g}" for v in values[:8])
    return f"[{text}{', ...' if len(values) > 8 else ''}]"


def fit_box(box: Any, width: float, height: float) -> list[float]:
    """``box`` ``[x, y, w, h]`` clipped to a ``width`` x ``height`` image.

    A box inside the image comes back unchanged. GeometryError when it is not
    4 finite numbers, has no positive width and height, lies wholly outside
    the image (touching an edge counts as outside) or is empty after clipping.
    Pass ``math.inf`` for an unknown size: then only the finite and positive
    checks apply, and negative coordinates are clipped to 0.
    """
    x, y, w, h = values = _finite(box, 4, "box")
    if w <= 0 or h <= 0:
        raise GeometryError(f"box {_short(values)} must have positive width and height")
    right, bottom = x + w, y + h  # may overflow to inf: min() below bounds it
    if x >= width or y >= height or right <= 0 or bottom <= 0:
        raise GeometryError(f"box {_short(values)} lies outside the {_size(width, height)} image")
    if x >= 0 and y >= 0 and right <= width and bottom <= height:
        return values
    x0, y0 = max(x, 0.0), max(y, 0.0)
    clipped = [px(x0), px(y0), px(min(right, width) - x0), px(min(bottom, height) - y0)]
    if clipped[2] <= 0 or clipped[3] <= 0:
        raise GeometryError(f"box {_short(values)} is empty after clipping to the "
                            f"{_size(width, height)} image")
    return clipped


def fit_points(points: Any, width: float, height: float) -> list[float]:
    """A flat polygon clipped to a ``width`` x ``height`` image (Sutherland-Hodgman).

    A polygon inside the image comes back unchanged. GeometryError when it is
    not an even number (>= 6) of finite numbers, lies wholly outside the image
    or is empty (fewer than 3 vertices, no width or height) after clipping.
    """
    values = _finite(points, None, "polygon")
    if len(values) < 6 or len(values) % 2:
        raise GeometryError(f"polygon needs an even number (>= 6) of coordinates, "
                            f"got {len(values)}")
    xs, ys = values[0::2], values[1::2]
    if min(xs) >= width or min(ys) >= height or max(xs) <= 0 or max(ys) <= 0:
        raise GeometryError(f"polygon {_short(values)} lies outside the "
                            f"{_size(width, height)} image")
    if min(xs) >= 0 and min(ys) >= 0 and max(xs) <= width and max(ys) <= height:
        if min(max(xs) - min(xs), max(ys) - min(ys)) <= 0:
            raise GeometryError("polygon has zero width or height")
        return values
    ring = list(zip(xs, ys, strict=True))
    for axis, edge, keep_below in ((0, 0.0, False), (0, width, True), (1, 0.0, False),
                                   (1, height, True)):
        if math.isfinite(edge):
            ring = _clip_ring(ring, axis, edge, keep_below)
    clipped: list[tuple[float, float]] = []
    for x, y in ring:
        point = (px(x), px(y))
        if not clipped or clipped[-1] != point:
            clipped.append(point)
    while len(clipped) > 1 and clipped[0] == clipped[-1]:
        clipped.pop()
    flat = [v for point in clipped for v in point]
    if not all(math.isfinite(v) for v in flat):
        raise GeometryError(f"polygon {_short(values)} has non-finite coordinates after clipping")
    if (len(clipped) < 3 or min(flat[0::2]) == max(flat[0::2])
            or min(flat[1::2]) == max(flat[1::2])):
        raise GeometryError(f"polygon {_short(values)} is empty after clipping to the "
                            f"{_size(width, height)} image")
    return flat


def _clip_ring(ring: list[tuple[float, float]], axis: int, edge: float,
               keep_below: bool) -> list[tuple[float, float]]:
    """One Sutherland-Hodgman pass: keep the side of ``coordinate[axis] = edge``."""
    def inside(point: tuple[float, float]) -> bool:
        return point[axis] <= edge if keep_below else point[axis] >= edge

    def crossing(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
        # The crossing is a * far / total + b * near / total. Both distances are
        # finite (edge is a pixel size) but their sum may not be, so halve them;
        # each weight is its own quotient, so a tiny one (a far-away vertex)
        # keeps its precision instead of vanishing in 1 - t.
        near, far = abs(edge - a[axis]) * 0.5, abs(b[axis] - edge) * 0.5
        other = a[1 - axis] * (far / (near + far)) + b[1 - axis] * (near / (near + far))
        return (edge, other) if axis == 0 else (other, edge)

    out: list[tuple[float, float]] = []
    for index, current in enumerate(ring):
        previous = ring[index - 1]
        if inside(current):
            if not inside(previous):
                out.append(crossing(previous, current))
            out.append(current)
        elif inside(previous):
            out.append(crossing(previous, current))
    return out


def _size(width: float, height: float) -> str:
    return "unbounded" if math.isinf(width) else f"{width:g}x{height:g}"


def fit_shape(shape: Shape, width: float, height: float) -> Shape:
    """``shape`` with its box and polygon fitted to the image; GeometryError if it cannot be.

    A polygon's box becomes the bounding box of the clipped polygon when the
    polygon had to be clipped (or its own box does not fit).
    """
    if shape.box is None and shape.points is None:
        raise GeometryError("shape has neither box nor points")
    if shape.points is None:
        return Shape(shape.label, fit_box(shape.box, width, height), None, shape.score)
    points = fit_points(shape.points, width, height)
    box = None
    if shape.box is not None:
        try:
            box = fit_box(shape.box, width, height)
        except GeometryError:
            box = None
        if box is None or points != shape.points:
            box = bbox_of(points)
    return Shape(shape.label, box, points, shape.score)


def fit_image(
    image: ImageLabels, width: float | None = None, height: float | None = None
) -> tuple[int, list[Rejected]]:
    """Fit ``image.shapes`` in place to ``width`` x ``height`` (default: the image's own).

    Shapes that overlap the image are clipped to it; shapes that cannot be
    fitted are dropped. Returns ``(number clipped, the dropped ones with reasons)``.
    An unknown size only checks that coordinates are finite (and clips at 0).
    """
    width = image.width if width is None else width
    height = image.height if height is None else height
    bound_w = math.inf if width is None else width
    bound_h = math.inf if height is None else height
    kept: list[Shape] = []
    rejected: list[Rejected] = []
    clipped = 0
    for index, shape in enumerate(image.shapes):
        try:
            fitted = fit_shape(shape, bound_w, bound_h)
        except GeometryError as exc:
            rejected.append(Rejected(image.file_name, index, str(shape.label), str(exc)))
            continue
        clipped += (fitted.box, fitted.points) != (shape.box, shape.points)
        kept.append(fitted)
    image.shapes = kept
    return clipped, rejected


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
