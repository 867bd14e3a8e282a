"""Hostile geometry and spreadsheet formulas in imports and exports.

Imports clip shapes that overlap the image to the image and report the rest
(wholly outside, empty after clipping, non-finite) as rejected rows while the
batch goes on; nothing non-finite or outside the image is stored. Exports never
fail on stored data and never write a non-finite number. CSV exports
neutralise formula cells and the CSV import undoes exactly that.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import zipfile
from typing import Any

import pytest
from sqlmodel import Session, select

from service.crud.annotations import current_annotation, write_version
from service.formats import FORMATS, ImageLabels, LabelSet, Shape, get_format
from service.formats.base import GeometryError, fit_box, fit_image, fit_points
from service.models import Item, Provenance
from tests.conftest import DB_PARAMS, Ctx, make_project, png_bytes

W = H = 64


# --- the shared geometry check ----------------------------------------------


@pytest.mark.parametrize(
    ("box", "expected"),
    [
        ([10.0, 20.0, 30.5, 40.25], [10.0, 20.0, 30.5, 40.25]),  # inside: kept exactly
        ([0.0, 0.0, 5000.0, 5000.0], [0.0, 0.0, 64.0, 64.0]),
        ([-5.0, 10.0, 20.0, 20.0], [0.0, 10.0, 15.0, 20.0]),
        ([60.0, 60.0, 10.0, 10.0], [60.0, 60.0, 4.0, 4.0]),
        ([0.0, 0.0, 1e308, 1e308], [0.0, 0.0, 64.0, 64.0]),
        ([-1.7e308, -1.7e308, 1.7e308, 1.7e308], None),  # x + w = 0: ends at the edge
    ],
)
def test_fit_box_keeps_inside_and_clips_overlapping_boxes(box: list[float],
                                                          expected: list[float] | None) -> None:
    if expected is None:
        with pytest.raises(GeometryError, match="outside"):
            fit_box(box, W, H)
    else:
        assert fit_box(box, W, H) == expected


@pytest.mark.parametrize(
    ("box", "reason"),
    [
        ([1000.0, 1000.0, 50.0, 50.0], "outside the 64x64 image"),
        ([-500.0, -500.0, 10.0, 10.0], "outside the 64x64 image"),
        ([64.0, 0.0, 5.0, 5.0], "outside the 64x64 image"),
        ([-10.0, 0.0, 10.0000000001, 5.0], "empty after clipping"),
        ([math.inf, 0.0, 1.0, 1.0], "non-finite"),
        ([0.0, math.nan, 1.0, 1.0], "non-finite"),
        ([0.0, 0.0, None, 1.0], "non-finite"),
        ([0.0, 0.0, 1.0], "4 numbers"),
        ([0.0, 0.0, 0.0, 1.0], "positive width and height"),
    ],
)
def test_fit_box_refuses_outside_empty_and_non_finite(box: list[Any], reason: str) -> None:
    with pytest.raises(GeometryError, match=reason):
        fit_box(box, W, H)


def test_fit_points_clips_polygons_to_the_image() -> None:
    inside = [1.5, 2.5, 31.5, 2.5, 31.5, 42.5]
    assert fit_points(inside, W, H) == inside
    clipped = fit_points([-10.0, 10.0, 30.0, 10.0, 30.0, 100.0], W, H)
    assert all(0 <= v <= 64 for v in clipped)
    assert min(clipped[0::2]) == 0 and max(clipped[1::2]) == 64
    huge = fit_points([0.0, 0.0, 1.7e308, 0.0, 1.7e308, 1.7e308, 0.0, 1.7e308], W, H)
    assert sorted(zip(huge[0::2], huge[1::2], strict=True)) == [(0, 0), (0, 64), (64, 0), (64, 64)]
    with pytest.raises(GeometryError, match="outside"):
        fit_points([100.0, 100.0, 200.0, 100.0, 150.0, 200.0], W, H)
    with pytest.raises(GeometryError, match="empty after clipping"):  # corner triangle misses it
        fit_points([60.0, 70.0, 70.0, 60.0, 70.0, 70.0], W, H)
    with pytest.raises(GeometryError, match="non-finite"):
        fit_points([0.0, 0.0, math.inf, 0.0, 5.0, 5.0], W, H)


def test_fit_image_reports_rejected_rows_and_keeps_the_rest() -> None:
    image = ImageLabels("a.png", shapes=[Shape("cat", box=[1000.0, 1000.0, 50.0, 50.0]),
                                         Shape("cat", box=[0.0, 0.0, 5000.0, 5000.0]),
                                         Shape("dog", box=[1.0, 1.0, 2.0, 2.0])])
    clipped, rejected = fit_image(image, W, H)
    assert clipped == 1
    assert [(r.shape, r.label) for r in rejected] == [(0, "cat")]
    assert "outside" in rejected[0].reason
    assert [s.box for s in image.shapes] == [[0.0, 0.0, 64.0, 64.0], [1.0, 1.0, 2.0, 2.0]]


# --- writers: one safe JSON dump, no non-finite text -------------------------


@pytest.mark.parametrize("name", ["coco", "labelstudio"])
def test_json_writers_write_null_for_overflowing_numbers(name: str) -> None:
    labels = LabelSet(["cat"], [ImageLabels("a.png", W, H,
                                            shapes=[Shape("cat", box=[0.0, 0.0, 1e308, 1e308])])])
    text = get_format(name).dump(labels).decode()  # was: ValueError (Out of range float values)
    assert "Infinity" not in text and "NaN" not in text
    json.loads(text)


# --- CSV formulas --------------------------------------------------------------

FORMULAS = ["=HYPERLINK(\"http://x\",\"y\")", "+1+1", "-2+3", "@SUM(A1)", "\t=1", "\r=1",
            "'=already", "'", "plain", "-", "a=b"]


def test_csv_export_neutralises_formulas_and_import_restores_them() -> None:
    fmt = FORMATS["csv"]
    classes = [f for f in FORMULAS if f == f.strip()] + ["=a", "b"]
    images = [ImageLabels(file_name=f"{f}.png", labels=[classes[k % 9]], score=-0.5)
              for k, f in enumerate(FORMULAS)]
    images.append(ImageLabels(file_name="=cmd|' /C calc'!A0.png", labels=["=a", "b"]))
    data = fmt.dump(LabelSet(classes, images))
    rows = list(csv.reader(io.StringIO(data.decode(), newline="")))[1:]
    assert len(rows) == len(images)  # a CR in a file name does not start a row
    for row in rows:
        for cell in row[:2]:  # file name and labels: text cells
            assert cell[:1] not in ("=", "+", "-", "@", "\t", "\r"), row
    assert {row[3] for row in rows[:-1]} == {"-0.5"}  # numbers stay numbers
    back = fmt.load(data)
    assert [(i.file_name, i.labels) for i in back.images] == [(i.file_name, i.labels)
                                                              for i in images]


@pytest.mark.parametrize(
    ("cell", "label"),
    [("'=1+1", "=1+1"), ("''=x", "'=x"), ("'plain", "'plain"), ("'", "'"), ("''", "'"),
     ("'-3", "-3")],
)
def test_csv_import_strips_exactly_one_protecting_quote(cell: str, label: str) -> None:
    data = f"file_name,labels\na.png,{cell}\n".encode()
    assert FORMATS["csv"].load(data).images[0].labels == [label]


# --- through the service: imports, exports -----------------------------------


@pytest.fixture(params=DB_PARAMS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _project(ctx: Ctx, task: str = "detection") -> tuple[dict[str, str], int]:
    admin = ctx.user("root", "admin")
    pid = make_project(ctx, admin, name="hostile", task=task, classes=["cat", "dog"])["id"]
    files = [("files", (name, png_bytes(size=(W, H), seed=k), "image/png"))
             for k, name in enumerate(("a.png", "b.png"))]
    r = ctx.client.post(f"/api/v1/projects/{pid}/items", files=files, headers=admin)
    assert r.status_code == 201, r.text
    return admin, pid


def _import(ctx: Ctx, admin: dict[str, str], pid: int, fmt: str, data: bytes) -> dict[str, Any]:
    r = ctx.client.post(f"/api/v1/projects/{pid}/import?format={fmt}",
                        files={"file": ("f", data)}, headers=admin)
    assert r.status_code == 200, r.text
    return dict(r.json())


def _stored(ctx: Ctx) -> dict[str, dict[str, Any]]:
    with Session(ctx.engine) as s:
        out = {}
        for item in s.exec(select(Item)).all():
            ann = current_annotation(s, item)
            out[item.file_name] = {} if ann is None else dict(ann.data)
        return out


def _all_finite_inside(data: dict[str, Any]) -> bool:
    numbers = [v for b in data.get("boxes", []) for v in b["bbox"]]
    for b in data.get("boxes", []):
        x, y, w, h = b["bbox"]
        if x < 0 or y < 0 or x + w > W or y + h > H:
            return False
    for p in data.get("polygons", []):
        numbers += p["points"]
        if not all(0 <= v <= W for v in p["points"]):
            return False
    return all(isinstance(v, float) and math.isfinite(v) for v in numbers)


def _coco(anns: list[dict[str, Any]]) -> bytes:
    return json.dumps({
        "images": [{"id": 1, "file_name": "a.png", "width": W, "height": H},
                   {"id": 2, "file_name": "b.png", "width": W, "height": H}],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
        "annotations": [{"id": i + 1, "category_id": 1, "iscrowd": 0, **a}
                        for i, a in enumerate(anns)],
    }).encode()


def test_coco_import_clips_or_rejects_boxes_outside_the_image(ctx: Ctx) -> None:
    admin, pid = _project(ctx, "segmentation")
    out = _import(ctx, admin, pid, "coco", _coco([
        {"image_id": 1, "bbox": [1000, 1000, 50, 50]},
        {"image_id": 1, "bbox": [-500, -500, 10, 10]},
        {"image_id": 1, "bbox": [0, 0, 5000, 5000]},
        {"image_id": 1, "bbox": [1, 2, 3, 4]},
        {"image_id": 2, "segmentation": [[-10, 10, 30, 10, 30, 100]]},
        {"image_id": 2, "segmentation": [[100, 100, 200, 100, 150, 200]]},
    ]))
    stored = _stored(ctx)
    assert [b["bbox"] for b in stored["a.png"]["boxes"]] == [[0.0, 0.0, 64.0, 64.0],
                                                             [1.0, 2.0, 3.0, 4.0]]
    # the triangle's hypotenuse from (30, 100) to (-10, 10) leaves at y = 64 and x = 0
    assert stored["b.png"]["polygons"] == [{"label": "cat",
                                            "points": [14.0, 64.0, 0.0, 32.5, 0.0, 10.0,
                                                       30.0, 10.0, 30.0, 64.0]}]
    assert all(_all_finite_inside(d) for d in stored.values())
    assert out["updated"] == 2
    assert out["clipped"] == 2
    assert out["rejected_count"] == 3
    assert [(r["file_name"], r["shape"]) for r in out["rejected"]] == [("a.png", 0), ("a.png", 1),
                                                                       ("b.png", 1)]
    assert all("outside the 64x64 image" in r["reason"] for r in out["rejected"])


def test_labelstudio_overflowing_percent_is_rejected_not_stored_as_infinity(ctx: Ctx) -> None:
    admin, pid = _project(ctx)

    def rect(x: float) -> dict[str, Any]:
        return {"type": "rectanglelabels", "original_width": W, "original_height": H,
                "value": {"x": x, "y": 0, "width": 10, "height": 10, "rectanglelabels": ["cat"]}}

    tasks = [{"data": {"image": "a.png"}, "annotations": [{"result": [rect(1e308), rect(50)]}]},
             {"data": {"image": "b.png"},
              "annotations": [{"result": [rect(-1e308), rect(150), rect(-5)]}]}]
    out = _import(ctx, admin, pid, "labelstudio", json.dumps(tasks).encode())
    stored = _stored(ctx)
    assert stored["a.png"]["boxes"] == [{"label": "cat", "bbox": [32.0, 0.0, 6.4, 6.4]}]
    assert stored["b.png"]["boxes"] == [{"label": "cat", "bbox": [0.0, 0.0, 3.2, 6.4]}]
    assert all(_all_finite_inside(d) for d in stored.values())
    assert out["rejected_count"] == 3 and out["clipped"] == 1
    assert [r["shape"] for r in out["rejected"]] == [0, 0, 1]
    assert "non-finite" in out["rejected"][0]["reason"]
    assert "outside" in out["rejected"][2]["reason"]


def test_cvat_huge_corners_are_rejected(ctx: Ctx) -> None:
    admin, pid = _project(ctx, "segmentation")
    xml = (b'<annotations><image id="0" name="a.png" width="64" height="64">'
           b'<box label="cat" xtl="-1.7e308" ytl="0" xbr="1.7e308" ybr="5"/>'
           b'<box label="cat" xtl="1" ytl="1" xbr="3" ybr="3"/>'
           b'<polygon label="dog" points="0,0;1.7e308,0;1.7e308,1e308"/>'
           b'</image></annotations>')
    out = _import(ctx, admin, pid, "cvat", xml)
    stored = _stored(ctx)["a.png"]
    assert _all_finite_inside(stored)
    assert stored["boxes"] == [{"label": "cat", "bbox": [1.0, 1.0, 2.0, 2.0]}]
    # the wedge under y = x * 1e308 / 1.7e308, cut at x = 64
    assert stored["polygons"] == [{"label": "dog",
                                   "points": [64.0, 37.647059, 0.0, 0.0, 64.0, 0.0]}]
    assert [r["shape"] for r in out["rejected"]] == [0]
    assert "non-finite" in out["rejected"][0]["reason"]


def test_yolo_and_voc_coordinates_outside_the_image(ctx: Ctx) -> None:
    admin, pid = _project(ctx)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("classes.txt", "cat\ndog\n")
        # cx=5 (wholly outside), a box from -0.25 to 0.25 (clipped), one inside
        archive.writestr("labels/a.txt", "0 5 5 0.1 0.1\n0 0 0 0.5 0.5\n1 0.5 0.5 0.25 0.25\n")
    out = _import(ctx, admin, pid, "yolo", buffer.getvalue())
    assert _stored(ctx)["a.png"]["boxes"] == [{"label": "cat", "bbox": [0.0, 0.0, 16.0, 16.0]},
                                              {"label": "dog", "bbox": [24.0, 24.0, 16.0, 16.0]}]
    assert out["rejected_count"] == 1 and out["clipped"] == 1
    voc = (b"<annotation><filename>b.png</filename><size><width>64</width><height>64</height>"
           b"</size><object><name>cat</name><bndbox><xmin>-99</xmin><ymin>0</ymin>"
           b"<xmax>10</xmax><ymax>10</ymax></bndbox></object>"
           b"<object><name>dog</name><bndbox><xmin>100</xmin><ymin>100</ymin>"
           b"<xmax>110</xmax><ymax>110</ymax></bndbox></object></annotation>")
    out = _import(ctx, admin, pid, "voc", voc)
    assert _stored(ctx)["b.png"]["boxes"] == [{"label": "cat", "bbox": [0.0, 0.0, 10.0, 10.0]}]
    assert out["rejected_count"] == 1 and out["clipped"] == 1


def test_every_export_answers_on_legacy_hostile_rows(ctx: Ctx) -> None:
    """Rows stored before imports were checked: a huge finite box, a box read back as
    null (SQLite's Infinity), a polygon far outside. Every format exports them."""
    admin, pid = _project(ctx, "segmentation")
    with Session(ctx.engine) as s:
        items = {i.file_name: i for i in s.exec(select(Item)).all()}
        write_version(s, item=items["a.png"], provenance=Provenance.imported, origin="import",
                      author=None, data={"labels": [], "polygons": [], "boxes": [
                          {"label": "cat", "bbox": [0.0, 0.0, 1e308, 1e308]},
                          {"label": "cat", "bbox": [None, 0.0, 1.0, 1.0]},
                          {"label": "dog", "bbox": [1.0, 1.0, 2.0, 2.0]}]})
        write_version(s, item=items["b.png"], provenance=Provenance.imported, origin="import",
                      author=None, data={"labels": [], "boxes": [], "polygons": [
                          {"label": "dog", "points": [1e300, 1e300, 2e300, 1e300, 2e300, 2e300]},
                          {"label": "dog", "points": [1.0, 1.0, 9.0, 1.0, 9.0, 9.0]}]})
        s.commit()
    for fmt in ("coco", "labelstudio", "yolo", "voc", "cvat"):
        r = ctx.client.get(f"/api/v1/projects/{pid}/export?format={fmt}", headers=admin)
        assert r.status_code == 200, (fmt, r.status_code, r.text[:300])
        text = _text(r.content)
        assert not re.search(r"\b(-?inf(inity)?|nan)\b|e\+", text, re.IGNORECASE), (fmt, text)
    coco = json.loads(ctx.client.get(f"/api/v1/projects/{pid}/export?format=coco",
                                     headers=admin).content)
    assert sorted(a["bbox"] for a in coco["annotations"]) == [[0.0, 0.0, 64.0, 64.0],
                                                              [1.0, 1.0, 2.0, 2.0],
                                                              [1.0, 1.0, 8.0, 8.0]]


def _text(data: bytes) -> str:
    if data[:2] != b"PK":
        return data.decode()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return "\n".join(archive.read(name).decode() for name in archive.namelist())


def test_csv_formula_labels_round_trip_through_the_service(ctx: Ctx) -> None:
    admin, pid = _project(ctx, "multilabel")
    evil = '=HYPERLINK("http://evil","x")'
    buffer = io.StringIO(newline="")
    csv.writer(buffer).writerows([["file_name", "labels"], ["a.png", f"'{evil};cat"],
                                  ["b.png", "@SUM(1)"]])
    data = buffer.getvalue().encode()
    out = _import(ctx, admin, pid, "csv", data)
    assert out["updated"] == 2
    assert _stored(ctx)["a.png"]["labels"] == [evil, "cat"]
    exported = ctx.client.get(f"/api/v1/projects/{pid}/export?format=csv", headers=admin)
    assert exported.status_code == 200
    rows = list(csv.reader(io.StringIO(exported.text, newline="")))
    assert rows[1][1] == f"'{evil};cat" and rows[2][1] == "'@SUM(1)"
    again = _import(ctx, admin, pid, "csv", exported.content)
    assert again["updated"] == 0 and again["unchanged"] == 2
