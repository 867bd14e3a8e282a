"""Hostile input: unsafe zips, XML bombs, and random corruption -> FormatError only."""

from __future__ import annotations

import io
import random
import stat
import zipfile
from collections.abc import Callable

import pytest

from service.formats import FORMATS, FormatError, ImageLabels, LabelSet, _io, get_format

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<annotations><image id="0" name="&lol3;"/></annotations>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE annotation [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<annotation><filename>&xxe;</filename></annotation>"""

CLASSES = b"classes.txt"


def _zip(members: dict[str, bytes], *, link: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        if link is not None:
            info = zipfile.ZipInfo(link)
            info.create_system = 3
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, "/etc/passwd")
    return buffer.getvalue()


_YOLO_OK = {"classes.txt": b"cat\n", "labels/a.txt": b""}


@pytest.mark.parametrize("name", ["yolo", "voc", "cvat"])
@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: _zip({**_YOLO_OK, "/etc/evil.txt": b""}), "absolute paths"),
        (lambda: _zip({**_YOLO_OK, "C:/evil.txt": b""}), "absolute paths"),
        (lambda: _zip({**_YOLO_OK, "labels/../../evil.txt": b""}), r"'\.\.'"),
        (lambda: _zip({**_YOLO_OK, "labels\\evil.txt": b""}), "backslash"),
        (lambda: _zip(_YOLO_OK, link="labels/b.txt"), "symbolic links"),
        (lambda: _zip(_YOLO_OK)[:-30], "not a readable zip"),
        (lambda: _zip({"classes.txt": b"cat\n" * 20_000})[:200], "zip"),
    ],
)
def test_unsafe_or_broken_zip(name: str, make: Callable[[], bytes], match: str) -> None:
    with pytest.raises(FormatError, match=match):
        get_format(name).load(make())


def test_duplicate_zip_members() -> None:
    with pytest.warns(UserWarning, match="Duplicate name"):
        data = _zip({"classes.txt": b"cat\n"})
        buffer = io.BytesIO(data)
        with zipfile.ZipFile(buffer, "a") as archive:
            archive.writestr("classes.txt", b"dog\n")
    with pytest.raises(FormatError, match="appears twice"):
        get_format("yolo").load(buffer.getvalue())


def test_zip_content_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_io, "MAX_UNCOMPRESSED_BYTES", 1 << 20)
    bomb = _zip({"classes.txt": b"cat\n", "labels/a.txt": b" " * (2 << 20)})
    assert len(bomb) < 10_000
    with pytest.raises(FormatError, match="exceeds"):
        get_format("yolo").load(bomb)


def test_zip_member_lying_about_its_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_io, "MAX_UNCOMPRESSED_BYTES", 1 << 20)
    data = bytearray(_zip({"classes.txt": b"cat\n", "labels/a.txt": b" " * (2 << 20)}))
    # claim a tiny uncompressed size in the central directory of the big member
    central = data.rfind(b"PK\x01\x02")
    data[central + 24:central + 28] = (10).to_bytes(4, "little")
    with pytest.raises(FormatError, match="cannot be read|exceeds"):
        get_format("yolo").load(bytes(data))


@pytest.mark.parametrize("name", ["voc", "cvat"])
@pytest.mark.parametrize("document", [BILLION_LAUGHS, EXTERNAL_ENTITY])
def test_xml_entities_are_refused(name: str, document: bytes) -> None:
    with pytest.raises(FormatError, match="unsafe XML refused"):
        get_format(name).load(document)


@pytest.mark.parametrize("name", ["voc", "cvat"])
def test_xml_bomb_inside_zip_is_refused(name: str) -> None:
    member = "Annotations/a.xml" if name == "voc" else "annotations.xml"
    with pytest.raises(FormatError, match="unsafe XML refused"):
        get_format(name).load(_zip({member: BILLION_LAUGHS}))


@pytest.mark.parametrize("name", ["voc", "cvat"])
def test_broken_xml(name: str) -> None:
    with pytest.raises(FormatError, match="invalid XML"):
        get_format(name).load(b"<annotation><filename>a.jpg</filename>")


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_random_corruption_raises_only_format_error(
    name: str, source: Callable[[str], LabelSet]
) -> None:
    """Flip, cut and splice bytes of a valid export; load must succeed or raise FormatError."""
    fmt = get_format(name)
    valid = fmt.dump(source(name))
    rng = random.Random(f"corrupt-{name}")
    for _ in range(300):
        data = bytearray(valid)
        for _ in range(rng.randint(1, 4)):
            action = rng.random()
            position = rng.randrange(len(data))
            if action < 0.5:
                data[position] = rng.randrange(256)
            elif action < 0.75:
                del data[position:position + rng.randint(1, 20)]
            else:
                data[position:position] = rng.choice([b"-", b"[", b"{", b"<", b"1e999", b",",
                                                      b'"', b"\x00", b"NaN", b"..", b";"])
        try:
            fmt.load(bytes(data), image_sizes={"a.jpg": (640, 480)})
        except FormatError:
            pass
    for cut in range(0, len(valid), max(1, len(valid) // 60)):
        try:
            fmt.load(valid[:cut])
        except FormatError:
            pass


@pytest.mark.parametrize("name", ["yolo", "voc"])
def test_corrupted_zip_members_raise_only_format_error(
    name: str, source: Callable[[str], LabelSet]
) -> None:
    """Corrupt the files inside a valid export and zip them again."""
    fmt = get_format(name)
    with zipfile.ZipFile(io.BytesIO(fmt.dump(source(name)))) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    rng = random.Random(f"members-{name}")
    for _ in range(300):
        target = rng.choice(sorted(members))
        data = bytearray(members[target])
        for _ in range(rng.randint(1, 3)):
            position = rng.randrange(len(data) + 1)
            data[position:position + rng.randint(0, 3)] = rng.choice(
                [b"-", b"9", b"x", b" ", b"\n", b"<", b"&", b"99 ", b"0.5 ", b"\xff", b""])
        try:
            fmt.load(_zip({**members, target: bytes(data)}))
        except FormatError:
            pass


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_non_bytes_or_empty_input(name: str) -> None:
    with pytest.raises(FormatError):
        get_format(name).load(b"")
    with pytest.raises(FormatError, match="expected bytes, got str"):
        get_format(name).load("text")  # type: ignore[arg-type]
    dumped = get_format(name).dump(LabelSet(["a"], [ImageLabels("x.jpg", labels=["a"])]))
    loaded = get_format(name).load(bytearray(dumped))  # type: ignore[arg-type]
    assert loaded.images[0].labels == ["a"]
