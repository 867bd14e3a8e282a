"""Run an uploaded TorchScript model in a locked-down child process (parent side).

TorchScript is code: a scripted ``forward`` (or a ``__setstate__`` that ``torch.jit.load``
runs) may call ``torch.from_file``, ``torch.save`` and more. So labelloop never loads one in
the API or worker process. :class:`TorchScriptSandbox` starts ``python -m
learning.adapters._sandbox_child`` with a scrubbed environment in an empty temporary
directory and sends it the model *bytes* over stdin (never a path). The child imports torch,
warms up, then locks itself down (no new file descriptors, no file writes, capped memory and
CPU) *before* ``torch.jit.load``, refuses models whose graphs use operations outside a tensor
allowlist, and then answers run requests.

The wire format is deliberately dull: frames of ``8-byte big-endian length + payload``; each
message is one JSON header frame followed by ``header["frames"]`` payload frames. Arrays
travel only as ``.npy`` (``np.save`` / ``np.load(allow_pickle=False)``): nothing from the
child is ever unpickled. Errors from the child become :class:`SandboxError` whose message has
server paths replaced (see :func:`scrub_paths`).
"""

from __future__ import annotations

import io
import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = ["SandboxError", "TorchScriptSandbox", "read_message", "scrub_paths", "write_message"]

MAX_HEADER = 1 << 20
MAX_FRAME = 1 << 31
GiB = 1 << 30
# the project root (the folder holding ``learning/``): the child imports labelloop from here
_ROOT = str(Path(__file__).resolve().parents[2])
_PATH_RE = re.compile(r"(?<![\w.)\]/])(?:~|[A-Za-z]:)?[/\\](?:[\w.@+\-]+[/\\])*[\w.@+\-]+[/\\]?")


class SandboxError(ValueError):
    """The sandboxed model failed; ``stage`` is ``start``, ``load``, ``check`` or ``run``."""

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(message)
        self.stage = stage


def scrub_paths(text: str, limit: int = 300) -> str:
    """``text`` with absolute file paths replaced by ``<path>``, cut to ``limit`` characters."""
    out = _PATH_RE.sub("<path>", str(text))
    return out if len(out) <= limit else out[:limit] + "..."


def write_message(stream: IO[bytes], header: dict[str, Any], frames: Sequence[bytes] = ()) -> None:
    """One JSON header frame and its payload frames, flushed."""
    head = json.dumps({**header, "frames": len(frames)}).encode()
    for payload in (head, *frames):
        stream.write(len(payload).to_bytes(8, "big"))
        stream.write(payload)
    stream.flush()


def read_message(read_exact: Any) -> tuple[dict[str, Any], list[bytes]]:
    """``(header, frames)`` read through ``read_exact(n) -> bytes`` (which raises on EOF)."""
    n = int.from_bytes(read_exact(8), "big")
    if n > MAX_HEADER:
        raise SandboxError("run", "the model process sent a malformed reply")
    header = json.loads(read_exact(n))
    if not isinstance(header, dict) or not isinstance(header.get("frames", 0), int):
        raise SandboxError("run", "the model process sent a malformed reply")
    frames = []
    for _ in range(header.get("frames", 0)):
        size = int.from_bytes(read_exact(8), "big")
        if size > MAX_FRAME:
            raise SandboxError("run", "the model process sent an oversized reply")
        frames.append(read_exact(size))
    return header, frames


def npy_bytes(a: np.ndarray) -> bytes:
    """``a`` in numpy's ``.npy`` format (no pickles: object arrays raise)."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(a), allow_pickle=False)
    return buf.getvalue()


def npy_array(data: bytes) -> np.ndarray:
    """The array of one ``.npy`` payload; refuses pickled (object) arrays."""
    return np.load(io.BytesIO(data), allow_pickle=False)


def _child_env(workdir: str, threads: int) -> dict[str, str]:
    """A fresh environment: no secrets, no proxies, nothing of the server's but the code path."""
    return {"PATH": os.defpath, "PYTHONPATH": _ROOT, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONNOUSERSITE": "1",
            "PYTHONHASHSEED": "0", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8",
            "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": "PASSIVE"}


