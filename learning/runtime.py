"""A fast CPU path for a frozen backbone: export once to ONNX, run it in OpenVINO or ONNX Runtime.

Eager PyTorch reaches a small share of a CPU's peak on mobile nets; an optimising runtime
(fused convolutions, BatchNorm folded into them, tuned kernels) goes several times faster.
:func:`load_or_export` wraps a backbone's feature function (:class:`FeatureGraph`: pooled,
L2-normalised features, the mirror-image average included) in an ONNX file, cached in
``cache_dir`` under a name derived from an :class:`ExportKey` (content hash of the
weights, input size, feature layers, mirror, runtime and its version, precision). The
``.json`` beside each file records that key and the file's own sha256: a file whose
record does not match (other weights, other runtime version, edited or truncated) is
rebuilt, never used.

Precision: ``f32`` (the default) is set *explicitly* in OpenVINO
(``INFERENCE_PRECISION_HINT``): its CPU plugin otherwise infers in bf16 on CPUs with
AVX-512 bf16 / AMX, which moves features by a few percent of their largest value and
would make thresholds calibrated in one precision wrong for the other. ``bf16`` is the
opt-in reduced-precision mode. Calibration must run on the same runtime and precision that
predicts: adapters put the runtime into their ``feature_version`` for that reason.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import uuid
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from learning.backbones import pooled_features

RUNTIMES = ("torch", "openvino", "onnxruntime")
PRECISIONS = ("f32", "bf16")
OPSET = 18

__all__ = [
    "ExportKey",
    "FastFeatures",
    "FeatureGraph",
    "PRECISIONS",
    "RUNTIMES",
    "RuntimeUnavailable",
    "available_runtimes",
    "best_runtime",
    "load_or_export",
    "runtime_version",
    "weights_digest",
]


class RuntimeUnavailable(RuntimeError):
    """The requested inference runtime is not installed or cannot run this graph."""


def runtime_version(runtime: str) -> str:
    """The installed version of ``runtime`` (``torch``, ``openvino``, ``onnxruntime``)."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    try:
        module = importlib.import_module(runtime)
    except ImportError as exc:
        raise RuntimeUnavailable(f"inference runtime {runtime!r} is not installed") from exc
    return str(getattr(module, "__version__", "unknown"))


def available_runtimes() -> list[str]:
    """Installed runtimes among :data:`RUNTIMES` (``torch`` always)."""
    out = []
    for name in RUNTIMES:
        with contextlib.suppress(RuntimeUnavailable):
            runtime_version(name)
            out.append(name)
    return out


def best_runtime(device: torch.device) -> str:
    """The runtime ``"auto"`` means: on the CPU the fastest installed one as measured here
    (OpenVINO, then ONNX Runtime; see ``lab/benchmarks/bench_embed.py``), else ``torch``."""
    if device.type != "cpu":
        return "torch"
    have = available_runtimes()
    for name in ("openvino", "onnxruntime"):
        if name in have:
            return name
    return "torch"


def weights_digest(module: nn.Module) -> str:
    """sha256 over ``module``'s state dict (names, dtypes, shapes, values), 16 hex digits."""
    h = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


class FeatureGraph(nn.Module):
    """``x [B, 3, S, S]`` -> :func:`~learning.backbones.pooled_features` ``[B, D]``; with
    ``mirror`` the L2-normalised sum of the features of ``x`` and of its left-right mirror
    (the two views run as one batch of ``2B``; BatchNorm is in eval mode, so rows do not mix)."""

    def __init__(self, backbone: nn.Module, layers: str, mirror: bool) -> None:
        super().__init__()
        self.backbone = backbone
        self.layers = layers
        self.mirror = mirror

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.mirror:
            return pooled_features(self.backbone, x, self.layers)
        both = pooled_features(self.backbone, torch.cat([x, x.flip(-1)]), self.layers)
        n = x.shape[0]
        return nn.functional.normalize(both[:n] + both[n:], dim=1)


