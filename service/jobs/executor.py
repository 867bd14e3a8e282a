"""How jobs run: the :class:`Executor` protocol and the compute steps' context.

A learning job is ``prepare(session) -> inputs``, ``compute(inputs, ctx) -> outputs``,
``commit(session, outputs)`` (:mod:`service.pipelines`). ``compute`` sees plain,
picklable inputs and a :class:`ComputeContext` (progress, cancel, ``map`` over shards),
never the engine, so an executor may run it elsewhere. Today's executors run it in
their own process: :class:`service.jobs.runner.ThreadExecutor` (the API's background
threads, and ``labelloop worker``'s), whose ``map`` runs shards one after another.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

S = TypeVar("S")
R = TypeVar("R")


def map_in_process(fn: Callable[[S], R], shards: Sequence[S]) -> list[R]:
    """``[fn(shard) for shard in shards]``, in order, in this process."""
    return [fn(shard) for shard in shards]


class Executor(Protocol):
    """Runs queued jobs. ``submit``: a job was queued (run it soon); ``cancel``: ask a job
    to stop (it stops at its next progress report); ``map``: run ``fn`` over ``shards``
    (pure, picklable work; results in order)."""

    def submit(self, job_id: int | None = None) -> None: ...

    def cancel(self, job_id: int) -> None: ...

    def map(self, fn: Callable[[S], R], shards: Sequence[S]) -> list[R]: ...


class ComputeContext(Protocol):
    """What a compute step may do besides computing: report progress (which raises
    :class:`learning.adapters.base.Cancelled` when the job was asked to stop) and map
    pure work over shards."""

    def progress(self, fraction: float, message: str = "") -> None: ...

    def map(self, fn: Callable[[S], R], shards: Sequence[S]) -> list[R]: ...


@dataclass
class LocalContext:
    """A :class:`ComputeContext` in this process: ``report`` is the job's progress
    (``None``: nobody listens), ``mapper`` its executor's ``map``."""

    report: Callable[[float, str], None] | None = None
    mapper: Callable[..., list] = map_in_process

    def progress(self, fraction: float, message: str = "") -> None:
        if self.report is not None:
            self.report(fraction, message)

    def map(self, fn: Callable[[S], R], shards: Sequence[S]) -> list[R]:
        return list(self.mapper(fn, shards))
