"""The application factory: one runtime per process, middleware, error handlers, routers.

``create_app(charter_path_or_runtime, settings=None)`` builds the FastAPI app. For ``uvicorn --workers N``
(which imports the app in each worker) use :func:`app_from_env`, which reads ``CHARTER_FILE`` and the
``CHARTER_SERVER_*`` settings from the environment.
"""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from charter.server._auth import Authenticator, capabilities
from charter.server._errors import install_error_handlers
from charter.server._jobs import JobRunner
from charter.telemetry import recording_channel, trace_store_for

if TYPE_CHECKING:
    from charter.runtime import Runtime
    from charter.spec import Principal

HERE = Path(__file__).parent


@dataclass
class ServerSettings:
    """Server settings (environment: ``CHARTER_SERVER_<NAME>``)."""

    max_body_bytes: int = 1_000_000  #: larger request bodies are refused with 413
    rate_limit_per_minute: int = 600  #: per principal (shared by all workers on PostgreSQL); 0 disables
    cors_origins: list[str] = field(default_factory=list)  #: origins allowed to call the API from a browser
    #: mark the console session cookie ``Secure`` (browsers then send it over HTTPS only — and to
    #: http://localhost). Set ``CHARTER_SERVER_SECURE_COOKIES=0`` only for plain http on a trusted host.
    secure_cookies: bool = True
    session_hours: float = 8.0  #: console sessions expire after this long (logging out ends them at once)
    auth_failures_per_client: int = 20  #: failed authentications per client address per minute before 429
    auth_failures_per_token: int = 10  #: failed authentications per token id per minute before 429
    auth_failure_delay: float = 1.0  #: seconds a client over those limits waits for its 429 (tarpit); 0: none
    background_telemetry: bool = (
        True  #: group-committed trace writes and periodic retention (start_server_telemetry)
    )
    review_tick_seconds: float = 60.0  #: run charter.review.tick (expiry, escalation) this often; 0 disables
    drift_seconds: float = 3600.0  #: run charter.gate's drift pass this often; 0 disables
    warm_up: bool = True  #: at start-up, load the index, embedder, masker and gateway, then gc.freeze()

    @classmethod
    def from_env(cls) -> ServerSettings:
        s = cls()
        env = os.environ
        if "CHARTER_SERVER_MAX_BODY_BYTES" in env:
            s.max_body_bytes = int(env["CHARTER_SERVER_MAX_BODY_BYTES"])
        if "CHARTER_SERVER_RATE_LIMIT_PER_MINUTE" in env:
            s.rate_limit_per_minute = int(env["CHARTER_SERVER_RATE_LIMIT_PER_MINUTE"])
        if env.get("CHARTER_SERVER_CORS_ORIGINS"):
            s.cors_origins = [o.strip() for o in env["CHARTER_SERVER_CORS_ORIGINS"].split(",") if o.strip()]
        if "CHARTER_SERVER_SECURE_COOKIES" in env:
            s.secure_cookies = env["CHARTER_SERVER_SECURE_COOKIES"] in ("1", "true", "yes")
        if "CHARTER_SERVER_SESSION_HOURS" in env:
            s.session_hours = float(env["CHARTER_SERVER_SESSION_HOURS"])
        if "CHARTER_SERVER_AUTH_FAILURES_PER_CLIENT" in env:
            s.auth_failures_per_client = int(env["CHARTER_SERVER_AUTH_FAILURES_PER_CLIENT"])
        if "CHARTER_SERVER_AUTH_FAILURES_PER_TOKEN" in env:
            s.auth_failures_per_token = int(env["CHARTER_SERVER_AUTH_FAILURES_PER_TOKEN"])
        if "CHARTER_SERVER_AUTH_FAILURE_DELAY" in env:
            s.auth_failure_delay = float(env["CHARTER_SERVER_AUTH_FAILURE_DELAY"])
        if "CHARTER_SERVER_REVIEW_TICK_SECONDS" in env:
            s.review_tick_seconds = float(env["CHARTER_SERVER_REVIEW_TICK_SECONDS"])
        if "CHARTER_SERVER_DRIFT_SECONDS" in env:
            s.drift_seconds = float(env["CHARTER_SERVER_DRIFT_SECONDS"])
        if "CHARTER_SERVER_WARM_UP" in env:
            s.warm_up = env["CHARTER_SERVER_WARM_UP"] in ("1", "true", "yes")
        if "CHARTER_SERVER_BACKGROUND_TELEMETRY" in env:
            s.background_telemetry = env["CHARTER_SERVER_BACKGROUND_TELEMETRY"] in ("1", "true", "yes")
        return s


SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    # same-origin, not no-referrer: under no-referrer browsers send `Origin: null` on same-site form posts,
    # which the console must refuse (a null Origin is what sandboxed frames and data: URLs send); no
    # referrer ever leaves the site either way
    "referrer-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=()",
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
}


class GuardMiddleware:
    """Request ids, security headers, ``no-store`` caching, the request body size limit, and the ``server``
    trace channel (pure ASGI)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = "req_" + secrets.token_hex(8)
        scope.setdefault("state", {})["request_id"] = rid
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            await self._too_large(send, rid)
            return
        seen = 0
        too_large = False

        async def limited_receive() -> Message:
            nonlocal seen, too_large
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    too_large = True
                    raise _BodyTooLarge()
            return message

        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                raw = list(message.get("headers") or [])
                names = {k.lower() for k, _ in raw}
                for k, v in SECURITY_HEADERS.items():
                    if k.encode() not in names:
                        raw.append((k.encode(), v.encode()))
                if b"cache-control" not in names:
                    raw.append((b"cache-control", b"no-store"))
                raw.append((b"x-request-id", rid.encode()))
                message = {**message, "headers": raw}
            await send(message)

        try:
            with recording_channel(
                "server"
            ):  # every trace of a served request says so (the gate counts them)
                await self.app(scope, limited_receive, send_with_headers)
        except _BodyTooLarge:
            if not started:
                await self._too_large(send, rid)
        except Exception:
            if too_large and not started:
                await self._too_large(send, rid)
            else:
                raise

    async def _too_large(self, send: Send, rid: str) -> None:
        import json

        body = json.dumps(
            {
                "error": {
                    "type": "PayloadTooLarge",
                    "code": 413,
                    "reasons": [],
                    "request_id": rid,
                    "message": f"request body larger than {self.max_body} bytes",
                }
            }
        ).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", rid.encode()),
        ]
        headers += [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class _BodyTooLarge(Exception):
    pass


#: Paths that are not console pages: they authenticate with a bearer header only, so need no CSRF token.
NON_CONSOLE_PREFIXES = ("/api/", "/v1/", "/mcp", "/static/", "/metrics")


class ConsoleCsrfMiddleware:
    """Every console POST (not ``/api``, ``/v1``, ``/mcp``) must come from this site (pure ASGI).

    * ``Origin`` must be present and name this host — a missing or ``null`` Origin is refused (browsers
      send it on every form POST);
    * a CSRF token must match the cookie: the ``csrf`` form field (or an ``X-CSRF-Token`` header) equals
      :func:`charter.identity._sessions.csrf_token` of the session cookie (for ``/login``: of the pre-login
      cookie set by the login form). The body is read (it is already size-limited) and replayed.

    A refusal is 403 with a page saying what to do; nothing of the request reaches the route.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or scope["path"].startswith(NON_CONSOLE_PREFIXES)
        ):
            await self.app(scope, receive, send)
            return
        from http.cookies import SimpleCookie
        from urllib.parse import parse_qs, urlsplit

        from charter.identity import csrf_token
        from charter.server._auth import LOGIN_COOKIE, SESSION_COOKIE

        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
        origin = headers.get("origin", "")
        host = headers.get("host", "")
        if not origin or origin == "null" or urlsplit(origin).netloc != host:
            await _forbidden(
                send, "cross-site or origin-less form post refused: reload the page and try again"
            )
            return
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(headers.get("cookie", ""))
        except Exception:  # a malformed Cookie header: no cookie at all
            jar = SimpleCookie()
        name = LOGIN_COOKIE if scope["path"] == "/login" else SESSION_COOKIE
        cookie = jar[name].value if name in jar else ""
        chunks: list[bytes] = []
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            more = bool(message.get("more_body"))
        body = b"".join(chunks)
        sent = headers.get("x-csrf-token", "")
        if not sent and headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            sent = (parse_qs(body.decode("latin-1")).get("csrf") or [""])[0]
        import hmac

        if not cookie or not sent or not hmac.compare_digest(sent, csrf_token(cookie)):
            what = "log in again" if scope["path"] != "/login" else "reload the login page"
            await _forbidden(send, f"missing or stale form token (CSRF): {what} and resubmit")
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _forbidden(send: Send, message: str) -> None:
    from html import escape

    body = (
        "<!doctype html><title>Refused</title><h1>403 — refused</h1>"
        f'<p>{escape(message)}</p><p><a href="/">Back to the console</a></p>'
    ).encode()
    headers = [(b"content-type", b"text/html; charset=utf-8"), (b"content-length", str(len(body)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
    await send({"type": "http.response.start", "status": 403, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class ServerState:
    """What every request handler reaches through ``request.app.state.charter``."""

    def __init__(self, rt: Runtime, settings: ServerSettings) -> None:
        self.rt = rt
        self.settings = settings
        self.auth = Authenticator(
            rt,
            rate_limit_per_minute=settings.rate_limit_per_minute,
            failures_per_client=settings.auth_failures_per_client,
            failures_per_token=settings.auth_failures_per_token,
            failure_delay=settings.auth_failure_delay,
        )
        self._caps: dict[str, dict[str, bool]] = {}
        self.scheduler: Any = None
        self.drift: Any = None
        self.jobs = JobRunner(rt)

    def capabilities(self, principal: Principal) -> dict[str, bool]:
        caps = self._caps.get(principal.id)
        if caps is None:
            caps = self._caps[principal.id] = capabilities(self.rt, principal)
        return caps


def state_of(request: Request) -> ServerState:
    st: ServerState = request.app.state.charter
    return st


def bearer_of(request: Request) -> str | None:
    """The ``Authorization`` header (the only credential the API accepts; never a cookie)."""
    return request.headers.get("authorization")


def _start_background(state: ServerState) -> Callable[[], None]:
    """Start the server's background work (telemetry, review SLA ticks, drift checks, audit checkpoints, the
    auth-refusal flusher; warm-up); returns the function that stops all of it and flushes the traces."""
    rt, settings = state.rt, state.settings
    if settings.background_telemetry:
        from charter.telemetry import start_server_telemetry

        state.scheduler = start_server_telemetry(rt)
    stop_tick = threading.Event()
    if settings.review_tick_seconds > 0:
        threading.Thread(
            target=_tick_loop,
            args=(rt, settings.review_tick_seconds, stop_tick),
            name="charter-review-tick",
            daemon=True,
        ).start()
    if settings.drift_seconds > 0:
        from charter.gate import DriftScheduler

        state.drift = DriftScheduler(rt, settings.drift_seconds).start()
    if settings.warm_up:
        warm_up(rt)
    from charter.telemetry.audit import start_checkpointer

    interval = rt.spec.monitoring.audit.checkpoint_interval.total_seconds()
    stop_checkpoints = start_checkpointer(rt.audit, interval) if interval > 0 else threading.Event()
    stop_refusals = threading.Event()
    threading.Thread(
        target=_flush_loop, args=(state, stop_refusals), name="charter-auth-refusals", daemon=True
    ).start()

    def stop() -> None:
        stop_refusals.set()
        state.auth.refusals.flush()
        stop_checkpoints.set()
        stop_tick.set()
        if state.drift is not None:
            state.drift.stop()
        if state.scheduler is not None:
            stop_scheduler = getattr(state.scheduler, "stop", None)
            if callable(stop_scheduler):
                stop_scheduler()
        trace_store_for(rt).flush()

    return stop


def _install_middleware(app: FastAPI, settings: ServerSettings) -> None:
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_credentials=False,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(ConsoleCsrfMiddleware)
    app.add_middleware(GuardMiddleware, max_body_bytes=settings.max_body_bytes)


def create_app(
    charter: Runtime | Path | str | None = None, settings: ServerSettings | None = None
) -> FastAPI:
    """The Charter server for one charter (a path, or an open :class:`~charter.runtime.Runtime`)."""
    from contextlib import asynccontextmanager

    from charter.runtime import Runtime
    from charter.server import _api, _console, _launch, _launch_pages, _openai

    settings = settings or ServerSettings()
    rt = charter if isinstance(charter, Runtime) else Runtime.open(charter)
    state = ServerState(rt, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        stop = _start_background(state)
        try:
            yield
        finally:
            stop()

    app = FastAPI(
        title="Charter",
        version=_version(),
        description=(
            f"Governed AI workflow **{rt.spec.workflow.id}**: REST API, OpenAI-compatible endpoint and "
            "web console. Authenticate with `Authorization: Bearer <token>` (`charter tokens create`)."
        ),
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.charter = state
    install_error_handlers(app)
    _install_middleware(app, settings)
    for module in (_api, _launch, _openai, _console, _launch_pages):
        app.include_router(module.router)
    from charter.server._mcp_http import mount_mcp  # MCP over streamable HTTP at /mcp (charter.mcp)

    mount_mcp(app, state)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    return app


def warm_up(rt: Runtime) -> None:
    """:func:`charter.pipeline.warm_up` (policy set, index snapshot and embedder, masker, model gateway),
    then move every object that exists now into the permanent generation (``gc.freeze()``): with torch and
    spaCy loaded, full collections otherwise add ~10 ms to one request in twenty (docs/benchmarks.md)."""
    import gc

    from charter.pipeline import warm_up as build

    build(rt)
    gc.collect()
    gc.freeze()


def _flush_loop(state: ServerState, stop: threading.Event) -> None:
    """Write the refused-authentication counts once per window."""
    import logging

    while not stop.wait(state.auth.refusals.window):
        try:
            state.auth.refusals.flush()
        except Exception:  # e.g. the database is down: that window's counts are lost, later ones are not
            logging.getLogger("charter.server").warning("writing auth refusal counts failed", exc_info=True)


def _tick_loop(rt: Runtime, every: float, stop: threading.Event) -> None:
    """Expire and escalate approvals and drafts that are due (``charter.review.tick``), and continue agent runs
    that can go on (at start-up too: runs a restart left waiting), until stopped."""
    import logging

    from charter.review import tick

    first = True
    while first or not stop.wait(every):
        try:
            if not first:
                tick(rt)
            if (
                rt.spec.workflow.kind == "agent"
            ):  # runs whose approvals were decided; on start: left by a restart
                from charter.agents import resume_ready

                resume_ready(rt)
        except Exception:  # a failed tick is retried at the next interval; the server keeps serving
            logging.getLogger("charter.server").warning("review tick failed", exc_info=True)
        first = False


_resuming = threading.Lock()
_resume_wanted = threading.Event()


def resume_runs_soon(rt: Runtime) -> None:
    """Continue the agent runs that can go on, in a background thread (an approver's request does not wait
    for the run's next steps). One such thread at a time, which goes round again when asked meanwhile; the
    tick loop catches anything left."""
    import logging

    _resume_wanted.set()
    if not _resuming.acquire(blocking=False):
        return  # the running thread sees the request

    def work() -> None:
        try:
            from charter.agents import resume_ready

            while _resume_wanted.is_set():
                _resume_wanted.clear()
                resume_ready(rt)
        except Exception:
            logging.getLogger("charter.server").warning("resuming agent runs failed", exc_info=True)
        finally:
            _resuming.release()

    threading.Thread(target=work, name="charter-agent-resume", daemon=True).start()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("charter")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0"


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory charter.server:app_from_env`` (each worker opens its own runtime)."""
    return create_app(os.environ.get("CHARTER_FILE"), ServerSettings.from_env())
