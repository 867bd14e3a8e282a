"""One learning pipeline per task type, in one registry.

``get_pipeline(task)`` gives the steps the ``train``, ``infer`` and ``hard_examples``
jobs run for a project of that task (:mod:`service.pipelines.jobs`). A new task type
is one new entry in :data:`PIPELINES` (a class satisfying
:class:`service.pipelines.base.Pipeline`), not a new job.
"""

from __future__ import annotations

from service.models import Task
from service.pipelines.base import Pipeline
from service.pipelines.classification import ClassificationPipeline
from service.pipelines.detection import DetectionPipeline

_DETECTION = DetectionPipeline()

PIPELINES: dict[Task, Pipeline] = {
    Task.multiclass: ClassificationPipeline("multiclass", scans_hard_examples=True),
    Task.multilabel: ClassificationPipeline("multilabel", scans_hard_examples=False),
    Task.detection: _DETECTION,
    Task.segmentation: _DETECTION,
}


def get_pipeline(task: Task | str) -> Pipeline:
    """The pipeline of ``task``; a clear error names the known tasks."""
    try:
        return PIPELINES[Task(task)]
    except (KeyError, ValueError):
        raise KeyError(f"no learning pipeline for task {task!r}; known: "
                       f"{', '.join(t.value for t in PIPELINES)}") from None


__all__ = ["PIPELINES", "Pipeline", "get_pipeline"]
