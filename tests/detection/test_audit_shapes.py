"""Audit verdicts for detection pre-labels compare the objects, not just the class list."""

from __future__ import annotations

from service.crud.audit import same_labels
from service.models import Prediction


def _pred(boxes: list[dict], polygons: list[dict] | None = None) -> Prediction:
    return Prediction(item_id=1, project_id=1, model_version_id=1, label=None, score=0.9, state="auto",
                      data={"labels": [], "boxes": boxes, "polygons": polygons or []})


CAT = {"label": "cat", "bbox": [10, 10, 40, 40], "score": 0.97}
DOG = {"label": "dog", "bbox": [60, 60, 30, 30], "score": 0.95}


def test_same_objects_agree_even_with_small_shifts() -> None:
    human = {"labels": [], "boxes": [{"label": "dog", "bbox": [61, 59, 30, 31]},
                                     {"label": "cat", "bbox": [12, 10, 40, 40]}]}
    assert same_labels(_pred([CAT, DOG]), human)


def test_missing_extra_wrong_class_or_misplaced_objects_disagree() -> None:
    assert not same_labels(_pred([CAT, DOG]), {"boxes": [{"label": "cat", "bbox": [10, 10, 40, 40]}]})  # missed
    assert not same_labels(_pred([CAT]), {"boxes": [{"label": "cat", "bbox": [10, 10, 40, 40]},
                                                    {"label": "dog", "bbox": [60, 60, 30, 30]}]})  # a person added one
    assert not same_labels(_pred([CAT]), {"boxes": [{"label": "dog", "bbox": [10, 10, 40, 40]}]})  # wrong class
    assert not same_labels(_pred([CAT]), {"boxes": [{"label": "cat", "bbox": [35, 35, 40, 40]}]})  # IoU < 0.5


def test_polygons_count_by_their_box_and_class_lists_still_matter() -> None:
    poly = {"label": "cat", "points": [10, 10, 50, 10, 50, 50, 10, 50], "score": 0.9}
    assert same_labels(_pred([], [poly]), {"polygons": [{"label": "cat", "points": [11, 10, 50, 10, 50, 50, 11, 50]}]})
    assert not same_labels(_pred([], [poly]), {"polygons": []})
    classification = Prediction(item_id=1, project_id=1, model_version_id=1, label="cat", score=0.99, state="auto",
                                data={"labels": ["cat"]})
    assert same_labels(classification, {"labels": ["cat"]})
    assert not same_labels(classification, {"labels": ["dog"]})
