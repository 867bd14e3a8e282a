"""The learning jobs as prepare -> compute -> commit, the pipeline registry and the job
registry. Compute steps get plain inputs and return plain outputs: both survive pickling
(another executor may run them elsewhere) and compute opens no database session."""

from __future__ import annotations

import hashlib
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy.orm
from sqlmodel import Session, select

import tests.fakes as fakes
from learning.adapters import create_adapter, load_adapter
from learning.adapters.base import FitConfig
from learning.policy import Policy
from service.jobs.executor import LocalContext
from service.jobs.registry import CHECKS, JOBS, UnknownJob, checks, job_spec, kind_names
from service.jobs.runner import ThreadExecutor, claim_next, enqueue, run_job, worker_name
from service.models import Job, JobState, ModelVersion, Prediction, Task
from service.pipelines import PIPELINES, get_pipeline
from service.pipelines import classification as cls
from service.pipelines import classification_scans as scans
from service.pipelines.base import ModelConfig
from tests.conftest import Ctx
from tests.loop.helpers import colour_png, colour_project, label, run_jobs, start_job

COLOURS = ["red", "green", "blue"]


@pytest.fixture
def fake_classifier(monkeypatch: pytest.MonkeyPatch) -> None:
    """The classification pipeline builds the deterministic colour adapter (tests/fakes.py)."""
    monkeypatch.setattr(cls, "create_adapter", lambda key, **kw: create_adapter(fakes.KEY, **kw))


def _images(tmp_path: Path, n: int, seed: int) -> tuple[list[Path], list[int]]:
    rng = random.Random(seed)
    paths, ys = [], []
    for i in range(n):
        y = i % len(COLOURS)
        p = tmp_path / f"{seed}-{i}.png"
        p.write_bytes(colour_png(COLOURS[y], rng))
        paths.append(p)
        ys.append(y)
    return paths, ys


def _roundtrip(obj: Any) -> Any:
    return pickle.loads(pickle.dumps(obj))


