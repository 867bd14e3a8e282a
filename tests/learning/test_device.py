"""Device plumbing (issue 26): LABELLOOP_DEVICE resolution, and adapters that keep every tensor
they compute on the device they were given. CUDA cases run only where torch sees a GPU."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError
from torch import nn

from learning.adapters import FitConfig, LabelledImages, create_adapter, load_adapter
from learning.device import DeviceError, amp_dtype, autocast, grad_scaler, resolve_device, to_device

Factory = Callable[..., tuple[list[Image.Image], np.ndarray]]
CUDA = torch.cuda.is_available()
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU"))]


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_resolve_cpu_and_auto_without_cuda(no_cuda: None) -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize("spec", ["cuda", "cuda:1"])
def test_cuda_asked_for_without_cuda_is_one_sentence(no_cuda: None, spec: str) -> None:
    with pytest.raises(DeviceError) as err:
        resolve_device(spec)
    message = str(err.value)
    assert f"LABELLOOP_DEVICE={spec}" in message and "sees none" in message
    assert message.count(". ") == 0 and "\n" not in message  # one sentence


def test_cuda_index_beyond_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("auto") == torch.device("cuda", 0)
    with pytest.raises(DeviceError, match="asks for CUDA device 2 but this machine has 2"):
        resolve_device("cuda:2")


@pytest.mark.parametrize("spec", ["gpu", "cuda:", "cuda:x", "mps", ""])
def test_unknown_specs(spec: str) -> None:
    with pytest.raises(DeviceError, match="auto, cpu, cuda or cuda:N"):
        resolve_device(spec)


def test_settings_fail_at_start_without_cuda(no_cuda: None) -> None:
    from service.config import Settings

    with pytest.raises(ValidationError, match="LABELLOOP_DEVICE=cuda asks for a CUDA GPU"):
        Settings(device="cuda")
    settings = Settings(device="AUTO")
    assert settings.device == "auto" and settings.torch_device == torch.device("cpu")
    assert settings.device_description.startswith("cpu (")
    assert settings.inference_batch_size >= 1 and settings.decode_workers >= 0


def test_cpu_helpers_are_full_precision() -> None:
    cpu = torch.device("cpu")
    assert amp_dtype(cpu) is None and not grad_scaler(cpu).is_enabled()
    with autocast(cpu):
        y = nn.Linear(4, 2)(torch.ones(3, 4))
    assert y.dtype == torch.float32
    x = to_device(torch.zeros(2, 3, 8, 8), cpu, image=True)
    assert x.is_contiguous(memory_format=torch.channels_last) and x.device == cpu


class _Recorder:
    """Forward hooks on every module of ``net``: the devices of every tensor going in and out,
    and the memory format of the images the backbone's first convolution is given."""

    def __init__(self, net: nn.Module, backbone: nn.Module) -> None:
        self.devices: set[str] = set()
        self.image_layouts: set[bool] = set()
        self.handles = [m.register_forward_hook(self._hook) for m in net.modules()]
        stem = next(m for m in backbone.modules() if isinstance(m, nn.Conv2d))  # sees the images
        self.handles.append(stem.register_forward_pre_hook(self._image))

    def _tensors(self, obj: Any) -> Iterator[torch.Tensor]:
        if isinstance(obj, torch.Tensor):
            yield obj
        elif isinstance(obj, list | tuple):
            for o in obj:
                yield from self._tensors(o)
        elif isinstance(obj, dict):
            for o in obj.values():
                yield from self._tensors(o)

    def _hook(self, module: nn.Module, args: Any, out: Any) -> None:
        for t in [*self._tensors(args), *self._tensors(out)]:
            self.devices.add(t.device.type)

    def _image(self, module: nn.Module, args: Any) -> None:
        x = args[0]
        if isinstance(x, torch.Tensor) and x.dim() == 4:
            self.image_layouts.add(x.is_contiguous(memory_format=torch.channels_last))

    def close(self) -> None:
        for h in self.handles:
            h.remove()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("algorithm", ["fast", "precise"])
