"""The FastAPI application: ``create_app(settings)``.

The lifespan upgrades the schema, recovers jobs left by a dead process, and
starts the job executor and the scheduler (each can be switched off by a
setting, e.g. when ``labelloop worker`` runs jobs in another process).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

import service.jobs.tasks  # noqa: F401  (registers job functions and periodic checks)
from service.api.routes import auth, health, items, jobs, projects, queue, transfer
from service.config import Settings, get_settings
from service.db import engine_from_settings, upgrade_schema
from service.jobs.runner import ThreadExecutor, recover_stale
from service.jobs.scheduler import start_scheduler
from service.security import RateLimiter

log = logging.getLogger("labelloop")
WEB_DIR = Path(__file__).resolve().parent.parent / "web"

DESCRIPTION = """
labelloop: human-in-the-loop active learning for images.

Authenticate with `Authorization: Bearer <token>` (from `labelloop users create`
or `POST /api/v1/auth/tokens`) or with the session cookie set by
`POST /api/v1/auth/login` (cookie-signed writes must send `X-CSRF-Token`).
Errors are JSON `{"detail": ...}` with the status codes listed per route.
"""

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}
PAGE_CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
            "script-src 'self'; connect-src 'self'; frame-ancestors 'none'")


def api_router() -> APIRouter:
    r = APIRouter(prefix="/api/v1")
    for mod in (health, auth, projects, items, queue, jobs, transfer):
        r.include_router(mod.router)
    for extra in _optional_routers():
        r.include_router(extra)
    return r


def _optional_routers() -> list[APIRouter]:
    """Routers of later parts (learning loop, review) when present."""
    out = []
    import importlib

    for name in ("learning", "grids", "review", "stats", "models", "annotate"):
        try:
            mod = importlib.import_module(f"service.api.routes.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"service.api.routes.{name}":
                raise
            continue
        out.append(mod.router)
    return out


def create_app(settings: Settings | None = None, *, background: bool = True) -> FastAPI:
    """Build the app. ``background=False`` starts neither executor nor scheduler (tests)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = engine_from_settings(settings)
        settings.ensure_dirs()
        upgrade_schema(engine)
        app.state.engine = engine
        app.state.settings = settings
        app.state.login_limiter = RateLimiter(settings.login_attempts_per_minute)
        app.state.executor = None
        sched = None
        if background and settings.run_jobs_in_process:
            recover_stale(engine, timeout_seconds=settings.job_heartbeat_timeout_seconds)
            app.state.executor = ThreadExecutor(engine, settings, threads=settings.job_threads)
            app.state.executor.start()
        if background and settings.scheduler_enabled:
            wake = app.state.executor.wake if app.state.executor else None
            sched = start_scheduler(engine, settings, wake)
        try:
            yield
        finally:
            if sched is not None:
                sched.shutdown(wait=False)
            if app.state.executor is not None:
                app.state.executor.stop()
            engine.dispose()

    app = FastAPI(title="labelloop", version="0.1.0", description=DESCRIPTION, lifespan=lifespan)
    app.include_router(api_router())

    @app.middleware("http")
    async def limits_and_headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]
                                 ) -> Response:
        length = request.headers.get("content-length")
        if length is not None:
            try:
                too_big = int(length) > settings.max_request_bytes
            except ValueError:
                return JSONResponse({"detail": "bad Content-Length"}, status_code=400)
            if too_big:
                return JSONResponse({"detail": f"request over {settings.max_request_bytes} bytes"},
                                    status_code=413)
        response = await call_next(request)
        for k, v in SECURITY_HEADERS.items():
            response.headers.setdefault(k, v)
        if not request.url.path.startswith("/api/") and not request.url.path.startswith("/docs"):
            response.headers.setdefault("Content-Security-Policy", PAGE_CSP)
        return response

    if WEB_DIR.is_dir():
        app.mount("/web", StaticFiles(directory=WEB_DIR, html=True), name="web")

        @app.get("/", include_in_schema=False)
        def root() -> RedirectResponse:
            return RedirectResponse("/web/")

    return app
