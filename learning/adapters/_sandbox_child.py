"""The sandbox child: lock down, load one TorchScript model from bytes, check its ops, serve runs.

Started by :class:`learning.adapters.sandbox.TorchScriptSandbox` as ``python -m
learning.adapters._sandbox_child``; speaks that module's framed protocol on stdin / stdout.
Order matters: everything that needs the file system (imports, thread pools, lazy imports
inside torch) happens in :func:`_warm_up`, then :func:`lock_down` takes away new file
descriptors, file writes, core dumps and caps memory and CPU, and only then does
``torch.jit.load`` run the archive's code (a ``__setstate__`` runs at load time). The model
is then refused unless every function in its compilation unit passes :func:`check_ops`.
"""

from __future__ import annotations

import io
import os
import resource
import signal
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from functools import lru_cache
from typing import Any

import numpy as np

from learning.adapters.sandbox import npy_array, npy_bytes, read_message, write_message

ALLOWED_NAMESPACES = ("aten", "prim", "torchvision", "quantized")
# ops that reach files, storages, raw memory, other processes or the network, by exact name ...
DENIED_OPS = frozenset({
    "aten::from_file", "aten::save", "aten::set", "aten::set_", "aten::set_data", "aten::data_ptr",
    "aten::wait", "prim::PythonOp", "prim::CallFunction", "prim::CallMethod", "prim::fork",
    "prim::awaitable", "prim::awaitable_nowait", "prim::awaitable_wait"})
# ... by the start of the op name (after the namespace) ...
DENIED_PREFIXES = ("as_strided", "_unsafe", "unsafe_", "rpc_")
# ... and by a word anywhere in it
DENIED_WORDS = ("file", "save", "load", "pickle", "storage", "mmap", "shared", "share_memory", "pointer", "ptr")


class Refused(ValueError):
    """The model uses operations (or load-time code) that labelloop does not run."""


def lock_down(*, memory_bytes: int = 4 << 30, cpu_seconds: int = 3600) -> int:
    """From now on this process opens no file, socket or pipe, writes no file, dumps no core,
    and stays within ``memory_bytes`` more address space and ``cpu_seconds`` of CPU.

    ``RLIMIT_NOFILE`` is set to the lowest free descriptor number: every number below it is
    taken, so ``open()`` / ``socket()`` fail with ``EMFILE``. Returns that limit.
    """
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past RLIMIT_FSIZE fails with EFBIG instead
    with open("/proc/self/status", "rb") as fh:
        vm_kb = next((int(line.split()[1]) for line in fh if line.startswith(b"VmSize:")), 0)
    probe = os.open(os.devnull, os.O_RDONLY)  # the lowest free descriptor number
    os.close(probe)
    rlimits = [(resource.RLIMIT_CORE, 0), (resource.RLIMIT_FSIZE, 0), (resource.RLIMIT_MSGQUEUE, 0),
               (resource.RLIMIT_AS, vm_kb * 1024 + int(memory_bytes)), (resource.RLIMIT_CPU, int(cpu_seconds)),
               (resource.RLIMIT_NOFILE, probe)]
    for which, value in rlimits:
        _soft, hard = resource.getrlimit(which)
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(which, (value, value))
    return probe


@lru_cache(maxsize=4096)
def _denied(kind: str) -> bool:
    """Whether the op ``namespace::name`` is outside the allowlist."""
    import torch

    ns, _, name = kind.partition("::")
    if ns not in ALLOWED_NAMESPACES or kind in DENIED_OPS or name.startswith(DENIED_PREFIXES):
        return True
    if any(word in name.lower() for word in DENIED_WORDS):
        return True
    try:
        schemas = torch._C._jit_get_schemas_for_operator(kind)
    except RuntimeError:
        schemas = []
    return any("Storage" in str(s) for s in schemas)


def _nodes(graph: Any) -> Iterator[Any]:
    """Every node of ``graph``, recursing into blocks and graph-valued attributes."""
    for node in graph.nodes():
        yield node
        for block in node.blocks():
            yield from _nodes(block)
        for attr in node.attributeNames():
            kind = node.kindOf(attr)
            if kind == "g":
                yield from _nodes(node.g(attr))
            elif kind == "gs":
                for g in node.gs(attr):
                    yield from _nodes(g)


def check_ops(functions: list[Any]) -> None:
    """Raise :class:`Refused` naming the ops outside the allowlist in any of ``functions``
    (TorchScript functions and methods; their inlined graphs are walked), or a ``__setstate__``."""
    bad: set[str] = set()
    for fn in functions:
        if fn.qualified_name.rsplit(".", 1)[-1] == "__setstate__":
            raise Refused("the model defines __setstate__ (code that runs while loading); labelloop does not "
                          "run that")
        bad.update(k for node in _nodes(fn.inlined_graph) if _denied(k := node.kind()))
    if bad:
        ops = ", ".join(sorted(bad))
        verb = "which is not a tensor operation" if len(bad) == 1 else "which are not tensor operations"
        raise Refused(f"the model uses {ops}, {verb} labelloop runs")


