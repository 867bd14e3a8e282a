"""The FastAPI application: ``create_app(settings)``.

The lifespan upgrades the schema, recovers jobs left by a dead process, and
starts the job executor and the scheduler (each can be switched off by a
setting, e.g. when ``labelloop worker`` runs jobs in another process).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DataError, IntegrityError
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.routes import (
    annotate,
    auth,
    grids,
    health,
    items,
    jobs,
    learning,
    models,
    projects,
    queue,
    review,
    stats,
    transfer,
    users,
)
from service.config import Settings, get_settings
from service.db import NulInText, engine_from_settings, upgrade_schema
from service.errors import LabelloopError
from service.ingest import StorageError
from service.jobs.recovery import recover_stale
from service.jobs.runner import ThreadExecutor
from service.jobs.scheduler import start_scheduler
from service.security import RateLimiter

log = logging.getLogger("labelloop")
WEB_DIR = Path(__file__).resolve().parent / "web"  # package data: shipped in the wheel

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
    # the labelers' hot path first: FastAPI tries routes in order (about 20 µs each)
    for mod in (queue, items, health, auth, projects, jobs, transfer, learning, grids, review, stats, models,
                annotate, users):
        r.include_router(mod.router)
    return r


ERROR_SCHEMA = {"type": "object", "properties": {"detail": {"type": "string"}}, "required": ["detail"]}
COMMON_ERRORS = {
    "400": "malformed request: the body could not be parsed, or a bad Content-Length",
    "413": "request larger than LABELLOOP_MAX_REQUEST_BYTES",
}


_GATES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()


def _gate(limit: int) -> asyncio.Semaphore:
    """The running loop's admission gate for API requests (see ``max_concurrent_requests``).

    A sync route takes a thread for each dependency, for the endpoint and for the
    response check, and holds its database connection (SQLite: the write lock) from
    the first query to the commit. Without a gate, a burst of requests takes every
    thread while waiting for connections or the lock that requests parked between two
    thread hops hold: everything stalls until the pool or busy timeout (30 s, then 500s).
    """
    loop = asyncio.get_running_loop()
    gate = _GATES.get(loop)
    if gate is None:
        gate = _GATES[loop] = asyncio.Semaphore(max(1, limit))
    return gate


class SafeJSONResponse(JSONResponse):
    """JSON that always encodes: text holding a lone surrogate (``"\\ud800"``, which UTF-8
    cannot carry) is written with JSON's ``\\u`` escapes instead of failing the reply."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def _json_safe(value: Any) -> Any:
    """``value`` with non-finite floats written as strings (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _document_errors(app: FastAPI) -> None:
    """Document what every route can answer besides its own codes: 400 and 413 from the
    framework and the size guard, and 422 either as FastAPI's list of field errors or
    as one sentence (``{"detail": "..."}``) from the route's own checks."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        comps = schema.setdefault("components", {}).setdefault("schemas", {})
        comps["Error"] = ERROR_SCHEMA
        hve = comps.get("HTTPValidationError")
        if hve is not None:
            hve["properties"]["detail"] = {"anyOf": [hve["properties"]["detail"], {"type": "string"}],
                                           "title": "Detail"}
        ref = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
        for ops in schema.get("paths", {}).values():
            for op in ops.values():
                responses = op.setdefault("responses", {})
                for code, desc in COMMON_ERRORS.items():
                    responses.setdefault(code, {"description": desc, "content": ref})
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


class LimitsAndHeaders:
    """Request size cap, the API admission gate, security headers and ``Server-Timing``.

    A plain ASGI middleware (not ``@app.middleware("http")``, whose request/response
    wrapping costs every call a task and a stream copy): it looks at the request line
    and headers, and adds headers to ``http.response.start``. ``Server-Timing: app;dur=``
    is the time from admission to the response head, so a client (or the browser's
    network panel) can tell time in labelloop from time in front of it."""

    def __init__(self, app: ASGIApp, *, settings: Settings) -> None:
        self.app = app
        self.settings = settings  # read per request: tests (and operators) may change it live

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        cap = self._cap(scope)
        length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if length is not None:
            try:
                too_big = int(length) > cap
            except ValueError:
                await JSONResponse({"detail": "bad Content-Length"}, status_code=400)(scope, receive, send)
                return
            if too_big:
                await _too_large(cap)(scope, receive, send)
                return
        receive = _counted(receive, cap)
        api = path.startswith("/api/")
        extra = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
        if not api and not path.startswith("/docs"):
            extra.append((b"content-security-policy", PAGE_CSP.encode()))
        t0 = time.perf_counter()

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                have = {k.lower() for k, _ in message.get("headers", [])}
                headers = list(message.get("headers", [])) + [(k, v) for k, v in extra if k not in have]
                headers.append((b"server-timing", f"app;dur={1000 * (time.perf_counter() - t0):.1f}".encode()))
                message = {**message, "headers": headers}
            await send(message)

        started = False

        async def send_tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send_with_headers(message)

        try:
            if api and not path.endswith("/events"):
                async with _gate(self.settings.max_concurrent_requests):
                    t0 = time.perf_counter()
                    await self.app(scope, receive, send_tracked)
            else:
                await self.app(scope, receive, send_tracked)
        except BodyTooLarge:
            # the body grew past the cap while a route (or the form parser) read it
            if not started:
                await _too_large(cap)(scope, receive, send_with_headers)

    def _cap(self, scope: Scope) -> int:
        """The byte cap of this request's body: uploads (multipart) get ``max_request_bytes``,
        every other body (JSON, url-encoded forms) ``max_json_request_bytes``, and sign-in
        and token routes, which anyone may call, ``AUTH_BODY_BYTES``."""
        if scope["path"].startswith("/api/v1/auth/"):
            return AUTH_BODY_BYTES
        ctype = next((v for k, v in scope["headers"] if k == b"content-type"), b"")
        if ctype.lower().startswith(b"multipart/"):
            return int(self.settings.max_request_bytes)
        return int(min(self.settings.max_request_bytes, self.settings.max_json_request_bytes))


