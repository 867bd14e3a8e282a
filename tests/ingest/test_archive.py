"""iter_zip / is_zip: unsafe names, links, zip bombs, damaged archives."""

from __future__ import annotations

import io
import stat
import struct
import zipfile

import pytest

from service.ingest import Limits, Rejected, is_zip, iter_zip, safe_member_name
from service.ingest.archive import _read_capped

LIMITS = Limits()


def make_zip(members, *, compression=zipfile.ZIP_DEFLATED) -> bytes:
    """``members``: (name or ZipInfo, bytes) pairs, written in order."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return buf.getvalue()


def symlink_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # Unix
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def results(data, limits=LIMITS):
    return [
        (name, r.reason if isinstance(r, Rejected) else r)
        for name, r in iter_zip(data, limits=limits)
    ]


def test_regular_members_come_out_with_their_bytes(encode, picture, tmp_path):
    png = encode(picture(), "PNG")
    data = make_zip([("a/x.png", png), ("b.jpg", b"not checked here"), ("dir/", b"")])
    assert results(data) == [("a/x.png", png), ("b.jpg", b"not checked here")]
    path = tmp_path / "up.zip"
    path.write_bytes(data)
    assert results(path) == results(str(path)) == results(data)


@pytest.mark.parametrize(
    "name",
    [
        "../evil.png",
        "a/../../evil.png",
        "a/b/../../../evil.png",
        "/abs.png",
        "/etc/passwd",
        "C:/Windows/evil.png",
        "c:evil.png",
        "..\\evil.png",
        "a\\..\\..\\evil.png",
        "\\\\server\\share\\evil.png",
        "ok/..",
    ],
)
def test_escaping_names_are_unsafe(name, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    data = make_zip([(name, b"payload"), ("fine.png", b"ok")])
    assert results(data) == [(name, "unsafe_path"), ("fine.png", b"ok")]
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["work"]  # nothing written anywhere


def test_backslashes_inside_the_archive_are_separators():
    assert results(make_zip([("a\\b\\c.png", b"x")])) == [("a/b/c.png", b"x")]
    assert safe_member_name("./a//b/./c.png") == "a/b/c.png"
    assert safe_member_name("a/\x00.png") is None


def test_symlink_and_special_members_are_unsafe(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fifo = zipfile.ZipInfo("pipe")
    fifo.create_system = 3
    fifo.external_attr = (stat.S_IFIFO | 0o644) << 16
    data = make_zip([(symlink_info("link.png"), b"/etc/passwd"), (fifo, b""), ("ok.png", b"1")])
    assert results(data) == [("link.png", "unsafe_path"), ("pipe", "unsafe_path"), ("ok.png", b"1")]
    assert list(tmp_path.iterdir()) == []


def test_junk_and_hidden_entries_are_skipped():
    data = make_zip(
        [
            ("__MACOSX/._a.png", b"x"),
            ("a/.DS_Store", b"x"),
            (".hidden/b.png", b"x"),
            ("a.png", b"1"),
        ]
    )
    assert results(data) == [("a.png", b"1")]


def test_member_over_max_bytes_is_refused_without_inflating(monkeypatch):
    bomb = b"\x00" * (20 * 1024 * 1024)  # 20 MiB of zeros deflates to about 20 kB
    data = make_zip([("bomb.png", bomb), ("ok.png", b"fine")])
    assert len(data) < 100_000
    opened: list[str] = []
    real_open = zipfile.ZipFile.open

    def spy_open(zf, info, *args, **kwargs):
        opened.append(info.filename)
        return real_open(zf, info, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", spy_open)
    assert results(data, Limits(max_bytes=1024 * 1024)) == [
        ("bomb.png", "too_large"),
        ("ok.png", b"fine"),
    ]
    assert opened == ["ok.png"]  # the bomb was never inflated


def _patch_central_sizes(data: bytes, name: bytes, file_size: int) -> bytes:
    """Make the central directory lie about one member's inflated size."""
    out = bytearray(data)
    pos = out.index(b"PK\x01\x02")
    while True:
        name_len = struct.unpack_from("<H", out, pos + 28)[0]
        if bytes(out[pos + 46 : pos + 46 + name_len]) == name:
            struct.pack_into("<I", out, pos + 24, file_size)
            return bytes(out)
        pos = out.index(b"PK\x01\x02", pos + 4)


def test_member_that_lies_about_its_size_never_inflates_past_the_declared_size():
    data = make_zip([("liar.png", b"\x00" * (8 * 1024 * 1024))])
    lying = _patch_central_sizes(data, b"liar.png", 100)
    [(name, result)] = iter_zip(lying, limits=Limits(max_bytes=1024))
    assert name == "liar.png"
    assert isinstance(result, Rejected) and result.reason in ("corrupt", "too_large")


def test_read_is_capped_in_chunks():
    data = make_zip([("big", b"\x01" * 5000)])
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        info = zf.getinfo("big")
        assert _read_capped(zf, info, 4999) is None
        assert _read_capped(zf, info, 5000) == b"\x01" * 5000


def test_declared_total_over_cap_rejects_the_whole_archive():
    data = make_zip([(f"{i}.png", b"\x00" * 1000) for i in range(5)])
    with pytest.raises(Rejected) as err:
        list(iter_zip(data, limits=Limits(max_zip_total_bytes=4999)))
    assert err.value.reason == "too_large"
    assert len(results(data, Limits(max_zip_total_bytes=5000))) == 5


def test_too_many_members_rejects_the_whole_archive():
    data = make_zip([(f"{i}.png", b"x") for i in range(6)])
    with pytest.raises(Rejected) as err:
        next(iter_zip(data, limits=Limits(max_zip_members=5)))
    assert err.value.reason == "too_many_members"


@pytest.mark.parametrize(
    "data",
    [b"PK\x03\x04 this is not really a zip", b"", b"hello", None],
)
def test_unreadable_archive_is_corrupt(data):
    if data is None:  # a real zip cut in half loses its central directory
        whole = make_zip([("a.png", b"\x01" * 10_000)])
        data = whole[: len(whole) // 2]
    with pytest.raises(Rejected) as err:
        list(iter_zip(data, limits=LIMITS))
    assert err.value.reason == "corrupt"


def test_damaged_member_is_corrupt_and_the_rest_still_read():
    payload = bytes(range(256)) * 64
    data = bytearray(
        make_zip([("bad.png", payload), ("good.png", b"ok")], compression=zipfile.ZIP_STORED)
    )
    at = data.index(payload)
    data[at + 100] ^= 0xFF  # CRC no longer matches
    assert results(bytes(data)) == [("bad.png", "corrupt"), ("good.png", b"ok")]


def test_encrypted_member_is_refused():
    data = bytearray(make_zip([("secret.png", b"x" * 100)]))
    for sig, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = data.index(sig)
        data[at + offset] |= 0x1
    assert results(bytes(data)) == [("secret.png", "encrypted")]


def test_is_zip():
    assert is_zip(make_zip([("a", b"b")]))
    assert is_zip(make_zip([]))  # empty archive: end-of-directory record only
    assert not is_zip(b"\x89PNG\r\n\x1a\n")
    assert not is_zip(b"PK")
    assert results(make_zip([])) == []
