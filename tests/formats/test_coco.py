"""COCO: pycocotools reads the export; import conventions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from service.formats import FormatError, ImageLabels, LabelSet, Shape, get_format

COCO_FMT = get_format("coco")


def _detection(with_scores: bool) -> LabelSet:
    """Boxes and polygons on three images; with scores = model predictions."""
    score = 0.9 if with_scores else None
    return LabelSet(
        classes=["cat", "dog"],
        images=[
            ImageLabels("a.jpg", 200, 100, shapes=[
                Shape("cat", [10.0, 10.0, 50.0, 40.0], score=score),
                Shape("dog", [100.0, 20.0, 60.0, 60.0],
                      [100.0, 20.0, 160.0, 20.0, 160.0, 80.0, 100.0, 80.0], score),
            ], provenance="model" if with_scores else "human"),
            ImageLabels("b.jpg", 120, 90, shapes=[Shape("dog", [5.5, 6.5, 30.0, 20.0],
                                                        score=score)]),
            ImageLabels("c.jpg", 64, 64, shapes=[
                Shape("cat", [10.0, 10.0, 30.0, 30.0],
                      [10.0, 10.0, 40.0, 10.0, 25.0, 40.0], score),
            ]),
        ],
    )


def _evaluate(tmp_path: Path, gt_labels: LabelSet, dt_labels: LabelSet, iou_type: str) -> float:
    gt_path = tmp_path / "gt.json"
    gt_path.write_bytes(COCO_FMT.dump(gt_labels))
    predictions = json.loads(COCO_FMT.dump(dt_labels))
    results = [ann for ann in predictions["annotations"] if "score" in ann]
    gt = COCO(str(gt_path))
    dt = gt.loadRes(results)
    evaluator = COCOeval(gt, dt, iou_type)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return float(evaluator.stats[0])


def test_export_loads_in_pycocotools_and_evaluates_boxes(tmp_path: Path) -> None:
    gt_path = tmp_path / "labels.json"
    gt_path.write_bytes(COCO_FMT.dump(_detection(with_scores=False)))
    gt = COCO(str(gt_path))
    assert len(gt.getImgIds()) == 3 and len(gt.getAnnIds()) == 4
    assert [c["name"] for c in gt.loadCats(gt.getCatIds())] == ["cat", "dog"]
    ap = _evaluate(tmp_path, _detection(False), _detection(True), "bbox")
    assert ap == pytest.approx(1.0)  # predictions equal the labels


def test_polygon_export_evaluates_masks(tmp_path: Path) -> None:
    def polygons_only(labels: LabelSet) -> LabelSet:
        for image in labels.images:
            image.shapes = [s for s in image.shapes if s.points is not None]
        return labels

    gt, dt = polygons_only(_detection(False)), polygons_only(_detection(True))
    assert _evaluate(tmp_path, gt, dt, "segm") == pytest.approx(1.0)
    for image in dt.images:  # shift every predicted polygon: masks no longer match
        for shape in image.shapes:
            assert shape.points is not None and shape.box is not None
            shape.points = [v + 15.0 for v in shape.points]
            shape.box = [shape.box[0] + 15.0, shape.box[1] + 15.0, *shape.box[2:]]
    assert _evaluate(tmp_path, gt, dt, "segm") < 0.5


def test_image_level_labels_follow_inaturalist_convention(tmp_path: Path) -> None:
    labels = LabelSet(["cat", "dog"], [ImageLabels("a.jpg", 10, 10, labels=["cat", "dog"]),
                                       ImageLabels("b.jpg", 10, 10)])
    data = COCO_FMT.dump(labels)
    doc = json.loads(data)
    assert doc["annotations"] == [{"id": 1, "image_id": 1, "category_id": 1},
                                  {"id": 2, "image_id": 1, "category_id": 2}]
    path = tmp_path / "cls.json"
    path.write_bytes(data)
    coco = COCO(str(path))
    assert len(coco.getAnnIds(imgIds=[1])) == 2
    # "bbox": [] (another common spelling) also reads as an image-level label
    doc["annotations"][0]["bbox"] = []
    assert COCO_FMT.load(json.dumps(doc).encode()).images[0].labels == ["cat", "dog"]


def test_polygon_area_and_bbox_are_computed() -> None:
    labels = LabelSet(["cat"], [ImageLabels("a.jpg", 50, 50, shapes=[
        Shape("cat", points=[0.0, 0.0, 10.0, 0.0, 10.0, 10.0, 0.0, 10.0])])])
    ann = json.loads(COCO_FMT.dump(labels))["annotations"][0]
    assert ann["bbox"] == [0.0, 0.0, 10.0, 10.0]
    assert ann["area"] == 100.0


def _doc(annotations: list[dict[str, object]]) -> bytes:
    return json.dumps({
        "images": [{"id": 7, "file_name": "x/a.jpg", "width": 40, "height": 30},
                   {"id": 8, "file_name": "b.jpg"}],
        "categories": [{"id": 3, "name": "cat"}, {"id": 1, "name": "dog"}],
        "annotations": annotations,
    }).encode()


def test_import_multipart_polygon_crowd_and_rle() -> None:
    mask = np.zeros((30, 40), dtype=np.uint8, order="F")
    mask[5:15, 10:30] = 1
    rle = mask_utils.encode(mask)
    rle["counts"] = rle["counts"].decode("ascii")
    loaded = COCO_FMT.load(_doc([
        {"id": 1, "image_id": 7, "category_id": 3, "bbox": [0, 0, 20, 20], "iscrowd": 0,
         "segmentation": [[0, 0, 10, 0, 10, 10], [12, 12, 20, 12, 20, 20]]},
        {"id": 2, "image_id": 7, "category_id": 1, "iscrowd": 1, "bbox": [0, 0, 5, 5],
         "segmentation": {"size": [30, 40], "counts": [0, 10, 1190]}},
        {"id": 3, "image_id": 7, "category_id": 1, "iscrowd": 0, "segmentation": rle},
        {"id": 4, "image_id": 8, "category_id": 1},
    ]), image_sizes={"b.jpg": (64, 48)})
    assert loaded.classes == ["cat", "dog"]
    first, second = loaded.images
    assert first.shapes == [
        Shape("cat", [0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 0.0, 10.0, 10.0]),
        Shape("cat", [12.0, 12.0, 8.0, 8.0], [12.0, 12.0, 20.0, 12.0, 20.0, 20.0]),
        Shape("dog", [10.0, 5.0, 20.0, 10.0]),  # RLE mask -> its bounding box
    ]
    assert (second.width, second.height, second.labels) == (64, 48, ["dog"])


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"{not json", "invalid JSON at line 1"),
        (b"\xff\xfe\x00", "not UTF-8"),
        (b"[]", "top level must be a JSON object"),
        (b"[" * 100_000, "invalid JSON|nested too deeply"),
        (b'{"images": "x"}', "images: must be a list"),
        (b'{"images": [{"id": 1}]}', r"images\[0\].file_name"),
        (b'{"images": [{"id": true, "file_name": "a"}]}', "expected an integer"),
        (b'{"images": [{"id": 1, "file_name": "a"}, {"id": 1, "file_name": "b"}]}',
         "duplicate image id"),
        (b'{"images": [{"id": 1, "file_name": "a", "width": -3, "height": 2}]}',
         "image size must be > 0"),
        (b'{"categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "a"}]}',
         "duplicate category name"),
    ],
)
def test_malformed_documents(data: bytes, match: str) -> None:
    with pytest.raises(FormatError, match=match):
        COCO_FMT.load(data)


@pytest.mark.parametrize(
    ("annotation", "match"),
    [
        ({"image_id": 7, "category_id": 99, "bbox": [0, 0, 1, 1]}, "unknown category id 99"),
        ({"image_id": 70, "category_id": 3, "bbox": [0, 0, 1, 1]}, "unknown image id 70"),
        ({"image_id": 7, "category_id": 3, "bbox": [0, 0, -1, 1]}, "positive width"),
        ({"image_id": 7, "category_id": 3, "bbox": [0, 0, 1]}, "needs 4 numbers"),
        ({"image_id": 7, "category_id": 3, "bbox": "0 0 1 1"}, "must be a list of numbers"),
        ({"image_id": 7, "category_id": 3, "bbox": [0, 0, "a", 1]}, "expected a number"),
        ({"image_id": 7, "category_id": 3, "bbox": [0, 0, 1e400, 1]}, "finite"),
        ({"image_id": 7, "category_id": 3, "segmentation": [[0, 0, 1, 1, 2]]}, "even number"),
        ({"image_id": 7, "category_id": 3, "segmentation": [[0, 0, 1, 0, 2, 0]]},
         "zero width or height"),
        ({"image_id": 7, "category_id": 3, "segmentation": 5}, "list of polygons or an RLE"),
        ({"image_id": 7, "category_id": 3, "segmentation": {"counts": []}}, "RLE needs"),
        ({"image_id": 7, "category_id": 3, "bbox": [0, 0, 1, 1], "score": "high"},
         "score: expected a number"),
    ],
)
def test_malformed_annotations(annotation: dict[str, object], match: str) -> None:
    with pytest.raises(FormatError, match=match):
        COCO_FMT.load(_doc([annotation]))


def test_nan_in_json_is_refused() -> None:
    data = _doc([{"image_id": 7, "category_id": 3, "bbox": [0, 0, 1, 1]}]).replace(
        b"[0, 0, 1, 1]", b"[0, NaN, 1, 1]")
    with pytest.raises(FormatError, match="finite"):
        COCO_FMT.load(data)
