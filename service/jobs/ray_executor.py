"""Jobs whose heavy steps run on a Ray cluster (``LABELLOOP_EXECUTOR=ray``).

The job itself runs as under :class:`service.jobs.runner.ThreadExecutor`: a thread of the API
(or of ``labelloop worker``) claims the row, runs ``prepare`` and ``commit`` in its own
database transactions and heartbeats. Only the compute step's work leaves the process:

* ``ctx.map(fn, shards)`` runs the shards on a pool of Ray actors (:class:`ShardWorker`, one
  CPU each, or one GPU each where the cluster has GPUs and ``LABELLOOP_DEVICE`` allows; one
  per CPU or GPU of the cluster unless ``actors`` says): each actor loads a
  :class:`service.jobs.executor.ShardTask`'s model once and keeps it for every shard it gets;
  the pool lives across maps and jobs (:data:`POOL`) until a fit needs its CPUs, a cancel
  or a failure kills it, or the executor stops; results come back as arrays, in order;
  progress sums the shards;
* ``ctx.run(fn, inputs, gpu=True)`` (a fit) runs as one Ray task that asks for a GPU when
  the device setting is ``cuda`` or (``auto``) the cluster has one; its progress reports
  are relayed through a small actor.

Workers never open the database, so a job never half-writes. While it waits the driver
reports progress every :attr:`RayExecutor.poll_seconds`, which is where a cancel
(``POST /jobs/{id}/cancel`` sets the row's flag) is seen: the actors are killed, the task
cancelled, and the job ends ``cancelled`` with what earlier steps committed. A shard that
raises fails the job with the shard and the reason; a shard whose worker process or node
dies runs again on another actor (at most ``max_retries`` times per shard), and a fit whose
process dies is retried by Ray (``max_retries``).
Workers read images, models and the embedding cache at the same paths as the driver:
on several machines the data dir is storage every node mounts at that path.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import traceback
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import ray
from ray.exceptions import RayActorError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from sqlalchemy.engine import Engine

from service.config import Settings
from service.jobs.executor import LocalContext, MapProgress, map_in_process, mark_remote, run_shard, split, weight
from service.jobs.runner import ThreadExecutor

log = logging.getLogger("labelloop.jobs.ray")
R = TypeVar("R")


class ShardFailed(RuntimeError):
    """A shard raised on a Ray worker: says which shard and why."""


@ray.remote(max_restarts=0)
class ShardWorker:
    """One actor of a map's pool: runs shards, keeping what a ShardTask loaded (its model).
    Ray does not restart it: a map replaces a dead actor and sends its shard elsewhere."""

    def __init__(self) -> None:
        mark_remote()
        self.loaded: dict[Hashable, Any] = {}

    def run(self, fn: Any, index: int, shard: Any) -> tuple[int, bool, Any]:
        """``(index, True, result)``, or ``(index, False, reason)`` when ``fn`` raised (an
        application error is not retried; a dead process is, by Ray)."""
        try:
            return index, True, run_shard(fn, shard, self.loaded)
        except Exception as exc:  # noqa: BLE001 (reported to the driver with the shard's number)
            tb = traceback.format_exc(limit=-3)
            return index, False, f"{type(exc).__name__}: {exc}\n{tb}"

    def pid(self) -> int:
        return os.getpid()

    def node(self) -> str:
        """The Ray node this actor runs on."""
        return str(ray.get_runtime_context().get_node_id())


@ray.remote(num_cpus=0)
class ProgressRelay:
    """Where a remote step's progress reports wait for the driver to read them."""

    def __init__(self) -> None:
        self.latest: tuple[float, str] | None = None

    def report(self, fraction: float, message: str) -> None:
        self.latest = (fraction, message)

    def read(self) -> tuple[float, str] | None:
        latest, self.latest = self.latest, None
        return latest


