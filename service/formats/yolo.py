"""YOLO (Ultralytics/Darknet) zip: normalised boxes and polygons.

Layout written by ``dump`` (and read by ``load``)::

    classes.txt              one class name a line, line i = class id i
    data.yaml                ``nc`` and ``names`` (id -> name), Ultralytics style
    labels/<path>.txt        one object a line, <path> = image file name without
                             extension (``images/a.jpg`` -> ``labels/images/a.txt``)
    labelloop.json           sidecar: per label path the image's file name, size,
                             image-level labels, provenance and score

Lines: ``cls cx cy w h`` (a box) or ``cls x1 y1 x2 y2 ...`` (a polygon, at least
3 points), all normalised to ``[0, 1]`` by the image width/height; a trailing
extra value is the score (``save_conf`` style): 6 values = box + score, an even
count >= 8 = polygon + score. A polygon shape is written as a polygon line (its
box is not written; on load the box is the polygon's bounding box).

Without the sidecar (a foreign YOLO dataset) ``load`` takes file names and sizes
from ``image_sizes`` (matched by path without extension, then by stem), and
raises FormatError for a label file with objects whose image size is unknown.
Classes come from ``classes.txt``, ``obj.names`` or ``data.yaml`` ``names``
(list, flow list or ``id: name`` mapping). Label files are the ``*.txt`` under a
``labels/`` folder, or else every ``*.txt`` except the class lists.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from typing import Any

from ._classlist import class_lines, parse_class_lines, parse_yaml_names, yaml_names
from ._io import (
    as_bytes,
    decode_text,
    dump_json,
    fmt_num,
    member_path,
    parse_json,
    read_zip,
    write_zip,
)
from .base import (
    ImageLabels,
    LabelSet,
    Shape,
    as_int,
    as_number,
    as_provenance,
    as_size,
    as_str,
    bbox_of,
    check_box,
    check_line_names,
    check_points,
    dedupe,
    fail,
    lookup_size,
    prepare,
    px,
)

NAME = "yolo"
SIDECAR = "labelloop.json"
_CLASS_LISTS = ("classes.txt", "obj.names")
_YAMLS = ("data.yaml", "data.yml", "dataset.yaml", "dataset.yml")


class YoloFormat:
    """YOLO zip import and export (see the module docstring)."""

    name = NAME
    media_type = "application/zip"
    suffix = ".zip"

    def load(
        self, data: bytes, *, image_sizes: Mapping[str, tuple[int, int]] | None = None
    ) -> LabelSet:
        members = read_zip(as_bytes(data, NAME), NAME)
        classes = _load_classes(members)
        sidecar = _load_sidecar(members)
        files = _label_files(members)
        images = []
        seen: set[str] = set()
        for stem in sorted(set(files) | set(sidecar)):
            entry = sidecar.get(stem, {})
            image = _image_for(stem, entry, image_sizes)
            if image.file_name in seen:
                raise fail(NAME, f"labels/{stem}", f"image {image.file_name!r} appears twice")
            seen.add(image.file_name)
            if stem in files:
                image.shapes = _parse_label_file(members[files[stem]], files[stem],
                                                 classes, image)
            images.append(image)
            for label in image.labels:
                if label not in classes:
                    raise fail(NAME, f"{SIDECAR} {stem!r}", f"label {label!r} is not a class")
        return LabelSet(classes=classes, images=images)

    def dump(self, labels: LabelSet) -> bytes:
        labels = prepare(labels, NAME)
        check_line_names(labels.classes, NAME)
        ids = {name: index for index, name in enumerate(labels.classes)}
        members: dict[str, bytes] = {}
        sidecar: dict[str, dict[str, Any]] = {}
        for image in labels.images:
            stem = member_path(image.file_name, NAME)
            if stem in sidecar:
                raise fail(NAME, f"image {image.file_name!r}",
                           f"another image also maps to labels/{stem}.txt")
            lines = [_shape_line(shape, ids[shape.label], image) for shape in image.shapes]
            members[f"labels/{stem}.txt"] = "".join(line + "\n" for line in lines).encode()
            sidecar[stem] = _sidecar_entry(image)
        members["classes.txt"] = class_lines(labels.classes)
        members["data.yaml"] = yaml_names(labels.classes).encode()
        members[SIDECAR] = dump_json({"version": 1, "images": sidecar})
        return write_zip(members)


def _load_classes(members: dict[str, bytes]) -> list[str]:
    by_depth = sorted(members, key=lambda name: (name.count("/"), name))
    for name in by_depth:
        if posixpath.basename(name) in _CLASS_LISTS:
            return parse_class_lines(decode_text(members[name], NAME, name), NAME, name)
    for name in by_depth:
        if posixpath.basename(name) in _YAMLS:
            return parse_yaml_names(decode_text(members[name], NAME, name), NAME, name)
    raise fail(NAME, "", "no class list: expected classes.txt, obj.names or data.yaml")


def _load_sidecar(members: dict[str, bytes]) -> dict[str, dict[str, Any]]:
    if SIDECAR not in members:
        return {}
    doc = parse_json(members[SIDECAR], NAME, SIDECAR)
    images = doc.get("images") if isinstance(doc, dict) else None
    if not isinstance(images, dict) or not all(isinstance(v, dict) for v in images.values()):
        raise fail(NAME, SIDECAR, "'images' must map label paths to objects")
    return images


def _label_files(members: dict[str, bytes]) -> dict[str, str]:
    texts = [name for name in members if name.endswith(".txt")]
    under = [name for name in texts if "labels" in name.split("/")[:-1]]
    files: dict[str, str] = {}
    for name in under or texts:
        if not under and posixpath.basename(name) in _CLASS_LISTS:
            continue
        parts = name[: -len(".txt")].split("/")
        if under:
            parts = parts[parts[:-1].index("labels") + 1:]
        files["/".join(parts)] = name
    return files


def _image_for(
    stem: str, entry: dict[str, Any], image_sizes: Mapping[str, tuple[int, int]] | None
) -> ImageLabels:
    where = f"{SIDECAR} {stem!r}"
    file_name = entry.get("file_name")
    if file_name is None:
        file_name = _match(stem, image_sizes) or stem
    image = ImageLabels(file_name=as_str(file_name, NAME, f"{where}.file_name"))
    if entry.get("width") is not None and entry.get("height") is not None:
        image.width = as_size(entry["width"], NAME, f"{where}.width")
        image.height = as_size(entry["height"], NAME, f"{where}.height")
    elif (size := lookup_size(image_sizes, image.file_name)) is not None:
        image.width, image.height = size
    labels = entry.get("labels", [])
    if not isinstance(labels, list):
        raise fail(NAME, f"{where}.labels", "must be a list of class names")
    image.labels = dedupe(as_str(name, NAME, f"{where}.labels") for name in labels)
    image.provenance = as_provenance(entry.get("provenance"), NAME, f"{where}.provenance")
    if entry.get("score") is not None:
        image.score = as_number(entry["score"], NAME, f"{where}.score")
    return image


def _match(stem: str, image_sizes: Mapping[str, tuple[int, int]] | None) -> str | None:
    if not image_sizes:
        return None
    names = sorted(image_sizes)
    for name in names:
        if posixpath.splitext(name.replace("\\", "/"))[0] == stem:
            return name
    base = posixpath.basename(stem)
    for name in names:
        if posixpath.splitext(posixpath.basename(name.replace("\\", "/")))[0] == base:
            return name
    return None


def _parse_label_file(
    data: bytes, member: str, classes: list[str], image: ImageLabels
) -> list[Shape]:
    shapes = []
    for number, line in enumerate(decode_text(data, NAME, member).splitlines(), start=1):
        tokens = line.split()
        if not tokens or tokens[0].startswith("#"):
            continue
        where = f"{member} line {number}"
        cls = as_int(tokens[0], NAME, where)
        if not 0 <= cls < len(classes):
            raise fail(NAME, where, f"unknown class id {cls} ({len(classes)} classes)")
        if image.width is None or image.height is None:
            raise fail(NAME, where, f"image size unknown for {image.file_name!r}: "
                       "pass image_sizes to convert normalised coordinates")
        values = [as_number(v, NAME, where) for v in tokens[1:]]
        score = None
        if len(values) in (5,) or (len(values) >= 7 and len(values) % 2 == 1):
            score = values.pop()
        shapes.append(_shape(classes[cls], values, score, image.width, image.height, where))
    return shapes


def _shape(label: str, values: list[float], score: float | None, width: int, height: int,
           where: str) -> Shape:
    if len(values) == 4:
        cx, cy, w, h = values
        box = [px((cx - w / 2) * width), px((cy - h / 2) * height), px(w * width),
               px(h * height)]
        return Shape(label, check_box(box, NAME, where), None, score)
    if len(values) >= 6 and len(values) % 2 == 0:
        points = [px(v * (width if i % 2 == 0 else height)) for i, v in enumerate(values)]
        return Shape(label, bbox_of(points), check_points(points, NAME, where), score)
    raise fail(NAME, where, "expected 'cls cx cy w h [score]' or 'cls x1 y1 ... xn yn [score]'"
               f" (n >= 3), got {len(values) + 1 + (score is not None)} values")


def _shape_line(shape: Shape, cls: int, image: ImageLabels) -> str:
    if image.width is None or image.height is None:
        raise fail(NAME, f"image {image.file_name!r}", "width and height are needed to "
                   "normalise coordinates")
    width, height = image.width, image.height
    if shape.points is not None:
        values = [v / (width if i % 2 == 0 else height) for i, v in enumerate(shape.points)]
    else:
        assert shape.box is not None
        x, y, w, h = shape.box
        values = [(x + w / 2) / width, (y + h / 2) / height, w / width, h / height]
    if shape.score is not None:
        values.append(shape.score)
    return " ".join([str(cls), *(fmt_num(v) for v in values)])


def _sidecar_entry(image: ImageLabels) -> dict[str, Any]:
    entry: dict[str, Any] = {"file_name": image.file_name, "labels": list(image.labels)}
    for key in ("width", "height", "provenance", "score"):
        if getattr(image, key) is not None:
            entry[key] = getattr(image, key)
    return entry
