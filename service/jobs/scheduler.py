"""APScheduler 3.x: one scheduler per deployment, started in the app's lifespan.

Every ``scheduler_interval_seconds`` it runs the periodic checks registered
with :func:`periodic`: crash recovery, lease expiry, watched folders and the
retraining policy. The checks only enqueue jobs; executors run them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy.engine import Engine

from service.config import Settings

log = logging.getLogger("labelloop.scheduler")

Check = Callable[[Engine, Settings], None]
PERIODIC: dict[str, Check] = {}


def periodic(name: str) -> Callable[[Check], Check]:
    def deco(fn: Check) -> Check:
        PERIODIC[name] = fn
        return fn

    return deco


def run_checks(engine: Engine, settings: Settings, wake: Callable[[], None] | None = None) -> None:
    """Run every periodic check once (each isolated from the others' errors)."""
    for name, fn in list(PERIODIC.items()):
        try:
            fn(engine, settings)
        except Exception:  # one failing check must not stop the others
            log.exception("periodic check %s failed", name)
    if wake is not None:
        wake()


def start_scheduler(engine: Engine, settings: Settings, wake: Callable[[], None] | None = None
                    ) -> BackgroundScheduler:
    sched = BackgroundScheduler(daemon=True, job_defaults={"coalesce": True, "max_instances": 1})
    sched.add_job(run_checks, "interval", seconds=settings.scheduler_interval_seconds,
                  args=[engine, settings, wake], id="labelloop-checks")
    sched.start()
    return sched
