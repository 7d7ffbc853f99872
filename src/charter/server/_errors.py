"""Errors → HTTP status codes, in one place.

Every response for a refused or failed request has the same body, which is also the shape OpenAI clients
expect: ``{"error": {"type", "message", "code", "reasons", "request_id"}}``.

| exception | status |
|---|---|
| ``UsageError``, other ``CharterError`` | 400 (422 for request-body validation, ``SpecError``) |
| ``NotFound`` | 404 (also for things the caller may not know exist) |
| ``AuthenticationError`` | 401 with ``WWW-Authenticate: Bearer`` |
| ``Denied`` | 403 |
| ``RateLimited`` (the server's per-principal limit) | 429 with ``Retry-After`` |
| ``BudgetExceeded`` | 402: a budget is used up. Not 429, because OpenAI clients retry a 429 automatically |
| ``Conflict`` | 409 |
| ``ProviderError`` | 503 when retryable (``StoreUnavailable``: the database is down), else 502 |
| ``IntegrityError`` and anything unexpected | 500 with a generic message (details only in the server log) |
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from charter.errors import (
    AuthenticationError,
    BudgetExceeded,
    CharterError,
    CharterException,
    Conflict,
    Denied,
    IntegrityError,
    NotFound,
    ProviderError,
    SpecError,
)

log = logging.getLogger("charter.server")


class RateLimited(Denied):
    """The principal's request rate on this server is used up (HTTP 429)."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        self.retry_after = retry_after
        super().__init__(message, reasons=["server.rate_limit"])


class AuthThrottled(RateLimited):
    """Too many failed authentications from a client (or for a token id): HTTP 429, answered only after
    ``delay`` seconds (a tarpit: the wait holds a coroutine, not a worker thread nor CPU, and slows a
    credential-guessing or flooding client to a trickle without touching anyone else's requests)."""

    def __init__(self, message: str, *, retry_after: int, delay: float) -> None:
        super().__init__(message, retry_after=retry_after)
        self.delay = delay
        self.reasons = ["server.auth_failures"]


def status_for(exc: BaseException) -> int:
    """The HTTP status for an exception (the single mapping the server uses)."""
    if isinstance(exc, RateLimited):
        return 429
    if isinstance(exc, BudgetExceeded):
        return 402
    if isinstance(exc, AuthenticationError):
        return 401
    if isinstance(exc, Denied):
        return 403
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, SpecError):
        return 422
    if isinstance(exc, CharterError):
        return 400
    if isinstance(exc, Conflict):
        return 409
    if isinstance(exc, ProviderError):
        return 503 if exc.retryable else 502
    return 500


def error_body(exc: BaseException, status: int, request_id: str | None = None) -> dict[str, Any]:
    """The JSON error document; never leaks internals for a 5xx other than provider errors."""
    if status >= 500 and not isinstance(exc, ProviderError):
        message = "internal error; the request id identifies it in the server log"
    elif isinstance(exc, IntegrityError):  # pragma: no cover - mapped to 500 above
        message = "stored evidence does not verify"
    else:
        message = str(exc) or type(exc).__name__
    err: dict[str, Any] = {
        "type": type(exc).__name__ if isinstance(exc, CharterException) else "InternalError",
        "message": message,
        "code": status,
        "reasons": list(getattr(exc, "reasons", []) or []) if status < 500 else [],
    }
    if request_id:
        err["request_id"] = request_id
    return {"error": err}


def error_response(exc: BaseException, request: Request | None = None) -> JSONResponse:
    status = status_for(exc)
    rid = getattr(request.state, "request_id", None) if request is not None else None
    headers: dict[str, str] = {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="charter"'
    if isinstance(exc, RateLimited):
        headers["Retry-After"] = str(exc.retry_after)
    if status >= 500:
        log.error("request %s failed: %s: %s", rid, type(exc).__name__, exc, exc_info=exc)
    return JSONResponse(error_body(exc, status, rid), status_code=status, headers=headers)


def _plain(status: int, kind: str, message: str, request: Request, **extra: Any) -> JSONResponse:
    err: dict[str, Any] = {"type": kind, "message": message, "code": status, "reasons": []}
    rid = getattr(request.state, "request_id", None)
    if rid:
        err["request_id"] = rid
    err.update(extra)
    return JSONResponse({"error": err}, status_code=status)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers: Charter errors, validation errors, HTTP errors and the 500 fallback."""

    async def charter_handler(request: Request, exc: Exception) -> Response:
        if isinstance(exc, AuthThrottled) and exc.delay > 0:
            await asyncio.sleep(exc.delay)  # the tarpit: see AuthThrottled
        return error_response(exc, request)

    async def validation_handler(request: Request, exc: Exception) -> Response:
        errors = exc.errors() if isinstance(exc, RequestValidationError) else []
        detail = [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", ""))} for e in errors][
            :20
        ]
        return _plain(422, "ValidationError", "the request is not valid", request, detail=detail)

    async def http_handler(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        resp = _plain(exc.status_code, "HTTPError", str(exc.detail), request)
        for k, v in (exc.headers or {}).items():
            resp.headers[k] = v
        return resp

    async def fallback(request: Request, exc: Exception) -> Response:
        return error_response(exc, request)

    app.add_exception_handler(CharterException, charter_handler)
    app.add_exception_handler(RequestValidationError, validation_handler)
    app.add_exception_handler(StarletteHTTPException, http_handler)
    app.add_exception_handler(Exception, fallback)
