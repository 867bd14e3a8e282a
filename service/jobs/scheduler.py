"""APScheduler 3.x: one scheduler per deployment, started in the app's lifespan.

Every ``scheduler_interval_seconds`` it runs the periodic checks listed in
:data:`service.jobs.registry.CHECKS`: crash recovery, lease expiry, watched folders,
clusters, the retraining policy and the hard-example scan. The checks only enqueue
jobs; executors run them.
"""

from __future__ import annotations

import fcntl
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy.engine import Engine

from service.config import Settings
from service.jobs.registry import checks

log = logging.getLogger("labelloop.scheduler")

Check = Callable[[Engine, Settings], None]


def run_checks(engine: Engine, settings: Settings, wake: Callable[[], None] | None = None) -> None:
    """Run every periodic check once (each isolated from the others' errors)."""
    for name, fn in checks():
        try:
            fn(engine, settings)
        except Exception:  # one failing check must not stop the others
            log.exception("periodic check %s failed", name)
    if wake is not None:
        wake()


@dataclass
class RunningScheduler:
    """The started scheduler and the lock that makes it the deployment's only one."""

    sched: BackgroundScheduler
    lock: IO[bytes]

    def stop(self) -> None:
        self.sched.shutdown(wait=False)
        self.lock.close()


def start_scheduler(engine: Engine, settings: Settings, wake: Callable[[], None] | None = None
                    ) -> RunningScheduler | None:
    """Start the scheduler, or return None when another process of this deployment
    (``serve --workers N`` on one data dir) already runs it: the checks must not race
    each other into enqueueing two trainings. The lock is an ``flock`` on a file in the
    data dir, so it goes away with the process that held it, however that ended."""
    lock = _scheduler_lock(settings)
    if lock is None:
        log.info("scheduler runs in another process of this deployment")
        return None
    sched = BackgroundScheduler(daemon=True, job_defaults={"coalesce": True, "max_instances": 1})
    sched.add_job(run_checks, "interval", seconds=settings.scheduler_interval_seconds,
                  args=[engine, settings, wake], id="labelloop-checks")
    sched.start()
    return RunningScheduler(sched, lock)


def _scheduler_lock(settings: Settings) -> IO[bytes] | None:
    settings.ensure_dirs()
    f = open(settings.data_dir / "scheduler.lock", "ab")  # noqa: SIM115  (kept open on purpose)
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        return None
    return f

