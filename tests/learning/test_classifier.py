"""ClassifierAdapter behaviour: learns drawn colours (fast and precise), multilabel, pseudo-labels,
cancellation, atomic saves, determinism and cached embeddings."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from learning.adapters import (
    Cancelled,
    FitConfig,
    FitEmbeddings,
    LabelledImages,
    UnknownAdapterError,
    create_adapter,
    load_adapter,
)
from learning.adapters import classifier as classifier_module
from learning.adapters.classifier import ClassifierAdapter
from learning.backbones import make_transform

Factory = Callable[..., tuple[list[Image.Image], np.ndarray]]
SIZE = 48  # 32 px inputs leave Lite0 a 1x1 final map: too weak even for colours


def _adapter(task: str = "multiclass", classes: list[str] | None = None) -> ClassifierAdapter:
    adapter = create_adapter(
        "classifier", classes=classes or ["red", "blue"], task=task, image_size=SIZE, num_threads=2
    )
    assert isinstance(adapter, ClassifierAdapter)
    return adapter


def _precise(**kw: object) -> FitConfig:
    base: dict = dict(algorithm="precise", epochs=3, patience=2, image_size=SIZE, batch_size=16)
    return FitConfig(**(base | kw))


@pytest.mark.parametrize("algorithm", ["fast", "precise", "precise-no-ema"])
def test_two_colours_are_learnt(algorithm: str, two_colour: Factory) -> None:
    train = LabelledImages(*two_colour(16, seed=1))
    holdout = LabelledImages(*two_colour(10, seed=2))
    test_images, test_labels = two_colour(30, seed=3)
    if algorithm == "fast":
        config = FitConfig(algorithm="fast", image_size=SIZE)
    else:
        config = _precise(ema_decay=None if algorithm.endswith("no-ema") else 0.98)
        algorithm = "precise"
    adapter = _adapter()
    report = adapter.fit(train, holdout, config=config)
    accuracy = (adapter.predict(test_images).probs.argmax(1) == test_labels).mean()
    assert accuracy >= 0.95
    assert report.algorithm == algorithm
    assert report.holdout_accuracy is not None and report.holdout_accuracy >= 0.9
    if algorithm == "precise":
        assert report.n_val > 0 and report.n_train + report.n_val == len(train)
        assert all(h.val_loss is not None for h in report.history)
        # a tuned backbone predicts from one view, as it trained
        assert adapter.backbone_tuned and "tuned" in adapter.feature_version and not adapter.mirrored
        assert not any(p.requires_grad for p in adapter.backbone.parameters())


def test_multilabel_channel_presence_fast(channel_presence: Factory) -> None:
    images, labels = channel_presence(48, seed=1)
    test_images, test_labels = channel_presence(40, seed=2)
    adapter = _adapter("multilabel", ["R", "G", "B"])
    adapter.fit(LabelledImages(images, labels), None, config=FitConfig(image_size=SIZE))
    probs = adapter.predict(test_images).probs
    assert probs.shape == (40, 3)
    assert ((probs >= 0.5) == test_labels).mean() >= 0.95
    assert not np.allclose(probs.sum(axis=1), 1.0)  # independent sigmoids


def test_pseudo_labels_from_unlabelled_pool(two_colour: Factory) -> None:
    train = LabelledImages(*two_colour(12, seed=1))
    pool, _ = two_colour(10, seed=5)
    fast = _adapter().fit(train, None, config=FitConfig(image_size=SIZE, use_unlabelled=True, unlabelled=pool))
    assert fast.n_unlabelled == 20 and fast.history[0].pseudo_labelled > 0
    config = _precise(epochs=2, use_unlabelled=True, unlabelled=pool, max_unlabelled=8, pseudo_label_threshold=0.6)
    precise = _adapter().fit(train, None, config=config)
    assert precise.n_unlabelled == 8
    assert precise.history[0].pseudo_labelled == 0 and precise.history[1].pseudo_labelled > 0  # warm-up


def test_cached_embeddings_give_the_same_model(two_colour: Factory) -> None:
    images, labels = two_colour(10, seed=1)
    holdout = LabelledImages(*two_colour(4, seed=2))
    a, b = _adapter(), _adapter()
    ra = a.fit(LabelledImages(images, labels), holdout, config=FitConfig(image_size=SIZE))
    cache = FitEmbeddings(train=b.embed(images), holdout=b.embed(holdout.images))
    rb = b.fit(LabelledImages(images, labels), holdout, config=FitConfig(image_size=SIZE), embeddings=cache)
    np.testing.assert_allclose(a.predict(images).probs, b.predict(images).probs, atol=1e-5)
    assert ra.holdout_probs is not None and rb.holdout_probs is not None
    np.testing.assert_allclose(ra.holdout_probs, rb.holdout_probs, atol=1e-5)
    np.testing.assert_allclose(b.predict_embeddings(cache.train).probs, b.predict(images).probs, atol=1e-6)
    with pytest.raises(ValueError, match="rows"):
        b.fit(LabelledImages(images, labels), None, config=FitConfig(), embeddings=FitEmbeddings(train=cache.train[:3]))


def test_precise_fit_is_deterministic(two_colour: Factory) -> None:
    train = LabelledImages(*two_colour(12, seed=1))
    probs = []
    for _ in range(2):
        adapter = _adapter()
        adapter.fit(train, None, config=_precise(epochs=1, seed=7))
        probs.append(adapter.predict(train.images).probs)
    np.testing.assert_array_equal(probs[0], probs[1])


@pytest.mark.parametrize("algorithm", ["fast", "precise"])
def test_cancel_propagates_restores_and_saves_nothing(algorithm: str, two_colour: Factory, tmp_path: Path) -> None:
    train = LabelledImages(*two_colour(12, seed=1))
    adapter = _adapter()
    before_probs = adapter.predict(train.images).probs
    before_state = {k: v.clone() for k, v in adapter.net.state_dict().items()}
    before_version = adapter.feature_version
    calls: list[float] = []

    def progress(fraction: float, message: str) -> None:
        calls.append(fraction)
        if fraction > 0.5:
            raise Cancelled("user pressed cancel")

    config = FitConfig(image_size=SIZE) if algorithm == "fast" else _precise()
    target = tmp_path / "model"
    with pytest.raises(Cancelled):
        adapter.fit(train, None, config=config, progress=progress)
        adapter.save(target)
    assert calls == sorted(calls) and 0 < len(calls)
    assert list(tmp_path.iterdir()) == []
    assert adapter.feature_version == before_version and not adapter.backbone_tuned
    for k, v in adapter.net.state_dict().items():
        assert torch.equal(v, before_state[k]), k
    assert not any(p.requires_grad for p in adapter.backbone.parameters())
    np.testing.assert_array_equal(adapter.predict(train.images).probs, before_probs)


def test_crash_while_saving_keeps_the_old_model(
    two_colour: Factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images, labels = two_colour(6, seed=1)
    adapter = _adapter()
    adapter.fit(LabelledImages(images, labels), None, config=FitConfig(image_size=SIZE))
    target = tmp_path / "model"
    adapter.save(target)
    expected = adapter.predict(images).probs

    def crash(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(classifier_module.torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        _adapter().save(target)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    np.testing.assert_array_equal(load_adapter(target).predict(images).probs, expected)


def test_tuned_models_store_their_backbone(two_colour: Factory, tmp_path: Path) -> None:
    train = LabelledImages(*two_colour(8, seed=1))
    fast, precise = _adapter(), _adapter()
    fast.fit(train, None, config=FitConfig(image_size=SIZE))
    precise.fit(train, None, config=_precise(epochs=1))
    fast.save(tmp_path / "fast")
    precise.save(tmp_path / "precise")
    fast_size = (tmp_path / "fast" / "weights.pt").stat().st_size
    precise_size = (tmp_path / "precise" / "weights.pt").stat().st_size
    assert fast_size < 100_000 < precise_size
    restored = load_adapter(tmp_path / "precise")
    assert isinstance(restored, ClassifierAdapter)
    assert restored.feature_version == precise.feature_version
    np.testing.assert_array_equal(restored.predict(train.images).probs, precise.predict(train.images).probs)


def test_feature_layers_are_kept_and_old_models_load_with_top_features(two_colour: Factory, tmp_path: Path) -> None:
    train = LabelledImages(*two_colour(8, seed=2))
    stages = _adapter()
    final = create_adapter("classifier", classes=["red", "blue"], image_size=SIZE, num_threads=2, features="final")
    assert stages.feature_layers == "stages" and final.feature_layers == "final"
    # cached embeddings of one feature space must never be read as the other's
    assert stages.feature_version.endswith("/stages/mirror") and final.feature_version != stages.feature_version
    n = len(train.images)
    assert stages.embed(train.images).shape == (n, 1752) and final.embed(train.images).shape == (n, 1280)
    for name, adapter in (("stages", stages), ("final", final)):
        adapter.fit(train, None, config=FitConfig(image_size=SIZE))
        adapter.save(tmp_path / name)
        restored = load_adapter(tmp_path / name)
        assert restored.feature_layers == name
        np.testing.assert_array_equal(restored.predict(train.images).probs, adapter.predict(train.images).probs)
    manifest = tmp_path / "final" / "manifest.json"
    old = {k: v for k, v in json.loads(manifest.read_text()).items() if k != "features"}
    manifest.write_text(json.dumps(old))  # saved before the setting existed
    restored = load_adapter(tmp_path / "final")
    assert restored.feature_layers == "final"
    np.testing.assert_array_equal(restored.predict(train.images).probs, final.predict(train.images).probs)


def _facing_left(seed: int) -> Image.Image:
    """Noise on the left half, black on the right: its mirror image faces the other way."""
    a = np.zeros((40, 40, 3), dtype=np.uint8)
    a[:, :20] = np.random.default_rng(seed).integers(64, 255, (40, 20, 3), dtype=np.uint8)
    return Image.fromarray(a)


def test_mirror_averages_an_image_with_its_mirror_image_and_old_models_load_without(tmp_path: Path) -> None:
    images = [_facing_left(s) for s in range(6)]
    mirrors = [ImageOps.mirror(im) for im in images]
    on = _adapter()
    off = create_adapter("classifier", classes=["red", "blue"], image_size=SIZE, num_threads=2, mirror=False)
    assert on.mirror and not off.mirror
    # one feature space per setting: the cache must never mix them
    assert on.feature_version == off.feature_version + "/mirror"
    np.testing.assert_allclose(on.embed(images), on.embed(mirrors), atol=1e-5)
    assert np.linalg.norm(off.embed(images) - off.embed(mirrors), axis=1).min() > 0.1
    np.testing.assert_allclose(np.linalg.norm(on.embed(images), axis=1), 1.0, rtol=1e-5)
    # left-facing and right-facing are two classes: with mirror off the head can tell them apart
    train = LabelledImages(images + mirrors, np.array([0] * 6 + [1] * 6))
    for name, adapter in (("on", on), ("off", off)):
        adapter.fit(train, None, config=FitConfig(image_size=SIZE))
        adapter.save(tmp_path / name)
        restored = load_adapter(tmp_path / name)
        assert restored.mirror == adapter.mirror
        np.testing.assert_array_equal(restored.predict(train.images).probs, adapter.predict(train.images).probs)
    assert (off.predict(train.images).probs.argmax(1) == train.labels).all()
    np.testing.assert_allclose(on.predict(images).probs, on.predict(mirrors).probs, atol=1e-4)
    manifest = tmp_path / "off" / "manifest.json"
    old = {k: v for k, v in json.loads(manifest.read_text()).items() if k != "mirror"}
    manifest.write_text(json.dumps(old))  # saved before the setting existed: one view, as it was fit
    restored = load_adapter(tmp_path / "off")
    assert not restored.mirror
    np.testing.assert_array_equal(restored.predict(train.images).probs, off.predict(train.images).probs)


def test_training_flips_only_with_mirror_on() -> None:
    image = _facing_left(0)

    def left_brighter(flip: bool) -> list[bool]:
        torch.manual_seed(0)
        tf = make_transform(_adapter().backbone, image_size=SIZE, train=True, flip=flip)
        out = []
        for _ in range(40):
            x = tf(image)
            out.append(bool(x[:, :, : SIZE // 2].mean() > x[:, :, SIZE // 2 :].mean()))
        return out

    assert all(left_brighter(False))
    assert 5 < sum(left_brighter(True)) < 35


def test_images_of_any_mode_size_and_source(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (50, 90, 3), dtype=np.uint8))
    path = tmp_path / "img.png"
    rgb.save(path)
    images: list = [
        rgb,
        rgb.convert("L"),
        rgb.convert("RGBA"),
        rgb.convert("P"),
        path,
        str(path),
        Image.new("RGB", (5, 300)),
    ]
    adapter = _adapter()
    probs = adapter.predict(images).probs
    assert probs.shape == (7, 2) and np.isfinite(probs).all()
    emb = adapter.embed(images)
    np.testing.assert_allclose(emb[4], emb[5])
    np.testing.assert_allclose(emb[0], emb[4], atol=1e-5)


def test_bad_inputs_are_rejected(two_colour: Factory) -> None:
    images, labels = two_colour(3, seed=1)
    adapter = _adapter()
    with pytest.raises(ValueError, match="multiclass labels"):
        adapter.fit(LabelledImages(images, labels + 5), None, config=FitConfig())
    with pytest.raises(ValueError, match="empty"):
        adapter.fit(LabelledImages([], np.zeros(0, dtype=int)), None, config=FitConfig())
    with pytest.raises(ValueError, match="labels"):
        LabelledImages(images, labels[:2])
    with pytest.raises(ValueError, match="distinct"):
        _adapter(classes=["a", "a"])
    with pytest.raises(ValueError, match="multiclass and multilabel"):
        create_adapter("classifier", classes=["a", "b"], task="detection")
    with pytest.raises(ValueError, match="algorithm"):
        FitConfig(algorithm="slow")  # type: ignore[arg-type]
    with pytest.raises(UnknownAdapterError, match="'classifier'"):
        create_adapter("no-such-adapter")


def test_precise_keeps_the_weight_average(two_colour: Factory) -> None:
    """With ``ema_decay`` the model kept is timm's moving average, not the last step's weights."""
    train = LabelledImages(*two_colour(12, seed=1))
    states = []
    for decay in (None, 0.9):
        adapter = _adapter()
        adapter.fit(train, None, config=_precise(epochs=1, seed=7, val_fraction=0.0, ema_decay=decay))
        states.append({k: v.clone() for k, v in adapter.net.state_dict().items()})
    changed = [k for k in states[0] if states[0][k].is_floating_point() and not torch.equal(states[0][k], states[1][k])]
    assert changed, "the averaged weights should differ from the last step's"


def test_fast_weights_skewed_labels_to_the_unlabelled_class_mix() -> None:
    # a query strategy that asks mostly about one class must not teach the head that the
    # other is rare: with use_unlabelled, the labels count in the mix the head finds among
    # the unlabelled images (here half and half), not in the mix they were asked in
    adapter = _adapter()
    d = adapter.head.linear.in_features
    rng = np.random.default_rng(0)

    def draw(n: int, cls: int) -> np.ndarray:  # two overlapping blobs in the first two dimensions
        x = np.zeros((n, d), dtype=np.float32)
        x[:, :2] = rng.normal(size=(n, 2)) + (1.0 if cls else -1.0)
        x[:, 2:] = 0.01 * rng.normal(size=(n, d - 2))
        return x
    train_x = np.concatenate([draw(900, 0), draw(100, 1)])
    labels = np.array([0] * 900 + [1] * 100)
    pool_x = np.concatenate([draw(500, 0), draw(500, 1)])
    pool_y = np.array([0] * 500 + [1] * 500)
    train = LabelledImages(["unused.png"] * 1000, labels)
    share = {}
    for use in (False, True):
        config = FitConfig(use_unlabelled=use, unlabelled=["unused.png"] * 1000 if use else [], max_unlabelled=1000)
        report = adapter.fit(train, None, config=config, embeddings=FitEmbeddings(train=train_x, unlabelled=pool_x))
        pred = adapter.predict_embeddings(pool_x).probs.argmax(1)
        share[use] = (pred == 1).mean()
        assert report.n_unlabelled == (1000 if use else 0)
        if use:
            assert report.history[0].pseudo_labelled > 0
            assert (pred == pool_y).mean() > 0.9
    assert share[False] < 0.4 and abs(share[True] - 0.5) < 0.05, share


def test_class_weights_share_the_weight_by_the_prior() -> None:
    from learning.adapters.classifier_fit import class_weights

    y = torch.nn.functional.one_hot(torch.tensor([0, 0, 0, 1]), 3).float()
    w = class_weights(y, torch.tensor([0.25, 0.5, 0.25]))
    assert torch.isclose(w.mean(), torch.tensor(1.0))
    share = (y * w[:, None]).sum(0) / w.sum()
    assert torch.allclose(share, torch.tensor([1 / 3, 2 / 3, 0.0]))  # class 2 has no labels to weigh
