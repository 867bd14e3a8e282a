"""What the train job asks of the adapter under a policy (no database needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from learning.policy import Policy
from service.loop.data import Snapshot
from service.loop.train import fit_config
from service.models import Task


def _snap() -> Snapshot:
    snap = Snapshot(classes=["a", "b"], task=Task.multiclass)
    snap.train_paths, snap.holdout_paths = [Path("t1"), Path("t2")], [Path("h1")]
    snap.pool_paths = [Path("p1"), Path("p2"), Path("p3")]
    return snap


@pytest.mark.parametrize(("policy", "uses"), [
    ({}, True), ({"algorithm": "precise"}, False), ({"semi_supervised": False}, False),
    ({"algorithm": "precise", "semi_supervised": True}, True),
])
def test_unlabelled_images_are_the_pools_and_the_hold_outs(policy: dict, uses: bool) -> None:
    # the calibrating hold-out's images are unlabelled to the model like the pool's: a model
    # that learnt from the pool's images only could be surer of the pool's mistakes
    config = fit_config(Policy.from_dict(policy), _snap(), seed=1)
    assert config.use_unlabelled is uses
    assert list(config.unlabelled) == ([Path("p1"), Path("p2"), Path("p3"), Path("h1")] if uses else [])


def test_a_large_pool_is_sampled_before_its_embeddings_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    from service.loop import train

    monkeypatch.setattr(train, "FAST_MAX_UNLABELLED", 2)
    snap, policy = _snap(), Policy()
    sample = train.unlabelled_sample(policy, snap, seed=1)
    assert len(sample) == 2 and sample == sorted(sample) and sample == train.unlabelled_sample(policy, snap, seed=1)
    config = fit_config(policy, snap, seed=1)
    assert list(config.unlabelled) == [train.unlabelled_paths(snap)[i] for i in sample]


@pytest.mark.parametrize("mirror", [True, False])
def test_training_and_grids_read_one_feature_space(mirror: bool, tmp_path: Path) -> None:
    # the train job caches embed() under the adapter's feature_version and grid clustering
    # reads them back under its own: one policy must name one space, and mirror must reach both
    from service.config import Settings
    from service.loop import clusters
    from service.models import Project
    from service.pipelines.base import ModelConfig
    from service.pipelines.classification import classifier

    policy = Policy(mirror=mirror, image_size=48)
    settings = Settings(data_dir=tmp_path, torch_threads=1)
    trained = classifier(ModelConfig.from_settings(settings), ["a", "b"], Task.multiclass, policy)
    grids = clusters.feature_adapter(Project(name="p", policy=policy.to_dict()), None, settings)
    assert trained.mirror is mirror and grids.mirror is mirror
    assert trained.feature_version == grids.feature_version
    assert ("mirror" in trained.feature_version.split("/")) is mirror  # then the runtime, e.g. openvino-f32