@dataclass(frozen=True)
class ExportKey:
    """Everything an exported graph depends on; any change gives another file."""

    weights: str
    backbone: str
    image_size: int
    layers: str
    mirror: bool
    runtime: str
    runtime_version: str
    precision: str
    torch_version: str
    opset: int = OPSET

    def stem(self) -> str:
        digest = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]
        return f"{self.backbone}-{self.image_size}px-{self.weights}-{self.runtime}-{digest}"


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _export_onnx(graph: FeatureGraph, image_size: int, path: Path) -> None:
    """Write ``graph`` as ONNX (dynamic batch) to ``path`` atomically."""
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
    x = torch.zeros(2, 3, image_size, image_size)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                graph, (x,), str(tmp), input_names=["x"], output_names=["features"],
                dynamic_axes={"x": {0: "batch"}, "features": {0: "batch"}},
                opset_version=OPSET, dynamo=False,
            )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class FastFeatures:
    """A compiled feature graph: ``__call__(x [B, 3, S, S] float32) -> [B, D] float32``."""

    def __init__(self, key: ExportKey, run: Callable[[np.ndarray], np.ndarray], path: Path) -> None:
        self.key = key
        self.path = path
        self._run = run

    @property
    def runtime(self) -> str:
        return self.key.runtime

    @property
    def tag(self) -> str:
        """Short name for feature versions, e.g. ``openvino-f32``."""
        return f"{self.key.runtime}-{self.key.precision}"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self._run(np.ascontiguousarray(x, dtype=np.float32)), dtype=np.float32)


def _compile(path: Path, runtime: str, precision: str, threads: int | None) -> Callable[[np.ndarray], np.ndarray]:
    n = int(threads or torch.get_num_threads())
    if runtime == "openvino":
        import openvino as ov

        core = ov.Core()
        config = {
            "INFERENCE_PRECISION_HINT": precision,  # explicit: the CPU plugin defaults to bf16 where it can
            "PERFORMANCE_HINT": "LATENCY",  # one stream using every thread on a whole batch
            "INFERENCE_NUM_THREADS": n,
        }
        compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        request = compiled.create_infer_request()

        def run_ov(x: np.ndarray) -> np.ndarray:
            return np.array(request.infer({0: x})[0], copy=True)

        return run_ov
    if runtime == "onnxruntime":
        import onnxruntime as ort

        if precision != "f32":
            raise RuntimeUnavailable("onnxruntime's CPU path here runs f32 only")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = n, 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

        def run_ort(x: np.ndarray) -> np.ndarray:
            return np.asarray(session.run(None, {"x": x})[0])

        return run_ort
    raise ValueError(f"no compiled path for runtime {runtime!r}")


def load_or_export(
    backbone: nn.Module,
    *,
    backbone_name: str,
    layers: str,
    mirror: bool,
    image_size: int,
    runtime: str,
    cache_dir: Path | str,
    precision: str = "f32",
    threads: int | None = None,
    digest: str | None = None,
) -> FastFeatures:
    """The cached export of ``backbone``'s features for ``runtime``, rebuilt when missing or stale.

    ``digest``: :func:`weights_digest` of ``backbone`` if already known. Raises
    :class:`RuntimeUnavailable` when the runtime is missing or cannot compile the graph
    (callers fall back to eager PyTorch).
    """
    if runtime not in ("openvino", "onnxruntime"):
        raise ValueError(f"runtime must be openvino or onnxruntime, got {runtime!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    key = ExportKey(
        weights=digest or weights_digest(backbone), backbone=backbone_name, image_size=int(image_size),
        layers=layers, mirror=bool(mirror), runtime=runtime, runtime_version=runtime_version(runtime),
        precision=precision, torch_version=torch.__version__,
    )
    folder = Path(cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    onnx_path, meta_path = folder / f"{key.stem()}.onnx", folder / f"{key.stem()}.json"
    if not _matches(onnx_path, meta_path, key):
        was_training = backbone.training
        backbone.eval()
        try:
            _export_onnx(FeatureGraph(backbone, layers, mirror), key.image_size, onnx_path)
        finally:
            backbone.train(was_training)
        meta = {"key": asdict(key), "sha256": _sha256_file(onnx_path)}
        tmp = meta_path.with_name(f".{meta_path.name}.tmp-{uuid.uuid4().hex}")
        tmp.write_text(json.dumps(meta, indent=2), encoding="utf-8")
        os.replace(tmp, meta_path)
    try:
        run = _compile(onnx_path, runtime, precision, threads)
    except RuntimeUnavailable:
        raise
    except Exception as exc:  # a runtime that cannot compile this graph: fall back to eager
        raise RuntimeUnavailable(f"{runtime} cannot run the exported features: {exc}") from exc
    return FastFeatures(key, run, onnx_path)


def _matches(onnx_path: Path, meta_path: Path, key: ExportKey) -> bool:
    """Whether ``onnx_path`` exists, its record names ``key``, and its bytes are the recorded ones."""
    if not onnx_path.is_file() or not meta_path.is_file():
        return False
    try:
        meta: dict[str, Any] = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return meta.get("key") == asdict(key) and meta.get("sha256") == _sha256_file(onnx_path)