@pytest.mark.usefixtures("fake_classifier")
def test_classification_compute_steps_pickle_and_need_no_database(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    train_paths, y_train = _images(tmp_path, 18, seed=1)
    hold_paths, y_hold = _images(tmp_path, 60, seed=2)
    pool_paths, y_pool = _images(tmp_path, 9, seed=3)
    policy = Policy(algorithm="precise", target_precision=0.8, delta=0.2, calibration="pooled")
    model = ModelConfig(backbone="unused", checkpoint=None, image_size=32, torch_threads=1, data_dir=tmp_path)
    inputs = cls.TrainInputs(version=1, classes=COLOURS, task=Task.multiclass, policy=policy, model=model,
                             fit=FitConfig(algorithm="precise", seed=1), train_paths=train_paths,
                             y_train=np.asarray(y_train), holdout_paths=hold_paths, y_holdout=np.asarray(y_hold),
                             embed_shas=[], embed_paths=[], n_unlabelled=0, path=tmp_path / "v1")
    pipe = get_pipeline(Task.multiclass)
    seen: list[tuple[float, str]] = []
    monkeypatch.setattr(sqlalchemy.orm.Session, "__init__", _refuse)  # compute never opens a session
    out = _roundtrip(pipe.compute_train(_roundtrip(inputs), LocalContext(report=lambda f, m: seen.append((f, m)))))
    assert seen[0] == (0.02, "training v1 on 18 labels (precise)") and seen[-1] == (0.9, "saving model")
    assert out.metrics["n_holdout"] == 60 and out.metrics["holdout_accuracy"] == 1.0
    assert out.metrics["device"] == "cpu"  # each model version records where it was trained
    assert out.thresholds["mode"] == "pooled" and out.thresholds["pooled"]["threshold"] is not None
    assert load_adapter(out.model_path).classes == COLOURS  # saved completely

    thresholds = [out.thresholds["pooled"]["threshold"]] * 3
    infer = cls.InferInputs(model_path=str(out.model_path), algorithm="precise", classes=COLOURS,
                            task=Task.multiclass, thresholds=thresholds, shas=["0" * 64] * len(pool_paths),
                            paths=pool_paths, n_pool=len(pool_paths), strategy="margin", explore=False,
                            query_seed=7, model=model)
    decided = _roundtrip(pipe.compute_infer(_roundtrip(infer), LocalContext()))
    assert decided.scores.shape == (9,) and np.isfinite(decided.scores).all()
    assert decided.labels == [[COLOURS[y]] for y in y_pool]  # clear colours clear the threshold
    assert all(t[0][0] == COLOURS[y] for t, y in zip(decided.tops, y_pool, strict=True))
    again = pipe.compute_infer(infer, LocalContext())
    assert np.array_equal(again.scores, decided.scores)  # seeded: the same inputs, the same outputs

    # the hard-example scan: 60 labels, three of them wrong, judged in the saved model's space
    y = np.asarray(y_hold)
    wrong = [4, 17, 33]
    y[wrong] = (y[wrong] + 1) % 3
    features = scans.FeatureSource(model_path=str(out.model_path), backbone="unused", checkpoint=None,
                                   image_size=32, threads=1, features="pooled", mirror=False)
    scan = scans.ScanInputs(classes=COLOURS, seed=0, data_dir=tmp_path, features=features,
                            shas=[hashlib.sha256(p.read_bytes()).hexdigest() for p in hold_paths],
                            paths=hold_paths, y=y,
                            verdicts=np.zeros((0, 3), dtype=np.int64), skip=np.zeros(60, dtype=bool),
                            tta_model=str(out.model_path), tta_classes=COLOURS, tta_paths=pool_paths)
    found = _roundtrip(pipe.compute_scan(_roundtrip(scan), LocalContext()))
    assert sorted(f.index for f in found.flags) == wrong
    assert found.views.shape == (2, 9, 3) and found.unstable == []  # a colour looks the same mirrored


def _refuse(*args: Any, **kw: Any) -> None:
    raise AssertionError("a compute step opened a database session")


def test_detection_compute_inputs_pickle() -> None:
    from learning.box_calibration import ImageBoxes
    from service.pipelines import detection, detection_scans
    from service.pipelines.base import ModelConfig

    model = ModelConfig(backbone="b", checkpoint=None, image_size=64, torch_threads=1, data_dir=Path("d"))
    inputs = detection.InferInputs(model_path="m", classes=["a"], thresholds=[0.5], possible=0.05,
                                   segmentation=False, paths=[Path("x.png")], model=model)
    assert _roundtrip(inputs) == inputs
    decision = detection.ImageDecision(query_score=0.3, proposal=None, proposal_score=0.0,
                                       fallback={"boxes": []}, fallback_score=0.1)
    assert _roundtrip(decision) == decision
    scan = detection_scans.ScanInputs(classes=["a"], task="detection", seed=3, image_size=64, epochs=2, threads=1,
                                      paths=[Path("x.png")], data=[{"boxes": [{"label": "a", "bbox": [1, 2, 3, 4]}]}])
    assert _roundtrip(scan) == scan
    boxes = ImageBoxes(np.array([[1.0, 2, 3, 4]]), np.array([0]), np.array([0.9]))
    out = _roundtrip(detection_scans.ScanOutputs(found=[[("false detection", 0.4, {"box": [1, 2, 3, 4]})]],
                                                 preds=[boxes], gts=[boxes]))
    assert out.found[0][0][0] == "false detection" and np.array_equal(out.preds[0].boxes, boxes.boxes)


def test_every_task_has_a_pipeline_and_an_unknown_one_is_named() -> None:
    assert set(PIPELINES) == set(Task)
    assert get_pipeline("segmentation") is get_pipeline(Task.detection)
    assert get_pipeline("multiclass").scans_hard_examples and not get_pipeline("multilabel").scans_hard_examples
    with pytest.raises(KeyError, match="known: multiclass"):
        get_pipeline("keypoints")


def test_the_job_registry_resolves_every_entry_and_names_the_known_kinds() -> None:
    for kind, spec in JOBS.items():
        assert callable(spec.function()), kind
    assert [name for name, fn in checks()] == list(CHECKS) and all(callable(fn) for _, fn in checks())
    assert job_spec("train_detector") is JOBS["train"] and job_spec("infer_detector") is JOBS["infer"]
    assert kind_names("train") == ["train", "train_detector"]
    with pytest.raises(UnknownJob, match="unknown job kind 'trian'; known: annotate, cluster"):
        job_spec("trian")
    with pytest.raises(UnknownJob, match="unknown periodic check"):
        checks(["nope"])


def test_old_kind_names_are_stored_under_the_new_and_old_rows_still_run(ctx: Ctx) -> None:
    with Session(ctx.engine) as s:
        assert enqueue(s, kind="infer_detector", project_id=None).kind == "infer"
        with pytest.raises(UnknownJob):
            enqueue(s, kind="no_such_job", project_id=None)
        s.rollback()
        s.add(Job(kind="sleep", project_id=None, payload={"steps": 1, "seconds": 0}))
        s.commit()
        stray = Job(kind="train_detector_v0", project_id=None)  # a kind no release had
        s.add(stray)
        s.commit()
        stray_id = stray.id
    assert ThreadExecutor(ctx.engine, ctx.settings, kinds=["sleep"]).run_pending() == 1
    assert claim_next(ctx.engine, worker_name()) == stray_id
    assert run_job(ctx.engine, ctx.settings, int(stray_id or 0)) == JobState.failed
    with Session(ctx.engine) as s:
        job = s.get(Job, stray_id)
        assert job is not None and "unknown job kind 'train_detector_v0'" in (job.error or "")


@pytest.mark.usefixtures("fake_classifier")
def test_train_then_infer_through_the_registry_with_the_fake_adapter(ctx: Ctx) -> None:
    admin = ctx.user("root", "admin")
    pid, truth = colour_project(ctx, admin, {c: 14 for c in COLOURS}, policy={
        "min_labels_per_class": 3, "retrain_every_labels": 1000, "algorithm": "precise"})
    for iid in sorted(truth)[:24]:
        label(ctx, admin, iid, truth[iid])
    start_job(ctx, "train", pid)
    executor = ThreadExecutor(ctx.engine, ctx.settings)
    assert executor.map(lambda x: x * 2, [1, 2, 3]) == [2, 4, 6]
    assert run_jobs(ctx) == 2
    with Session(ctx.engine) as s:
        jobs = {j.kind: j for j in s.exec(select(Job)).all()}
        assert jobs["train"].state == JobState.succeeded, jobs["train"].error
        assert jobs["infer"].state == JobState.succeeded, jobs["infer"].error
        mv = s.exec(select(ModelVersion)).one()
        # labels given outside the queue are training labels: no hold-out, so nothing is certified
        assert jobs["train"].result == {"model_version_id": mv.id, "version": 1, "n_train": 24, "n_holdout": 0,
                                        "holdout_accuracy": None}
        assert mv.status == "ready" and mv.is_current and mv.thresholds["reason"] == "no hold-out labels yet"
        assert jobs["infer"].payload == {"model_version_id": mv.id}
        assert jobs["infer"].result["pool"] == 42 - 24 and jobs["infer"].result["proposed"] == 0  # no hold-out
        assert len(s.exec(select(Prediction)).all()) == 42 - 24
