"""Wrong boxes on training images: a ``hard_examples`` scan of a detection project cross-fits
detectors and flags a deleted box (``false detection``) and a spurious one (``missed detection``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sqlmodel import Session, select

from learning.adapters.base import FitConfig, FitReport, LabelledImages
from learning.crossfit import cross_fit, fold_ids
from service.jobs.runner import ThreadExecutor
from service.models import Item, Job, ReviewFlag
from tests.conftest import Ctx
from tests.detection.conftest import CLASSES, iou, shapes_project


def _free_box(boxes: list[list[float]], size: int = 64, side: int = 18) -> list[float] | None:
    for y in range(0, size - side, 4):
        for x in range(0, size - side, 4):
            cand = [float(x), float(y), float(side), float(side)]
            if all(iou(cand, b) == 0 for b in boxes):
                return cand
    return None


@pytest.mark.usefixtures("seeded_streams")  # which items are held out decides this test
def test_scan_flags_deleted_and_spurious_boxes_on_training_images(ctx: Ctx) -> None:
    # the detectors' new layers start from torch's random state, which torch seeds differently in
    # each process: seeded here, so the outcome of this small, weak (12-epoch) cross-fit repeats
    torch.manual_seed(0)
    admin = ctx.user("root", "admin")
    policy = {"min_labels_per_class": 3, "holdout_share": 0.2, "retrain_every_labels": 1000, "epochs": 12,
              "image_size": 64}
    pid, truth = shapes_project(ctx, admin, policy, n=64, seed=3)
    deleted: dict[int, dict] = {}  # item -> the box left out of its label
    added: dict[int, dict] = {}  # item -> the spurious box put in
    while (lease := ctx.client.post(f"/api/v1/projects/{pid}/queue/next", headers=admin)).status_code == 200:
        item_id, boxes = lease.json()["item"]["id"], list(truth[lease.json()["item"]["id"]]["boxes"])
        if lease.json()["reason"] != "holdout":
            free = _free_box([b["bbox"] for b in boxes])
            if len(deleted) < 3 and len(boxes) >= 2:
                deleted[item_id] = boxes.pop()
            elif len(added) < 3 and free is not None:
                added[item_id] = {"label": CLASSES[0], "bbox": free}
                boxes.append(added[item_id])
        r = ctx.client.post(f"/api/v1/items/{item_id}/annotations", headers=admin,
                            json={"boxes": boxes, "lease_id": lease.json()["lease_id"]})
        assert r.status_code == 201, r.text
    assert len(deleted) == 3 and len(added) == 3

    r = ctx.client.post(f"/api/v1/projects/{pid}/review/scan", headers=admin)
    assert r.status_code == 202, r.text
    ThreadExecutor(ctx.engine, ctx.settings).run_pending()
    with Session(ctx.engine) as s:
        job = s.exec(select(Job).where(Job.kind == "hard_examples")).one()
        assert job.state == "succeeded", job.error
        n_train = len(s.exec(select(Item).where(Item.is_holdout == False)).all())  # noqa: E712
        assert job.result["checked_images"] == n_train and job.result["box_flags"] >= 1, job.result
        flags = s.exec(select(ReviewFlag)).all()
        assert {f.detail["source"] for f in flags} == {"cross-fitted"}
        found_deleted = [i for i, box in deleted.items() if any(
            f.item_id == i and f.kind == "false detection" and any(
                b["label"] == box["label"] and iou(b["box"], box["bbox"]) >= 0.5 for b in f.detail["boxes"])
            for f in flags)]
        found_added = [i for i, box in added.items() if any(
            f.item_id == i and f.kind == "missed detection" and any(b["box"] == box["bbox"] for b in f.detail["boxes"])
            for f in flags)]
        assert len(found_deleted) >= 2 and len(found_added) >= 2, (found_deleted, found_added, [
            (f.item_id, f.kind, f.detail["boxes"]) for f in flags])
        flagged = {f.item_id for f in flags}
        # judged at their own cuts (missed below 0.3, false at 0.8 and up), not a pre-label threshold:
        # little but the planted errors is flagged (this weak 12-epoch model scores an unlabelled
        # clutter box 0.82-0.94 in some runs): at most 4 of the 45 or so correct training canvases
        assert len(flagged - set(deleted) - set(added)) <= 4, [(f.item_id, f.detail["reason"]) for f in flags]
        # a flag alone keeps its image in training: no reviewer has fixed a flag of its kind yet
        assert all(s.get(Item, i).status == "labelled" for i in flagged)  # type: ignore[union-attr]
        assert not any(f.detail["withheld"] or f.detail["likely_right"] for f in flags)
        first = next(f for f in flags if f.item_id == found_added[0])
    listed = ctx.client.get(f"/api/v1/projects/{pid}/review", headers=admin).json()
    assert {f["item_id"] for f in listed["data"]} == flagged
    for f in (f for f in flags if f.item_id == first.item_id):
        r = ctx.client.post(f"/api/v1/review/{f.id}/resolve", json={"action": "dismiss"}, headers=admin)
        assert r.status_code == 200, r.text
    with Session(ctx.engine) as s:
        assert s.get(Item, first.item_id).status == "labelled"  # type: ignore[union-attr]


class _Recorder:
    """Adapter double: probs column 0 is 1 for a hold-out image the fold's fit trained on."""

    def __init__(self, fits: list[set]) -> None:
        self.fits = fits

    def fit(self, train: LabelledImages, holdout: LabelledImages, *, config: FitConfig, progress: object) -> FitReport:
        seen = set(train.images)
        self.fits.append(seen)
        probs = np.array([[float(im in seen), 1.0 - float(im in seen)] for im in holdout.images])
        return FitReport(algorithm="fast", epochs_run=1, history=[], stopped_early=False, best_epoch=0, seconds=0.0,
                         n_train=len(train), n_val=0, holdout_probs=probs)


