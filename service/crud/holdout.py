"""The hold-out keeps its place in the pool, so that it stays a fair sample of it.

Why.  Each hold-out label is a random draw from the items without a label at that
moment.  The other routes then take items out of the pool by what the model shows
them: the strategy stream takes what the model is least sure of, grid pages and
Pending what it is surest of.  Thresholds are applied to the pool that is left, and
that pool drifts away from the one the hold-out was drawn from: harder than the
hold-out after grids (the certificate turns optimistic: 0.920 realised precision
against a 0.95 target in the actions simulation before this module), easier after
``margin`` (needlessly conservative).

How.  A hold-out item stays in the pool for every other route's choice, as if no one
had labelled it.  When a route would have taken it, it leaves the calibration set
(``Item.holdout_taken_by``) and joins the training set, where its label would have
gone had that route taken it:

* ``strategy``: the strategy stream serves an item whose ``query_score`` is below the
  hold-out item's (inference scores hold-out items together with the pool, so the
  scores compare; see :func:`take_after_strategy`).  Not with ``random``: an order that
  ignores the images (it draws Pending's items too, :mod:`service.crud.queue`) thins the
  pool and the hold-out alike, so the items left are a fair sample without taking any,
  and taking them would only shrink the calibration set (in the simulator, random
  sampling to 4,000 labels kept 87-412 of about 800 hold-out labels);
* ``grid``: a grid page it was placed on (the page of its nearest look-alike, see
  :mod:`service.loop.clusters`) is confirmed with the class it has, or confirmed with
  every exception given its own class and none left out (the person labels the whole
  page, so it would have been labelled whatever its class);
* ``pending``: the current model would have proposed its class, rightly, and people have
  decided proposals of that model and class around its score: it is taken with the share
  decided among its nearest proposals by score (by a fixed random number of its own, see
  :func:`take_after_pending`), so whatever order people work Pending in, each score band
  of the hold-out is thinned as that band of the pool was; a wrong proposal it would have
  got is never counted as taken, which can only make the certificate more cautious;
* ``auto``: with ``auto_accept`` the model would have proposed it (right or wrong).

The hold-out items left are then, like the pool itself, the items no route took: each
was a uniform draw from the pool of its day, and conditioned on "not taken since" it is
a uniform draw from what is left of that pool (the routes decided on the same pool,
hold-out items included, so being held out changed nothing about being taken).  That is
the i.i.d. assumption behind :mod:`learning.calibration`.  What stays approximate: a
person may decide a page or a proposal differently than a hold-out item's label says,
and Pending's thinning is matched band by band (its ``NEIGHBOURS`` nearest proposals), not
item by item.

Classification projects only; a detection project's hold-out is calibrated as drawn.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from sqlalchemy import update
from sqlmodel import Session, col, select

from learning.policy import Policy
from service.models import Annotation, Item, ItemStatus, Prediction, Provenance, Task

STATE = "holdout"  # Prediction.state of a hold-out item's prediction
DECIDED = ("confirmed", "corrected", "rejected")
PROPOSAL_STATES = ("proposed", *DECIDED)
NEIGHBOURS = 10  # proposals around a hold-out item's score whose decided share it is taken with
CLASSIFICATION = (Task.multiclass, Task.multilabel)
UNINFORMED = ("random",)  # strategies whose order does not depend on the images


def in_calibration(is_holdout: bool, taken_by: str | None) -> bool:
    """Whether a labelled item calibrates (rather than trains)."""
    return bool(is_holdout) and taken_by is None


def calibration_items(session: Session, project_id: int) -> list[tuple[Item, list[str]]]:
    """Hold-out items still in the calibration set, with the labels a person gave them."""
    rows = session.exec(
        select(Item, Annotation)
        .join(Annotation, (col(Annotation.item_id) == Item.id) & (col(Annotation.version) == Item.version))
        .where(Item.project_id == project_id, Item.status == ItemStatus.labelled, col(Item.is_holdout).is_(True),
               col(Item.holdout_taken_by).is_(None), Annotation.provenance == Provenance.human)
        .order_by(col(Item.id))).all()
    return [(item, list(ann.data.get("labels", []))) for item, ann in rows]


def _take(session: Session, where: Sequence[Any], by: str) -> int:
    stmt = update(Item).where(col(Item.is_holdout).is_(True), col(Item.holdout_taken_by).is_(None), *where
                              ).values(holdout_taken_by=by)
    return int(session.exec(stmt).rowcount or 0)  # type: ignore[call-overload]


def strategy_takes(policy: dict[str, Any] | None) -> bool:
    """Whether the project's strategy stream orders the pool by what the model shows (then
    serving an item takes the hold-out items ranked above it); ``random`` does not."""
    name = (policy or {}).get("strategy", Policy.strategy)
    return name not in UNINFORMED


def take_after_strategy(session: Session, *, project_id: int, served_score: float) -> int:
    """The strategy stream just served an item scored ``served_score``: every hold-out item
    scored above it would have been served first.  This runs inside a labeler's claim: on
    PostgreSQL rows another transaction holds (a concurrent claim marking them too, an
    inference job rescoring them) are skipped, never waited for."""
    where = [col(Item.project_id) == project_id, col(Item.query_score) > served_score]
    if session.get_bind().dialect.name == "postgresql":
        free = select(Item.id).where(col(Item.is_holdout).is_(True), col(Item.holdout_taken_by).is_(None), *where
                                     ).with_for_update(skip_locked=True)
        where = [col(Item.id).in_(free.scalar_subquery())]
    return _take(session, where, "strategy")


def take_after_grid(session: Session, *, holdout_ids: Iterable[int], label: str, every: bool = False) -> int:
    """A grid page was confirmed as ``label``: its hold-out items of that class go with it
    (the others would have been deselected and stayed in the pool). With ``every`` (the
    person gave each look-alike that was not ``label`` its own class and left none out)
    the others would have been labelled on the page too, and all go."""
    ids = [int(i) for i in holdout_ids]
    if not ids:
        return 0
    if every:
        return _take(session, [col(Item.id).in_(ids)], "grid")
    same = [iid for iid, labels in session.exec(
        select(Item.id, Annotation.data)
        .join(Annotation, (col(Annotation.item_id) == Item.id) & (col(Annotation.version) == Item.version))
        .where(col(Item.id).in_(ids))).all() if list(labels.get("labels", [])) == [label]]
    return _take(session, [col(Item.id).in_(same)], "grid") if same else 0


def take_after_pending(session: Session, decided: Iterable[Prediction]) -> int:
    """People decided these proposals in Pending: thin the hold-out as Pending thinned the pool.

    For each (model, class) touched, a hold-out item the same model would have proposed
    rightly in that class (a hold-out prediction carries ``label`` only then) is taken when
    its own fixed random number (:func:`_unit`, from its id: never its label) falls below the
    share decided among the ``NEIGHBOURS`` proposals of that model and class nearest to it in
    score. Worked top-down, the proposals around a high score are all decided and the hold-out
    items there all go; confirmed in any other order (at random, by class, skipping), each
    score band loses the share of hold-out items that it lost of proposals. The share only
    grows as people decide, so a taken item stays taken."""
    touched = {(p.model_version_id, p.label) for p in decided if p.label is not None}
    n = 0
    for mv_id, label in touched:
        rows = session.exec(select(Prediction.score, Prediction.state).where(
            Prediction.model_version_id == mv_id, Prediction.label == label,
            col(Prediction.state).in_(PROPOSAL_STATES))).all()
        if not rows:
            continue
        scores = np.array([r[0] for r in rows], dtype=np.float64)
        done = np.array([r[1] in DECIDED for r in rows], dtype=bool)
        ghosts = session.exec(select(Prediction.item_id, Prediction.score).join(
            Item, col(Item.id) == Prediction.item_id).where(
            Prediction.model_version_id == mv_id, Prediction.state == STATE, Prediction.label == label,
            col(Item.holdout_taken_by).is_(None))).all()
        take = [int(i) for i, score in ghosts if _unit(int(i)) < decided_share(scores, done, float(score))]
        if take:
            n += _take(session, [col(Item.id).in_(take)], "pending")
    return n


def decided_share(scores: np.ndarray, done: np.ndarray, at: float, k: int | None = None) -> float:
    """Share decided among the ``k`` proposals (``scores [P]``, ``done [P]``) nearest to ``at``
    in score (ties by rank), 0.0 when there are none."""
    if scores.size == 0:
        return 0.0
    k = min(k or NEIGHBOURS, scores.size)
    near = np.argsort(np.abs(scores - at), kind="stable")[:k]
    return float(done[near].mean())


def _unit(item_id: int) -> float:
    """A fixed number in [0, 1) for an item, uniform over ids and unrelated to its label."""
    digest = hashlib.blake2b(f"holdout-take:{item_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def take_after_auto(session: Session, item_ids: Iterable[int]) -> int:
    ids = [int(i) for i in item_ids]
    return _take(session, [col(Item.id).in_(ids)], "auto") if ids else 0
