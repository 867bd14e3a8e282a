"""Pascal VOC XML (one ``<annotation>`` per image), as a zip or a single file.

Coordinates: VOC numbers pixels from 1 and its ``xmax``/``ymax`` are inclusive
(the last pixel column/row of the object). labelloop boxes are continuous
0-based ``[x, y, w, h]``, so (as in Detectron2 and MMDetection)::

    xmin = x + 1      ymin = y + 1      xmax = x + w      ymax = y + h
    x = xmin - 1      y = ymin - 1      w = xmax - xmin + 1   h = ymax - ymin + 1

A full-image box ``[0, 0, W, H]`` is ``1, 1, W, H``. Integral values are written
as integers, others with full precision.

``dump`` writes ``Annotations/<path>.xml`` per image (``<path>`` = file name
without extension) and ``classes.txt`` (one class a line, the class order);
``load`` reads every ``*.xml`` under an ``Annotations/`` folder (else every
``*.xml``) in name order, or one bare XML document. Without ``classes.txt`` the
classes are the object names in order of first appearance; with it, a name
not in it is a FormatError.

VOC has no polygons: a polygon shape is written as its box (points are lost).
Image-level labels, provenance and the image score go in a ``<labelloop>``
element (``<provenance>``, ``<score>``, ``<label>``...) that VOC tools
ignore; a shape's score is a ``<score>`` element inside its ``<object>``.
Sizes missing from ``<size>`` are taken from ``image_sizes``. ``difficult``,
``truncated`` and ``pose`` are read but not kept (written as 0 / Unspecified).
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from xml.etree.ElementTree import Element, SubElement

from ._classlist import class_lines, parse_class_lines
from ._io import (
    as_bytes,
    decode_text,
    fmt_num,
    is_zip,
    member_path,
    parse_xml,
    read_zip,
    write_zip,
    xml_bytes,
)
from .base import (
    ImageLabels,
    LabelSet,
    Shape,
    as_number,
    as_provenance,
    as_size,
    as_str,
    check_box,
    check_line_names,
    dedupe,
    fail,
    lookup_size,
    prepare,
    px,
    shape_box,
)

NAME = "voc"
CLASSES = "classes.txt"


class VocFormat:
    """Pascal VOC import and export (see the module docstring)."""

    name = NAME
    media_type = "application/zip"
    suffix = ".zip"

    def load(
        self, data: bytes, *, image_sizes: Mapping[str, tuple[int, int]] | None = None
    ) -> LabelSet:
        data = as_bytes(data, NAME)
        if is_zip(data):
            members = read_zip(data, NAME)
        else:
            members = {"annotation.xml": data}
        xmls = sorted(name for name in members if name.lower().endswith(".xml"))
        under = [name for name in xmls if "Annotations" in name.split("/")[:-1]]
        classes: list[str] | None = None
        class_file = next((n for n in sorted(members) if posixpath.basename(n) == CLASSES), None)
        if class_file is not None:
            text = decode_text(members[class_file], NAME, class_file)
            classes = parse_class_lines(text, NAME, class_file)
        images = [_load_xml(members[name], name, image_sizes) for name in under or xmls]
        if not images:
            raise fail(NAME, "", "no VOC XML files found")
        seen: set[str] = set()
        for image in images:
            if image.file_name in seen:
                raise fail(NAME, f"image {image.file_name!r}", "file name appears twice")
            seen.add(image.file_name)
        used = dedupe([s.label for im in images for s in im.shapes] +
                      [label for im in images for label in im.labels])
        if classes is None:
            classes = used
        for label in used:
            if label not in classes:
                raise fail(NAME, class_file or "", f"class {label!r} is not in {CLASSES}")
        return LabelSet(classes=classes, images=images)

    def dump(self, labels: LabelSet) -> bytes:
        labels = prepare(labels, NAME)
        check_line_names(labels.classes, NAME)
        members: dict[str, bytes] = {}
        for image in labels.images:
            path = f"Annotations/{member_path(image.file_name, NAME)}.xml"
            if path in members:
                raise fail(NAME, f"image {image.file_name!r}", f"another image maps to {path}")
            members[path] = xml_bytes(_dump_xml(image))
        members[CLASSES] = class_lines(labels.classes)
        return write_zip(members)


def _text(parent: Element, tag: str) -> str | None:
    child = parent.find(tag)
    if child is None or child.text is None or not child.text.strip():
        return None
    return child.text.strip()


def _load_xml(
    data: bytes, member: str, image_sizes: Mapping[str, tuple[int, int]] | None
) -> ImageLabels:
    root = parse_xml(data, NAME, member)
    if root.tag != "annotation":
        raise fail(NAME, member, f"root element must be <annotation>, got <{root.tag}>")
    file_name = _text(root, "filename")
    image = ImageLabels(file_name=as_str(file_name, NAME, f"{member} <filename>"))
    size = root.find("size")
    if size is not None and _text(size, "width") and _text(size, "height"):
        image.width = as_size(_text(size, "width"), NAME, f"{member} <size><width>")
        image.height = as_size(_text(size, "height"), NAME, f"{member} <size><height>")
    elif (known := lookup_size(image_sizes, image.file_name)) is not None:
        image.width, image.height = known
    for number, obj in enumerate(root.findall("object")):
        image.shapes.append(_load_object(obj, f"{member} <object> {number}"))
    extra = root.find("labelloop")
    if extra is not None:
        where = f"{member} <labelloop>"
        image.provenance = as_provenance(_text(extra, "provenance"), NAME, where)
        if (score := _text(extra, "score")) is not None:
            image.score = as_number(score, NAME, f"{where}<score>")
        image.labels = dedupe(as_str((el.text or "").strip(), NAME, f"{where}<label>")
                              for el in extra.findall("label"))
    return image


def _load_object(obj: Element, where: str) -> Shape:
    label = as_str(_text(obj, "name"), NAME, f"{where} <name>")
    bndbox = obj.find("bndbox")
    if bndbox is None:
        raise fail(NAME, where, "missing <bndbox>")
    corners = [as_number(_text(bndbox, key), NAME, f"{where} <{key}>")
               for key in ("xmin", "ymin", "xmax", "ymax")]
    xmin, ymin, xmax, ymax = corners
    box = [px(xmin - 1), px(ymin - 1), px(xmax - xmin + 1), px(ymax - ymin + 1)]
    score_text = _text(obj, "score")
    score = None if score_text is None else as_number(score_text, NAME, f"{where} <score>")
    return Shape(label, check_box(box, NAME, where), None, score)


def _sub(parent: Element, tag: str, text: str) -> Element:
    child = SubElement(parent, tag)
    child.text = text
    return child


def _dump_xml(image: ImageLabels) -> Element:
    root = Element("annotation")
    _sub(root, "folder", posixpath.dirname(image.file_name.replace("\\", "/")))
    _sub(root, "filename", image.file_name)
    if image.width is not None and image.height is not None:
        size = SubElement(root, "size")
        _sub(size, "width", str(image.width))
        _sub(size, "height", str(image.height))
        _sub(size, "depth", "3")
    _sub(root, "segmented", "0")
    for shape in image.shapes:
        x, y, w, h = shape_box(shape)
        obj = SubElement(root, "object")
        _sub(obj, "name", shape.label)
        _sub(obj, "pose", "Unspecified")
        _sub(obj, "truncated", "0")
        _sub(obj, "difficult", "0")
        bndbox = SubElement(obj, "bndbox")
        for key, value in (("xmin", x + 1), ("ymin", y + 1), ("xmax", x + w), ("ymax", y + h)):
            _sub(bndbox, key, fmt_num(px(value)))
        if shape.score is not None:
            _sub(obj, "score", fmt_num(shape.score))
    if image.provenance is not None or image.score is not None or image.labels:
        extra = SubElement(root, "labelloop")
        if image.provenance is not None:
            _sub(extra, "provenance", image.provenance)
        if image.score is not None:
            _sub(extra, "score", fmt_num(image.score))
        for label in image.labels:
            _sub(extra, "label", label)
    return root
