"""COCO JSON (detection boxes, polygon segmentation, image-level classes).

Conventions:

* Categories get ids ``1..C`` in class order; images get ids ``1..N`` in
  image order; annotations get ids ``1..M``.
* A box shape is an annotation with ``bbox`` ``[x, y, w, h]``, ``area = w*h``
  and ``iscrowd: 0``. A polygon shape adds ``segmentation: [[x1, y1, ...]]``
  and ``area`` is the polygon's area; ``bbox`` is the shape's box, or the
  polygon's bounding box.
* **Image-level classes** follow the iNaturalist convention: an annotation
  with only ``id``, ``image_id``, ``category_id`` (no ``bbox``, no
  ``segmentation``). ``pycocotools.COCO`` loads such files; ``COCOeval`` on
  boxes or masks needs annotations with a ``bbox``, so evaluate detection
  exports (or drop the bbox-less annotations first). On import an annotation
  whose ``bbox`` is missing or ``[]`` and that has no segmentation is an
  image-level class. Likewise ``segm`` evaluation needs every annotation to
  be a polygon (a box-only annotation has no ``segmentation``).
* **Scores**: a shape's score is the standard ``score`` key of its
  annotation, so ``[a for a in anns if "score" in a]`` is a result list for
  ``COCO.loadRes``. Image-level provenance and score sit on the image as
  ``"labelloop": {"provenance": ..., "score": ...}`` (keys only when set).
* ``width``/``height`` are written when known; on import missing ones are
  taken from ``image_sizes``.

Import only: a multi-part polygon becomes one shape per part (each with its
own bounding box); ``iscrowd: 1`` annotations are skipped (crowd regions are
"ignore" areas, which labelloop does not model); a non-crowd RLE mask is
imported as a box shape (its ``bbox``, or the mask's bounding box computed by
``pycocotools.mask``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._io import as_bytes, dump_json, parse_json
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
    check_points,
    dedupe,
    fail,
    lookup_size,
    polygon_area,
    prepare,
    shape_box,
)

NAME = "coco"


class CocoFormat:
    """COCO JSON import and export (see the module docstring)."""

    name = NAME
    media_type = "application/json"
    suffix = ".json"

    def load(
        self, data: bytes, *, image_sizes: Mapping[str, tuple[int, int]] | None = None
    ) -> LabelSet:
        data = as_bytes(data, NAME)
        doc = parse_json(data, NAME)
        if not isinstance(doc, dict):
            raise fail(NAME, "", "top level must be a JSON object")
        categories = _list(doc, "categories")
        images = _list(doc, "images")
        annotations = _list(doc, "annotations")
        classes, names = _load_categories(categories)
        by_id: dict[int, ImageLabels] = {}
        out: list[ImageLabels] = []
        seen: set[str] = set()
        for index, raw in enumerate(images):
            image, image_id = _load_image(raw, f"images[{index}]", image_sizes)
            if image_id in by_id:
                raise fail(NAME, f"images[{index}].id", f"duplicate image id {image_id}")
            if image.file_name in seen:
                raise fail(NAME, f"images[{index}].file_name",
                           f"duplicate file name {image.file_name!r}")
            by_id[image_id] = image
            seen.add(image.file_name)
            out.append(image)
        for index, raw in enumerate(annotations):
            _load_annotation(raw, f"annotations[{index}]", by_id, names)
        for image in out:
            image.labels = dedupe(image.labels)
        return LabelSet(classes=classes, images=out)

    def dump(self, labels: LabelSet) -> bytes:
        labels = prepare(labels, NAME)
        cat_ids = {name: index + 1 for index, name in enumerate(labels.classes)}
        images: list[dict[str, Any]] = []
        annotations: list[dict[str, Any]] = []
        for image_id, image in enumerate(labels.images, start=1):
            images.append(_dump_image(image, image_id))
            for name in image.labels:
                annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                    "category_id": cat_ids[name]})
            for shape in image.shapes:
                ann = _dump_shape(shape)
                ann.update(id=len(annotations) + 1, image_id=image_id,
                           category_id=cat_ids[shape.label])
                annotations.append(ann)
        doc = {
            "info": {"description": "labelloop export", "version": "1.0"},
            "licenses": [],
            "categories": [{"id": cat_ids[name], "name": name, "supercategory": ""}
                           for name in labels.classes],
            "images": images,
            "annotations": annotations,
        }
        return dump_json(doc)


def _list(doc: dict[str, Any], key: str) -> list[Any]:
    value = doc.get(key, [])
    if not isinstance(value, list):
        raise fail(NAME, key, f"must be a list, got {type(value).__name__}")
    return value


def _obj(raw: Any, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise fail(NAME, where, f"must be an object, got {type(raw).__name__}")
    return raw


def _load_categories(categories: list[Any]) -> tuple[list[str], dict[int, str]]:
    names: dict[int, str] = {}
    for index, raw in enumerate(categories):
        where = f"categories[{index}]"
        cat = _obj(raw, where)
        cat_id = as_int(cat.get("id"), NAME, f"{where}.id")
        name = as_str(cat.get("name"), NAME, f"{where}.name")
        if cat_id in names:
            raise fail(NAME, f"{where}.id", f"duplicate category id {cat_id}")
        if name in names.values():
            raise fail(NAME, f"{where}.name", f"duplicate category name {name!r}")
        names[cat_id] = name
    return list(names.values()), names


def _load_image(
    raw: Any, where: str, image_sizes: Mapping[str, tuple[int, int]] | None
) -> tuple[ImageLabels, int]:
    img = _obj(raw, where)
    image_id = as_int(img.get("id"), NAME, f"{where}.id")
    image = ImageLabels(file_name=as_str(img.get("file_name"), NAME, f"{where}.file_name"))
    if img.get("width") is not None and img.get("height") is not None:
        image.width = as_size(img["width"], NAME, f"{where}.width")
        image.height = as_size(img["height"], NAME, f"{where}.height")
    elif (size := lookup_size(image_sizes, image.file_name)) is not None:
        image.width, image.height = size
    extra = _obj(img.get("labelloop", {}), f"{where}.labelloop")
    image.provenance = as_provenance(extra.get("provenance"), NAME, f"{where}.labelloop")
    if extra.get("score") is not None:
        image.score = as_number(extra["score"], NAME, f"{where}.labelloop.score")
    return image, image_id


def _load_annotation(
    raw: Any, where: str, images: dict[int, ImageLabels], names: dict[int, str]
) -> None:
    ann = _obj(raw, where)
    image_id = as_int(ann.get("image_id"), NAME, f"{where}.image_id")
    cat_id = as_int(ann.get("category_id"), NAME, f"{where}.category_id")
    if image_id not in images:
        raise fail(NAME, f"{where}.image_id", f"unknown image id {image_id}")
    if cat_id not in names:
        raise fail(NAME, f"{where}.category_id", f"unknown category id {cat_id}")
    image, label = images[image_id], names[cat_id]
    if ann.get("iscrowd") not in (None, 0, False):
        return
    score = None if ann.get("score") is None else as_number(ann["score"], NAME, f"{where}.score")
    box = _numbers(ann.get("bbox"), f"{where}.bbox")
    seg = ann.get("segmentation")
    if box is not None:
        if len(box) != 4:
            raise fail(NAME, f"{where}.bbox", f"needs 4 numbers, got {len(box)}")
        check_box(box, NAME, f"{where}.bbox")
    if isinstance(seg, dict):
        image.shapes.append(Shape(label, box or _rle_box(seg, image, where), None, score))
    elif isinstance(seg, list) and seg:
        parts = seg if isinstance(seg[0], list) else [seg]
        for number, part in enumerate(parts):
            pwhere = f"{where}.segmentation[{number}]"
            points = check_points(_numbers(part, pwhere) or [], NAME, pwhere)
            part_box = box if box is not None and len(parts) == 1 else bbox_of(points)
            image.shapes.append(Shape(label, part_box, points, score))
    elif seg not in (None, []):
        raise fail(NAME, f"{where}.segmentation", "must be a list of polygons or an RLE object")
    elif box is not None:
        image.shapes.append(Shape(label, box, None, score))
    else:
        image.labels.append(label)


def _numbers(value: Any, where: str) -> list[float] | None:
    if value is None or value == []:
        return None
    if not isinstance(value, list):
        raise fail(NAME, where, f"must be a list of numbers, got {type(value).__name__}")
    return [as_number(v, NAME, f"{where}[{i}]") for i, v in enumerate(value)]


def _rle_box(seg: dict[str, Any], image: ImageLabels, where: str) -> list[float]:
    """Bounding box of an RLE mask, via pycocotools."""
    from pycocotools import mask as mask_utils

    size = seg.get("size")
    counts = seg.get("counts")
    if not (isinstance(size, list) and len(size) == 2 and isinstance(counts, list | str)):
        raise fail(NAME, f"{where}.segmentation", "RLE needs 'size' [h, w] and 'counts'")
    try:
        height, width = (as_size(v, NAME, f"{where}.segmentation.size") for v in size)
        rle = (mask_utils.frPyObjects(seg, height, width) if isinstance(counts, list)
               else {"size": [height, width], "counts": counts.encode("ascii")})
        box = [float(v) for v in mask_utils.toBbox(rle)]
    except (ValueError, TypeError, UnicodeEncodeError, OverflowError) as exc:
        raise fail(NAME, f"{where}.segmentation", f"invalid RLE ({exc})") from None
    return check_box(box, NAME, f"{where}.segmentation")


def _dump_image(image: ImageLabels, image_id: int) -> dict[str, Any]:
    out: dict[str, Any] = {"id": image_id, "file_name": image.file_name}
    if image.width is not None and image.height is not None:
        out["width"], out["height"] = image.width, image.height
    extra = {key: value for key, value in
             (("provenance", image.provenance), ("score", image.score)) if value is not None}
    if extra:
        out["labelloop"] = extra
    return out


def _dump_shape(shape: Shape) -> dict[str, Any]:
    box = [float(v) for v in shape_box(shape)]
    out: dict[str, Any] = {"bbox": box, "iscrowd": 0, "area": box[2] * box[3]}
    if shape.points is not None:
        out["segmentation"] = [[float(v) for v in shape.points]]
        out["area"] = polygon_area(shape.points)
    if shape.score is not None:
        out["score"] = float(shape.score)
    return out
