"""Every job kind and every periodic check, in one literal table.

A job kind names a function ``fn(ctx: JobContext) -> dict | None`` by reference
(``"module:function"``); it is imported when a job of that kind runs, so enqueueing
(the API, the CLI) never imports torch, and nothing registers itself by being imported.
A kind missing here is an error that names the known kinds (:class:`UnknownJob`).
Learning jobs (``train``, ``infer``, ``hard_examples``) dispatch on the project's task
through :mod:`service.pipelines`; a new task type adds a pipeline, not a job.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import import_module
from typing import Any


class UnknownJob(KeyError):
    """A job kind or periodic check that is not in the registry."""

    def __str__(self) -> str:  # KeyError would quote the whole sentence
        return str(self.args[0])


@dataclass(frozen=True)
class JobSpec:
    """One job kind: where its function is, and how the runner treats it.

    ``one_per_project``: a second queued or running job of the kind is refused
    (:class:`service.jobs.runner.JobConflict`). ``resumable``: a job whose worker died
    is queued again instead of failed."""

    target: str
    one_per_project: bool = False
    resumable: bool = False

    def function(self) -> Callable[..., Any]:
        return resolve(self.target)


JOBS: dict[str, JobSpec] = {
    "train": JobSpec("service.pipelines.jobs:train_job", one_per_project=True),
    "infer": JobSpec("service.pipelines.jobs:infer_job"),
    "hard_examples": JobSpec("service.pipelines.jobs:hard_examples_job", one_per_project=True),
    "cluster": JobSpec("service.loop.clusters:cluster_task", one_per_project=True),
    "cold_start": JobSpec("service.loop.clusters:cold_start_task", one_per_project=True),
    "annotate": JobSpec("service.loop.annotate:annotate_task"),
    "scan_folder": JobSpec("service.jobs.tasks:scan_folder_task"),
    "sleep": JobSpec("service.jobs.tasks:sleep_task"),
    "export": JobSpec("service.loop.export:export_task"),
}

#: kinds of older releases (renamed in rows by migration 0005), still read
OLD_KINDS: dict[str, str] = {"train_detector": "train", "infer_detector": "infer"}

#: the scheduler's periodic checks ``fn(engine, settings)``, run in this order
CHECKS: dict[str, str] = {
    "recover-stale-jobs": "service.jobs.checks:recover",
    "expire-leases": "service.jobs.checks:leases",
    "clusters": "service.loop.clusters:clusters_check",
    "cold-start": "service.loop.clusters:cold_start_check",
    "retraining-policy": "service.pipelines.jobs:retraining_check",
    "hard-examples": "service.pipelines.jobs:hard_examples_check",
    "watched-folders": "service.crud.folders:rescan_due",
}


def canonical_kind(kind: str) -> str:
    """``kind`` as the registry names it (an old name maps to its new one)."""
    return OLD_KINDS.get(kind, kind)


def kind_names(kind: str) -> list[str]:
    """``kind`` and the old names rows may still carry, for queries over job history."""
    return [kind, *sorted(old for old, new in OLD_KINDS.items() if new == kind)]


def job_spec(kind: str) -> JobSpec:
    """The spec of ``kind`` (old names accepted); :class:`UnknownJob` names the known kinds."""
    spec = JOBS.get(canonical_kind(kind))
    if spec is None:
        raise UnknownJob(f"unknown job kind {kind!r}; known: {', '.join(sorted(JOBS))}")
    return spec


def checks(names: Iterable[str] | None = None) -> list[tuple[str, Callable[..., Any]]]:
    """``(name, fn)`` of the periodic checks (all, or ``names``, in registry order)."""
    wanted = list(CHECKS) if names is None else list(names)
    unknown = [n for n in wanted if n not in CHECKS]
    if unknown:
        raise UnknownJob(f"unknown periodic check(s) {unknown}; known: {', '.join(CHECKS)}")
    return [(n, resolve(CHECKS[n])) for n in CHECKS if n in wanted]


def resolve(target: str) -> Callable[..., Any]:
    """Import ``"module:function"``; an error names the target (never skipped silently)."""
    module, _, name = target.partition(":")
    fn = getattr(import_module(module), name, None)
    if not callable(fn):
        raise UnknownJob(f"{target!r} in service.jobs.registry names no function")
    return fn