class RemoteContext:
    """The :class:`service.jobs.executor.ComputeContext` of a step running in a Ray task:
    progress goes to the driver through a :class:`ProgressRelay`; ``map`` and ``run`` stay
    in the task's process (it already holds its CPU or GPU)."""

    def __init__(self, relay: Any, shard_size: int) -> None:
        self.relay = relay
        self.shard_size = shard_size

    def progress(self, fraction: float, message: str = "") -> None:
        self.relay.report.remote(float(fraction), message)

    def shards(self, items: Sequence[Any]) -> list[list[Any]]:
        return split(items, self.shard_size)

    def map(self, fn: Any, shards: Sequence[Any], progress: MapProgress | None = None) -> list:
        return map_in_process(fn, shards, progress)

    def run(self, fn: Callable[[Any, Any], R], inputs: Any, *, gpu: bool = False) -> R:
        return fn(inputs, self)


def _run_step(fn: Callable[[Any, Any], Any], inputs: Any, relay: Any, shard_size: int) -> Any:
    mark_remote()
    return fn(inputs, RemoteContext(relay, shard_size))


_run_step_remote = ray.remote(_run_step)


def connect(address: str) -> bool:
    """Join Ray at ``address`` (``local``: start a private one on this machine); whether this
    call started the connection (``False``: this process was already connected)."""
    if ray.is_initialized():
        return False
    # ray.init installs its own SIGTERM handler: keep the process's (uvicorn's, the worker's graceful stop)
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    try:
        if address == "local":  # a new instance even when RAY_ADDRESS or `ray start` name another
            ray.init(address="local", include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    except Exception as exc:  # one sentence for the operator, the cause chained
        raise RuntimeError(f"LABELLOOP_EXECUTOR=ray could not join Ray at LABELLOOP_RAY_ADDRESS={address}: "
                           f"{type(exc).__name__}: {exc}") from exc
    finally:
        if main and previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return True


def _sees(path: str) -> bool:
    return os.path.isdir(path) and os.access(path, os.R_OK | os.W_OK | os.X_OK)


_sees_remote = ray.remote(num_cpus=0)(_sees)


def check_data_dir(data_dir: Path, timeout: float = 120.0) -> None:
    """Raise one sentence naming the Ray nodes (alive now) that cannot read and write
    ``data_dir`` at that path: workers read images and models and write the embedding cache there."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    refs = [_sees_remote.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
                                 ).remote(str(data_dir)) for n in nodes]
    seen = ray.get(refs, timeout=timeout)
    blind = [f"{n.get('NodeManagerAddress', '?')} (node {str(n['NodeID'])[:8]})"
             for n, ok in zip(nodes, seen, strict=True) if not ok]
    if blind:
        raise RuntimeError(f"LABELLOOP_EXECUTOR=ray: the data dir {data_dir} cannot be read and written on Ray "
                           f"node(s) {', '.join(blind)}; mount it at that same path on every node")


class SharedPool:
    """This process's actor pool, shared by its Ray executors (the API and a worker run one)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()  # one map at a time uses the pool
        self.count = threading.Lock()
        self.fits = 0  # fits waiting or running: maps give the pool back after theirs
        self.actors: list[Any] | None = None
        self.gpu = False
        self.session: str | None = None


POOL = SharedPool()


def release_pool() -> None:
    """Kill this process's actor pool, if any (its CPUs / GPUs go back to Ray)."""
    actors, POOL.actors = POOL.actors, None
    if ray.is_initialized() and POOL.session == ray.get_runtime_context().get_job_id():
        for actor in actors or []:
            ray.kill(actor)


class RayExecutor(ThreadExecutor):
    """A :class:`ThreadExecutor` whose ``map`` and ``run`` go to Ray (see the module docstring).

    ``actors``: the pool's size (default: one per GPU when shards use GPUs, else one per
    CPU of the cluster); ``poll_seconds``: how often a waiting driver reports progress and
    looks for a cancel; ``max_retries``: how often Ray retries a step whose process died."""

    def __init__(self, engine: Engine, settings: Settings, *, threads: int = 1, kinds: list[str] | None = None,
                 actors: int | None = None, poll_seconds: float = 0.5, max_retries: int = 2) -> None:
        super().__init__(engine, settings, threads=threads, kinds=kinds)
        self.actors = actors
        self.poll_seconds = poll_seconds
        self.max_retries = max_retries
        self._owns_ray = False

    # -- connection -------------------------------------------------------------------------

    def connect(self) -> None:
        """Join Ray (once); also done by :meth:`start` and on first use."""
        if not ray.is_initialized():
            self._owns_ray = connect(self.settings.ray_address)

    def start(self) -> None:
        """Join Ray, check that every node sees the data dir, then run jobs."""
        self.connect()
        check_data_dir(self.settings.data_dir)
        log.info("ray executor: %s", ray.cluster_resources())
        super().start()

    def stop(self, timeout: float = 10.0) -> None:
        super().stop(timeout)
        if ray.is_initialized():
            self.release()
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
            self._owns_ray = False

    def uses_gpu(self) -> bool:
        """Whether steps ask Ray for GPUs: ``LABELLOOP_DEVICE`` cuda, or auto on a cluster with one."""
        device = self.settings.device
        if device == "cpu":
            return False
        if device.startswith("cuda"):
            return True
        self.connect()
        return ray.cluster_resources().get("GPU", 0) >= 1

    def pool_size(self) -> int:
        """``actors``, else one actor per GPU (when steps use GPUs) or per CPU of the cluster."""
        if self.actors is not None:
            return max(1, self.actors)
        self.connect()
        res = ray.cluster_resources()
        return max(1, int(res.get("GPU", 0)) if self.uses_gpu() else int(res.get("CPU", 1)))

    # -- the executor's work --------------------------------------------------------------------

    def workers(self, gpu: bool) -> list[Any]:
        """The actor pool (made on first use, kept across maps and jobs, so each actor keeps
        its loaded model): one CPU each, or one GPU each with ``gpu``. Call with the lock held."""
        size, session = self.pool_size(), ray.get_runtime_context().get_job_id()
        if POOL.session != session:  # Ray was restarted: those actors are gone
            POOL.actors = None
        if POOL.actors is None or (POOL.gpu, len(POOL.actors)) != (gpu, size):
            self.release()
            options = {"num_gpus": 1, "num_cpus": 1} if gpu else {"num_cpus": 1}
            POOL.actors = [ShardWorker.options(**options).remote() for _ in range(size)]  # type: ignore[attr-defined]
            POOL.gpu, POOL.session = gpu, session
        return POOL.actors

    def release(self) -> None:
        """Kill the pool's actors (stopping whatever they run) and give their CPUs / GPUs back."""
        release_pool()

    def map(self, fn: Any, shards: Sequence[Any], progress: MapProgress | None = None) -> list:
        """``fn`` over ``shards`` on the actor pool, results in order; one map at a time per
        executor. Each idle actor gets the next shard. An actor whose process or node died
        gives its shard back to the queue (at most ``max_retries`` times per shard) and is
        replaced where the cluster has room, else the pool shrinks; the driver keeps exactly
        one result per shard. A cancel or a failure kills the pool (the shards still running
        stop with it; the next map makes a new one); so does a fit waiting for the pool's CPUs."""
        shards = list(shards)
        if not shards:
            return []
        self.connect()
        weights = [weight(s) for s in shards]
        total = float(sum(weights))
        gpu = self.uses_gpu()
        results: list[Any] = [None] * len(shards)
        done = 0.0
        with POOL.lock:
            idle = list(self.workers(gpu))
            fn_ref = ray.put(fn)  # sent once, not with every shard
            queue, lost = deque(range(len(shards))), [0] * len(shards)
            running: dict[Any, tuple[Any, int]] = {}
            try:
                while queue or running:
                    while queue and idle:
                        actor, index = idle.pop(), queue.popleft()
                        running[actor.run.remote(fn_ref, index, shards[index])] = (actor, index)
                    ready, _ = ray.wait(list(running), num_returns=1, timeout=self.poll_seconds)
                    if not ready:
                        if progress is not None:
                            progress(done / total)  # nothing new: looks for a cancel
                        continue
                    actor, index = running.pop(ready[0])
                    try:
                        _, ok, value = ray.get(ready[0])
                    except RayActorError as exc:  # its process or node died: the shard goes again
                        lost[index] += 1
                        if lost[index] > self.max_retries:
                            raise ShardFailed(f"shard {index + 1} of {len(shards)} lost its Ray worker "
                                              f"{lost[index]} times: {type(exc).__name__}") from exc
                        log.warning("ray: shard %d of %d lost its worker (%s); running it again", index + 1,
                                    len(shards), type(exc).__name__)
                        queue.appendleft(index)
                        idle.extend(self._replace(actor, gpu, busy=len(running)))
                        continue
                    if not ok:
                        raise ShardFailed(f"shard {index + 1} of {len(shards)} failed on Ray: {value}")
                    results[index] = value
                    done += weights[index]
                    idle.append(actor)
                    if progress is not None:
                        progress(done / total)
            except BaseException:
                self.release()
                raise
            if POOL.fits:
                self.release()
        return results

    def _replace(self, dead: Any, gpu: bool, *, busy: int) -> list[Any]:
        """Drop ``dead`` from the pool; a new actor in its place when the cluster has room for
        one now, or when no other actor is left (``busy``: actors still running shards)."""
        ray.kill(dead, no_restart=True)
        actors = [a for a in POOL.actors or [] if a != dead]
        free = ray.available_resources()
        room = free.get("CPU", 0) >= 1 and (not gpu or free.get("GPU", 0) >= 1)
        new = []
        if room or (busy == 0 and not actors):
            options = {"num_gpus": 1, "num_cpus": 1} if gpu else {"num_cpus": 1}
            new = [ShardWorker.options(**options).remote()]  # type: ignore[attr-defined]
        POOL.actors = actors + new
        return new

    def run(self, fn: Callable[[Any, Any], R], inputs: Any, ctx: LocalContext, *, gpu: bool = False) -> R:
        """``fn(inputs, ctx)`` as one Ray task (with a GPU when ``gpu`` and :meth:`uses_gpu`);
        its progress relayed to the job, a cancel cancels the task."""
        self.connect()
        with POOL.count:
            POOL.fits += 1
        try:
            num_gpus = 1 if gpu and self.uses_gpu() else 0
            with POOL.lock:
                free = ray.available_resources()
                if free.get("CPU", 0) < 1 or free.get("GPU", 0) < num_gpus:
                    self.release()  # the pool's actors hold the CPUs (GPUs) the fit needs: give them back
            return self._run(fn, inputs, ctx, num_gpus=num_gpus)
        finally:
            with POOL.count:
                POOL.fits -= 1

    def _run(self, fn: Callable[[Any, Any], R], inputs: Any, ctx: LocalContext, *, num_gpus: int) -> R:
        relay = ProgressRelay.remote()  # type: ignore[attr-defined]
        ref = _run_step_remote.options(num_cpus=1, num_gpus=num_gpus, max_retries=self.max_retries,
                                       retry_exceptions=False).remote(fn, inputs, relay, ctx.shard_size)
        try:
            while True:
                ready, _ = ray.wait([ref], timeout=self.poll_seconds)
                latest = ray.get(relay.read.remote())
                if latest is not None:
                    ctx.progress(*latest)
                elif not ready:
                    ctx.check()
                if ready:
                    return ray.get(ref)
        except BaseException:
            ray.cancel(ref, force=True)
            raise
        finally:
            ray.kill(relay)
