"""The fast CPU path (issue 26): exported features stay close to eager PyTorch, predictions
agree, exports are rebuilt when they do not match, and calibration runs on the runtime that
predicts."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from learning.adapters import FitConfig, LabelledImages, create_adapter, load_adapter
from learning.backbones import create_backbone
from learning.runtime import RuntimeUnavailable, available_runtimes, load_or_export, weights_digest

Factory = Callable[..., tuple[list[Image.Image], np.ndarray]]
FAST = [r for r in ("openvino", "onnxruntime") if r in available_runtimes()]
pytestmark = pytest.mark.skipif(not FAST, reason="neither openvino nor onnxruntime is installed")
SIZE = 64
# fp32 tolerance, measured: max |fast - eager| / max |eager| is ~2e-6 for both runtimes at
# 96-224 px; OpenVINO's bf16 hint (its CPU default on AVX-512 bf16 machines) gives 1-4e-2
TOLERANCE = 1e-4


def _adapter(runtime: str, tmp_path: Path, **kw: Any) -> Any:
    return create_adapter("classifier", classes=["red", "blue"], image_size=SIZE, num_threads=2,
                          runtime=runtime, runtime_dir=tmp_path / "rt", **kw)


@pytest.mark.parametrize("runtime", FAST)
def test_fast_features_match_eager(runtime: str, two_colour: Factory, tmp_path: Path) -> None:
    images, labels = two_colour(16, seed=5)
    eager, fast = _adapter("torch", tmp_path), _adapter(runtime, tmp_path)
    assert fast.feature_version != eager.feature_version  # separate embedding caches
    assert fast.feature_version.endswith(f"/{runtime}-f32")
    e, f = eager.embed(images), fast.embed(images)
    assert fast.fast_features() is not None and fast.runtime == runtime
    assert e.shape == f.shape and np.isfinite(f).all()
    rel = float(np.abs(e - f).max() / np.abs(e).max())
    assert rel < TOLERANCE, rel
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0, atol=1e-5)
    # the same head on either feature set: predictions agree on every image
    eager.fit(LabelledImages(images, labels), None, config=FitConfig())
    fast.head.load_state_dict(eager.head.state_dict())
    pe, pf = eager.predict(images).probs, fast.predict(images).probs
    assert (pe.argmax(1) == pf.argmax(1)).all()
    assert np.abs(pe - pf).max() < 1e-3


@pytest.mark.parametrize("runtime", FAST)
def test_calibration_runs_on_the_runtime_that_predicts(runtime: str, two_colour: Factory, tmp_path: Path) -> None:
    images, labels = two_colour(14, seed=6)
    train, holdout = LabelledImages(images[:20], labels[:20]), LabelledImages(images[20:], labels[20:])
    adapter = _adapter(runtime, tmp_path)
    report = adapter.fit(train, holdout, config=FitConfig())
    assert report.runtime == runtime
    # hold-out probabilities (what calibration sees) are exactly what the model predicts later
    np.testing.assert_allclose(report.holdout_probs, adapter.predict(holdout.images).probs, rtol=0, atol=1e-6)
    adapter.save(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "manifest.json").read_text())["runtime"] == runtime
    loaded: Any = load_adapter(tmp_path / "m")  # keeps the runtime it was calibrated on
    assert loaded.runtime == runtime and loaded.feature_version == adapter.feature_version
    np.testing.assert_allclose(loaded.predict(holdout.images).probs, report.holdout_probs, rtol=0, atol=1e-6)
    assert list((tmp_path / "m" / "runtime").glob("*.onnx"))  # exported beside the model version
    eager: Any = load_adapter(tmp_path / "m", runtime="torch")
    assert eager.feature_version != adapter.feature_version


def test_precise_model_runs_fast_once_trained(two_colour: Factory, tmp_path: Path) -> None:
    images, labels = two_colour(12, seed=7)
    adapter = _adapter(FAST[0], tmp_path)
    report = adapter.fit(LabelledImages(images[:20], labels[:20]), LabelledImages(images[20:], labels[20:]),
                         config=FitConfig(algorithm="precise", epochs=1, val_fraction=0.0))
    fast = adapter.fast_features()
    assert fast is not None and fast.key.weights == weights_digest(adapter.backbone)  # the tuned weights
    np.testing.assert_allclose(report.holdout_probs, adapter.predict(images[20:]).probs, atol=1e-6)


def _export(folder: Path, backbone: torch.nn.Module, runtime: str = FAST[0]) -> Any:
    return load_or_export(backbone, backbone_name="lite0", layers="final", mirror=False, image_size=SIZE,
                          runtime=runtime, cache_dir=folder, threads=2)


def test_export_cache_reuses_and_rebuilds(tmp_path: Path) -> None:
    backbone = create_backbone(pretrained=False)
    first = _export(tmp_path, backbone)
    onnx, meta = first.path, first.path.with_suffix(".json")
    stamp = onnx.stat().st_mtime_ns
    assert _export(tmp_path, backbone).path == onnx and onnx.stat().st_mtime_ns == stamp  # reused
    x = np.random.default_rng(0).normal(size=(3, 3, SIZE, SIZE)).astype(np.float32)
    want = first(x)
    # a file that does not match its record (edited, truncated, swapped) is rebuilt, never used
    good = onnx.read_bytes()
    onnx.write_bytes(good[: len(good) // 2])
    rebuilt = _export(tmp_path, backbone)
    assert onnx.read_bytes() != good[: len(good) // 2]
    np.testing.assert_allclose(rebuilt(x), want, atol=1e-6)
    # a record naming another runtime version (an upgraded runtime) is rebuilt too
    record = json.loads(meta.read_text())
    record["key"]["runtime_version"] = "0.0"
    meta.write_text(json.dumps(record))
    stamp = onnx.stat().st_mtime_ns
    _export(tmp_path, backbone)
    assert json.loads(meta.read_text())["key"]["runtime_version"] != "0.0" and onnx.stat().st_mtime_ns != stamp
    # other weights: another file, other features
    with torch.no_grad():
        next(backbone.parameters()).add_(0.5)
    other = _export(tmp_path, backbone)
    assert other.path != onnx and np.abs(other(x) - want).max() > 1e-4


def test_unusable_runtime_falls_back_to_eager(two_colour: Factory, tmp_path: Path) -> None:
    if "onnxruntime" not in FAST:
        pytest.skip("needs onnxruntime")
    images, _ = two_colour(2, seed=8)
    adapter = _adapter("onnxruntime", tmp_path, precision="bf16")  # ORT's CPU path is fp32 only
    with pytest.raises(RuntimeUnavailable):
        _ = load_or_export(adapter.backbone, backbone_name="x", layers="final", mirror=False, image_size=SIZE,
                           runtime="onnxruntime", cache_dir=tmp_path, precision="bf16")
    eager = _adapter("torch", tmp_path).embed(images)
    np.testing.assert_allclose(adapter.embed(images), eager, atol=1e-6)
    assert adapter.runtime == "torch" and "onnxruntime" not in adapter.feature_version
