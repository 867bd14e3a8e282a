"""CVAT for images 1.1 XML: boxes, polygons and tags.

Written as::

    <annotations>
      <version>1.1</version>
      <meta><task><labels><label><name>cat</name>...</label></labels></task></meta>
      <image id="0" name="a.jpg" width="640" height="480">
        <box label="cat" source="manual" occluded="0" xtl="1" ytl="2" xbr="11" ybr="22"
             z_order="0"/>
        <polygon label="cat" source="manual" occluded="0" points="1,2;11,2;11,22"
                 z_order="0"/>
        <tag label="cat" source="manual"/>
      </image>
    </annotations>

Coordinates are continuous pixels: ``xtl = x``, ``xbr = x + w`` (no 1-pixel
shift, unlike VOC). ``load`` also takes a CVAT export zip holding an
``annotations.xml``; classes come from any ``<labels><label><name>`` in
``<meta>`` (task or project), then from labels used but not declared.

Provenance rides on the CVAT ``source`` attribute of every box, polygon and
tag: human = ``manual``, model = ``auto``, model-confirmed = ``semi-auto``,
import = ``file``; no provenance, no ``source``. On load an image's provenance
is its shapes' common source; when they differ it is "human" if any is
``manual``, else the first one. CVAT
cannot carry: scores (shape or image), the provenance of an image with no
shapes or tags, or the box of a polygon (recomputed as its bounding box).
Other CVAT shapes (``points``, ``polyline``, ``ellipse``, ``mask``,
``cuboid``, ``skeleton``) are refused with a FormatError naming the image.
"""

from __future__ import annotations

from collections.abc import Mapping
from xml.etree.ElementTree import Element, SubElement

from ._io import as_bytes, fmt_num, is_zip, parse_xml, read_zip, xml_bytes
from .base import (
    ImageLabels,
    LabelSet,
    Shape,
    as_number,
    as_size,
    as_str,
    bbox_of,
    check_box,
    check_points,
    dedupe,
    fail,
    lookup_size,
    prepare,
    px,
    shape_box,
)

NAME = "cvat"
SOURCES = {"human": "manual", "model": "auto", "model-confirmed": "semi-auto", "import": "file"}
_PROVENANCE = {source: provenance for provenance, source in SOURCES.items()}
_PROVENANCE["consensus"] = "human"
_UNSUPPORTED = ("points", "polyline", "ellipse", "mask", "cuboid", "skeleton")


class CvatFormat:
    """CVAT for images 1.1 XML import and export (see the module docstring)."""

    name = NAME
    media_type = "application/xml"
    suffix = ".xml"

    def load(
        self, data: bytes, *, image_sizes: Mapping[str, tuple[int, int]] | None = None
    ) -> LabelSet:
        data = as_bytes(data, NAME)
        where = ""
        if is_zip(data):
            members = read_zip(data, NAME)
            where = next((n for n in sorted(members) if n.endswith("annotations.xml")), "")
            if not where:
                raise fail(NAME, "", "zip has no annotations.xml")
            data = members[where]
        root = parse_xml(data, NAME, where)
        if root.tag != "annotations":
            raise fail(NAME, where, f"root element must be <annotations>, got <{root.tag}>")
        declared = [as_str((el.text or "").strip(), NAME, "<meta> label <name>")
                    for el in root.findall("./meta//labels/label/name")]
        images: list[ImageLabels] = []
        seen: set[str] = set()
        for number, element in enumerate(root.findall("image")):
            image = _load_image(element, f"<image> {number}", image_sizes)
            if image.file_name in seen:
                raise fail(NAME, f"image {image.file_name!r}", "file name appears twice")
            seen.add(image.file_name)
            images.append(image)
        used = [s.label for im in images for s in im.shapes] + [x for im in images
                                                                  for x in im.labels]
        return LabelSet(classes=dedupe(declared + used), images=images)

    def dump(self, labels: LabelSet) -> bytes:
        labels = prepare(labels, NAME)
        root = Element("annotations")
        SubElement(root, "version").text = "1.1"
        label_list = SubElement(SubElement(SubElement(root, "meta"), "task"), "labels")
        for name in labels.classes:
            label = SubElement(label_list, "label")
            SubElement(label, "name").text = name
            SubElement(label, "attributes")
        for image_id, image in enumerate(labels.images):
            attrs = {"id": str(image_id), "name": image.file_name}
            if image.width is not None and image.height is not None:
                attrs.update(width=str(image.width), height=str(image.height))
            element = SubElement(root, "image", attrs)
            source = SOURCES.get(image.provenance or "")
            for shape in image.shapes:
                _dump_shape(element, shape, source)
            for name in image.labels:
                SubElement(element, "tag", _with_source({"label": name}, source))
        return xml_bytes(root)


