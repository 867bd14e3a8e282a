"""External models (ONNX or TorchScript) for automatic annotation: load, check, predict.

Models arrive as bytes and are never loaded from a path, so no loader message names a server
file. Nothing is unpickled. ONNX runs in onnxruntime in this process: an ONNX graph is data,
and onnxruntime's default operators do no file I/O; files that keep weights in *external
data* (file paths) are refused before onnxruntime sees them. TorchScript is code, so it
never loads here: :class:`~learning.adapters.sandbox.TorchScriptSandbox` runs it in a
locked-down child process that first checks its operations against an allowlist. Call
:meth:`ExternalAdapter.close` (or use it as a context manager) to stop that child.

*Input spec* (``InputSpec.from_dict``): ``size`` (``S`` or ``[H, W]``), ``mean`` and ``std``
(3 values, applied after ``scale``), ``scale`` (default ``1/255``: pixels to [0, 1]),
``layout`` ``"NCHW"`` (default) or ``"NHWC"``. Every image is resized to ``[H, W]`` (aspect
not kept) and fed alone (batch of 1, float32).

*Outputs by task.*
* ``multiclass`` / ``multilabel``: one tensor ``[1, C]`` or ``[C]`` with ``C = len(labels)``;
  ``activation`` (spec) ``"softmax"`` / ``"sigmoid"`` / ``"none"``; default ``"auto"``: values
  already in [0, 1] (and rows summing to 1 for multiclass) are kept, else softmax (multiclass)
  or sigmoid (multilabel).
* ``detection`` / ``segmentation``: torchvision-style ``boxes [K, 4]`` (x1, y1, x2, y2 in input
  pixels), ``labels [K]`` (integers), ``scores [K]``, optional ``masks [K, 1, H, W]`` or
  ``[K, H, W]`` (probabilities), as separate outputs (any order: told apart by shape and dtype)
  or a dict; or one tensor ``[K, 6]`` / ``[1, K, 6]`` of (x1, y1, x2, y2, score, class).
  Class index ``i`` names ``labels[i - label_offset]`` (``label_offset`` in the spec, default 0;
  1 for torchvision models whose index 0 is the background); others are dropped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from learning.adapters.base import Predictions, Task
from learning.adapters.sandbox import SandboxError, TorchScriptSandbox, scrub_paths
from learning.data import ImageSource, load_rgb
from learning.device import DeviceLike, resolve_device
from learning.polygons import mask_to_polygon

__all__ = ["ExternalAdapter", "ExternalModelError", "InputSpec", "check_labels", "validate_model"]

KINDS = ("onnx", "torchscript")
TASKS = ("multiclass", "multilabel", "detection", "segmentation")


def onnx_providers(device: Any) -> list[Any]:
    """onnxruntime providers for ``device``: CUDA first when asked for and installed
    (``onnxruntime-gpu``), the CPU always as the fallback. TorchScript models always run on
    the CPU, in their sandbox child."""
    import onnxruntime as ort

    if getattr(device, "type", "cpu") == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        return [("CUDAExecutionProvider", {"device_id": int(device.index or 0)}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class ExternalModelError(ValueError):
    """The file is not a usable model for the given spec (the message says why)."""


@dataclass(frozen=True)
class InputSpec:
    height: int
    width: int
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    scale: float = 1.0 / 255.0
    layout: str = "NCHW"
    activation: str = "auto"
    label_offset: int = 0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InputSpec:
        try:
            size = d["size"]
            h, w = (int(size), int(size)) if isinstance(size, int | float) else (int(size[0]), int(size[1]))
            spec = cls(h, w, tuple(float(v) for v in d.get("mean", (0, 0, 0))),  # type: ignore[arg-type]
                       tuple(float(v) for v in d.get("std", (1, 1, 1))),  # type: ignore[arg-type]
                       float(d.get("scale", 1 / 255)), str(d.get("layout", "NCHW")).upper(),
                       str(d.get("activation", "auto")), int(d.get("label_offset", 0)))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ExternalModelError(f"bad input spec {d!r}: needs size (S or [H, W]), optional mean/std "
                                     f"(3 numbers), scale, layout NCHW|NHWC ({exc})") from None
        if not (1 <= h <= 4096 and 1 <= w <= 4096) or len(spec.mean) != 3 or len(spec.std) != 3:
            raise ExternalModelError(f"bad input spec {d!r}: size 1-4096, mean and std 3 numbers each")
        if any(s == 0 for s in spec.std) or spec.layout not in ("NCHW", "NHWC"):
            raise ExternalModelError("bad input spec: std must be non-zero and layout NCHW or NHWC")
        if spec.activation not in ("auto", "softmax", "sigmoid", "none"):
            raise ExternalModelError("bad input spec: activation must be auto, softmax, sigmoid or none")
        return spec

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["size"] = [d.pop("height"), d.pop("width")]
        return d

    def tensor(self, image: Image.Image) -> np.ndarray:
        """RGB image -> ``float32 [1, 3, H, W]`` (or ``[1, H, W, 3]``)."""
        arr: Any = np.asarray(image.resize((self.width, self.height), Image.Resampling.BILINEAR), dtype=np.float32)
        arr = (arr * np.float32(self.scale) - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return (arr[None] if self.layout == "NHWC" else arr.transpose(2, 0, 1)[None]).astype(np.float32)


def check_labels(labels: Any) -> list[str]:
    """A non-empty list of distinct, non-blank label names (<= 200 chars), else ExternalModelError."""
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) and x.strip() for x in labels):
        raise ExternalModelError("labels must be a non-empty JSON list of non-empty strings")
    if len(set(labels)) != len(labels) or any(len(x) > 200 for x in labels):
        raise ExternalModelError("labels must be distinct names of at most 200 characters")
    return [str(x) for x in labels]


class ExternalAdapter:
    """An ONNX / TorchScript model with its task, label list and input spec (predict only).

    ``model`` is the file's bytes, or the path of a stored file (then ``sha256``, when given,
    must match its content). A TorchScript adapter holds a sandbox child: :meth:`close` it.
    """

    adapter_key = "external"

    def __init__(self, model: bytes | Path | str, kind: str, task: Task, labels: Sequence[str],
                 spec: InputSpec | dict, *, num_threads: int | None = None, sha256: str | None = None,
                 timeout_s: float = 120.0, device: DeviceLike = "cpu") -> None:
        if kind not in KINDS:
            raise ExternalModelError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        if task not in TASKS:
            raise ExternalModelError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
        self.kind, self.task = kind, task
        self.device = resolve_device(device)
        self.path = None if isinstance(model, bytes) else Path(model)
        self.classes = check_labels(list(labels))
        self.spec = spec if isinstance(spec, InputSpec) else InputSpec.from_dict(spec)
        data = model if isinstance(model, bytes) else _read_stored(Path(model), sha256)
        threads = num_threads or 1
        self._sandbox: TorchScriptSandbox | None = None
        if kind == "torchscript":
            try:
                self._sandbox = TorchScriptSandbox(data, num_threads=threads, timeout_s=timeout_s)
            except SandboxError as exc:
                msg = str(exc) if exc.stage in ("check", "start") else f"not a loadable torchscript model: {exc}"
                raise ExternalModelError(msg) from None
            return
        _refuse_onnx_external_data(data)
        try:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
            self._session: Any = ort.InferenceSession(data, opts, providers=onnx_providers(self.device))
        except Exception as exc:  # any loader error means "not a model of this kind"
            raise ExternalModelError(f"not a loadable onnx model: {_reason(exc)}") from exc
        self._check_onnx_input()

    def close(self) -> None:
        """Stop the TorchScript sandbox child, if any (idempotent)."""
        if self._sandbox is not None:
            self._sandbox.close()

    def __enter__(self) -> ExternalAdapter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_onnx_input(self) -> None:
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            raise ExternalModelError(f"the model takes {len(inputs)} inputs; one image tensor is supported")
        shape = inputs[0].shape
        want = [1, 3, self.spec.height, self.spec.width] if self.spec.layout == "NCHW" else \
            [1, self.spec.height, self.spec.width, 3]
        if len(shape) != 4 or any(isinstance(d, int) and d != w for d, w in zip(shape, want, strict=True)):
            raise ExternalModelError(f"input mismatch: the model takes {shape}, the spec gives {want}")

    def _run(self, x: np.ndarray) -> list[np.ndarray]:
        if self._sandbox is not None:
            return self._sandbox.run(x)
        name = self._session.get_inputs()[0].name
        return [np.asarray(o) for o in self._session.run(None, {name: x})]

    def _classify(self, outs: list[np.ndarray]) -> np.ndarray:
        p = np.asarray(outs[0], dtype=np.float64).reshape(-1)
        if p.size != len(self.classes):
            raise ExternalModelError(f"the model gives {p.size} scores but {len(self.classes)} labels were listed")
        act = self.spec.activation
        if act == "auto":
            probs_like = p.min() >= 0 and p.max() <= 1
            ok = probs_like and (self.task == "multilabel" or abs(p.sum() - 1) < 1e-3)
            act = "none" if ok else ("softmax" if self.task == "multiclass" else "sigmoid")
        if act == "softmax":
            e = np.exp(p - p.max())
            p = e / e.sum()
        elif act == "sigmoid":
            p = 1 / (1 + np.exp(-p))
        return p.astype(np.float32)

    def _detect(self, outs: list[np.ndarray], size: tuple[int, int], polygons: bool, tol: float
                ) -> list[dict[str, Any]]:
        boxes, labels, scores, masks = _detection_parts(outs)
        sx, sy = size[0] / self.spec.width, size[1] / self.spec.height
        dets = []
        for k in range(len(boxes)):
            c = int(labels[k]) - self.spec.label_offset
            if not 0 <= c < len(self.classes):
                continue
            x0, y0, x1, y1 = (float(v) for v in boxes[k])
            x0, x1 = max(0.0, x0 * sx), min(float(size[0]), x1 * sx)
            y0, y1 = max(0.0, y0 * sy), min(float(size[1]), y1 * sy)
            if x1 - x0 <= 0 or y1 - y0 <= 0:
                continue
            det: dict[str, Any] = {"label": self.classes[c], "bbox": [x0, y0, x1 - x0, y1 - y0],
                                   "score": float(scores[k])}
            if masks is not None and polygons:
                m = np.asarray(masks[k]).reshape(masks.shape[-2], masks.shape[-1]) >= 0.5
                pts = mask_to_polygon(m, tol / max(sx, sy))
                det["points"] = None if pts is None else [v * (sx if i % 2 == 0 else sy) for i, v in enumerate(pts)]
            dets.append(det)
        return dets

    def predict(self, images: Sequence[ImageSource], *, batch_size: int = 1, polygons: bool = True,
                tolerance: float = 1.0) -> Predictions:
        """``probs [N, C]`` (classification; detection: best box score per label) and ``boxes``."""
        probs = np.zeros((len(images), len(self.classes)), dtype=np.float32)
        boxes: list[list[dict[str, Any]]] = []
        for i, source in enumerate(images):
            image = load_rgb(source)
            try:
                outs = self._run(self.spec.tensor(image))
            except Exception as exc:  # onnxruntime / sandbox errors: wrong input for this model
                raise ExternalModelError(f"the model failed on a {self.spec.height}x{self.spec.width} input: "
                                         f"{_reason(exc)}") from exc
            if self.task in ("multiclass", "multilabel"):
                probs[i] = self._classify(outs)
                continue
            dets = self._detect(outs, image.size, polygons and self.task == "segmentation", tolerance)
            for d in dets:
                c = self.classes.index(d["label"])
                probs[i, c] = max(probs[i, c], d["score"])
            boxes.append(dets)
        return Predictions(probs=probs, boxes=boxes if self.task in ("detection", "segmentation") else None)

    def embed(self, images: Sequence[ImageSource], *, batch_size: int = 32) -> np.ndarray:
        raise NotImplementedError("external models are used for prediction only")

    def fit(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("external models are not trained by labelloop")


def _reason(exc: Exception) -> str:
    """A loader's or runner's error as a short sentence without server paths."""
    if isinstance(exc, SandboxError):
        return scrub_paths(str(exc))
    return f"{type(exc).__name__}: {scrub_paths(str(exc))}"


def _read_stored(path: Path, sha256: str | None) -> bytes:
    """A stored model file's bytes, checked against its recorded digest."""
    try:
        data = path.read_bytes()
    except OSError:
        raise ExternalModelError("the stored model file is missing or unreadable") from None
    if sha256 and hashlib.sha256(data).hexdigest() != sha256:
        raise ExternalModelError("the stored model file does not match the digest recorded when it was "
                                 "registered; register the model again")
    return data


