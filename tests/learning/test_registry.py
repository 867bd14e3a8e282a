"""The adapter registry: factory, clear errors, manifests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from learning.adapters import (
    UnknownAdapterError,
    create_adapter,
    list_adapters,
    load_adapter,
    register_adapter,
    registry,
)
from learning.adapters.registry import FORMAT_VERSION, get_adapter_class, read_manifest


def test_known_keys_and_unknown_key_error() -> None:
    assert {"classifier", "detector"} <= set(list_adapters())
    assert get_adapter_class("classifier").__name__ == "ClassifierAdapter"
    with pytest.raises(UnknownAdapterError) as err:
        create_adapter("resnet-magic")
    assert "'resnet-magic'" in str(err.value) and "'classifier'" in str(err.value)


def test_a_key_cannot_be_taken_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_ADAPTERS", dict(registry._ADAPTERS))  # no leak into other tests

    @register_adapter("test-dummy")
    class Dummy:
        pass

    assert get_adapter_class("test-dummy") is Dummy and Dummy.adapter_key == "test-dummy"  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="already registered"):

        @register_adapter("test-dummy")
        class Other:
            pass


def test_manifest_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        load_adapter(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"adapter": "classifier", "format_version": FORMAT_VERSION + 1}))
    with pytest.raises(ValueError, match="newer"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"adapter": "nope", "format_version": 1}))
    with pytest.raises(UnknownAdapterError, match="nope"):
        load_adapter(tmp_path)
