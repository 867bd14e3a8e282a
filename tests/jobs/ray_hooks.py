"""What the Ray tests install in every process that runs a compute step (the test's own and
each Ray worker, through ``worker_process_setup_hook``): the classification pipeline and the
grids' and cold start's feature source (:mod:`service.loop.clusters`) build
:mod:`tests.fakes`' colour adapter, and its ``embed`` obeys flag files in the folder named by
``LABELLOOP_TEST_RAY_FLAGS``: ``slow`` (sleep that many seconds per call), ``fail`` (raise)."""

from __future__ import annotations

import importlib.abc
import os
import sys
import time
from pathlib import Path
from typing import Any

FLAGS_ENV = "LABELLOOP_TEST_RAY_FLAGS"


def flag(name: str) -> str | None:
    folder = os.environ.get(FLAGS_ENV)
    if not folder:
        return None
    path = Path(folder) / name
    return path.read_text() if path.exists() else None


def fake_create_adapter(key: str, **kw: Any) -> Any:
    """``create_adapter`` that builds the fake colour adapter whatever key it is given."""
    import tests.fakes as fakes
    from learning.adapters import create_adapter

    return create_adapter(fakes.KEY, **kw)


def flagged(embed: Any) -> Any:
    """``embed`` that first obeys the flags (``slow``, ``fail``)."""
    def wrapper(self: Any, images: Any, **kw: Any) -> Any:
        slow = flag("slow")
        if slow is not None:
            time.sleep(float(slow or 1.0))
        if flag("fail") is not None:
            raise ValueError("planted failure in embed")
        folder = os.environ.get(FLAGS_ENV)
        if folder:  # which processes embedded: the tests check the work left this one
            with (Path(folder) / "embedded-by").open("a") as f:
                f.write(f"{os.getpid()}\n")
        return embed(self, images, **kw)

    wrapper.flagged = True  # type: ignore[attr-defined]
    return wrapper


TARGETS = ("service.pipelines.classification", "service.loop.clusters")


def patch(module: Any) -> None:
    """Patch ``module`` (one of :data:`TARGETS`; and the fake's ``embed``) in this process."""
    import tests.fakes as fakes

    module.create_adapter = fake_create_adapter
    if hasattr(module, "pretrained_features"):
        module.pretrained_features.cache_clear()
    if not getattr(fakes.ColourAdapter.embed, "flagged", False):
        fakes.ColourAdapter.embed = flagged(fakes.ColourAdapter.embed)  # type: ignore[method-assign]


class PatchOnImport(importlib.abc.MetaPathFinder):
    """Patches the classification module when this process imports it (most Ray workers never
    do: importing torch in each would cost seconds of the test's two cores)."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name not in TARGETS:
            return None
        for finder in sys.meta_path:
            spec = None if finder is self else getattr(finder, "find_spec", lambda *a: None)(name, path, target)
            if spec is not None and spec.loader is not None:
                def exec_module(module: Any, run: Any = spec.loader.exec_module) -> None:
                    run(module)
                    patch(module)

                spec.loader.exec_module = exec_module  # type: ignore[method-assign]
                return spec
        return None


def use_fakes() -> None:
    """Ray workers' setup hook: patch this process (the test's own uses monkeypatch instead)."""
    for target in TARGETS:
        if target in sys.modules:
            patch(sys.modules[target])
    if not all(t in sys.modules for t in TARGETS) and not any(isinstance(f, PatchOnImport) for f in sys.meta_path):
        sys.meta_path.insert(0, PatchOnImport())


def slow_double(x: int) -> int:
    """A plain shard function (a number -> twice it), slowed by the ``slow`` flag."""
    slow = flag("slow")
    if slow is not None:
        time.sleep(float(slow or 1.0))
    if flag("fail") is not None and x == 3:
        raise ValueError(f"planted failure on {x}")
    return 2 * x
