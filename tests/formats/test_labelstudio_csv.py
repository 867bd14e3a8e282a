"""Label Studio JSON and classification CSV: foreign files and errors."""

from __future__ import annotations

import json
from typing import Any

import pytest
from defusedxml.ElementTree import fromstring

from service.formats import FormatError, ImageLabels, LabelSet, Shape, get_format, labeling_config

LS = get_format("labelstudio")
CSV = get_format("csv")


def _rect(x: Any, y: Any, w: Any, h: Any, label: str, **extra: Any) -> dict[str, Any]:
    return {"type": "rectanglelabels", "from_name": "box", "to_name": "img",
            "original_width": 200, "original_height": 100,
            "value": {"x": x, "y": y, "width": w, "height": h, "rectanglelabels": [label],
                      **extra}}


def test_labelstudio_foreign_export() -> None:
    tasks = [
        {"id": 11, "data": {"image": "/data/upload/1/a.jpg"},
         "annotations": [
             {"was_cancelled": True, "result": [_rect(0, 0, 10, 10, "ignored")]},
             {"result": [
                 _rect(10, 20, 50, 30, "car"),
                 {"type": "polygonlabels", "original_width": 200, "original_height": 100,
                  "value": {"points": [[0, 0], [50, 0], [50, 50]], "polygonlabels": ["road"]}},
                 {"type": "choices", "value": {"choices": ["day", "city"]}},
                 {"type": "textarea", "value": {"text": ["looks fine"]}},
             ]},
         ],
         "predictions": [{"result": [_rect(0, 0, 1, 1, "car")], "score": 0.1}]},
        {"id": 12, "data": {"image": "b.jpg"},
         "predictions": [{"model_version": "v3", "score": 0.75,
                          "result": [{**_rect(0, 0, 100, 100, "car"), "score": 0.5}]}]},
    ]
    loaded = LS.load(json.dumps(tasks).encode())
    assert loaded.classes == ["car", "road", "day", "city"]
    assert loaded.images == [
        ImageLabels("/data/upload/1/a.jpg", 200, 100, labels=["day", "city"], shapes=[
            Shape("car", [20.0, 20.0, 100.0, 30.0]),
            Shape("road", [0.0, 0.0, 100.0, 50.0], [0.0, 0.0, 100.0, 0.0, 100.0, 50.0]),
        ]),
        ImageLabels("b.jpg", 200, 100, provenance="model", score=0.75,
                    shapes=[Shape("car", [0.0, 0.0, 200.0, 100.0], score=0.5)]),
    ]


def test_labelstudio_rotated_rectangle_becomes_its_bounding_box() -> None:
    task = {"data": {"image": "a.jpg"},
            "annotations": [{"result": [_rect(50, 50, 10, 20, "car", rotation=90)]}]}
    shape = LS.load(json.dumps(task).encode()).images[0].shapes[0]
    # 20 x 20 px rotated 90 degrees clockwise about (100, 50): spans x 80..100, y 50..70
    assert shape.box == [80.0, 50.0, 20.0, 20.0]


