"""Backbones: packaged Lite0 weights pair with timm's model; other models need a local file."""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from learning.backbones import (
    DEFAULT_BACKBONE,
    LITE0_TENSORS,
    BackboneWeightsError,
    check_layers,
    create_backbone,
    data_config,
    feature_dim,
    lite0_state_dict,
    lite0_weights_path,
    make_transform,
    pair_state_dicts,
    pooled_features,
    set_num_threads,
)


def test_weights_file_is_found_in_the_package() -> None:
    path = lite0_weights_path()
    assert path.name == "efficientnet-lite0-57934424.pth" and path.is_file()


def test_paired_state_dict_loads_strictly_with_matching_shapes() -> None:
    paired = lite0_state_dict()
    assert len(paired) == LITE0_TENSORS == 296
    model = timm.create_model(DEFAULT_BACKBONE, pretrained=False, num_classes=1000)
    reference = model.state_dict()
    assert list(paired) == list(reference)
    assert all(paired[k].shape == reference[k].shape for k in reference)
    model.load_state_dict(paired, strict=True)
    assert lite0_state_dict() is paired  # cached in-process


def test_pairing_rejects_count_and_shape_mismatch() -> None:
    a = OrderedDict(w=torch.zeros(2, 3), b=torch.zeros(3))
    with pytest.raises(BackboneWeightsError, match="2 tensors"):
        pair_state_dicts(a, OrderedDict(w=torch.zeros(2, 3)))
    with pytest.raises(BackboneWeightsError, match="does not match"):
        pair_state_dicts(a, OrderedDict(x=torch.zeros(2, 3), y=torch.zeros(4)))
    paired = pair_state_dicts(a, OrderedDict(x=torch.zeros(2, 3), y=torch.zeros(3)))
    assert list(paired) == ["x", "y"]


def test_default_backbone_features_are_deterministic_and_finite() -> None:
    m1, m2 = create_backbone(), create_backbone()
    assert feature_dim(m1) == 1280
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.inference_mode():
        f1 = m1.forward_head(m1.forward_features(x), pre_logits=True)
        f2 = m2.forward_head(m2.forward_features(x), pre_logits=True)
        f3 = m1(x)
    assert f1.shape == (2, 1280)
    assert torch.isfinite(f1).all()
    assert torch.equal(f1, f2) and torch.equal(f1, f3)
    assert f1.abs().sum() > 0


def test_stage_features_join_the_top_and_three_stages_at_equal_weight() -> None:
    m = create_backbone()
    assert feature_dim(m, "stages") == 1280 + 40 + 112 + 320
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.inference_mode():
        final = pooled_features(m, x, "final")
        stages = pooled_features(m, x, "stages")
        top = m.forward_head(m.forward_features(x), pre_logits=True)
        block = m.blocks(m.bn1(m.conv_stem(x))).mean(dim=(2, 3))  # the last stage: 320 channels
    assert final.shape == (3, 1280) and stages.shape == (3, 1752)
    torch.testing.assert_close(final, torch.nn.functional.normalize(top, dim=1))
    torch.testing.assert_close(stages.norm(dim=1), torch.ones(3))
    # four parts of norm 1/2 each: the top features, then the stages at 40, 112 and 320 channels
    torch.testing.assert_close(stages[:, :1280] * 2, final)
    torch.testing.assert_close(stages[:, -320:] * 2, torch.nn.functional.normalize(block, dim=1))
    for part in (stages[:, 1280:1320], stages[:, 1320:1432]):
        torch.testing.assert_close(part.norm(dim=1), torch.full((3,), 0.5))


def test_feature_layers_are_checked() -> None:
    check_layers(create_backbone(), "stages")
    with pytest.raises(ValueError, match="features must be one of stages, final"):
        check_layers(create_backbone(), "middle")
    with pytest.raises(ValueError, match="no intermediate feature stages"):
        check_layers(torch.nn.Linear(4, 4), "stages")


def _sample_photos() -> list[tuple[Image.Image, set[int]]]:
    """Photos shipped by installed packages with their expected ImageNet classes."""
    photos = []
    try:
        import matplotlib

        hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
        if hopper.is_file():
            photos.append((Image.open(hopper), {652}))  # military uniform
    except ImportError:
        pass
    try:
        from skimage import data

        photos.append((Image.fromarray(data.chelsea()), {285}))  # Egyptian cat
        photos.append((Image.fromarray(data.coffee()), {967}))  # espresso
    except ImportError:
        pass
    return photos


def test_full_imagenet_classifier_recognises_sample_photos() -> None:
    photos = _sample_photos()
    if not photos:
        pytest.skip("no sample photo installed (matplotlib / scikit-image)")
    model = create_backbone(num_classes=1000)
    tf = make_transform(model, train=False)
    for image, expected in photos:
        with torch.inference_mode():
            probs = model(tf(image.convert("RGB"))[None]).softmax(-1)[0]
        assert int(probs.argmax()) in expected
        assert float(probs.max()) > 0.3


def test_other_models_need_a_checkpoint_or_pretrained_false(tmp_path: Path) -> None:
    with pytest.raises(BackboneWeightsError, match="checkpoint"):
        create_backbone("test_efficientnet")
    with pytest.raises(BackboneWeightsError, match="unknown timm model"):
        create_backbone("no_such_model_xyz")
    random_model = create_backbone("test_efficientnet", pretrained=False)
    ckpt = tmp_path / "weights.pth"
    torch.save({"state_dict": random_model.state_dict()}, ckpt)
    loaded = create_backbone("test_efficientnet", checkpoint=ckpt)
    for (k, a), b in zip(random_model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    with pytest.raises(BackboneWeightsError, match="do not fit"):
        create_backbone(DEFAULT_BACKBONE, checkpoint=ckpt)
    with pytest.raises(BackboneWeightsError, match="not found"):
        create_backbone("test_efficientnet", checkpoint=tmp_path / "missing.pth")


def test_transforms_give_the_requested_size() -> None:
    model = create_backbone()
    cfg = data_config(model)
    assert cfg["input_size"] == (3, 224, 224)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 70, 3), dtype=np.uint8))
    for train, strong in ((False, False), (True, False), (True, True)):
        x = make_transform(model, image_size=48, train=train, strong=strong)(image)
        assert x.shape == (3, 48, 48) and x.dtype == torch.float32
    assert make_transform(model, train=False)(image).shape == (3, 224, 224)


def test_set_num_threads() -> None:
    before = torch.get_num_threads()
    set_num_threads(1)
    assert torch.get_num_threads() == 1
    set_num_threads(None)
    assert torch.get_num_threads() == 1
    set_num_threads(before)
    assert os.cpu_count() is None or torch.get_num_threads() == before
