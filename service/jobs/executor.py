"""How jobs run: the :class:`Executor` protocol and the compute steps' context.

A learning job is ``prepare(session) -> inputs``, ``compute(inputs, ctx) -> outputs``,
``commit(session, outputs)`` (:mod:`service.pipelines`). ``compute`` sees plain,
picklable inputs and a :class:`ComputeContext`, never the engine, so an executor may run
it elsewhere. A compute step asks its context for three things:

* ``progress(fraction, message)``: report (and stop here when the job was cancelled);
* ``map(fn, shards, progress=...)``: run pure work over shards (``ctx.shards(items)`` cuts
  them, ``shard_size`` items each), results in order. ``fn`` is a plain function of a shard
  or a :class:`ShardTask`, whose ``load()`` (a model) runs once per worker and is kept;
* ``run(fn, inputs, gpu=...)``: run one pure step ``fn(inputs, ctx)`` (a fit) where the
  executor runs work, on a GPU when it has one and ``gpu`` asks for it.

Executors: :class:`service.jobs.runner.ThreadExecutor` (the API's background threads and
``labelloop worker``'s) does all of it here, shards one after another;
:class:`service.jobs.ray_executor.RayExecutor` sends ``map`` to a pool of Ray actors and
``run`` to a Ray task, while prepare and commit stay in the job's own thread.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

S = TypeVar("S")
R = TypeVar("R")
I = TypeVar("I")  # noqa: E741
#: overall fraction of a map's work done (shards weighted by their length)
MapProgress = Callable[[float], None]


@runtime_checkable
class ShardTask(Protocol):
    """Work over shards that needs something loaded first: ``load()`` once per worker (a
    Ray actor keeps what it returned for every shard it gets; in-process: once per map),
    ``run(loaded, shard, report)`` per shard, ``report(fraction of this shard)`` where
    somebody listens (in-process) and a no-op elsewhere. ``key`` names what ``load`` gives."""

    key: Hashable

    def load(self) -> Any: ...

    def run(self, loaded: Any, shard: Any, report: Callable[[float], None]) -> Any: ...


_REMOTE = False


def mark_remote() -> None:
    """This process is a remote executor's worker (a Ray actor or task): compute steps resolve
    their device again here (Ray gives each GPU worker its own GPU as ``cuda:0``)."""
    global _REMOTE
    _REMOTE = True


def is_remote() -> bool:
    """Whether :func:`mark_remote` was called in this process."""
    return _REMOTE


def _ignore(fraction: float) -> None:
    return None


def run_shard(fn: Any, shard: Any, loaded: dict[Hashable, Any], report: Callable[[float], None] | None = None) -> Any:
    """``fn(shard)``, or a :class:`ShardTask` on ``shard`` with its ``load()`` kept in ``loaded``."""
    if isinstance(fn, ShardTask):
        if fn.key not in loaded:
            loaded.clear()  # one model per worker at a time
            loaded[fn.key] = fn.load()
        return fn.run(loaded[fn.key], shard, report or _ignore)
    return fn(shard)


def weight(shard: Any) -> int:
    """A shard's share of the work: its length (1 when it has none)."""
    try:
        return max(1, len(shard))
    except TypeError:
        return 1


def map_in_process(fn: Any, shards: Sequence[Any], progress: MapProgress | None = None) -> list:
    """``fn`` over ``shards``, in order, one after another, in this process (a
    :class:`ShardTask` loads once); ``progress`` also hears each shard's own reports."""
    shards = list(shards)
    weights = [weight(s) for s in shards]
    total = float(sum(weights)) or 1.0
    loaded: dict[Hashable, Any] = {}
    out = []
    done = 0
    for shard, w in zip(shards, weights, strict=True):
        report = None
        if progress is not None:
            def report(f: float, done: int = done, w: int = w) -> None:
                progress((done + min(max(f, 0.0), 1.0) * w) / total)
        out.append(run_shard(fn, shard, loaded, report))
        done += w
        if progress is not None:
            progress(done / total)
    return out


def split(items: Sequence[I], size: int) -> list[list[I]]:
    """``items`` cut into consecutive lists of at most ``size`` (none for no items)."""
    size = max(1, int(size))
    return [list(items[k:k + size]) for k in range(0, len(items), size)]


class Executor(Protocol):
    """Runs queued jobs. ``submit``: a job was queued (run it soon); ``cancel``: ask a job
    to stop (it stops at its next progress report); ``map``: run ``fn`` over ``shards``
    (pure, picklable work; results in order); ``run``: one pure step ``fn(inputs, ctx)``."""

    def submit(self, job_id: int | None = None) -> None: ...

    def cancel(self, job_id: int) -> None: ...

    def map(self, fn: Any, shards: Sequence[Any], progress: MapProgress | None = None) -> list: ...

    def run(self, fn: Callable[[Any, Any], R], inputs: Any, ctx: LocalContext, *, gpu: bool = False) -> R: ...


class ComputeContext(Protocol):
    """What a compute step may do besides computing: report progress (which raises
    :class:`learning.adapters.base.Cancelled` when the job was asked to stop), map pure
    work over shards, and run one pure step where the executor runs work."""

    shard_size: int

    def progress(self, fraction: float, message: str = "") -> None: ...

    def shards(self, items: Sequence[I]) -> list[list[I]]: ...

    def map(self, fn: Any, shards: Sequence[Any], progress: MapProgress | None = None) -> list: ...

    def run(self, fn: Callable[[Any, Any], R], inputs: Any, *, gpu: bool = False) -> R: ...


@dataclass
class LocalContext:
    """A :class:`ComputeContext` in this process: ``report`` is the job's progress
    (``None``: nobody listens), ``mapper`` its executor's ``map``, ``runner`` its executor's
    ``run`` (``None``: here), ``shard_size`` the items per shard (``LABELLOOP_SHARD_SIZE``)."""

    report: Callable[[float, str], None] | None = None
    mapper: Callable[..., list] = map_in_process
    runner: Callable[..., Any] | None = None
    shard_size: int = 2048
    last: float = 0.0  # the last fraction reported

    def progress(self, fraction: float, message: str = "") -> None:
        self.last = fraction
        if self.report is not None:
            self.report(fraction, message)

    def check(self) -> None:
        """Report nothing new (raises when the job was cancelled): executors call it while they wait."""
        if self.report is not None:
            self.report(self.last, "")

    def shards(self, items: Sequence[I]) -> list[list[I]]:
        return split(items, self.shard_size)

    def map(self, fn: Any, shards: Sequence[Any], progress: MapProgress | None = None) -> list:
        return list(self.mapper(fn, shards, progress))

    def run(self, fn: Callable[[Any, Any], R], inputs: Any, *, gpu: bool = False) -> R:
        if self.runner is None:
            return fn(inputs, self)
        return self.runner(fn, inputs, self, gpu=gpu)
