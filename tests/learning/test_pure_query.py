"""Query scores and selectors on tiny arrays whose right answer is obvious."""

from __future__ import annotations

import numpy as np
import pytest

from learning.query import (
    STRATEGIES,
    Strategy,
    class_balanced_top_k,
    cold_start,
    diverse_top_k,
    entropy,
    explore,
    get_strategy,
    least_confidence,
    margin,
    multilabel_entropy,
    multilabel_uncertainty,
    random_scores,
    register_strategy,
    top_k,
)

PROBS = np.array(
    [
        [0.98, 0.01, 0.01],  # sure
        [0.50, 0.50, 0.00],  # a tie between two classes
        [0.34, 0.33, 0.33],  # nearly uniform
        [0.70, 0.20, 0.10],
    ]
)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_scores_direction_and_range() -> None:
    assert int(np.argmax(margin(PROBS))) == 1 and margin(PROBS)[1] == pytest.approx(1.0)
    assert int(np.argmax(entropy(PROBS))) == 2 and int(np.argmax(least_confidence(PROBS))) == 2
    for fn in (margin, entropy, least_confidence):
        s = fn(PROBS)
        assert s.shape == (4,) and int(np.argmin(s)) == 0
        assert ((0 <= s) & (s <= 1)).all()
    assert entropy(np.full((1, 4), 0.25))[0] == pytest.approx(1.0)
    assert entropy(np.array([[1.0, 0.0]]))[0] == 0.0


def test_margin_needs_two_classes_and_2d_input() -> None:
    with pytest.raises(ValueError, match="two classes"):
        margin(np.ones((3, 1)))
    with pytest.raises(ValueError, match=r"\[N, C\]"):
        margin(np.ones(3))


def test_multilabel_scores() -> None:
    p = np.array([[0.5, 0.5], [0.0, 1.0], [0.9, 0.5]])
    u = multilabel_uncertainty(p)
    assert u.tolist() == pytest.approx([1.0, 0.0, 0.6])
    e = multilabel_entropy(p)
    assert e[0] == pytest.approx(1.0) and e[1] == pytest.approx(0.0, abs=1e-9)
    assert e[0] > e[2] > e[1]


def test_random_scores_are_seeded() -> None:
    assert np.array_equal(random_scores(5, rng(3)), random_scores(5, rng(3)))


def test_top_k_order_and_ties_broken_by_rng() -> None:
    s = np.array([0.1, 0.9, 0.5, 0.9, 0.9])
    picks = {tuple(top_k(s, 2, rng(seed)).tolist()) for seed in range(30)}
    assert all(set(p) <= {1, 3, 4} for p in picks)
    assert len(picks) > 1  # equal scores do not always favour the low index
    assert top_k(s, 5, rng(0))[-1] == 0 and top_k(s, 10, rng(0)).size == 5
    assert np.array_equal(top_k(s, 3, rng(7)), top_k(s, 3, rng(7)))
    assert top_k(s, 0, rng(0)).size == 0
    with pytest.raises(ValueError, match="k must be"):
        top_k(s, -1, rng(0))


def test_diverse_top_k_avoids_near_duplicates() -> None:
    # items 0-2 are the same picture (highest scores), 3 and 4 look different
    emb = np.array([[1, 0, 0], [1, 0.001, 0], [1, 0, 0.001], [0, 1, 0], [0, 0, 1]], float)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    s = np.array([0.99, 0.98, 0.97, 0.6, 0.5])
    assert set(top_k(s, 3, rng(0)).tolist()) == {0, 1, 2}
    picked = diverse_top_k(s, emb, 3, rng(0))
    assert picked[0] == 0 and set(picked.tolist()) == {0, 3, 4}
    pool_only = diverse_top_k(s, emb, 2, rng(0), candidate_factor=1)
    assert set(pool_only.tolist()) == {0, 1}  # the pool is the top-2 scores only
    dupes = diverse_top_k(np.ones(4), np.ones((4, 2)) / np.sqrt(2), 4, rng(0))
    assert sorted(dupes.tolist()) == [0, 1, 2, 3]  # exact duplicates: still distinct rows
    with pytest.raises(ValueError, match="embeddings"):
        diverse_top_k(s, emb[:3], 2, rng(0))


def test_class_balanced_top_k_favours_rare_classes() -> None:
    s = np.array([0.9, 0.8, 0.7, 0.6, 0.2, 0.1])
    pred = np.array([0, 0, 0, 0, 1, 2])
    picked = class_balanced_top_k(s, pred, 3, rng(0), class_counts=np.array([50, 3, 1]))
    assert picked.tolist() == [5, 4, 0]  # rarest class first, then the next rarest
    even = class_balanced_top_k(s, pred, 4, rng(0))
    assert set(even[:3].tolist()) == {0, 4, 5} and even[3] == 1
    assert class_balanced_top_k(s, pred, 10, rng(0)).size == 6