def _load_image(
    element: Element, where: str, image_sizes: Mapping[str, tuple[int, int]] | None
) -> ImageLabels:
    image = ImageLabels(file_name=as_str(element.get("name"), NAME, f"{where} name"))
    where = f"image {image.file_name!r}"
    if element.get("width") and element.get("height"):
        image.width = as_size(element.get("width"), NAME, f"{where} width")
        image.height = as_size(element.get("height"), NAME, f"{where} height")
    elif (size := lookup_size(image_sizes, image.file_name)) is not None:
        image.width, image.height = size
    sources: list[str] = []
    for number, child in enumerate(element):
        cwhere = f"{where} <{child.tag}> {number}"
        if child.tag in _UNSUPPORTED:
            raise fail(NAME, cwhere, f"CVAT <{child.tag}> shapes are not supported")
        if child.tag not in ("box", "polygon", "tag"):
            continue
        label = as_str(child.get("label"), NAME, f"{cwhere} label")
        if child.get("source") in _PROVENANCE:
            sources.append(_PROVENANCE[child.get("source", "")])
        if child.tag == "tag":
            image.labels.append(label)
        elif child.tag == "box":
            xtl, ytl, xbr, ybr = (as_number(child.get(key), NAME, f"{cwhere} {key}")
                                  for key in ("xtl", "ytl", "xbr", "ybr"))
            box = [xtl, ytl, px(xbr - xtl), px(ybr - ytl)]
            image.shapes.append(Shape(label, check_box(box, NAME, cwhere)))
        else:
            points = _points(child.get("points"), cwhere)
            image.shapes.append(Shape(label, bbox_of(points), points))
    image.labels = dedupe(image.labels)
    if sources:
        unique = dedupe(sources)
        image.provenance = unique[0] if len(unique) == 1 or "human" not in unique else "human"
    return image


def _points(text: str | None, where: str) -> list[float]:
    if not text:
        raise fail(NAME, where, "missing points")
    points: list[float] = []
    for pair in text.strip().split(";"):
        xy = pair.split(",")
        if len(xy) != 2:
            raise fail(NAME, where, f"points must be 'x,y;x,y;...', got {pair!r}")
        points.extend(as_number(v, NAME, f"{where} points") for v in xy)
    return check_points(points, NAME, where)


def _with_source(attrs: dict[str, str], source: str | None) -> dict[str, str]:
    return {**attrs, "source": source} if source else attrs


def _dump_shape(parent: Element, shape: Shape, source: str | None) -> None:
    common = _with_source({"label": shape.label}, source) | {"occluded": "0"}
    if shape.points is not None:
        pairs = zip(shape.points[0::2], shape.points[1::2], strict=True)
        text = ";".join(f"{fmt_num(x)},{fmt_num(y)}" for x, y in pairs)
        SubElement(parent, "polygon", {**common, "points": text, "z_order": "0"})
        return
    x, y, w, h = shape_box(shape)
    corners = {"xtl": fmt_num(x), "ytl": fmt_num(y), "xbr": fmt_num(px(x + w)),
               "ybr": fmt_num(px(y + h))}
    SubElement(parent, "box", {**common, **corners, "z_order": "0"})