def _onnx_tensors(msg: Any) -> Iterator[Any]:
    """Every tensor proto inside an ONNX protobuf message, at any depth (subgraphs, functions...)."""
    if type(msg).__name__ == "TensorProto":
        yield msg
    for field, value in msg.ListFields():
        if field.type == field.TYPE_MESSAGE:
            for item in [value] if hasattr(value, "ListFields") else value:
                yield from _onnx_tensors(item)


def _refuse_onnx_external_data(data: bytes) -> None:
    """Refuse ONNX files whose tensors point at external data files (paths on the server)."""
    import onnx

    try:
        tensors = list(_onnx_tensors(onnx.load_model_from_string(data)))
    except Exception:  # noqa: BLE001  (protobuf decode errors, absurd nesting)
        raise ExternalModelError("not a loadable onnx model: the file is not an ONNX protobuf") from None
    if any(t.data_location == onnx.TensorProto.EXTERNAL or len(t.external_data) for t in tensors):
        raise ExternalModelError("the model keeps tensors in external data files; labelloop takes self-contained "
                                 "ONNX files only (save with save_as_external_data=False)")


def _detection_parts(outs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    arrs = [np.asarray(o) for o in outs]
    if len(arrs) == 1:
        a = arrs[0].reshape(-1, arrs[0].shape[-1]) if arrs[0].ndim >= 2 else arrs[0]
        if a.ndim != 2 or a.shape[1] != 6:
            raise ExternalModelError(f"a single detection output must be [K, 6], got {list(arrs[0].shape)}")
        return a[:, :4], a[:, 5].round().astype(np.int64), a[:, 4], None
    boxes = next((a for a in arrs if a.shape[-1:] == (4,) and (a.ndim == 2 or (a.ndim == 3 and a.shape[0] == 1))),
                 None)
    masks = next((a for a in arrs if a.ndim >= 3 and a.shape[-1] != 4), None)
    flat = [a.reshape(-1) for a in arrs if a is not boxes and a is not masks and a.ndim <= 2]
    ints = [a for a in flat if np.issubdtype(a.dtype, np.integer)]
    floats = [a for a in flat if not np.issubdtype(a.dtype, np.integer)]
    if boxes is None or len(ints) != 1 or len(floats) != 1:
        shapes = [f"{list(a.shape)} {a.dtype}" for a in arrs]
        raise ExternalModelError(f"detection outputs must be boxes [K, 4], labels [K] (int), scores [K] "
                                 f"(float), optional masks; got {shapes}")
    boxes = boxes.reshape(-1, 4)
    if not len(boxes) == len(ints[0]) == len(floats[0]):
        raise ExternalModelError("boxes, labels and scores differ in length")
    return boxes, ints[0], floats[0], masks


def validate_model(model: bytes | Path | str, kind: str, task: Task, labels: Sequence[str],
                   spec: dict[str, Any], *, num_threads: int | None = None) -> InputSpec:
    """Load the model and run it on one sample image; the checked input spec.

    Raises ExternalModelError on any mismatch; a TorchScript sandbox is stopped either way.
    """
    with ExternalAdapter(model, kind, task, labels, spec, num_threads=num_threads) as adapter:
        rng = np.random.default_rng(0)
        sample = Image.fromarray(rng.integers(0, 256, (adapter.spec.height, adapter.spec.width, 3), dtype=np.uint8))
        adapter.predict([sample])
        return adapter.spec
