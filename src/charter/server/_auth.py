"""Who is calling, and may they: bearer tokens (Charter's own or OIDC JWTs), rate limits, Cedar checks.

* ``Authorization: Bearer chr_…`` — a Charter API token (:func:`charter.identity.resolve_token`).
* ``Authorization: Bearer <JWT>`` — an OIDC ID/access token, when the charter has ``identity.oidc``: the
  signature is checked against the JWKS (file beside the charter, or URL), ``iss`` and ``aud`` must match,
  ``exp`` must be in the future, and ``identity.oidc.user_claim`` names a principal of the charter.
* The REST API, the OpenAI endpoint (and ``/mcp``) accept **only** the ``Authorization`` header
  (:meth:`Authenticator.authenticate_request`): a browser cookie never authenticates an API call, so another
  site cannot make a logged-in browser call the API.
* The web console uses a separate short-lived **session** (:mod:`charter.identity._sessions`) in an
  HttpOnly, SameSite=Strict, ``Secure`` cookie (:data:`SESSION_COOKIE`), opened by logging in with a token
  and revoked by logging out (:meth:`Authenticator.authenticate_console`).

Before any scrypt verification (the expensive part of checking a Charter token): the token's format is
checked and its id looked up (both cheap; an unknown id costs no scrypt), and a client — or a token id —
with too many failed attempts in the last minute gets HTTP 429 instead of another verification, and gets it
only after ``failure_delay`` seconds (a tarpit, :class:`~charter.server._errors.AuthThrottled`: a flooding
or guessing client slows to a trickle, and the server stops spending its CPU on it). Tokens
already verified in this process (the verification cache) still work from that client, so a flood from a
shared address does not lock out the real users behind it. Refusals are audited as counts per window
(:class:`RefusalLog`: one ``auth.refused`` entry per reason and client per minute), not one row per attempt.

Every endpoint then asks Cedar (:func:`require`); what the console shows comes from :func:`capabilities`,
which asks the same questions, so a page and its API cannot disagree.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

from charter.access import allowed as allowed
from charter.access import require as require
from charter.access import tool_callable as tool_callable
from charter.access import workflow_resource as workflow_resource
from charter.errors import AuthenticationError, Denied
from charter.server._errors import AuthThrottled, RateLimited

if TYPE_CHECKING:
    from charter.runtime import Runtime
    from charter.spec import Principal
    from charter.store import Store

COOKIE = "charter_token"  # the pre-0011 console cookie (the raw API token): only ever deleted now
SESSION_COOKIE = "charter_session"
LOGIN_COOKIE = "charter_login"  # pre-login CSRF secret for the login form


class RateLimiter:
    """Requests per minute per principal.

    * In-process (the default on SQLite, one machine): an exact sliding one-minute window per server process.
    * Shared (the default on PostgreSQL, where many workers or replicas serve one database): counters in
      ``rate_limit_windows``, one row per principal and minute, incremented atomically (``INSERT … ON
      CONFLICT DO UPDATE … RETURNING``: concurrent increments of one row queue on its row lock). The window
      slides: the previous minute's count is weighted by the part of it still inside the last 60 s. A
      refused request rolls its increment back, so it does not count.
    """

    def __init__(
        self,
        per_minute: int,
        *,
        store: Store | None = None,
        shared: bool | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.per_minute = per_minute
        self.store = store
        self.shared = store is not None and (not store.is_sqlite if shared is None else shared)
        self.clock = clock
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()
        self._swept_minute = -1

    def check(self, key: str) -> None:
        if self.per_minute <= 0:
            return
        if self.shared:
            self._check_shared(key[:200])
            return
        now = time.monotonic()
        with self._lock:
            window = self._hits.setdefault(key, deque())
            while window and now - window[0] >= 60.0:
                window.popleft()
            if len(window) >= self.per_minute:
                retry = max(1, int(60.0 - (now - window[0])) + 1)
                raise self._refusal(retry)
            window.append(now)

    def _refusal(self, retry_after: int) -> RateLimited:
        return RateLimited(
            f"rate limit of {self.per_minute} requests per minute reached", retry_after=retry_after
        )

    def _check_shared(self, key: str) -> None:
        from sqlalchemy import delete, select

        from charter.store import rate_limit_windows as t

        assert self.store is not None
        now = self.clock()
        minute, into = divmod(now, 60.0)
        minute_i = int(minute)
        if self.store.is_sqlite:
            from sqlalchemy.dialects.sqlite import insert
        else:
            from sqlalchemy.dialects.postgresql import insert  # type: ignore[assignment]
        upsert = (
            insert(t)
            .values(key=key, minute=minute_i, hits=1)
            .on_conflict_do_update(index_elements=[t.c.key, t.c.minute], set_={"hits": t.c.hits + 1})
            .returning(t.c.hits)
        )
        with self.store.begin(immediate=True) as conn:  # raising inside rolls the increment back
            hits = int(conn.execute(upsert).scalar_one())
            previous = conn.execute(select(t.c.hits).where(t.c.key == key, t.c.minute == minute_i - 1))
            prev = int(previous.scalar() or 0)
            if prev * (1.0 - into / 60.0) + hits > self.per_minute:
                raise self._refusal(max(1, int(60.0 - into) + 1))
        if minute_i != self._swept_minute:  # once a minute per process: forget windows nobody reads
            self._swept_minute = minute_i
            with self.store.begin() as conn:
                conn.execute(delete(t).where(t.c.minute < minute_i - 1))


class FailureLimiter:
    """Failed authentication attempts per key (a client address, a token id) in a sliding minute, in
    process. ``blocked`` is checked before an expensive verification; ``record`` counts a failure."""

    def __init__(self, per_minute: int, *, max_keys: int = 100_000) -> None:
        self.per_minute = per_minute
        self.max_keys = max_keys
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _window(self, key: str, now: float) -> deque[float]:
        window = self._hits.get(key)
        if window is None:
            if len(self._hits) >= self.max_keys:  # forget the stalest keys rather than grow without bound
                for old in list(self._hits)[: self.max_keys // 10]:
                    del self._hits[old]
            window = self._hits[key] = deque()
        while window and now - window[0] >= 60.0:
            window.popleft()
        return window

    def blocked(self, key: str) -> int | None:
        """Seconds to wait when ``key`` used up its failures, else ``None``."""
        if self.per_minute <= 0:
            return None
        now = time.monotonic()
        with self._lock:
            window = self._window(key, now)
            if len(window) >= self.per_minute:
                return max(1, int(60.0 - (now - window[0])) + 1)
        return None

    def record(self, key: str) -> None:
        if self.per_minute <= 0:
            return
        now = time.monotonic()
        with self._lock:
            self._window(key, now).append(now)


class RefusalLog:
    """Refused authentications, audited as counts: one ``auth.refused`` entry per (reason, channel, client)
    and window, carrying ``count``, the window's bounds and up to 10 of the resources (token ids) tried.

    A window's entry is written when the next refusal arrives after it ended, by :meth:`flush` (the server
    calls it every window), and at shutdown. At most ``MAX_KEYS`` distinct keys are kept per window; beyond
    that, refusals are counted under the client ``*``."""

    MAX_KEYS = 1000

    def __init__(
        self, rt: Runtime, window_seconds: float = 60.0, clock: Callable[[], float] = time.time
    ) -> None:
        self.rt = rt
        self.window = window_seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._start = clock()
        self._counts: dict[tuple[str, str, str], dict[str, Any]] = {}

    def add(self, client: str, actor: str, resource: str, reason: str, details: dict[str, Any]) -> None:
        now = self.clock()
        due: list[dict[str, Any]] = []
        with self._lock:
            if now - self._start >= self.window:
                due = self._take(now)
            channel = str(details.get("channel", "api"))
            key = (reason, channel, client[:100])
            if key not in self._counts and len(self._counts) >= self.MAX_KEYS:
                key = (reason, channel, "*")
            entry = self._counts.setdefault(
                key, {"actor": actor, "count": 0, "resources": [], "first": now, "last": now}
            )
            entry["count"] += 1
            entry["last"] = now
            if resource not in entry["resources"] and len(entry["resources"]) < 10:
                entry["resources"].append(resource)
            if entry["actor"] != actor:
                entry["actor"] = "anonymous"
        self._write(due)

    def _take(self, now: float) -> list[dict[str, Any]]:
        from datetime import UTC, datetime

        def iso(t: float) -> str:
            return datetime.fromtimestamp(t, UTC).isoformat()

        events = [
            {
                "actor": e["actor"],
                "action": "auth.refused",
                "resource": e["resources"][0] if len(e["resources"]) == 1 else "token:*",
                "outcome": "denied",
                "details": {
                    "reason": reason,
                    "channel": channel,
                    "client": client,
                    "count": e["count"],
                    "first_at": iso(e["first"]),
                    "last_at": iso(e["last"]),
                    "resources": e["resources"],
                },
            }
            for (reason, channel, client), e in sorted(self._counts.items())
        ]
        self._counts = {}
        self._start = now
        return events

    def _write(self, events: list[dict[str, Any]]) -> None:
        if events:
            self.rt.audit.append_many(events)

    def flush(self) -> int:
        """Write the counts gathered so far (one entry per key); returns how many entries were written."""
        with self._lock:
            due = self._take(self.clock())
        self._write(due)
        return len(due)


class OIDCVerifier:
    """Validates JWTs against the charter's ``identity.oidc`` settings."""

    def __init__(self, rt: Runtime) -> None:
        oidc = rt.spec.identity.oidc
        assert oidc is not None
        self.rt = rt
        self.issuer, self.audience, self.user_claim = oidc.issuer, oidc.audience, oidc.user_claim
        self._jwks_ref = oidc.jwks
        self._keys: dict[str, Any] | None = None
        self._client: Any = None

    def _key_for(self, token: str) -> Any:
        import jwt

        if self._jwks_ref.startswith(("https://", "http://")):
            if self._client is None:
                self._client = jwt.PyJWKClient(self._jwks_ref, cache_keys=True)
            return self._client.get_signing_key_from_jwt(token).key
        if self._keys is None:
            import json

            path = self.rt.charter.resolve(self._jwks_ref)
            data = json.loads(path.read_text(encoding="utf-8"))
            keyset = jwt.PyJWKSet.from_dict(data)
            self._keys = {k.key_id or "": k for k in keyset.keys}
        kid = jwt.get_unverified_header(token).get("kid") or ""
        key = self._keys.get(kid) or (next(iter(self._keys.values())) if len(self._keys) == 1 else None)
        if key is None:
            raise AuthenticationError("invalid token")
        return key.key

    def principal(
        self, token: str, refused: Callable[[str, str, str, dict[str, Any]], None] | None = None
    ) -> Principal:
        """The principal of a valid JWT; ``refused`` records refusals (default: one audit entry each)."""
        import jwt

        try:
            key = self._key_for(token)
            claims = jwt.decode(
                token,
                key,
                algorithms=["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"],
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "iss", "aud"]},
            )
        except AuthenticationError:
            raise
        except Exception as exc:  # any PyJWT error (signature, expiry, claims) or an unreadable JWKS
            self._refuse("anonymous", f"invalid OIDC token: {type(exc).__name__}", refused)
        user = claims.get(self.user_claim)
        if not isinstance(user, str) or user not in self.rt.charter.principals:
            self._refuse(str(user)[:100], "OIDC subject is not a principal of the charter", refused)
        principal = self.rt.charter.principal(user)
        if not principal.active:
            self._refuse(user, "inactive user", refused)
        return principal

    def _refuse(
        self, actor: str, reason: str, refused: Callable[[str, str, str, dict[str, Any]], None] | None
    ) -> NoReturn:
        if refused is not None:
            refused(actor, "oidc", reason, {"channel": "api"})
        else:
            self.rt.audit.append(
                actor=actor,
                action="auth.refused",
                resource="oidc",
                outcome="denied",
                details={"reason": reason, "channel": "api"},
            )
        raise AuthenticationError("invalid token")


