"""Turn the project's query strategy into one ``query_score`` per pool item.

The queue serves the highest ``query_score`` first. Strategies with a batch
selection (diverse, class-balanced) pick the next ``batch`` items with
:meth:`learning.query.Strategy.select` and those items are ranked above the
rest in the selected order, so a run of queue draws is diverse, not twenty
near-duplicates.
"""

from __future__ import annotations

import numpy as np

from learning import query

MULTILABEL_FALLBACK = "multilabel_uncertainty"


def query_scores(name: str, probs: np.ndarray, *, multilabel: bool = False,
                 embeddings: np.ndarray | None = None, class_counts: np.ndarray | None = None,
                 rng: np.random.Generator | None = None, batch: int = 200, explore: bool = False) -> np.ndarray:
    """``[N]`` scores, higher = ask a person first.

    ``explore``: mix random draws into an uncertainty score (:func:`learning.query.explore`,
    as the ``*_explore`` strategies always do). Uncertainty alone never asks about an image
    the model confidently files under another class, so a class nobody has labelled yet
    would stay unseen; the inference job asks for this while a class is short of labels."""
    rng = rng or np.random.default_rng()
    n = len(probs)
    if n == 0:
        return np.zeros(0)
    strat = query.get_strategy(name)
    if multilabel and strat.score is not None and not name.startswith("multilabel"):
        strat = query.get_strategy(MULTILABEL_FALLBACK)
    base = rng.random(n) if strat.score is None else np.asarray(strat.score(probs), dtype=float)
    if strat.selection == "explore" or (explore and strat.score is not None):
        base = query.explore(base, rng)
    if strat.selection == "explore":
        return base
    if strat.selection in ("diverse", "balanced", "cold_start"):
        if strat.selection != "balanced" and embeddings is None:
            return base
        k = min(batch, n)
        picked = strat.select(probs, k, rng, embeddings=embeddings, class_counts=class_counts)
        scores = base.copy()
        scores[picked] = 2.0 + (len(picked) - np.arange(len(picked))) / max(len(picked), 1)
        return scores
    return base
