"""scan_folder: content-sniffed, sorted, hidden and links skipped, incremental."""

from __future__ import annotations

import os

import pytest

from service.ingest import relative_key, scan_folder


@pytest.fixture
def tree(tmp_path, encode, picture):
    root = tmp_path / "data"
    png = encode(picture(8, 8), "PNG")
    jpg = encode(picture(8, 8), "JPEG")
    files = {
        "b.png": png,
        "a/2.jpg": jpg,
        "a/1.png": png,
        "a/sub/3.tif": encode(picture(8, 8), "TIFF"),
        "scan_without_extension": b"\x00" * 128 + b"DICM" + b"\x00" * 16,
        "renamed.dat": png,  # an image whatever its name
        "notes.jpg": b"this is text, not a JPEG",  # a name is not enough
        "readme.txt": b"hello",
        "empty.png": b"",
        ".hidden.png": png,
        ".cache/x.png": png,
        "a/.thumbs/y.png": png,
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def keys(root, paths):
    return [relative_key(root, p) for p in paths]


EXPECTED = ["a/1.png", "a/2.jpg", "a/sub/3.tif", "b.png", "renamed.dat", "scan_without_extension"]


def test_lists_images_by_content_in_a_fixed_order(tree):
    found = list(scan_folder(tree))
    assert keys(tree, found) == EXPECTED
    assert all(p.is_relative_to(tree) for p in found)
    assert list(scan_folder(tree)) == found


def test_seen_files_are_skipped_for_incremental_refresh(tree, encode, picture):
    seen = {relative_key(tree, p) for p in scan_folder(tree)}
    assert list(scan_folder(tree, seen=seen)) == []
    (tree / "a" / "new.png").write_bytes(encode(picture(4, 4), "PNG"))
    (tree / "z").mkdir()
    (tree / "z" / "late.bmp").write_bytes(encode(picture(4, 4), "BMP"))
    assert keys(tree, scan_folder(tree, seen=seen)) == ["a/new.png", "z/late.bmp"]


def test_seen_files_are_not_even_opened(tree, monkeypatch):
    import service.ingest.folder as folder_mod

    opened: list[str] = []
    real_is_image = folder_mod._is_image

    def spy(path, on_error):
        opened.append(path)
        return real_is_image(path, on_error)

    monkeypatch.setattr(folder_mod, "_is_image", spy)
    list(scan_folder(tree, seen=set(EXPECTED)))
    assert not any(p.endswith(("1.png", "2.jpg", "3.tif")) for p in opened)


def test_symlinks_are_not_followed_by_default(tree, tmp_path, encode, picture):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(encode(picture(4, 4), "PNG"))
    os.symlink(outside, tree / "link_dir")
    os.symlink(outside / "secret.png", tree / "link_file.png")
    os.symlink(tree / "a", tree / "inside_link")
    assert keys(tree, scan_folder(tree)) == EXPECTED


def test_followed_symlinks_stay_inside_root_and_do_not_loop(tree, tmp_path, encode, picture):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(encode(picture(4, 4), "PNG"))
    os.symlink(outside, tree / "link_dir")
    os.symlink(outside / "secret.png", tree / "link_file.png")
    os.symlink("../..", tree / "a" / "sub" / "up")  # points at root: a loop
    os.symlink(tree / "b.png", tree / "c_alias.png")  # inside: followed
    os.symlink(tree / "missing.png", tree / "dangling.png")
    found = keys(tree, scan_folder(tree, follow_symlinks=True))
    assert found == [*EXPECTED[:4], "c_alias.png", *EXPECTED[4:]]
    assert not any("secret" in k or "up/" in k for k in found)


def test_unreadable_folder_is_reported_to_on_error(tree, monkeypatch):
    import service.ingest.folder as folder_mod

    real_scandir = os.scandir

    def scandir(path):
        if str(path).endswith("sub"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(folder_mod.os, "scandir", scandir)
    errors: list[OSError] = []
    found = keys(tree, scan_folder(tree, on_error=errors.append))
    assert "a/sub/3.tif" not in found and "b.png" in found
    assert len(errors) == 1 and isinstance(errors[0], PermissionError)


def test_root_must_be_a_folder(tmp_path):
    with pytest.raises(NotADirectoryError):
        list(scan_folder(tmp_path / "nope"))