class Authenticator:
    """Turns a credential into a principal; shared by the API, the OpenAI endpoint, ``/mcp`` and the console.

    * :meth:`authenticate_request` — the ``Authorization`` header of an API request (never a cookie);
    * :meth:`authenticate_console` — the console's session cookie;
    * :meth:`authenticate` — a bearer value (the API token typed into the login form, or the header).
    """

    def __init__(
        self,
        rt: Runtime,
        *,
        rate_limit_per_minute: int,
        failures_per_client: int = 20,
        failures_per_token: int = 10,
        failure_delay: float = 1.0,
    ) -> None:
        self.rt = rt
        self.failure_delay = failure_delay
        self.oidc = OIDCVerifier(rt) if rt.spec.identity.oidc is not None else None
        self.limiter = RateLimiter(rate_limit_per_minute, store=rt.store)
        self.client_failures = FailureLimiter(failures_per_client)
        self.token_failures = FailureLimiter(failures_per_token)
        self.refusals = RefusalLog(rt)

    def _sink(self, client: str) -> Callable[[str, str, str, dict[str, Any]], None]:
        def refused(actor: str, resource: str, reason: str, details: dict[str, Any]) -> None:
            self.client_failures.record(client)
            if resource.startswith("token:") and resource != "token:?":
                self.token_failures.record(resource)
            self.refusals.add(client, actor, resource, reason, details)

        return refused

    def _limit_failures(self, client: str, token_id: str | None = None) -> None:
        retry = self.client_failures.blocked(client)
        what = "this client"
        if retry is None and token_id is not None:
            retry, what = self.token_failures.blocked(f"token:{token_id}"), "this token"
        if retry is not None:
            raise AuthThrottled(
                f"too many failed authentication attempts from {what}; retry in {retry} s",
                retry_after=retry,
                delay=self.failure_delay,
            )

    def authenticate(self, bearer: str | None, *, client: str = "?", channel: str = "api") -> Principal:
        """The principal of a bearer credential (``Bearer `` prefix optional)."""
        from charter.identity import resolve_token

        if not bearer:
            raise AuthenticationError("authentication required: send 'Authorization: Bearer <token>'")
        text = bearer.strip()
        if text[:7].lower() == "bearer ":
            text = text[7:].strip()
        if text.count(".") == 2 and not text.startswith("chr_"):
            if self.oidc is None:
                self._sink(client)("anonymous", "oidc", "OIDC is not configured", {"channel": channel})
                raise AuthenticationError("invalid token")
            self._limit_failures(client)
            principal = self.oidc.principal(text, self._sink(client))
        else:
            from charter.identity import verify_cache

            if verify_cache.seen(text):  # verified here before: never held back by others' failures
                before_verify = None
            else:
                self._limit_failures(client)  # a blocked client: refused before any lookup at all
                before_verify = lambda token_id: self._limit_failures(client, token_id)  # noqa: E731
            principal = resolve_token(
                self.rt, text, channel=channel, refused=self._sink(client), before_verify=before_verify
            )
        self.limiter.check(principal.id)
        return principal

    def authenticate_request(self, request: Any) -> Principal:
        """The caller of an API request: ``Authorization: Bearer …`` only — cookies are ignored here."""
        return self.authenticate(request.headers.get("authorization"), client=client_of(request))

    def authenticate_console(self, request: Any) -> Principal:
        """The caller of a console page: the session cookie (see :mod:`charter.identity._sessions`)."""
        from charter.identity import resolve_session

        cookie = request.cookies.get(SESSION_COOKIE)
        try:
            principal = resolve_session(self.rt, cookie)
        except AuthenticationError as exc:
            if cookie:
                self.refusals.add(
                    client_of(request), "anonymous", "session", str(exc), {"channel": "console"}
                )
            raise
        self.limiter.check(principal.id)
        return principal


