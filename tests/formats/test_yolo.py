"""YOLO: foreign datasets (no sidecar), class lists, line forms and errors."""

from __future__ import annotations

import io
import zipfile

import pytest

from service.formats import FormatError, ImageLabels, LabelSet, Shape, get_format

YOLO = get_format("yolo")


def _zip(members: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in members.items():
            archive.writestr(name, text)
    return buffer.getvalue()


def test_foreign_dataset_uses_image_sizes() -> None:
    data = _zip({
        "data.yaml": "path: .\ntrain: images/train\nnames: ['cat', \"dog\"]\n",
        "labels/train/x.txt": "0 0.5 0.5 0.5 0.25\n1 0.1 0.1 0.3 0.1 0.2 0.4 0.8\n",
        "labels/train/empty.txt": "",
    })
    loaded = YOLO.load(data, image_sizes={"images/train/x.jpg": (200, 100),
                                          "other/empty.png": (10, 10)})
    assert loaded.classes == ["cat", "dog"]
    assert loaded.images == [
        ImageLabels("other/empty.png", 10, 10),  # matched by stem
        ImageLabels("images/train/x.jpg", 200, 100, shapes=[
            Shape("cat", [50.0, 37.5, 100.0, 25.0]),
            Shape("dog", [20.0, 10.0, 40.0, 30.0], [20.0, 10.0, 60.0, 10.0, 40.0, 40.0], 0.8),
        ]),
    ]


def test_box_with_confidence_column() -> None:
    data = _zip({"classes.txt": "cat\n", "labels/a.txt": "0 0.5 0.5 1 1 0.25\n"})
    image = YOLO.load(data, image_sizes={"a.jpg": (8, 4)}).images[0]
    assert image.shapes == [Shape("cat", [0.0, 0.0, 8.0, 4.0], None, 0.25)]


@pytest.mark.parametrize(
    "yaml",
    [
        "names:\n  - cat\n  - dog\n",
        "names:\n  0: cat\n  1: 'dog'\n",
        "nc: 2\nnames: {0: cat, 1: dog}\n",
        "names: [cat, dog]  \n",
    ],
)
def test_data_yaml_name_forms(yaml: str) -> None:
    assert YOLO.load(_zip({"data.yaml": yaml})).classes == ["cat", "dog"]


def test_top_level_label_files_without_labels_folder() -> None:
    data = _zip({"obj.names": "cat\n", "a.txt": "0 0.5 0.5 0.5 0.5\n"})
    loaded = YOLO.load(data, image_sizes={"a.jpg": (4, 4)})
    assert loaded.images[0].shapes == [Shape("cat", [1.0, 1.0, 2.0, 2.0])]


@pytest.mark.parametrize(
    ("members", "sizes", "match"),
    [
        ({"labels/a.txt": ""}, None, "no class list"),
        ({"classes.txt": "cat\n", "labels/a.txt": "0 0.5 0.5 0.1 0.1\n"}, None,
         "image size unknown for 'a'"),
        ({"classes.txt": "cat\n", "labels/a.txt": "3 0.5 0.5 0.1 0.1\n"}, {"a.jpg": (9, 9)},
         "line 1: unknown class id 3"),
        ({"classes.txt": "cat\n", "labels/a.txt": "-1 0.5 0.5 0.1 0.1\n"}, {"a.jpg": (9, 9)},
         "unknown class id -1"),
        ({"classes.txt": "cat\n", "labels/a.txt": "\n0 0.5 0.5 -0.1 0.1\n"}, {"a.jpg": (9, 9)},
         "labels/a.txt line 2: box must have positive"),
        ({"classes.txt": "cat\n", "labels/a.txt": "0 0.5 0.5\n"}, {"a.jpg": (9, 9)},
         "expected 'cls cx cy w h"),
        ({"classes.txt": "cat\n", "labels/a.txt": "0 a b c d\n"}, {"a.jpg": (9, 9)},
         "expected a number"),
        ({"classes.txt": "cat\n", "labels/a.txt": "cat 0.5 0.5 1 1\n"}, {"a.jpg": (9, 9)},
         "expected an integer"),
        ({"classes.txt": "cat\ncat\n"}, None, "duplicate class names"),
        ({"data.yaml": "names:\n  0: cat\n  2: dog\n"}, None, "class ids must be 0..1"),
        ({"data.yaml": "nc: 1\n"}, None, "no 'names:' key"),
        ({"classes.txt": "cat\n", "labelloop.json": "[1]"}, None, "'images' must map"),
        ({"classes.txt": "cat\n", "labelloop.json": '{"images": {"a": {"score": "x"}}}'},
         None, "expected a number"),
        ({"classes.txt": "cat\n", "labelloop.json": '{"images": {"a": {"labels": ["dog"]}}}'},
         None, "label 'dog' is not a class"),
    ],
)
def test_malformed(members: dict[str, str], sizes: dict[str, tuple[int, int]] | None,
                   match: str) -> None:
    with pytest.raises(FormatError, match=match):
        YOLO.load(_zip(members), image_sizes=sizes)


def test_file_names_with_a_labels_folder_round_trip() -> None:
    labels = LabelSet(["cat"], [ImageLabels("labels/x.jpg", 4, 4, shapes=[
        Shape("cat", [0.0, 0.0, 2.0, 2.0])])])
    assert YOLO.load(YOLO.dump(labels)) == labels


def test_not_a_zip() -> None:
    with pytest.raises(FormatError, match="not a readable zip"):
        YOLO.load(b"0 0.5 0.5 0.1 0.1\n")


def test_dump_needs_sizes_and_distinct_stems() -> None:
    no_size = LabelSet(["cat"], [ImageLabels("a.jpg", shapes=[Shape("cat", [0, 0, 1, 1])])])
    with pytest.raises(FormatError, match="width and height are needed"):
        YOLO.dump(no_size)
    clash = LabelSet(["cat"], [ImageLabels("a.jpg"), ImageLabels("a.png")])
    with pytest.raises(FormatError, match="also maps to labels/a.txt"):
        YOLO.dump(clash)
    unsafe = LabelSet(["cat"], [ImageLabels("../a.jpg")])
    with pytest.raises(FormatError, match="safe zip path"):
        YOLO.dump(unsafe)