AUTH_BODY_BYTES = 64 * 1024  # a name, a password and a token name fit many times over


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` once a body's streamed bytes pass the cap. An HTTPException,
    so FastAPI's body parsing passes it on (other errors there become 400) and Starlette
    answers 413; the middleware answers it too when it reaches that far."""

    def __init__(self, cap: int) -> None:
        super().__init__(413, f"request over {cap} bytes")


def _too_large(cap: int) -> JSONResponse:
    return JSONResponse({"detail": f"request over {cap} bytes"}, status_code=413)


def _counted(receive: Receive, cap: int) -> Receive:
    """``receive`` that counts body bytes as they arrive (``Content-Length`` or chunked) and
    raises :class:`BodyTooLarge` at the first chunk past ``cap``: a lying or absent
    Content-Length cannot make the server read more than the cap."""
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > cap:
                raise BodyTooLarge(cap)
        return message

    return wrapped


def build_executor(engine: Engine, settings: Settings, *, threads: int = 1) -> ThreadExecutor:
    """The executor ``LABELLOOP_EXECUTOR`` names, not started (the API's and ``labelloop worker``'s):
    ``ray``, a :class:`service.jobs.ray_executor.RayExecutor` (Ray imported only then); otherwise
    a :class:`ThreadExecutor`."""
    if settings.executor == "ray":
        from service.jobs.ray_executor import RayExecutor

        return RayExecutor(engine, settings, threads=threads)
    return ThreadExecutor(engine, settings, threads=threads)


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
        if background and settings.run_jobs_in_process and settings.executor != "worker":
            recover_stale(engine, timeout_seconds=settings.job_heartbeat_timeout_seconds)
            app.state.executor = build_executor(engine, settings, threads=settings.job_threads)
            app.state.executor.start()
        if background and settings.scheduler_enabled:
            wake = app.state.executor.wake if app.state.executor else None
            sched = start_scheduler(engine, settings, wake)
        try:
            yield
        finally:
            if sched is not None:
                sched.stop()
            if app.state.executor is not None:
                app.state.executor.stop()
            engine.dispose()

    app = FastAPI(title="labelloop", version="0.1.0", description=DESCRIPTION, lifespan=lifespan)
    app.include_router(api_router())
    _document_errors(app)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own answer, made JSON-safe: an echoed NaN/Infinity input would
        # otherwise make the 422 itself fail to serialise (a 500)
        return SafeJSONResponse({"detail": _json_safe(jsonable_encoder(exc.errors()))}, status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        # FastAPI's own handler, with a reply that always encodes (details may quote input)
        if exc.status_code in (204, 304):
            return Response(status_code=exc.status_code, headers=exc.headers)
        return SafeJSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(UnicodeEncodeError)
    async def unencodable(request: Request, exc: UnicodeEncodeError) -> JSONResponse:
        # text with a lone surrogate reached a driver or an encoder: the input's fault
        return JSONResponse({"detail": "the request holds text that is not valid Unicode "
                                       "(an unpaired surrogate)"}, status_code=422)

    @app.exception_handler(OverflowError)
    @app.exception_handler(DataError)
    async def out_of_range(request: Request, exc: Exception) -> JSONResponse:
        # a number the database cannot hold (an id over 2**63 on SQLite, 2**31 on
        # PostgreSQL) or a string it refuses (NUL on PostgreSQL, in a look-up before any
        # write: writes are refused alike on every database by service.db.NulInText)
        if "NUL" in str(getattr(exc, "orig", None) or exc):
            return JSONResponse({"detail": "text cannot hold NUL characters"}, status_code=422)
        return JSONResponse({"detail": "a value in the request is out of range for the database"},
                            status_code=422)

    @app.exception_handler(LabelloopError)
    async def refused(request: Request, exc: LabelloopError) -> Response:
        # the domain layers' refusals (service.errors), each with its status
        return SafeJSONResponse({"detail": exc.detail}, status_code=exc.status)

    @app.exception_handler(NulInText)
    async def nul_in_text(request: Request, exc: NulInText) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(StorageError)
    async def storage_refused(request: Request, exc: StorageError) -> JSONResponse:
        # the disk is full, read-only or refuses us: say so, nothing was half written
        log.error("storage error on %s %s: %s", request.method, request.url.path, exc)
        return JSONResponse({"detail": f"storage failed: {exc}", "reason": exc.reason}, status_code=507)

    @app.exception_handler(IntegrityError)
    async def integrity(request: Request, exc: IntegrityError) -> JSONResponse:
        # a race the route's own checks could not see (e.g. two creates of one name)
        log.warning("integrity error on %s %s: %s", request.method, request.url.path, exc.orig)
        return JSONResponse({"detail": "conflicts with the current state; reload and retry"}, status_code=409)

    app.add_middleware(LimitsAndHeaders, settings=settings)

    if WEB_DIR.is_dir():
        app.mount("/web", StaticFiles(directory=WEB_DIR, html=True), name="web")

        @app.get("/", include_in_schema=False)
        def root() -> RedirectResponse:
            return RedirectResponse("/web/")

    return app