def client_of(request: Any) -> str:
    """The client address of a request (the proxy's address behind a proxy, unless uvicorn is run with
    ``--proxy-headers`` and a trusted ``--forwarded-allow-ips``)."""
    client = getattr(request, "client", None)
    return str(client.host) if client is not None and client.host else "?"


# ------------------------------------------------------------------------------------------ authorisation
def require_any(rt: Runtime, principal: Principal, actions: tuple[str, ...], what: str) -> None:
    if any(allowed(rt, principal, a) for a in actions):
        return
    rt.audit.append(
        actor=principal.id,
        action="policy.denied",
        resource=workflow_resource(rt),
        outcome="denied",
        details={"action": "|".join(actions), "what": what},
    )
    raise Denied(f"{principal.id} may not {what}", reasons=[f"needs one of: {', '.join(actions)}"])


def approver_roles_of_charter(rt: Runtime) -> set[str]:
    roles: set[str] = set()
    for t in rt.spec.tools:
        approval = t.approval
        role = getattr(approval, "approver_role", None)
        if role:
            roles.add(role)
        for cond in getattr(approval, "conditions", None) or []:
            roles.add(cond.approver_role)
    return roles


def capabilities(rt: Runtime, principal: Principal) -> dict[str, bool]:
    """What this principal may do, by console page; decided by Cedar and the charter's ownership fields."""
    from charter.gate import may_run_gate

    owns_source = principal.id == rt.spec.owners.sources or any(
        s.owner == principal.id for s in rt.spec.sources
    )
    tools = any(tool_callable(rt, principal, t.name) for t in rt.spec.tools)
    caps = {
        "ask": allowed(rt, principal, "ask"),
        "search": allowed(rt, principal, "search"),
        "feedback": allowed(rt, principal, "feedback"),
        "review": allowed(rt, principal, "review.submit") or allowed(rt, principal, "review.decide"),
        "review_decide": allowed(rt, principal, "review.decide"),
        "approvals": tools or bool(set(principal.roles) & approver_roles_of_charter(rt)),
        "tools": tools,
        "monitor": allowed(rt, principal, "reports.read") or allowed(rt, principal, "traces.read_all"),
        "reports": allowed(rt, principal, "reports.read"),
        "traces_all": allowed(rt, principal, "traces.read_all"),
        "sources": allowed(rt, principal, "sources.sync") or owns_source,
        "sources_sync": allowed(rt, principal, "sources.sync"),
        "audit": allowed(rt, principal, "audit.read"),
        "kill_switch": allowed(rt, principal, "kill_switch") or principal.id == rt.spec.owners.incidents,
        "evals": allowed(rt, principal, "evals.run") or allowed(rt, principal, "reports.read"),
        "evals_run": allowed(rt, principal, "evals.run"),
        "gate": may_run_gate(rt, principal)[0] or allowed(rt, principal, "reports.read"),
        "gate_run": may_run_gate(rt, principal)[0],
    }
    return caps


def require_capability(rt: Runtime, principal: Principal, cap: str, what: str) -> None:
    if capabilities(rt, principal).get(cap):
        return
    rt.audit.append(
        actor=principal.id,
        action="policy.denied",
        resource=workflow_resource(rt),
        outcome="denied",
        details={"capability": cap, "what": what},
    )
    raise Denied(f"{principal.id} may not {what}", reasons=[f"no policy grants {cap}"])