def _stop(proc: subprocess.Popen, workdir: str) -> None:
    """Kill the child (if alive), reap it and remove its working directory."""
    if proc.poll() is None:
        proc.kill()
    for stream in (proc.stdin, proc.stdout):
        try:
            if stream is not None:
                stream.close()
        except OSError:
            pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    shutil.rmtree(workdir, ignore_errors=True)


class TorchScriptSandbox:
    """One child process holding one checked TorchScript model; :meth:`run` arrays through it.

    Use as a context manager (or call :meth:`close`): the child is killed on close, on a
    timeout, and when the object is garbage-collected.
    """

    def __init__(self, data: bytes, *, num_threads: int = 1, timeout_s: float = 120.0,
                 memory_bytes: int = 4 * GiB, cpu_seconds: int = 6 * 3600) -> None:
        self.timeout_s = float(timeout_s)
        self._workdir = tempfile.mkdtemp(prefix="labelloop-sandbox-")
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-s", "-B", "-m", "learning.adapters._sandbox_child"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0,
                cwd=self._workdir, env=_child_env(self._workdir, num_threads), close_fds=True,
                start_new_session=True)
        except OSError as exc:
            shutil.rmtree(self._workdir, ignore_errors=True)
            raise SandboxError("start", f"could not start the model process ({type(exc).__name__})") from None
        self._finalizer = weakref.finalize(self, _stop, self._proc, self._workdir)
        try:
            self._request({"op": "load", "threads": int(num_threads), "memory_bytes": int(memory_bytes),
                           "cpu_seconds": int(cpu_seconds)}, [bytes(data)], stage="load",
                          timeout_s=self.timeout_s + 60.0)  # + importing torch
        except BaseException:
            self.close()
            raise

    @property
    def alive(self) -> bool:
        return self._finalizer.alive and self._proc.poll() is None

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """The model's flattened outputs for one input array."""
        _, frames = self._request({"op": "run"}, [npy_bytes(x)], stage="run", timeout_s=self.timeout_s)
        try:
            return [npy_array(f) for f in frames]
        except ValueError as exc:
            raise SandboxError("run", f"the model gave an output that is not a plain array ({exc})") from None

    def close(self) -> None:
        """Stop the child and remove its directory (idempotent)."""
        self._finalizer()

    def __enter__(self) -> TorchScriptSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ plumbing
    def _request(self, header: dict[str, Any], frames: list[bytes], *, stage: str,
                 timeout_s: float) -> tuple[dict[str, Any], list[bytes]]:
        if not self.alive:
            raise SandboxError(stage, "the model process has stopped")
        deadline = time.monotonic() + timeout_s
        try:
            assert self._proc.stdin is not None
            write_message(self._proc.stdin, header, frames)
            reply, out = read_message(lambda n: self._read_exact(n, deadline))
        except TimeoutError:
            self.close()
            raise SandboxError(stage, f"the model took longer than {timeout_s:.0f} s and was stopped") from None
        except (OSError, EOFError, ValueError) as exc:
            code = self._proc.poll()
            self.close()
            if isinstance(exc, SandboxError):
                raise
            why = f" (signal {-code})" if code is not None and code < 0 else ""
            raise SandboxError(stage, f"the model process stopped{why}: it crashed or went over its "
                                      "memory or CPU limit") from None
        if not reply.get("ok"):
            raise SandboxError(str(reply.get("stage", stage)), scrub_paths(str(reply.get("error", "failed"))))
        return reply, out

    def _read_exact(self, n: int, deadline: float) -> bytes:
        assert self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        buf = bytearray()
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            ready, _, _ = select.select([fd], [], [], min(left, 1.0))
            if not ready:
                continue
            chunk = os.read(fd, min(n - len(buf), 1 << 20))
            if not chunk:
                raise EOFError
            buf += chunk
        return bytes(buf)