def test_cold_start_picks_one_typical_item_per_cluster() -> None:
    g = rng(1)
    centres = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], float)
    emb = np.repeat(centres, 30, axis=0) + g.normal(scale=0.05, size=(90, 3))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    picked = cold_start(emb, 3, rng(0))
    assert sorted((picked // 30).tolist()) == [0, 1, 2]  # one per cluster
    # typical: each pick is close to its cluster's centre, not an outlier
    assert (np.einsum("ij,ij->i", emb[picked], centres[picked // 30]) > 0.99).all()
    assert np.array_equal(cold_start(emb, 3, rng(5)), cold_start(emb, 3, rng(5)))
    assert cold_start(emb[:2], 5, rng(0)).size == 2
    assert len(set(cold_start(np.ones((4, 2)), 3, rng(0)).tolist())) == 3  # all duplicates


def test_registry_and_strategy_select() -> None:
    assert {"random", "least_confidence", "margin", "entropy", "margin_diverse"} <= set(STRATEGIES)
    assert get_strategy("margin").select(PROBS, 1, rng(0)).tolist() == [1]
    assert get_strategy("entropy").select(PROBS, 1, rng(0)).tolist() == [2]
    r = get_strategy("random").select(PROBS, 4, rng(0))
    assert sorted(r.tolist()) == [0, 1, 2, 3]
    emb = np.eye(4)
    assert get_strategy("margin_diverse").select(PROBS, 2, rng(0), embeddings=emb)[0] == 1
    assert get_strategy("cold_start").select(None, 2, rng(0), embeddings=emb).size == 2
    assert get_strategy("random").select(None, 2, rng(0), embeddings=emb).size == 2
    two = np.array([[0.6, 0.4], [0.45, 0.55], [0.9, 0.1], [0.2, 0.8]])
    balanced = get_strategy("margin_balanced")
    assert balanced.select(two, 2, rng(0), class_counts=np.array([0, 10])).tolist() == [0, 2]
    assert balanced.select(two, 2, rng(0), class_counts=np.array([10, 0])).tolist() == [1, 3]


def test_explore_mixes_a_random_share_into_the_top() -> None:
    """Of the top 1,000 of 10,000 items, about 70% are the highest-scored and 30% come
    from anywhere: about 15% of the top from the lower half of the scores."""
    n, k = 10_000, 1_000
    scores = rng(1).random(n)
    low = scores < np.median(scores)
    plain = np.argsort(-explore(scores, rng(2), share=0.0))[:k]
    assert set(plain.tolist()) == set(np.argsort(-scores)[:k].tolist())  # share 0: the same order
    top = np.argsort(-explore(scores, rng(2), share=0.3))[:k]
    assert 100 <= low[top].sum() <= 200, low[top].sum()
    best = set(np.argsort(-scores)[:k].tolist())
    assert 600 <= len(best & set(top.tolist())) <= 800
    picked = get_strategy("margin_explore").select(np.tile(PROBS, (250, 1)), 100, rng(3))
    assert len(set(picked.tolist())) == 100 and (picked % 4 == 0).sum() > 0  # sure items asked too
    assert (get_strategy("margin").select(np.tile(PROBS, (250, 1)), 100, rng(3)) % 4 != 0).all()
    with pytest.raises(ValueError, match="share"):
        explore(scores, rng(0), share=1.5)


def test_registry_errors() -> None:
    with pytest.raises(ValueError, match="unknown query strategy 'nope'; known: .*margin"):
        get_strategy("nope")
    with pytest.raises(ValueError, match="needs embeddings"):
        get_strategy("margin_diverse").select(PROBS, 2, rng(0))
    with pytest.raises(ValueError, match="needs probs"):
        get_strategy("margin").select(None, 2, rng(0))
    with pytest.raises(ValueError, match="already registered"):
        register_strategy(Strategy("margin", margin))
    with pytest.raises(ValueError, match="unknown selection"):
        register_strategy(Strategy("odd", margin, "sideways"))


def test_queue_scores_for_margin_explore_rank_some_sure_items_first() -> None:
    """The inference job's ``query_score``: with ``margin_explore`` some of the first
    items the queue serves are ones the model is sure of; with ``margin`` none are."""
    from service.loop.scoring import query_scores

    probs = np.tile(PROBS, (250, 1))  # every 4th row is a sure one
    first = np.argsort(-query_scores("margin_explore", probs, rng=rng(4)))[:100]
    assert (first % 4 == 0).sum() >= 5
    first = np.argsort(-query_scores("margin", probs, rng=rng(4)))[:100]
    assert (first % 4 != 0).all()


def test_queue_scores_explore_on_request_for_uncertainty_strategies_only() -> None:
    """While a class is short of labels the inference job asks ``margin`` to explore: some of
    the first items served are ones the model is sure of (a class nobody has labelled yet
    hides among them). Random scores stay random."""
    from service.loop.scoring import query_scores

    probs = np.tile(PROBS, (250, 1))  # every 4th row is a sure one
    first = np.argsort(-query_scores("margin", probs, rng=rng(4), explore=True))[:100]
    assert (first % 4 == 0).sum() >= 5
    np.testing.assert_array_equal(query_scores("random", probs, rng=rng(4), explore=True),
                                  query_scores("random", probs, rng=rng(4)))
