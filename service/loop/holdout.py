"""Moved to :mod:`service.crud.holdout`: the queue (``service.crud``) needs it, so it sits in
the layer below the loop. Transitional re-export: delete this file once ``service.loop``'s
modules and the tests import ``service.crud.holdout`` (issue #24)."""

from service.crud.holdout import (
    CLASSIFICATION,
    DECIDED,
    NEIGHBOURS,
    PROPOSAL_STATES,
    STATE,
    UNINFORMED,
    _unit,
    calibration_items,
    decided_share,
    in_calibration,
    strategy_takes,
    take_after_auto,
    take_after_grid,
    take_after_pending,
    take_after_strategy,
)

__all__ = ["CLASSIFICATION", "DECIDED", "NEIGHBOURS", "PROPOSAL_STATES", "STATE", "UNINFORMED", "_unit",
           "calibration_items", "decided_share", "in_calibration", "strategy_takes", "take_after_auto",
           "take_after_grid", "take_after_pending", "take_after_strategy"]
