"""Which device the heavy steps run on, and how they use it (pure helpers, no global state).

``LABELLOOP_DEVICE`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``) is resolved once by
:func:`resolve_device` when the settings are read, so a machine without CUDA fails at
start, not at the first job. Adapters, training and embedding then take the resulting
``torch.device`` as an explicit argument.

On CUDA: mixed precision (:func:`autocast`: bf16 where the card supports it, else fp16
with a :func:`grad_scaler`), channels-last images (:func:`to_device`), pinned host
memory and non-blocking copies. On the CPU all of these are no-ops: fp32, eager copies.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

import torch

__all__ = [
    "DeviceError",
    "DeviceLike",
    "amp_dtype",
    "autocast",
    "describe_device",
    "grad_scaler",
    "is_cuda",
    "resolve_device",
    "to_device",
]

DeviceLike = str | torch.device | None
_SPEC = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


class DeviceError(ValueError):
    """The requested device does not exist on this machine (one-sentence message)."""


def resolve_device(spec: DeviceLike = "auto") -> torch.device:
    """``"auto"`` | ``"cpu"`` | ``"cuda"`` | ``"cuda:N"`` (or a ``torch.device``) -> ``torch.device``.

    ``auto`` (and ``None``) is the first CUDA device when torch sees one, else the CPU.
    Raises :class:`DeviceError` when CUDA (or CUDA device ``N``) is asked for and absent,
    or when the spec is none of the above.
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    text = "auto" if spec is None else str(spec).strip().lower()
    if not _SPEC.match(text):
        raise DeviceError(f"device must be auto, cpu, cuda or cuda:N, got {spec!r}")
    if text == "auto":
        return torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DeviceError(
            f"LABELLOOP_DEVICE={text} asks for a CUDA GPU but torch {torch.__version__} sees none "
            "on this machine; use auto or cpu"
        )
    index = int(text.split(":")[1]) if ":" in text else 0
    count = torch.cuda.device_count()
    if index >= count:
        raise DeviceError(f"LABELLOOP_DEVICE={text} asks for CUDA device {index} but this machine has {count}")
    return torch.device("cuda", index)


def is_cuda(device: torch.device) -> bool:
    return device.type == "cuda"


def describe_device(device: torch.device) -> str:
    """E.g. ``cpu (2 threads)`` or ``cuda:0 (NVIDIA H100 80GB HBM3, bf16)``."""
    if is_cuda(device):
        name = torch.cuda.get_device_name(device)
        return f"{device} ({name}, {str(amp_dtype(device)).removeprefix('torch.')})"
    return f"cpu ({torch.get_num_threads()} threads)"


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """Reduced precision for autocast on ``device``: bf16 where the GPU supports it, else fp16;
    ``None`` on the CPU (fp32 there: CPU autocast would change predictions and calibration)."""
    if not is_cuda(device):
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """Mixed precision on CUDA (``amp_dtype``); a no-op context on the CPU."""
    dtype = amp_dtype(device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=dtype)


def grad_scaler(device: torch.device) -> torch.amp.GradScaler:
    """A loss scaler that is active only for fp16 autocast (bf16 and fp32 need none)."""
    return torch.amp.GradScaler("cuda", enabled=amp_dtype(device) == torch.float16)


def to_device(x: torch.Tensor, device: torch.device, *, image: bool = False) -> torch.Tensor:
    """Copy ``x`` to ``device``: from pinned memory and non-blocking on CUDA. ``image=True``
    (``[B, 3, H, W]``) also makes it channels-last, the layout the models are kept in
    (faster convolutions on both CUDA and the CPU's oneDNN)."""
    if is_cuda(device) and x.device.type == "cpu":
        if not x.is_pinned():
            x = x.pin_memory()
        x = x.to(device, non_blocking=True)
    elif x.device != device:
        x = x.to(device)
    return x.contiguous(memory_format=torch.channels_last) if image and x.dim() == 4 else x


@contextlib.contextmanager
def no_autocast() -> Iterator[None]:
    """Full precision inside an autocast block (e.g. for a loss or L-BFGS)."""
    with torch.autocast(device_type="cuda", enabled=False):
        yield