def scan_archive(data: bytes) -> None:
    """Refuse, before loading, an archive whose code defines ``__setstate__`` (load-time code)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            for info in zf.infolist():
                if "/code/" in f"/{info.filename}" and info.filename.endswith(".py") \
                        and b"__setstate__" in zf.read(info):
                    raise Refused("the model defines __setstate__ (code that runs while loading); labelloop "
                                  "does not run that")
    except zipfile.BadZipFile:
        raise ValueError("the file is not a TorchScript archive") from None


def load_checked(data: bytes) -> Any:
    """Load the archive (call after :func:`lock_down`) and check every compiled function."""
    import torch

    jit: Any = torch._C  # private bindings (the stubs lag behind them)
    cu = jit.CompilationUnit()  # keeps every compiled function and class method of the archive
    cpp = jit.import_ir_module_from_buffer(cu, data, torch.device("cpu"), {}, False)
    check_ops(list(cu.get_functions()))
    return torch.jit._recursive.wrap_cpp_module(cpp).eval()


def flatten(out: Any) -> list[np.ndarray]:
    """TorchScript outputs (tensor, tuple/list, dict, torchvision ``(losses, [dict])``) -> arrays."""
    import torch

    if isinstance(out, torch.Tensor):
        return [out.detach().numpy()]
    if isinstance(out, dict):
        keys = [k for k in ("boxes", "labels", "scores", "masks") if k in out] or list(out)
        return [np.asarray(out[k].detach().numpy()) for k in keys]
    if isinstance(out, list | tuple):
        dicts = [o for o in out if isinstance(o, dict) and o] or [o[0] for o in out if isinstance(o, list) and o
                                                                  and isinstance(o[0], dict)]
        if dicts:
            return flatten(dicts[0])
        return [a for o in out for a in flatten(o)]
    raise ValueError(f"unsupported model output type {type(out).__name__}")


def _warm_up(threads: int) -> None:
    """Import and exercise everything that loading and running need while files may still be opened."""
    import torch
    from torch import nn

    try:
        import torchvision  # noqa: F401  (registers torchvision::nms, roi_align, ...)
    except ImportError:
        pass
    torch.set_num_threads(max(1, threads))

    class _Probe(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.conv2d(x, torch.ones(2, 3, 3, 3)).relu().mean(dim=(2, 3))

    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(_Probe()), buf)
    module = load_checked(buf.getvalue())
    with torch.inference_mode():
        outs = flatten(module(torch.zeros(1, 3, 16, 16)))
        try:  # error messages print tensors: import what that needs now
            module([torch.zeros(1, 3, 16, 16)])
        except RuntimeError:
            pass
    repr(torch.zeros(2, 2))
    npy_array(npy_bytes(outs[0]))


def _exit_with_parent() -> None:
    """A daemon thread that ends this process once its parent is gone (a killed server's child
    stuck in a model would otherwise spin on until its CPU limit)."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(3)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _reader(fd: int) -> Callable[[int], bytes]:
    def read_exact(n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = os.read(fd, min(n - len(buf), 1 << 20))
            if not chunk:
                raise EOFError
            buf += chunk
        return bytes(buf)
    return read_exact


def main() -> int:
    """Serve one model: a ``load`` message (and the model bytes), then ``run`` messages until EOF."""
    import warnings

    warnings.simplefilter("ignore")
    out = os.fdopen(os.dup(1), "wb")  # the protocol; fd 1 itself goes to /dev/null (model prints)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.close(null)
    read_exact = _reader(0)
    _exit_with_parent()
    try:
        header, frames = read_message(read_exact)
        if header.get("op") != "load" or len(frames) != 1:
            raise ValueError("expected a load message")
    except (EOFError, ValueError):
        return 2
    try:
        scan_archive(frames[0])
        import torch

        _warm_up(int(header.get("threads", 1)))
        lock_down(memory_bytes=int(header["memory_bytes"]), cpu_seconds=int(header["cpu_seconds"]))
        module = load_checked(frames[0])
    except Refused as exc:
        write_message(out, {"ok": False, "stage": "check", "error": str(exc)})
        return 1
    except Exception as exc:  # noqa: BLE001  (any loader error: not a usable model)
        write_message(out, {"ok": False, "stage": "load", "error": f"{type(exc).__name__}: {exc}"})
        return 1
    del frames
    write_message(out, {"ok": True})
    while True:
        try:
            header, frames = read_message(read_exact)
        except EOFError:
            return 0
        try:
            if header.get("op") != "run" or len(frames) != 1:
                raise ValueError("expected a run message with one array")
            with torch.inference_mode():
                arrays = flatten(module(torch.from_numpy(npy_array(frames[0]))))
            payload = [npy_bytes(a) for a in arrays]
        except Exception as exc:  # noqa: BLE001  (the model's own error, reported to the parent)
            write_message(out, {"ok": False, "stage": "run", "error": f"{type(exc).__name__}: {exc}"})
            continue
        write_message(out, {"ok": True}, payload)


if __name__ == "__main__":
    sys.exit(main())
