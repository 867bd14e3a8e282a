"""The fake adapter of :mod:`tests.fakes` passes the adapter contract every registered
adapter passes (:mod:`tests.learning.test_adapter_contract`), and behaves as its doc says."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from learning.adapters import Cancelled, FitConfig, LabelledImages, create_adapter, load_adapter
from tests.learning import test_adapter_contract as contract

FAST = FitConfig(algorithm="fast", image_size=32, seed=0)
CASES = [
    contract.Case("multiclass", dict(classes=["r", "g", "b"], task="multiclass"), contract._multiclass, FAST),
    contract.Case("multilabel", dict(classes=["red", "blue"], task="multilabel"), contract._multilabel, FAST),
]


@pytest.fixture
def key() -> str:
    from tests.fakes import register  # registering at collection would add a case-less key to the contract run

    return register()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_the_fake_passes_the_adapter_contract(key: str, case: contract.Case, tmp_path: Path) -> None:
    contract.test_adapter_contract(key, case, tmp_path)


def _solid(rgb: tuple[int, int, int]) -> Image.Image:
    return Image.new("RGB", (20, 20), rgb)


def test_colours_are_learnt_from_a_few_labels_and_cost_no_network(key: str) -> None:
    adapter = create_adapter(key, classes=["red", "green", "blue"], task="multiclass", backbone="ignored")
    train = LabelledImages([_solid((210, 20, 20)), _solid((20, 200, 30)), _solid((25, 30, 190))], np.array([0, 1, 2]))
    adapter.fit(train, None, config=FAST)
    probs = adapter.predict([_solid((180, 40, 40)), _solid((40, 170, 60)), _solid((60, 60, 220))]).probs
    assert probs.argmax(axis=1).tolist() == [0, 1, 2]
    assert (probs.max(axis=1) > 0.9).all()  # clearly different colours: confident
    between = adapter.predict([_solid((115, 110, 25))]).probs[0]  # halfway red-green: unsure between the two
    assert between[2] < 0.05 and abs(between[0] - between[1]) < 0.5


def test_embeddings_put_look_alikes_together(key: str) -> None:
    adapter = create_adapter(key, classes=["a", "b"])
    vecs = adapter.embed([_solid((200, 10, 10)), _solid((205, 15, 12)), _solid((10, 10, 200))])
    assert vecs.shape == (3, 67)
    assert vecs[0] @ vecs[1] > 0.99 and vecs[0] @ vecs[2] < 0.1
    adapter.fit(LabelledImages([_solid((200, 10, 10)), _solid((10, 10, 200))], np.array([0, 1])), None, config=FAST)
    probs = adapter.predict([_solid((190, 20, 20))]).probs  # the fast path (cached embeddings) agrees
    np.testing.assert_array_equal(adapter.predict_embeddings(adapter.embed([_solid((190, 20, 20))])).probs, probs)


def test_a_cancelled_fit_leaves_the_adapter_as_it_was(key: str, tmp_path: Path) -> None:
    adapter = create_adapter(key, classes=["red", "blue"])
    train = LabelledImages([_solid((200, 0, 0)), _solid((0, 0, 200))], np.array([0, 1]))

    def cancel(fraction: float, message: str) -> None:
        raise Cancelled

    with pytest.raises(Cancelled):
        adapter.fit(train, None, config=FAST, progress=cancel)
    np.testing.assert_array_equal(adapter.predict([_solid((200, 0, 0))]).probs, [[0.5, 0.5]])
    adapter.save(tmp_path / "m")  # an untrained fake also round-trips
    np.testing.assert_array_equal(load_adapter(tmp_path / "m").predict([_solid((200, 0, 0))]).probs, [[0.5, 0.5]])


def test_detection_is_refused_with_the_reason(key: str) -> None:
    with pytest.raises(ValueError, match="multiclass and multilabel"):
        create_adapter(key, classes=["box"], task="detection")
