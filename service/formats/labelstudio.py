"""Label Studio JSON tasks: rectangles, polygons and choices in percent.

One task per image::

    {"id": 1,
     "data": {"image": "<file name>",
              "labelloop": {"provenance": "human", "score": 0.9, "width": 640, "height": 480}},
     "annotations": [{"result": [<result>, ...]}],   # provenance other than "model"
     "predictions": [{"model_version": "...", "score": 0.9, "result": [...]}]}  # "model"

Results (``from_name`` / ``to_name`` match :func:`labeling_config`): a box is
``rectanglelabels`` with ``value.x/y/width/height`` in percent of
``original_width``/``original_height``; a polygon is ``polygonlabels`` with
``value.points`` ``[[x%, y%], ...]``; image-level classes are one ``choices``
result. A shape's score is the result's ``score``.

Loading takes the first annotation that is not ``was_cancelled``, else the
first prediction (provenance "model", score = the prediction's ``score``);
``data.labelloop`` overrides provenance, score and size. A rotated rectangle
becomes its axis-aligned bounding box. Results of other labelling controls
(``textarea``, ``rating``, ``relation``...) are ignored; other geometry
(``brushlabels``, ``keypointlabels``, ``ellipselabels``, unlabelled
``rectangle``/``polygon``) is refused with a FormatError.

Label Studio has no class list in its tasks: ``load`` gives the classes in
order of first use, so classes no image uses are lost. The box of a polygon is
recomputed as its bounding box.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any
from xml.sax.saxutils import quoteattr

from ._io import as_bytes, dump_json, parse_json
from .base import (
    ImageLabels,
    LabelSet,
    Shape,
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
    prepare,
    px,
)

NAME = "labelstudio"
_META = ("provenance", "score", "width", "height")
_REFUSED = ("brushlabels", "keypointlabels", "ellipselabels", "brush", "keypoint", "ellipse",
            "rectangle", "polygon")


class LabelStudioFormat:
    """Label Studio JSON import and export (see the module docstring)."""

    name = NAME
    media_type = "application/json"
    suffix = ".json"

    def __init__(self, model_version: str = "labelloop") -> None:
        self.model_version = model_version

    def load(
        self, data: bytes, *, image_sizes: Mapping[str, tuple[int, int]] | None = None
    ) -> LabelSet:
        data = as_bytes(data, NAME)
        doc = parse_json(data, NAME)
        tasks = [doc] if isinstance(doc, dict) else doc
        if not isinstance(tasks, list):
            raise fail(NAME, "", "top level must be a list of tasks or one task object")
        images: list[ImageLabels] = []
        seen: set[str] = set()
        for index, task in enumerate(tasks):
            image = _load_task(task, f"tasks[{index}]", image_sizes)
            if image.file_name in seen:
                raise fail(NAME, f"tasks[{index}]", f"image {image.file_name!r} appears twice")
            seen.add(image.file_name)
            images.append(image)
        classes = dedupe(name for image in images
                         for name in [s.label for s in image.shapes] + image.labels)
        return LabelSet(classes=classes, images=images)

    def dump(self, labels: LabelSet) -> bytes:
        labels = prepare(labels, NAME)
        tasks = []
        for task_id, image in enumerate(labels.images, start=1):
            meta = {key: getattr(image, key) for key in _META
                    if getattr(image, key) is not None}
            results = _dump_results(image)
            task: dict[str, Any] = {"id": task_id, "data": {"image": image.file_name},
                                    "annotations": [], "predictions": []}
            if meta:
                task["data"]["labelloop"] = meta
            if image.provenance == "model":
                prediction: dict[str, Any] = {"model_version": self.model_version,
                                              "result": results}
                if image.score is not None:
                    prediction["score"] = image.score
                task["predictions"].append(prediction)
            else:
                task["annotations"].append({"result": results})
            tasks.append(task)
        return dump_json(tasks)


def labeling_config(classes: list[str]) -> str:
    """A Label Studio labelling config matching the ``from_name``s of ``dump``."""
    def items(tag: str) -> str:
        return "".join(f"    <{tag} value={quoteattr(name)}/>\n" for name in classes)

    return ('<View>\n  <Image name="image" value="$image"/>\n'
            f'  <RectangleLabels name="label" toName="image">\n{items("Label")}'
            '  </RectangleLabels>\n'
            f'  <PolygonLabels name="polygon" toName="image">\n{items("Label")}'
            '  </PolygonLabels>\n'
            f'  <Choices name="choice" toName="image" choice="multiple">\n{items("Choice")}'
            '  </Choices>\n</View>\n')


def _obj(raw: Any, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise fail(NAME, where, f"must be an object, got {type(raw).__name__}")
    return raw


def _list(raw: Any, where: str) -> list[Any]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise fail(NAME, where, f"must be a list, got {type(raw).__name__}")
    return raw


def _load_task(
    raw: Any, where: str, image_sizes: Mapping[str, tuple[int, int]] | None
) -> ImageLabels:
    task = _obj(raw, where)
    data = _obj(task.get("data"), f"{where}.data")
    image = ImageLabels(file_name=as_str(data.get("image"), NAME, f"{where}.data.image"))
    meta = _obj(data.get("labelloop", {}), f"{where}.data.labelloop")
    if meta.get("width") is not None and meta.get("height") is not None:
        image.width = as_size(meta["width"], NAME, f"{where}.data.labelloop.width")
        image.height = as_size(meta["height"], NAME, f"{where}.data.labelloop.height")
    elif (size := lookup_size(image_sizes, image.file_name)) is not None:
        image.width, image.height = size
    annotations = [_obj(a, f"{where}.annotations[{i}]")
                   for i, a in enumerate(_list(task.get("annotations"), f"{where}.annotations"))]
    annotations = [a for a in annotations if not a.get("was_cancelled")]
    predictions = _list(task.get("predictions"), f"{where}.predictions")
    if annotations:
        source, swhere = annotations[0], f"{where}.annotations[0]"
    elif predictions:
        source, swhere = _obj(predictions[0], f"{where}.predictions[0]"), f"{where}.predictions[0]"
        image.provenance = "model"
        if source.get("score") is not None:
            image.score = as_number(source["score"], NAME, f"{swhere}.score")
    else:
        source, swhere = {}, where
    for number, result in enumerate(_list(source.get("result"), f"{swhere}.result")):
        _load_result(result, f"{swhere}.result[{number}]", image)
    image.labels = dedupe(image.labels)
    if "provenance" in meta:
        image.provenance = as_provenance(meta["provenance"], NAME, f"{where}.data.labelloop")
    if meta.get("score") is not None:
        image.score = as_number(meta["score"], NAME, f"{where}.data.labelloop.score")
    return image


def _load_result(raw: Any, where: str, image: ImageLabels) -> None:
    result = _obj(raw, where)
    kind = result.get("type")
    if kind in _REFUSED:
        raise fail(NAME, where, f"result type {kind!r} is not supported")
    if kind not in ("rectanglelabels", "polygonlabels", "choices"):
        return
    value = _obj(result.get("value"), f"{where}.value")
    names = [as_str(n, NAME, f"{where}.value.{kind}")
             for n in _list(value.get(kind), f"{where}.value.{kind}")]
    if kind == "choices":
        image.labels.extend(names)
        return
    if not names:
        raise fail(NAME, f"{where}.value.{kind}", "no label")
    score = None if result.get("score") is None else as_number(result["score"], NAME,
                                                                 f"{where}.score")
    width, height = _size(result, image, where)
    if kind == "rectanglelabels":
        x, y, w, h = (as_number(value.get(key), NAME, f"{where}.value.{key}")
                      for key in ("x", "y", "width", "height"))
        box = _rotated_box(x * width / 100, y * height / 100, w * width / 100,
                           h * height / 100, as_number(value.get("rotation", 0), NAME, where))
        check_box(box, NAME, where)
        image.shapes.extend(Shape(name, list(box), None, score) for name in names)
        return
    points: list[float] = []
    for i, pair in enumerate(_list(value.get("points"), f"{where}.value.points")):
        if not isinstance(pair, list) or len(pair) != 2:
            raise fail(NAME, f"{where}.value.points[{i}]", "must be an [x, y] pair")
        points += [px(as_number(pair[0], NAME, where) * width / 100),
                   px(as_number(pair[1], NAME, where) * height / 100)]
    check_points(points, NAME, f"{where}.value.points")
    image.shapes.extend(Shape(name, bbox_of(points), list(points), score) for name in names)


def _size(result: dict[str, Any], image: ImageLabels, where: str) -> tuple[int, int]:
    if result.get("original_width") is not None and result.get("original_height") is not None:
        width = as_size(result["original_width"], NAME, f"{where}.original_width")
        height = as_size(result["original_height"], NAME, f"{where}.original_height")
        if image.width is None or image.height is None:
            image.width, image.height = width, height
        return width, height
    if image.width is None or image.height is None:
        raise fail(NAME, where, f"image size unknown for {image.file_name!r}: no "
                   "original_width/original_height and none in image_sizes")
    return image.width, image.height


def _rotated_box(x: float, y: float, w: float, h: float, degrees: float) -> list[float]:
    """Axis-aligned box around a rectangle rotated clockwise about its top-left."""
    if degrees % 360 == 0:
        return [px(x), px(y), px(w), px(h)]
    cos, sin = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    xs = [x + dx * cos - dy * sin for dx, dy in ((0, 0), (w, 0), (w, h), (0, h))]
    ys = [y + dx * sin + dy * cos for dx, dy in ((0, 0), (w, 0), (w, h), (0, h))]
    return [px(min(xs)), px(min(ys)), px(max(xs) - min(xs)), px(max(ys) - min(ys))]


def _dump_results(image: ImageLabels) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    for shape in image.shapes:
        if image.width is None or image.height is None:
            raise fail(NAME, f"image {image.file_name!r}", "width and height are needed for "
                       "percent coordinates")
        width, height = image.width, image.height
        result: dict[str, Any] = {"id": f"r{len(results) + 1}", "to_name": "image",
                                  "original_width": width, "original_height": height,
                                  "image_rotation": 0}
        if shape.points is not None:
            points = [[x * 100 / width, y * 100 / height]
                      for x, y in zip(shape.points[0::2], shape.points[1::2], strict=True)]
            result.update(type="polygonlabels", from_name="polygon",
                          value={"points": points, "polygonlabels": [shape.label],
                                 "closed": True})
        else:
            assert shape.box is not None
            x, y, w, h = shape.box
            result.update(type="rectanglelabels", from_name="label",
                          value={"x": x * 100 / width, "y": y * 100 / height,
                                 "width": w * 100 / width, "height": h * 100 / height,
                                 "rotation": 0, "rectanglelabels": [shape.label]})
        if shape.score is not None:
            result["score"] = shape.score
        results.append(result)
    if image.labels:
        results.append({"id": f"r{len(results) + 1}", "type": "choices", "from_name": "choice",
                        "to_name": "image", "value": {"choices": list(image.labels)}})
    return results