def test_cross_fit_predicts_every_image_with_a_model_that_never_saw_it() -> None:
    fits: list[set] = []
    images = [f"img{i}" for i in range(11)]
    pred = cross_fit(lambda: _Recorder(fits), LabelledImages(images, np.arange(11)), config=FitConfig(), folds=3,
                     seed=1)
    assert len(fits) == 3 and set().union(*fits) == set(images)
    assert pred.probs.shape == (11, 2) and (pred.probs[:, 0] == 0).all() and (pred.probs[:, 1] == 1).all()
    folds = fold_ids(11, 3, seed=1)
    assert sorted(np.bincount(folds).tolist()) == [3, 4, 4]
    assert (folds == fold_ids(11, 3, seed=1)).all() and not (folds == fold_ids(11, 3, seed=2)).all()
    for bad in ((11, 1), (2, 3)):
        try:
            fold_ids(*bad, seed=0)
        except ValueError:
            continue
        raise AssertionError(f"fold_ids{bad} should fail")


def test_unstable_box_flags_compare_a_proposal_with_its_mirrored_view() -> None:
    from learning.box_calibration import ImageBoxes
    from service.loop.detect import flip_boxes, unstable_box_flags

    assert flip_boxes([{"label": "a", "bbox": [10.0, 5.0, 20.0, 8.0], "score": 0.9}], 100)[0]["bbox"] == [
        70.0, 5.0, 20.0, 8.0]
    proposed = ImageBoxes(np.array([[0, 0, 10, 10], [50, 50, 10, 10]]), np.array([0, 1]), np.array([0.9, 0.8]))
    # the mirror sees the first box again, not the second; and sees a third object confidently
    view = ImageBoxes(np.array([[1, 0, 10, 10], [20, 20, 10, 10], [52, 50, 10, 10]]), np.array([0, 0, 0]),
                      np.array([0.95, 0.9, 0.3]))
    flags = unstable_box_flags(proposed, view, possible=0.2, cut=0.5)
    kinds = sorted((k, d["box"]) for k, _, d in flags)
    assert kinds == [("false detection", [50.0, 50.0, 10.0, 10.0]), ("missed detection", [20.0, 20.0, 10.0, 10.0])]
    score = {k: sc for k, sc, _ in flags}
    assert score["false detection"] == 1.0 and score["missed detection"] == 0.9  # the class-1 box has no class-1 twin
    assert unstable_box_flags(proposed, ImageBoxes(proposed.boxes, proposed.labels, proposed.scores),
                              possible=0.2, cut=0.5) == []


