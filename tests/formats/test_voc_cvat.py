"""Pascal VOC and CVAT XML: coordinate conventions, foreign files and errors."""

from __future__ import annotations

import io
import zipfile

import pytest

from service.formats import FormatError, ImageLabels, LabelSet, Shape, get_format

VOC = get_format("voc")
CVAT = get_format("cvat")

VOC_XML = b"""<annotation>
  <folder>VOC2007</folder><filename>000001.jpg</filename>
  <size><width>353</width><height>500</height><depth>3</depth></size>
  <object><name>dog</name><difficult>1</difficult>
    <bndbox><xmin>1</xmin><ymin>1</ymin><xmax>353</xmax><ymax>500</ymax></bndbox></object>
  <object><name>person</name>
    <bndbox><xmin>8</xmin><ymin>12</ymin><xmax>352</xmax><ymax>498</ymax></bndbox></object>
</annotation>"""


def test_voc_is_one_based_and_inclusive() -> None:
    loaded = VOC.load(VOC_XML)
    assert loaded.classes == ["dog", "person"]
    image = loaded.images[0]
    assert (image.file_name, image.width, image.height) == ("000001.jpg", 353, 500)
    assert image.shapes == [Shape("dog", [0.0, 0.0, 353.0, 500.0]),  # the whole image
                            Shape("person", [7.0, 11.0, 345.0, 487.0])]
    dumped = VOC.dump(loaded)
    with zipfile.ZipFile(io.BytesIO(dumped)) as archive:
        xml = archive.read("Annotations/000001.xml")
    assert b"<xmin>1</xmin>" in xml and b"<xmax>353</xmax>" in xml
    assert b"<xmin>8</xmin>" in xml and b"<ymax>498</ymax>" in xml


def test_voc_size_from_image_sizes_and_class_list() -> None:
    xml = VOC_XML.replace(b"<size><width>353</width><height>500</height><depth>3</depth></size>",
                          b"")
    assert VOC.load(xml, image_sizes={"000001.jpg": (30, 40)}).images[0].width == 30
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("VOC/Annotations/1.xml", VOC_XML)
        archive.writestr("VOC/classes.txt", "dog\n")
    with pytest.raises(FormatError, match="class 'person' is not in classes.txt"):
        VOC.load(buffer.getvalue())


@pytest.mark.parametrize(
    ("xml", "match"),
    [
        (b"<annotations/>", "root element must be <annotation>"),
        (b"<annotation><size/></annotation>", "<filename>: expected a non-empty string"),
        (b"<annotation><filename>a</filename><object><name>x</name></object></annotation>",
         "missing <bndbox>"),
        (b"<annotation><filename>a</filename><object><name>x</name><bndbox><xmin>5</xmin>"
         b"<ymin>1</ymin><xmax>3</xmax><ymax>4</ymax></bndbox></object></annotation>",
         "positive width"),
        (b"<annotation><filename>a</filename><object><name>x</name><bndbox><xmin>one</xmin>"
         b"<ymin>1</ymin><xmax>3</xmax><ymax>4</ymax></bndbox></object></annotation>",
         "<xmin>: expected a number"),
        (b"<annotation><filename>a</filename><object><bndbox/></object></annotation>",
         "<name>"),
        (b"<annotation><filename>a</filename><labelloop><provenance>robot</provenance>"
         b"</labelloop></annotation>", "unknown provenance 'robot'"),
    ],
)
def test_voc_malformed(xml: bytes, match: str) -> None:
    with pytest.raises(FormatError, match=match):
        VOC.load(xml)


def test_voc_writes_polygons_as_boxes() -> None:
    labels = LabelSet(["cat"], [ImageLabels("a.jpg", 9, 9, shapes=[
        Shape("cat", points=[1.0, 1.0, 5.0, 1.0, 3.0, 4.0])])])
    assert VOC.load(VOC.dump(labels)).images[0].shapes == [Shape("cat", [1.0, 1.0, 4.0, 3.0])]


CVAT_XML = b"""<?xml version="1.0" encoding="utf-8"?>
<annotations>
  <version>1.1</version>
  <meta><project><labels>
    <label><name>car</name><type>any</type></label>
    <label><name>tree</name></label>
    <label><name>night</name></label>
  </labels></project></meta>
  <image id="5" name="frames/f1.png" width="100" height="80" subset="default">
    <box label="car" source="auto" occluded="0" xtl="10.5" ytl="20.25" xbr="30" ybr="40"
         z_order="0"><attribute name="color">red</attribute></box>
    <polygon label="tree" source="manual" occluded="1" points="1.5,2;10,2;10,12.5"/>
    <tag label="night" source="manual"/>
  </image>
  <image id="6" name="frames/f2.png" width="100" height="80"/>
</annotations>"""


def test_cvat_foreign_file() -> None:
    loaded = CVAT.load(CVAT_XML)
    assert loaded.classes == ["car", "tree", "night"]
    first, second = loaded.images
    assert first == ImageLabels(
        "frames/f1.png", 100, 80, labels=["night"], provenance="human",  # mixed -> human
        shapes=[Shape("car", [10.5, 20.25, 19.5, 19.75]),
                Shape("tree", [1.5, 2.0, 8.5, 10.5], [1.5, 2.0, 10.0, 2.0, 10.0, 12.5])])
    assert second == ImageLabels("frames/f2.png", 100, 80)


def test_cvat_zip_export_with_annotations_xml() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("annotations.xml", CVAT_XML)
    assert CVAT.load(buffer.getvalue()) == CVAT.load(CVAT_XML)


def test_cvat_provenance_maps_to_source() -> None:
    labels = LabelSet(["car"], [ImageLabels("a.jpg", 9, 9, labels=["car"], provenance="model")])
    assert b'<tag label="car" source="auto" />' in CVAT.dump(labels)


@pytest.mark.parametrize(
    ("xml", "match"),
    [
        (b"<annotation/>", "root element must be <annotations>"),
        (b'<annotations><image id="0"/></annotations>', "name: expected a non-empty string"),
        (b'<annotations><image name="a"><box label="c" xtl="5" ytl="0" xbr="1" ybr="3"/>'
         b"</image></annotations>", "positive width"),
        (b'<annotations><image name="a"><box label="c" xtl="0" ytl="0" xbr="1"/>'
         b"</image></annotations>", "ybr: expected a number"),
        (b'<annotations><image name="a"><polygon label="c" points="1,2;3"/>'
         b"</image></annotations>", "points must be 'x,y;x,y"),
        (b'<annotations><image name="a"><polygon label="c" points="1,2;3,4"/>'
         b"</image></annotations>", "polygon needs an even number"),
        (b'<annotations><image name="a"><mask label="c" rle="1,2"/></image></annotations>',
         "CVAT <mask> shapes are not supported"),
        (b'<annotations><image name="a"><tag/></image></annotations>', "<tag> 0 label"),
        (b'<annotations><image name="a" width="0" height="3"/></annotations>',
         "image size must be > 0"),
        (b'<annotations><image name="a"/><image name="a"/></annotations>', "appears twice"),
    ],
)
def test_cvat_malformed(xml: bytes, match: str) -> None:
    with pytest.raises(FormatError, match=match):
        CVAT.load(xml)