def test_classifier_computes_on_its_device(
    device: str, algorithm: str, two_colour: Factory, tmp_path: Path
) -> None:
    images, labels = two_colour(12, seed=3)
    adapter: Any = create_adapter("classifier", classes=["red", "blue"], image_size=48, num_threads=2,
                                  device=device, pretrained=False)
    want = resolve_device(device)
    assert all(t.device == want for t in [*adapter.net.parameters(), *adapter.net.buffers()])
    rec = _Recorder(adapter.net, adapter.backbone)
    try:
        config = FitConfig(algorithm=algorithm, epochs=1, batch_size=8, val_fraction=0.0)  # type: ignore[arg-type]
        report = adapter.fit(LabelledImages(images[:20], labels[:20]), LabelledImages(images[20:], labels[20:]),
                             config=config)
        probs = adapter.predict(images[20:]).probs
    finally:
        rec.close()
    assert rec.devices == {want.type}
    assert rec.image_layouts == {True}  # every batch went through to_device(image=True)
    assert report.device == str(want) and report.runtime == "torch"
    assert np.isfinite(probs).all() and probs.shape == (4, 2)
    assert all(t.device == want for t in [*adapter.net.parameters(), *adapter.net.buffers()])
    adapter.save(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "manifest.json").read_text())["trained_on"] == str(want)
    state = torch.load(tmp_path / "m" / "weights.pt", weights_only=True)  # no map_location: as saved
    assert {t.device.type for part in state.values() for t in part.values()} == {"cpu"}
    back: Any = load_adapter(tmp_path / "m", device="cpu")
    assert back.trained_on == str(want) and back.device == torch.device("cpu")
    np.testing.assert_allclose(back.predict(images[20:]).probs, probs, atol=2e-2 if want.type == "cuda" else 1e-5)


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_cpu_trained_model_loads_on_cuda(two_colour: Factory, tmp_path: Path) -> None:
    images, labels = two_colour(8, seed=4)
    adapter: Any = create_adapter("classifier", classes=["red", "blue"], image_size=48, pretrained=False)
    adapter.fit(LabelledImages(images, labels), None, config=FitConfig())
    adapter.save(tmp_path / "m")
    gpu: Any = load_adapter(tmp_path / "m", device="cuda")
    assert next(gpu.net.parameters()).is_cuda
    np.testing.assert_allclose(gpu.predict(images).probs, adapter.predict(images).probs, atol=2e-2)


def _boxes(n: int, seed: int) -> tuple[list[Image.Image], np.ndarray]:
    rng = np.random.default_rng(seed)
    images, anns = [], []
    for _ in range(n):
        arr = np.full((96, 96, 3), 235, dtype=np.uint8)
        x, y = (int(v) for v in rng.integers(8, 56, 2))
        arr[y : y + 28, x : x + 28] = (200, 30, 30)
        images.append(Image.fromarray(arr))
        anns.append({"boxes": [{"label": "red", "bbox": [x, y, 28, 28]}]})
    return images, np.asarray(anns, dtype=object)


@pytest.mark.parametrize("device", DEVICES)
def test_detector_computes_on_its_device(device: str, tmp_path: Path) -> None:
    images, anns = _boxes(4, seed=1)
    adapter: Any = create_adapter("detector", classes=["red"], image_size=96, pretrained=False, device=device)
    want = resolve_device(device)
    rec = _Recorder(adapter.model, adapter.body.body)
    try:
        report = adapter.fit(LabelledImages(images[:3], anns[:3]), LabelledImages(images[3:], anns[3:]),
                             config=FitConfig(epochs=1, batch_size=2))
        pred = adapter.predict(images[:2])
        emb = adapter.embed(images[:2])
    finally:
        rec.close()
    assert rec.devices == {want.type}
    assert report.device == str(want) and pred.probs.shape == (2, 1) and np.isfinite(emb).all()
    adapter.save(tmp_path / "d")
    back: Any = load_adapter(tmp_path / "d", device="cpu")
    assert back.trained_on == str(want) and next(back.model.parameters()).device.type == "cpu"
