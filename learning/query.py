"""Query strategies: which unlabelled items to ask a person about first (pure, seeded).

Two kinds of function, kept apart:

* **scores** map model output to one number per item, ``[N, C] -> [N]``; higher
  means "ask a person first".  They never call a model.
* **selectors** turn scores (and, for diversity, embeddings) into ``k`` indices.
  Every selector takes an explicit ``np.random.Generator`` that breaks ties, so a
  seeded run is reproducible and equal scores do not always favour low indices.

:func:`get_strategy` combines the two under a registry name (``"margin"``,
``"margin_diverse"``, ...).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

ScoreFn = Callable[[np.ndarray], np.ndarray]


# -- scores: [N, C] -> [N], higher = ask first -----------------------------------


def least_confidence(probs: np.ndarray) -> np.ndarray:
    """``1 - max_c p[c]`` per row; ``[N, C] -> [N]`` in ``[0, 1 - 1/C]``."""
    p = _probs(probs)
    return 1.0 - p.max(axis=1)


def margin(probs: np.ndarray) -> np.ndarray:
    """``1 - (p_top1 - p_top2)`` per row; ``[N, C] -> [N]`` in ``[0, 1]``, 1 = a tie."""
    p = _probs(probs)
    if p.shape[1] < 2:
        raise ValueError("margin needs at least two classes")
    top2 = np.partition(p, p.shape[1] - 2, axis=1)[:, -2:]
    return 1.0 - (top2[:, 1] - top2[:, 0])


def entropy(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy divided by ``log C``; ``[N, C] -> [N]`` in ``[0, 1]``, 1 = uniform."""
    p = _probs(probs)
    if p.shape[1] < 2:
        return np.zeros(p.shape[0])
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)
    return np.clip(h / np.log(p.shape[1]), 0.0, 1.0)


def random_scores(n: int, rng: np.random.Generator) -> np.ndarray:
    """``[n]`` uniform scores: selecting on them is random sampling."""
    return rng.random(n)


EXPLORE_SHARE = 0.3


def explore(scores: np.ndarray, rng: np.random.Generator, share: float = EXPLORE_SHARE) -> np.ndarray:
    """Mix random sampling into a score: ``[N] -> [N]`` in ``(0, 1)``.

    Every score becomes its quantile among the ``N``; a random ``share`` of the items
    get a uniform random value instead. The top ``k`` of the result then holds about
    ``(1 - share) k`` of the highest-scored items and ``share k`` items drawn at random
    from all of them. Uncertainty sampling alone never asks about the images the model
    is sure of, so its confident mistakes go unseen, and the top of its ranking, which
    is what a certified threshold covers, stays dirtier than random sampling's
    (``labelloop simulate``, README "Figures").
    """
    scores = _vector(np.asarray(scores, dtype=np.float64), "scores")
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be between 0 and 1, got {share!r}")
    n = len(scores)
    ranks = np.empty(n)
    ranks[np.lexsort((rng.random(n), scores))] = (np.arange(n) + 0.5) / max(n, 1)  # ties broken at random
    picked = rng.random(n) < share
    ranks[picked] = rng.random(int(picked.sum()))
    return ranks


def multilabel_uncertainty(probs: np.ndarray) -> np.ndarray:
    """Mean per-class closeness to 0.5, ``1 - |2p - 1|``; ``[N, C] -> [N]`` in ``[0, 1]``.

    For independent per-class probabilities (rows need not sum to one).
    """
    p = _probs(probs)
    return (1.0 - np.abs(2.0 * p - 1.0)).mean(axis=1)


def multilabel_entropy(probs: np.ndarray) -> np.ndarray:
    """Mean per-class binary entropy in bits; ``[N, C] -> [N]`` in ``[0, 1]``."""
    p = np.clip(_probs(probs), 1e-12, 1 - 1e-12)
    return (-(p * np.log2(p) + (1 - p) * np.log2(1 - p))).mean(axis=1)


# -- selectors -------------------------------------------------------------------


