"""The retraining counter restarts at the labels a training took, not at its publication:
labels that arrive while a model trains count towards the next retraining."""

from __future__ import annotations

import pytest
from sqlmodel import Session

import service.pipelines.classification as classification
from service.loop.state import project_state
from service.models import Project
from tests.conftest import Ctx
from tests.loop.helpers import colour_project, label, run_jobs, start_job


def test_labels_given_during_a_training_count_for_the_next(ctx: Ctx, monkeypatch: pytest.MonkeyPatch) -> None:
    admin = ctx.user("root", "admin")
    pid, truth = colour_project(ctx, admin, {"red": 12, "green": 12, "blue": 12},
                                policy={"min_labels_per_class": 3, "retrain_every_labels": 1000})
    ids = sorted(truth)
    for iid in ids[:18]:
        label(ctx, admin, iid, truth[iid])
    late = ids[18:21]
    real_classifier = classification.classifier

    def label_then_classifier(*args, **kwargs):  # type: ignore[no-untyped-def]
        for iid in late:  # people keep labelling while the model trains (the job holds no transaction)
            label(ctx, admin, iid, truth[iid])
        return real_classifier(*args, **kwargs)

    monkeypatch.setattr(classification, "classifier", label_then_classifier)
    start_job(ctx, "train", pid)
    run_jobs(ctx)
    with Session(ctx.engine) as s:
        project = s.get(Project, pid)
        assert project is not None
        assert project.labels_at_last_training == 18
        assert project_state(s, project).labels_since_training == len(late)