def _detection_labels(ctx: Ctx, n: int, policy: dict) -> tuple[int, list[int], list[dict]]:
    """A detection project whose ``n`` canvases carry their true boxes as people's labels."""
    from service.crud.annotations import write_version
    from service.models import Provenance

    admin = ctx.user("root", "admin")
    pid, truth = shapes_project(ctx, admin, policy, n=n, seed=5)
    ids = sorted(truth)
    with Session(ctx.engine) as s:
        for i in ids:
            item = s.get(Item, i)
            assert item is not None
            write_version(s, item=item, data=truth[i], provenance=Provenance.human, origin="queue", author=None)
        s.commit()
    return pid, ids, [truth[i] for i in ids]


def _flag(ctx: Ctx, pid: int, ids: list[int], data: list[dict], scores: list[list[float]]) -> int:
    """``flag_hard_examples`` on predictions that repeat each labelled box with the given score."""
    from service.loop.detect import flag_hard_examples, image_boxes
    from service.models import ModelVersion

    with Session(ctx.engine) as s:
        mv = s.exec(select(ModelVersion).where(ModelVersion.project_id == pid)).first()
        if mv is None:  # certified pre-label thresholds near 0.9, as on the digit canvases
            mv = ModelVersion(project_id=pid, version=1, status="ready", is_current=True, classes=CLASSES,
                              thresholds={"kind": "boxes", "in_force": {"square": 0.9, "circle": 0.92}})
            s.add(mv)
            s.flush()
        gts = [image_boxes([{"label": b["label"], "bbox": b["bbox"]} for b in d["boxes"]], CLASSES, scored=False)
               for d in data]
        preds = [image_boxes([{"label": b["label"], "bbox": b["bbox"], "score": sc}
                              for b, sc in zip(d["boxes"], row, strict=True)], CLASSES, scored=True)
                 for d, row in zip(data, scores, strict=True)]
        versions = [s.get(Item, i).version for i in ids]  # type: ignore[union-attr]
        n = flag_hard_examples(s, project_id=pid, mv=mv, item_ids=ids, versions=versions, preds=preds, gts=gts,
                               classes=CLASSES, source="cross-fitted")
        s.commit()
        return n


def test_correct_boxes_below_the_prelabel_threshold_are_not_flagged(ctx: Ctx) -> None:
    """The digit-canvas finding: every correct box scored under a certified 0.9 threshold was a
    ``missed detection`` and its canvas left training. Middling scores are no flag now."""
    pid, ids, data = _detection_labels(ctx, 12, {"min_labels_per_class": 3})
    scores = [[0.45 + 0.04 * ((k + j) % 10) for j in range(len(d["boxes"]))] for k, d in enumerate(data)]
    assert _flag(ctx, pid, ids, data, scores) == 0
    with Session(ctx.engine) as s:
        assert all(s.get(Item, i).status == "labelled" for i in ids)  # type: ignore[union-attr]


def test_a_detection_flag_withholds_its_image_only_once_reviewers_trust_the_kind(ctx: Ctx) -> None:
    pid, ids, data = _detection_labels(ctx, 16, {"min_labels_per_class": 1})
    scores = [[0.8] * len(d["boxes"]) for d in data]
    scores[0][0] = 0.1  # the model barely sees the first labelled box of image 0
    assert _flag(ctx, pid, ids, data, scores) == 1
    with Session(ctx.engine) as s:
        flag = s.exec(select(ReviewFlag)).one()
        assert flag.kind == "missed detection" and flag.item_id == ids[0]
        assert "barely sees a labelled" in flag.detail["reason"] and not flag.detail["withheld"]
        assert s.get(Item, ids[0]).status == "labelled"  # type: ignore[union-attr]
        # reviewers then dismiss three missed-detection flags: the kind's cuts tighten (0.3 -> 0.075)
        for i in ids[1:4]:
            s.add(ReviewFlag(project_id=pid, item_id=i, kind="missed detection", state="dismissed",
                             detail={"annotation_version": 0}))
        s.delete(flag)
        s.commit()
    assert _flag(ctx, pid, ids, data, scores) == 0
    with Session(ctx.engine) as s:
        for f in s.exec(select(ReviewFlag)).all():  # ... or fix more of them than they dismiss
            f.state = "fixed"
            s.add(f)
        s.commit()
    assert _flag(ctx, pid, ids, data, scores) == 1
    with Session(ctx.engine) as s:
        flag = s.exec(select(ReviewFlag).where(ReviewFlag.state == "open")).one()
        assert flag.detail["likely_right"] and flag.detail["withheld"]
        assert s.get(Item, ids[0]).status == "review"  # type: ignore[union-attr]
