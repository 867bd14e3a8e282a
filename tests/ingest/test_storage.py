"""BlobStore: content-addressed layout, atomic writes, thumbnails, clear disk errors."""

from __future__ import annotations

import errno
import os
import pickle
import time

import pytest
from PIL import Image

from service.ingest import BlobStore, Limits, StorageError, inspect_image
from service.ingest import storage as storage_mod


@pytest.fixture
def store(tmp_path):
    return BlobStore(tmp_path / "blobs")


@pytest.fixture
def png(encode, picture):
    data = encode(picture(300, 200, "RGBA"), "PNG")
    return data, inspect_image(data, limits=Limits())


def _all_files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_put_stores_bytes_at_content_address(store, png):
    data, info = png
    path = store.put(data, info)
    sha = info.sha256
    assert path == store.root / "objects" / sha[:2] / sha[2:4] / sha
    assert path.read_bytes() == data
    assert store.exists(sha) and store.read(sha) == data
    assert _all_files(store.root) == [f"objects/{sha[:2]}/{sha[2:4]}/{sha}"]


def test_put_is_idempotent_and_does_not_rewrite(store, png, monkeypatch):
    data, info = png
    first = store.put(data, info)
    calls = []
    monkeypatch.setattr(storage_mod.os, "replace", lambda *a: calls.append(a))
    assert store.put(data, info) == first
    assert calls == []


def test_put_refuses_data_that_does_not_match_its_info(store, png):
    data, info = png
    with pytest.raises(ValueError):
        store.put(data + b"x", info)
    assert not store.root.exists()


@pytest.mark.parametrize(
    "bad",
    ["../../etc/passwd", "A" * 64, "a" * 63, "g" * 64, "a" * 64 + "/x", "", "a" * 62 + "/."],
)
def test_paths_are_built_only_from_hex_digests(store, bad):
    for call in (store.path, store.exists, store.delete, store.thumbnail):
        with pytest.raises(ValueError):
            call(bad)


def test_thumbnail_is_rgb_jpeg_within_size_and_cached(store, png, monkeypatch):
    data, info = png
    store.put(data, info)
    thumb = store.thumbnail(info.sha256, size=64)
    assert thumb.suffix == ".jpg" and thumb.is_relative_to(store.root / "thumbs")
    with Image.open(thumb) as im:
        assert (im.format, im.mode) == ("JPEG", "RGB")
        assert max(im.size) == 64 and im.size == (64, 43)
    monkeypatch.setattr(storage_mod, "open_rgb", lambda *a, **k: pytest.fail("re-decoded"))
    assert store.thumbnail(info.sha256, size=64) == thumb
    default = store.thumbnail_path(info.sha256)
    assert not default.exists() and default != thumb


def test_thumbnail_of_small_image_is_not_enlarged(store, encode, picture):
    data = encode(picture(20, 10, "I;16"), "PNG")
    info = inspect_image(data, limits=Limits())
    store.put(data, info)
    with Image.open(store.thumbnail(info.sha256)) as im:
        assert im.size == (20, 10) and im.mode == "RGB"


def test_thumbnail_of_missing_object_or_bad_size(store, png):
    _, info = png
    with pytest.raises(FileNotFoundError):
        store.thumbnail(info.sha256)
    with pytest.raises(ValueError):
        store.thumbnail(info.sha256, size=0)


def test_delete_removes_object_and_thumbnails(store, png):
    data, info = png
    store.put(data, info)
    store.thumbnail(info.sha256, size=32)
    store.thumbnail(info.sha256, size=256)
    store.delete(info.sha256)
    assert not store.exists(info.sha256)
    assert _all_files(store.root) == []
    store.delete(info.sha256)  # absent is fine


def _raise(code):
    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    return fail


@pytest.mark.parametrize(
    ("target", "code", "reason"),
    [
        ("replace", errno.EROFS, "read_only"),
        ("fsync", errno.ENOSPC, "disk_full"),
        ("replace", errno.EACCES, "permission_denied"),
        ("fsync", errno.EIO, "io_error"),
    ],
)
def test_failed_write_raises_storage_error_and_leaves_nothing(
    store, png, monkeypatch, target, code, reason
):
    data, info = png
    monkeypatch.setattr(storage_mod.os, target, _raise(code))
    with pytest.raises(StorageError) as err:
        store.put(data, info)
    assert err.value.reason == reason and err.value.errno == code
    assert isinstance(err.value.__cause__, OSError)
    assert err.value.message.startswith("Could not store")
    assert not store.exists(info.sha256)
    assert _all_files(store.root) == []  # no partial object, no temporary file


def test_read_only_folder_fails_before_writing(store, png, monkeypatch):
    data, info = png
    monkeypatch.setattr(storage_mod.tempfile, "mkstemp", _raise(errno.EROFS))
    with pytest.raises(StorageError) as err:
        store.put(data, info)
    assert err.value.reason == "read_only"
    assert "read-only" in str(err.value)


def test_disk_full_while_writing_a_thumbnail(store, png, monkeypatch):
    data, info = png
    store.put(data, info)
    monkeypatch.setattr(storage_mod.os, "fsync", _raise(errno.ENOSPC))
    with pytest.raises(StorageError) as err:
        store.thumbnail(info.sha256)
    assert err.value.reason == "disk_full" and "disk is full" in err.value.message
    assert not store.thumbnail_path(info.sha256).exists()
    assert _all_files(store.root / "thumbs") == []


def test_existing_object_survives_a_failed_rewrite(store, png, monkeypatch):
    data, info = png
    path = store.put(data, info)
    path.write_bytes(data[:10])  # damaged on disk: put rewrites it
    monkeypatch.setattr(storage_mod.os, "replace", _raise(errno.ENOSPC))
    with pytest.raises(StorageError):
        store.put(data, info)
    assert path.read_bytes() == data[:10]  # old file untouched, no partial file over it
    monkeypatch.undo()
    assert store.put(data, info).read_bytes() == data


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_real_read_only_folder(tmp_path, png):
    data, info = png
    root = tmp_path / "ro"
    root.mkdir(mode=0o555)
    try:
        with pytest.raises(StorageError) as err:
            BlobStore(root).put(data, info)
        assert err.value.reason in ("permission_denied", "read_only")
    finally:
        root.chmod(0o755)


def test_storage_error_pickles():
    err = StorageError("disk_full", "Could not store x: the disk is full.", errno=errno.ENOSPC)
    again = pickle.loads(pickle.dumps(err))
    assert (again.reason, again.message, again.errno) == (err.reason, err.message, err.errno)


def test_sweep_partials_removes_only_old_temporaries(store, png):
    data, info = png
    store.put(data, info)
    folder = store.path(info.sha256).parent
    old, new = folder / ".tmp-old.part", folder / ".tmp-new.part"
    old.write_bytes(b"x")
    new.write_bytes(b"x")
    past = time.time() - 7200
    os.utime(old, (past, past))
    assert store.sweep_partials(older_than_s=3600) == 1
    assert not old.exists() and new.exists() and store.exists(info.sha256)