def top_k(scores: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of the ``k`` highest scores, best first; ties in random order.

    ``scores``: ``[N]``; returns ``[min(k, N)]`` int64 indices.
    """
    s = _vector(scores, "scores")
    k = _check_k(k, s.size)
    perm = rng.permutation(s.size)
    order = perm[np.argsort(-s[perm], kind="stable")]
    return order[:k].astype(np.int64)


def diverse_top_k(
    scores: np.ndarray,
    embeddings: np.ndarray,
    k: int,
    rng: np.random.Generator,
    candidate_factor: int = 10,
) -> np.ndarray:
    """``k`` high-scoring items that are not near duplicates of each other.

    Takes the ``k * candidate_factor`` best-scoring items as a pool, then runs
    k-center greedy inside it: start from the best score, then repeatedly add the
    pool item farthest from everything chosen (ties go to the higher score).
    ``scores``: ``[N]``; ``embeddings``: ``[N, D]``, L2-normalised; returns ``[k]``.
    """
    s = _vector(scores, "scores")
    emb = _embeddings(embeddings, s.size)
    k = _check_k(k, s.size)
    if candidate_factor < 1:
        raise ValueError(f"candidate_factor must be >= 1, got {candidate_factor}")
    pool = top_k(s, k * candidate_factor, rng)
    return pool[_k_center(emb[pool], k, first=0)] if k else pool[:0]


def class_balanced_top_k(
    scores: np.ndarray,
    predicted: np.ndarray,
    k: int,
    rng: np.random.Generator,
    class_counts: np.ndarray | None = None,
) -> np.ndarray:
    """``k`` high-scoring items spread over predicted classes, rare classes first.

    Repeatedly takes the best remaining item of the predicted class with the fewest
    labels so far (``class_counts[c]`` plus the items already picked for it; ties
    between classes broken by ``rng``).  ``scores``: ``[N]``; ``predicted``: ``[N]``
    int; ``class_counts``: ``[C]`` human labels per class (zeros when ``None``).
    """
    s = _vector(scores, "scores")
    pred = np.asarray(predicted, dtype=np.int64)
    if pred.shape != s.shape:
        raise ValueError(f"predicted must have shape {s.shape}, got {pred.shape}")
    k = _check_k(k, s.size)
    given = np.zeros(0) if class_counts is None else np.asarray(class_counts, dtype=np.float64)
    n_cls = max(int(pred.max(initial=-1)) + 1, given.size)
    counts = np.zeros(n_cls)
    counts[: given.size] = given
    order = top_k(s, s.size, rng)
    queues = [order[pred[order] == c] for c in range(n_cls)]
    taken = np.zeros(n_cls, dtype=np.int64)
    jitter = rng.random(n_cls)  # fixed per call: breaks ties between equal counts
    picked: list[int] = []
    while len(picked) < k:
        live = [c for c in range(n_cls) if taken[c] < queues[c].size]
        c = min(live, key=lambda j: (counts[j], jitter[j]))
        picked.append(int(queues[c][taken[c]]))
        taken[c] += 1
        counts[c] += 1
    return np.asarray(picked, dtype=np.int64)


def cold_start(
    embeddings: np.ndarray, k: int, rng: np.random.Generator, n_iter: int = 10
) -> np.ndarray:
    """``k`` diverse *and* typical items before any model exists.

    k-means++ seeding over the embeddings, a few Lloyd iterations, then the item
    nearest each centre (each item used once): one representative per region of the
    data, rather than the outliers plain k-center would pick.  ``embeddings``:
    ``[N, D]`` L2-normalised; returns ``[min(k, N)]`` int64 indices.  Costs
    ``O(N k D)`` per iteration: for very large pools pass a random sample.
    """
    emb = _embeddings(embeddings, None)
    k = _check_k(k, emb.shape[0])
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    centres = emb[_kmeanspp(emb, k, rng)]
    for _ in range(n_iter):
        assign = _sq_dist(emb, centres).argmin(axis=1)
        for j in range(k):
            members = emb[assign == j]
            if len(members):
                centres[j] = members.mean(axis=0)
    d = _sq_dist(emb, centres)
    picked: list[int] = []
    for j in np.argsort(d.min(axis=0), kind="stable"):  # tightest centres choose first
        i = int(np.argmin(d[:, j]))
        picked.append(i)
        d[i, :] = np.inf  # each item represents one centre at most
    return np.asarray(picked, dtype=np.int64)


# -- registry --------------------------------------------------------------------


@dataclass(frozen=True)
class Strategy:
    """A named query strategy: a score function plus how to select on it.

    ``score is None`` means random scores; ``selection`` is ``"top"``, ``"diverse"``,
    ``"balanced"``, ``"explore"`` (:func:`explore`) or ``"cold_start"`` (embeddings
    only, no scores).
    """

    name: str
    score: ScoreFn | None
    selection: str = "top"

    def select(
        self,
        probs: np.ndarray | None,
        k: int,
        rng: np.random.Generator,
        embeddings: np.ndarray | None = None,
        class_counts: np.ndarray | None = None,
    ) -> np.ndarray:
        """Indices ``[<= k]`` of the items to ask about, most useful first.

        ``probs``: ``[N, C]`` model output (unused by ``random``/``cold_start`` beyond
        ``N``); ``embeddings``: ``[N, D]`` L2-normalised, needed by the ``diverse``
        and ``cold_start`` selections; ``class_counts``: ``[C]`` human labels per class.
        """
        if self.selection == "cold_start":
            return cold_start(_need(embeddings, self.name, "embeddings"), k, rng)
        if self.score is None:  # random: only the number of items matters
            n = len(probs) if probs is not None else len(_need(embeddings, self.name, "probs"))
            scores = random_scores(n, rng)
        else:
            scores = self.score(_need(probs, self.name, "probs"))
        if self.selection == "explore":
            return top_k(explore(scores, rng), k, rng)
        if self.selection == "diverse":
            return diverse_top_k(scores, _need(embeddings, self.name, "embeddings"), k, rng)
        if self.selection == "balanced":
            predicted = _need(probs, self.name, "probs").argmax(axis=1)
            return class_balanced_top_k(scores, predicted, k, rng, class_counts)
        return top_k(scores, k, rng)


STRATEGIES: dict[str, Strategy] = {}


def register_strategy(strategy: Strategy) -> Strategy:
    """Add ``strategy`` to the registry under its name (an existing name is an error)."""
    if strategy.selection not in {"top", "diverse", "balanced", "cold_start", "explore"}:
        raise ValueError(f"unknown selection {strategy.selection!r} for {strategy.name!r}")
    if strategy.name in STRATEGIES:
        raise ValueError(f"strategy {strategy.name!r} is already registered")
    STRATEGIES[strategy.name] = strategy
    return strategy


def get_strategy(name: str) -> Strategy:
    """The registered strategy called ``name``; unknown names list the known ones."""
    try:
        return STRATEGIES[name]
    except KeyError:
        known = ", ".join(sorted(STRATEGIES))
        raise ValueError(f"unknown query strategy {name!r}; known: {known}") from None


for _s in (
    Strategy("random", None),
    Strategy("least_confidence", least_confidence),
    Strategy("margin", margin),
    Strategy("entropy", entropy),
    Strategy("margin_diverse", margin, "diverse"),
    Strategy("entropy_diverse", entropy, "diverse"),
    Strategy("margin_balanced", margin, "balanced"),
    Strategy("margin_explore", margin, "explore"),
    Strategy("multilabel_uncertainty", multilabel_uncertainty),
    Strategy("multilabel_entropy", multilabel_entropy),
    Strategy("cold_start", None, "cold_start"),
):
    register_strategy(_s)


# -- helpers ---------------------------------------------------------------------


def _probs(probs: np.ndarray) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"probs must be [N, C], got shape {p.shape}")
    if not np.isfinite(p).all():
        raise ValueError("probs must be finite")
    return p


def _need(x: np.ndarray | None, strategy: str, what: str) -> np.ndarray:
    if x is None:
        raise ValueError(f"strategy {strategy!r} needs {what}")
    return np.asarray(x)


def _vector(x: np.ndarray, name: str) -> np.ndarray:
    v = np.asarray(x, dtype=np.float64)
    if v.ndim != 1:
        raise ValueError(f"{name} must be [N], got shape {v.shape}")
    return v


def _embeddings(embeddings: np.ndarray, n: int | None) -> np.ndarray:
    e = np.asarray(embeddings, dtype=np.float64)
    if e.ndim != 2 or (n is not None and e.shape[0] != n):
        want = "[N, D]" if n is None else f"[{n}, D]"
        raise ValueError(f"embeddings must be {want}, got shape {e.shape}")
    return e


def _check_k(k: int, n: int) -> int:
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    return min(int(k), n)


def _sq_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances ``[A, D] x [B, D] -> [A, B]``."""
    d = np.einsum("ij,ij->i", a, a)[:, None] + np.einsum("ij,ij->i", b, b)[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)


def _k_center(emb: np.ndarray, k: int, first: int) -> np.ndarray:
    """Greedy k-center over the rows of ``emb`` ``[M, D]``; argmax ties go to low rows."""
    chosen = [first]
    dist = _sq_dist(emb, emb[first : first + 1])[:, 0]
    dist[first] = -np.inf
    for _ in range(1, k):
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, _sq_dist(emb, emb[nxt : nxt + 1])[:, 0])
        dist[chosen] = -np.inf  # never pick a row twice, even among exact duplicates
    return np.asarray(chosen, dtype=np.int64)


def _kmeanspp(emb: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding: ``k`` distinct row indices of ``emb`` ``[N, D]``."""
    n = emb.shape[0]
    chosen = [int(rng.integers(n))]
    dist = _sq_dist(emb, emb[chosen])[:, 0]
    dist[chosen] = 0.0
    while len(chosen) < k:
        total = dist.sum()
        if total <= 0:  # every row duplicates a chosen one: take unused rows at random
            rest = np.setdiff1d(np.arange(n), chosen)
            chosen.extend(rng.permutation(rest)[: k - len(chosen)].tolist())
            break
        nxt = int(rng.choice(n, p=dist / total))
        chosen.append(nxt)
        dist = np.minimum(dist, _sq_dist(emb, emb[nxt : nxt + 1])[:, 0])
        dist[chosen] = 0.0  # float noise must not let a chosen row be drawn again
    return np.asarray(chosen, dtype=np.int64)
