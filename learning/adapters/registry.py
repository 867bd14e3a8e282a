"""Adapter registry (STYLE rule 6): ``@register_adapter("key")``, ``create_adapter("key", ...)``,
``load_adapter(path)`` which reads the ``manifest.json`` that every saved model carries."""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from learning.adapters.base import ModelAdapter

MANIFEST = "manifest.json"
FORMAT_VERSION = 1

_ADAPTERS: dict[str, type] = {}
BUILTIN_ADAPTERS = {
    "classifier": "learning.adapters.classifier",
    "detector": "learning.adapters.detector",
}
"""Built-in keys and the module that registers each, imported on first lookup of that key
(importing this package stays cheap, free of cycles, and one broken module only breaks
its own key)."""
A = TypeVar("A", bound=type)

__all__ = [
    "BUILTIN_ADAPTERS",
    "FORMAT_VERSION",
    "MANIFEST",
    "UnknownAdapterError",
    "create_adapter",
    "get_adapter_class",
    "list_adapters",
    "load_adapter",
    "read_manifest",
    "register_adapter",
]


class UnknownAdapterError(KeyError):
    """No adapter is registered under that key."""

    def __str__(self) -> str:
        return str(self.args[0])


def register_adapter(key: str) -> Callable[[A], A]:
    """Class decorator: register an adapter class under ``key`` (sets ``cls.adapter_key``)."""

    def decorate(cls: A) -> A:
        existing = _ADAPTERS.get(key)
        if existing is not None and existing.__qualname__ != cls.__qualname__:
            raise ValueError(f"adapter key {key!r} already registered to {existing.__qualname__}")
        cls.adapter_key = key  # type: ignore[attr-defined]
        _ADAPTERS[key] = cls
        return cls

    return decorate


def list_adapters() -> list[str]:
    """Registered and built-in keys, sorted (built-ins are not imported by this call)."""
    return sorted(set(_ADAPTERS) | set(BUILTIN_ADAPTERS))


def get_adapter_class(key: str) -> type:
    """The class registered under ``key``, importing its built-in module if needed."""
    if key not in _ADAPTERS and key in BUILTIN_ADAPTERS:
        importlib.import_module(BUILTIN_ADAPTERS[key])
    try:
        return _ADAPTERS[key]
    except KeyError:
        known = ", ".join(repr(k) for k in list_adapters()) or "none"
        raise UnknownAdapterError(f"unknown adapter {key!r}; known adapters: {known}") from None


def create_adapter(key: str, **kwargs: Any) -> ModelAdapter:
    """``create_adapter("classifier", classes=[...], task="multiclass", backbone=...)``."""
    adapter: ModelAdapter = get_adapter_class(key)(**kwargs)
    return adapter


def read_manifest(path: Path | str) -> dict[str, Any]:
    """The ``manifest.json`` of a saved model directory."""
    file = Path(path) / MANIFEST
    if not file.is_file():
        raise FileNotFoundError(f"{path} is not a saved model: {MANIFEST} missing")
    manifest: dict[str, Any] = json.loads(file.read_text(encoding="utf-8"))
    if int(manifest.get("format_version", 0)) > FORMAT_VERSION:
        raise ValueError(f"{path} was saved by a newer labelloop (format {manifest['format_version']})")
    return manifest


def load_adapter(path: Path | str, **kwargs: Any) -> ModelAdapter:
    """Load a saved model with the adapter class its manifest names; ``kwargs`` (e.g.
    ``device=``, ``runtime_dir=``) go to that class's ``load``."""
    manifest = read_manifest(path)
    cls = get_adapter_class(str(manifest.get("adapter")))
    adapter: ModelAdapter = cls.load(path, **kwargs)  # type: ignore[attr-defined]
    return adapter