def test_labelstudio_predictions_and_config() -> None:
    labels = LabelSet(["cat"], [ImageLabels("a.jpg", 4, 4, provenance="model", score=0.5,
                                            shapes=[Shape("cat", [0, 0, 2, 2], score=0.25)])])
    task = json.loads(LS.dump(labels))[0]
    assert task["annotations"] == []
    assert task["predictions"][0]["score"] == 0.5
    assert task["predictions"][0]["model_version"] == "labelloop"
    assert task["predictions"][0]["result"][0]["score"] == 0.25
    config = fromstring(labeling_config(["cat", 'say "hi" & <go>']))
    assert [el.get("value") for el in config.iter("Choice")] == ["cat", 'say "hi" & <go>']
    assert [el.get("name") for el in config] == ["image", "label", "polygon", "choice"]


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ("not json", "invalid JSON"),
        (5, "top level must be a list"),
        ([5], r"tasks\[0\]: must be an object"),
        ([{"data": {}}], r"tasks\[0\].data.image"),
        ([{"data": {"image": "a"}, "annotations": {}}], "annotations: must be a list"),
        ([{"data": {"image": "a"}, "annotations": [{"result": [
            {"type": "rectanglelabels", "value": {"x": 1, "y": 1, "width": 1, "height": 1,
                                                  "rectanglelabels": ["c"]}}]}]}],
         "image size unknown"),
        ([{"data": {"image": "a"}, "annotations": [{"result": [_rect(1, 1, -5, 1, "c")]}]}],
         "positive width"),
        ([{"data": {"image": "a"}, "annotations": [{"result": [_rect(1, "x", 5, 1, "c")]}]}],
         "value.y: expected a number"),
        ([{"data": {"image": "a"}, "annotations": [{"result": [{"type": "brushlabels"}]}]}],
         "'brushlabels' is not supported"),
        ([{"data": {"image": "a"}, "annotations": [{"result": [
            {"type": "polygonlabels", "original_width": 9, "original_height": 9,
             "value": {"points": [[1, 2], [3]], "polygonlabels": ["c"]}}]}]}],
         r"points\[1\]: must be an \[x, y\] pair"),
        ([{"data": {"image": "a", "labelloop": {"provenance": "alien"}}}], "unknown provenance"),
        ([{"data": {"image": "a"}}, {"data": {"image": "a"}}], "appears twice"),
    ],
)
def test_labelstudio_malformed(doc: Any, match: str) -> None:
    data = doc.encode() if isinstance(doc, str) else json.dumps(doc).encode()
    with pytest.raises(FormatError, match=match):
        LS.load(data)


def test_csv_reads_extra_columns_bom_and_sizes() -> None:
    data = "\ufeffid,file_name,labels\n1,a.jpg,cat; dog\n2,b.jpg,\n3,c.jpg,dog;dog\n".encode()
    loaded = CSV.load(data, image_sizes={"a.jpg": (5, 6)})
    assert loaded.classes == ["cat", "dog"]
    assert loaded.images == [ImageLabels("a.jpg", 5, 6, labels=["cat", "dog"]),
                             ImageLabels("b.jpg"), ImageLabels("c.jpg", labels=["dog"])]


def test_csv_header_and_quoting() -> None:
    labels = LabelSet(["a"], [ImageLabels('x,"y".jpg', labels=["a"], score=0.5)])
    data = CSV.dump(labels)
    assert data.splitlines()[0] == b"file_name,labels,provenance,score"
    assert CSV.load(data) == labels


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "empty file"),
        ("name,labels\na,b\n", "line 1: header lacks column"),
        ("file_name,labels\na.jpg,cat,extra\n", "line 2: expected 2 cells"),
        ("file_name,labels,provenance\na.jpg,cat,robot\n", "unknown provenance 'robot'"),
        ("file_name,labels,score\na.jpg,cat,high\n", "line 2 score: expected a number"),
        ("file_name,labels,score\na.jpg,cat,inf\n", "finite"),
        ('file_name,labels\n"a.jpg,cat\n', "invalid CSV"),
        ("file_name,labels\n,cat\n", "empty file_name"),
        ("file_name,labels\na.jpg,cat\na.jpg,dog\n", "appears twice"),
        ("file_name,file_name,labels\na,b,c\n", "duplicate column"),
    ],
)
def test_csv_malformed(text: str, match: str) -> None:
    with pytest.raises(FormatError, match=match):
        CSV.load(text.encode())


def test_csv_refuses_shapes_and_separator_in_names() -> None:
    with pytest.raises(FormatError, match="classification only"):
        CSV.dump(LabelSet(["a"], [ImageLabels("x.jpg", shapes=[Shape("a", [0, 0, 1, 1])])]))
    with pytest.raises(FormatError, match="has a ';'"):
        CSV.dump(LabelSet(["a;b"], []))
