"""Readiness and retraining decisions for one project (pure).

:class:`Policy` is what an ML engineer sets; :class:`ProjectState` is a snapshot
that the job layer builds from the database.  The functions here only read them
and answer in words a project manager can act on:

* :func:`readiness` - can a model be trained at all?  At least two classes each
  with ``min_labels_per_class`` human labels in the training split, and some
  unlabelled items left to help with.
* :func:`should_retrain` - the first model as soon as the project is ready, then
  every ``retrain_every_labels`` new labels or every ``retrain_every_minutes``
  (whichever comes first; time alone never retrains a model on unchanged labels),
  and never while a training job runs.
* :func:`next_training_progress` - how far the next training is, for the dashboard.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from learning.calibration import min_evidence_for
from learning.query import STRATEGIES

ALGORITHMS = ("fast", "precise")
FEATURES = ("stages", "final")
CALIBRATIONS = ("auto", "per_class", "pooled")
# upper bounds: far above any sensible setting, low enough that no job runs for ever or
# allocates without end (epochs, image_size) on a value typed or sent by mistake
MAX_LABELS_SETTING = 1_000_000  # min_labels_per_class, retrain_every_labels, holdout_min
MAX_MINUTES = 525_600  # retrain_every_minutes: a year
MAX_BATCH = 10_000  # items a query round selects
MAX_EPOCHS = 1_000
MAX_IMAGE_SIZE = 2_048  # pixels a side the ``precise`` algorithm trains at
MIN_TILE_SIZE, MAX_TILE_SIZE = 64, 4_096  # detector tiles, pixels a side
MAX_TILE_OVERLAP = 0.9  # share of a tile its neighbour repeats (1 would never advance)
MAX_BACKGROUND_SHARE = 0.9  # share of training tiles drawn away from labelled objects


@dataclass
class Policy:
    """Retraining, calibration and querying settings of one project.

    ``holdout_share``: share of human labels routed to the random hold-out stream
    used for calibration; ``holdout_min``: the first this many hold-out labels are drawn
    sooner (at 1.5 times the share, then none until the share catches up:
    :func:`holdout_draw_share`), because a certificate on a couple of hundred images
    proves little (0: plain ``holdout_share`` throughout); ``audit_share``: share
    of auto-accepted pre-labels sent back to people; ``batch_size``: items a query round selects;
    ``retrain_every_labels``/``retrain_every_minutes``: ``None`` switches a trigger off;
    ``calibration``: ``auto`` (default: a pooled statement as soon as the hold-out allows,
    per-class statements as each class's evidence grows, a guard that stops a class shown
    below the target: :mod:`learning.calibration_auto`), ``per_class`` thresholds (each class
    proves its own precision) or one ``pooled`` threshold (precision of all pre-labels
    together, no guard); ``epochs``,
    ``image_size`` (``None``: the backbone's default) tune the ``precise`` algorithm.
    ``semi_supervised``: learn from the unlabelled images too (:attr:`uses_unlabelled`):
    ``fast`` weights the labels to the class mix found among them and adds its confident
    guesses on them as pseudo-labels (seconds); ``precise`` trains FixMatch-style on
    pseudo-labels (each epoch predicts a sample of them). ``None`` (the default): on for
    ``fast``, off for ``precise``. The calibrating hold-out's images count as unlabelled
    like the pool's, so the model treats the two alike and the threshold's guarantee stands.
    ``features``: what the head (and grid clustering) sees of an image: ``stages`` (the
    backbone's top features and three feature stages below them) or ``final`` (the top
    features only, as before this setting existed).
    ``mirror``: an item shows the same classes when flipped left to right, so ``fast`` (and
    grid clustering) see the mean of an image's features and its mirror image's, and
    ``precise`` trains on flipped copies. Switch it off for classes told apart by the way
    they face (left and right arrows, some road signs).
    ``grid_purity``: once a model exists, grid pages take the items most likely to be
    right until the expected share of a page in the page's class would fall below this;
    the rest get single labels. Likelihoods come from the calibrating hold-out (how often
    the model was right at each score and class, :mod:`learning.grid_purity`), or from
    the model's score while the hold-out is too small; ``None`` switches the cut off.
    ``grid_min_confidence``: once a model exists, items whose most probable class is
    below this probability stay off pages (single labels take them: the model cannot say
    which page they belong on); 0 puts every item on a page. The default 0.8 keeps pages
    about 90% pure at a small cost in actions (``labelloop simulate-review actions``,
    Fashion-MNIST, seed 0, ``features`` ``final``: purity 0.898 and 0.340 actions per item,
    against 0.863 and 0.323 at 0.5 and 0.934 and 0.383 at 0.9; with ``stages``, 0.919 and
    0.309 at 0.8).
    ``tile_size``, ``tile_overlap``, ``background_share`` (detection and segmentation): an
    image whose longer side is above ``tile_size`` pixels is trained on tiles of that size at
    native resolution around its objects plus ``background_share`` of random background
    tiles, and predicted by overlapping tiles (neighbours repeat ``tile_overlap`` of a tile)
    merged into image-level boxes, plus one shrunk whole-image pass
    (:mod:`learning.tiling`); smaller images are shrunk to ``image_size`` as before.
    """

    min_labels_per_class: int = 5
    retrain_every_labels: int | None = 100
    retrain_every_minutes: float | None = None
    algorithm: Literal["fast", "precise"] = "fast"
    target_precision: float = 0.95
    delta: float = 0.05
    holdout_share: float = 0.2
    holdout_min: int = 300
    strategy: str = "margin"
    auto_accept: bool = False
    audit_share: float = 0.02
    batch_size: int = 32
    calibration: Literal["auto", "per_class", "pooled"] = "auto"
    epochs: int = 12
    semi_supervised: bool | None = None
    image_size: int | None = None
    features: Literal["stages", "final"] = "stages"
    mirror: bool = True
    grid_purity: float | None = None
    grid_min_confidence: float = 0.8
    tile_size: int = 640
    tile_overlap: float = 0.2
    background_share: float = 0.25

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ValueError("invalid policy: " + "; ".join(problems))

    def problems(self) -> list[str]:
        """Every invalid setting, as sentences (empty when the policy is valid)."""
        out: list[str] = []

        def check(ok: bool, name: str, rule: str) -> None:
            if not ok:
                out.append(f"{name} must be {rule}, got {getattr(self, name)!r}")

        n_labels, minutes = self.retrain_every_labels, self.retrain_every_minutes
        check(
            _is_int(self.min_labels_per_class) and 1 <= self.min_labels_per_class <= MAX_LABELS_SETTING,
            "min_labels_per_class",
            f"an integer >= 1 and at most {MAX_LABELS_SETTING:,}",
        )
        check(
            n_labels is None or (_is_int(n_labels) and 1 <= n_labels <= MAX_LABELS_SETTING),
            "retrain_every_labels",
            f"an integer >= 1 or None (at most {MAX_LABELS_SETTING:,})",
        )
        check(
            minutes is None or (_is_number(minutes) and 0 < minutes <= MAX_MINUTES),
            "retrain_every_minutes",
            f"a number > 0 or None (at most {MAX_MINUTES:,}: a year)",
        )
        check(self.algorithm in ALGORITHMS, "algorithm", "one of " + ", ".join(ALGORITHMS))
        for name in ("target_precision", "delta", "holdout_share"):
            value = getattr(self, name)
            check(_is_number(value) and 0.0 < value < 1.0, name, "strictly between 0 and 1")
        check(_is_int(self.holdout_min) and 0 <= self.holdout_min <= MAX_LABELS_SETTING, "holdout_min",
              f"an integer >= 0 and at most {MAX_LABELS_SETTING:,}")
        check(
            _is_number(self.audit_share) and 0.0 <= self.audit_share <= 1.0,
            "audit_share",
            "between 0 and 1",
        )
        check(
            self.strategy in STRATEGIES,
            "strategy",
            "a known query strategy (" + ", ".join(sorted(STRATEGIES)) + ")",
        )
        check(isinstance(self.auto_accept, bool), "auto_accept", "true or false")
        check(_is_int(self.batch_size) and 1 <= self.batch_size <= MAX_BATCH, "batch_size",
              f"an integer >= 1 and at most {MAX_BATCH:,}")
        check(self.calibration in CALIBRATIONS, "calibration", "one of " + ", ".join(CALIBRATIONS))
        check(_is_int(self.epochs) and 1 <= self.epochs <= MAX_EPOCHS, "epochs",
              f"an integer >= 1 and at most {MAX_EPOCHS:,}")
        check(self.semi_supervised is None or isinstance(self.semi_supervised, bool), "semi_supervised",
              "true, false or null")
        check(self.features in FEATURES, "features", "one of " + ", ".join(FEATURES))
        check(isinstance(self.mirror, bool), "mirror", "true or false")
        check(
            _is_number(self.grid_min_confidence) and 0.0 <= self.grid_min_confidence < 1.0,
            "grid_min_confidence",
            "between 0 (inclusive) and 1",
        )
        purity = self.grid_purity
        check(
            purity is None or (_is_number(purity) and 0.0 < purity < 1.0),
            "grid_purity",
            "strictly between 0 and 1 or None",
        )
        size = self.image_size
        check(
            size is None or (_is_int(size) and 16 <= size <= MAX_IMAGE_SIZE),
            "image_size",
            f"an integer >= 16 or None (at most {MAX_IMAGE_SIZE:,})",
        )
        check(_is_int(self.tile_size) and MIN_TILE_SIZE <= self.tile_size <= MAX_TILE_SIZE, "tile_size",
              f"an integer >= {MIN_TILE_SIZE} and at most {MAX_TILE_SIZE:,}")
        check(_is_number(self.tile_overlap) and 0.0 <= self.tile_overlap <= MAX_TILE_OVERLAP, "tile_overlap",
              f"between 0 and {MAX_TILE_OVERLAP}")
        check(_is_number(self.background_share) and 0.0 <= self.background_share <= MAX_BACKGROUND_SHARE,
              "background_share", f"between 0 and {MAX_BACKGROUND_SHARE}")
        return out

    @property
    def uses_unlabelled(self) -> bool:
        """Whether training learns from unlabelled images (``semi_supervised``, or its default)."""
        return self.algorithm == "fast" if self.semi_supervised is None else self.semi_supervised

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Policy:
        """Build from a (partial) dict; missing keys take defaults, unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            names, known_names = ", ".join(unknown), ", ".join(sorted(known))
            raise ValueError(f"unknown policy setting(s): {names}; known: {known_names}")
        return cls(**data)


EARLY_HOLDOUT_RAISE = 1.5  # the first holdout_min hold-out labels come at this multiple of the share
EARLY_HOLDOUT_CAP = 0.5  # ... but at no higher a share than this


def front_load_labels(share: float, holdout_min: int) -> int:
    """Labelled items from which on the hold-out stream draws at plain ``share`` again:
    where ``share`` of the labels make ``holdout_min`` (1,500 at 0.2 and 300)."""
    return math.ceil(holdout_min / share) if holdout_min > 0 else 0


def holdout_draw_share(share: float, holdout_min: int, calibrating: int, labelled: int) -> float:
    """Probability that the queue's next draw goes to the hold-out stream.

    ``share``: the policy's ``holdout_share``; ``calibrating``: hold-out labels that
    calibrate now; ``labelled``: labelled items in the project. The first
    ``holdout_min`` hold-out labels are drawn sooner, not more of them: while fewer
    calibrate, the share is raised by half (capped at 50%, never lowered); once they do,
    hold-out draws pause until ``share`` of the labels would have made them
    (:func:`front_load_labels`), and from there on the share is plain ``share``.

    Why: with active learning the model is good long before 20% of the labels make a
    hold-out that can prove it. A certificate at 0.95 / 0.05 needs 93 hold-out items with
    at most one mistake, 124 with two; on about 200 (1,000 labels at 20%) one unlucky
    pair of mistakes at the top certifies nothing. At the defaults the hold-out holds
    300 labels at about 1,000 labels instead of 1,500, and from 1,500 on as many as it
    would have anyway.
    """
    if holdout_min <= 0 or labelled >= front_load_labels(share, holdout_min):
        return share
    if calibrating < holdout_min:
        return max(share, min(EARLY_HOLDOUT_CAP, EARLY_HOLDOUT_RAISE * share))
    return 0.0


def short_classes(train_counts: dict[str, int], classes: list[str], min_labels: int) -> list[str]:
    """Classes with fewer than ``min_labels`` labels to train on (hold-out labels do not count),
    in ``classes`` order: the query explores while there are any."""
    return [c for c in classes if train_counts.get(c, 0) < min_labels]


@dataclass
class ProjectState:
    """What the policy needs to know about a project right now.

    ``train_counts``/``holdout_counts``: human labels per class name in each split
    (every class of the project should appear, with 0 if it has none);
    ``minutes_since_training``: ``None`` when no training has finished yet.
    """

    train_counts: dict[str, int]
    holdout_counts: dict[str, int] = field(default_factory=dict)
    unlabelled: int = 0
    labels_since_training: int = 0
    minutes_since_training: float | None = None
    training_running: bool = False
    has_model: bool = False


@dataclass(frozen=True)
class Readiness:
    """``ready``: a model can be trained; ``reasons``: why not (empty when ready);
    ``notes``: things worth showing even when ready (e.g. classes still short)."""

    ready: bool
    reasons: list[str]
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Decision:
    train: bool
    reason: str


def readiness(state: ProjectState, policy: Policy) -> Readiness:
    """Whether the project has enough human labels, and items left, to train a model."""
    need = policy.min_labels_per_class
    enough = [c for c, n in state.train_counts.items() if n >= need]
    short = [
        f"class {c!r} has {n} of {need} human labels for training"
        for c, n in state.train_counts.items()
        if n < need
    ]
    reasons: list[str] = []
    if len(state.train_counts) < 2:
        reasons.append(f"needs at least two classes; the project has {len(state.train_counts)}")
    elif len(enough) < 2:
        have = f" (only {enough[0]!r})" if enough else ""
        reasons.append(f"needs at least two classes with {need} human labels each{have}")
        reasons.extend(short)
    if state.unlabelled <= 0:
        reasons.append("no unlabelled items left")
    if reasons:
        return Readiness(False, reasons)
    notes = [s + "; it will not be pre-labelled yet" for s in short]
    return Readiness(True, [], notes + evidence_notes(state, policy))


def evidence_notes(state: ProjectState, policy: Policy) -> list[str]:
    """What the hold-out still lacks before pre-labels can be proven, in the policy's own
    terms: per class under ``per_class``, all classes together under ``pooled`` and ``auto``."""
    held = sum(state.holdout_counts.values())
    if policy.calibration == "per_class":
        proof = min_evidence_for(policy.target_precision, policy.delta)
        return [f"class {c!r} has {state.holdout_counts.get(c, 0)} hold-out labels; proving "
                f"{policy.target_precision:.0%} precision for its pre-labels needs at least {proof}"
                for c in state.train_counts if state.holdout_counts.get(c, 0) < proof]
    delta = policy.delta * (0.8 if policy.calibration == "auto" else 1.0)  # auto's pooled share
    proof = min_evidence_for(policy.target_precision, delta)
    if held >= proof:
        return []
    return [f"the hold-out has {held} labels; proving {policy.target_precision:.0%} precision for pre-labels "
            f"needs at least {proof} (all classes together)"]


def should_retrain(state: ProjectState, policy: Policy) -> Decision:
    """Whether to start a training job now, and why (or why not)."""
    if state.training_running:
        return Decision(False, "a training job is already running")
    ready = readiness(state, policy)
    if not ready.ready:
        return Decision(False, "not ready: " + "; ".join(ready.reasons))
    if not state.has_model:
        return Decision(True, "first model: the project has just become ready")
    every_n, every_t = policy.retrain_every_labels, policy.retrain_every_minutes
    if every_n is None and every_t is None:
        return Decision(False, "automatic retraining is off (no label or time trigger set)")
    new = state.labels_since_training
    if every_n is not None and new >= every_n:
        return Decision(True, f"{new} new labels since the last training (every {every_n})")
    minutes = state.minutes_since_training
    if every_t is not None and minutes is not None and minutes >= every_t:
        if new > 0:
            return Decision(
                True, f"{minutes:.0f} minutes and {new} new labels since the last training"
            )
        return Decision(False, f"{minutes:.0f} minutes passed but there are no new labels")
    return Decision(False, "waiting: " + _waiting(state, policy))


def next_training_progress(state: ProjectState, policy: Policy) -> dict[str, Any]:
    """Progress toward the next training, for the dashboard.

    Keys: ``labels``/``labels_needed``/``labels_share`` and ``minutes``/
    ``minutes_needed``/``minutes_share`` (``None`` when that trigger is off or, for
    minutes, before the first training), ``training_running``, ``ready``, ``reason``.
    Shares are clipped to ``[0, 1]``.
    """
    every_n, every_t = policy.retrain_every_labels, policy.retrain_every_minutes
    minutes, labels = state.minutes_since_training, state.labels_since_training
    decision = should_retrain(state, policy)
    return {
        "labels": labels,
        "labels_needed": every_n,
        "labels_share": None if every_n is None else min(1.0, labels / every_n),
        "minutes": minutes,
        "minutes_needed": every_t,
        "minutes_share": None
        if every_t is None or minutes is None
        else min(1.0, max(0.0, minutes / every_t)),
        "training_running": state.training_running,
        "ready": readiness(state, policy).ready,
        "will_train": decision.train,
        "reason": decision.reason,
    }


def _waiting(state: ProjectState, policy: Policy) -> str:
    parts = []
    if policy.retrain_every_labels is not None:
        parts.append(f"{state.labels_since_training} of {policy.retrain_every_labels} new labels")
    if policy.retrain_every_minutes is not None and state.minutes_since_training is not None:
        parts.append(
            f"{state.minutes_since_training:.0f} of {policy.retrain_every_minutes:g} minutes"
        )
    return "; ".join(parts) if parts else "no trigger can fire yet"


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: object) -> bool:
    """A real number: not a bool, not NaN or infinite (JSON bodies may carry ``NaN``/``Infinity``)."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        return False
    return isinstance(x, int) or math.isfinite(x)
