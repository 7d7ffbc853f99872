"""Who is calling, and may they: bearer tokens (Charter's own or OIDC JWTs), rate limits, Cedar checks.

* ``Authorization: Bearer chr_…`` — a Charter API token (:func:`charter.identity.resolve_token`).
* ``Authorization: Bearer <JWT>`` — an OIDC ID/access token, when the charter has ``identity.oidc``: the
  signature is checked against the JWKS (file beside the charter, or URL), ``iss`` and ``aud`` must match,
  ``exp`` must be in the future, and ``identity.oidc.user_claim`` names a principal of the charter.
* The web console sends the same token from an HttpOnly, SameSite=Strict cookie (:data:`COOKIE`).

Every endpoint then asks Cedar (:func:`require`); what the console shows comes from :func:`capabilities`,
which asks the same questions, so a page and its API cannot disagree.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

from charter.errors import AuthenticationError, Denied, UsageError
from charter.server._errors import RateLimited

if TYPE_CHECKING:
    from charter.runtime import Runtime
    from charter.spec import Principal
    from charter.store import Store

COOKIE = "charter_token"


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

        from charter.store._core_tables import rate_limit_windows as t

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

    def principal(self, token: str) -> Principal:
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
            self._refuse("anonymous", f"invalid OIDC token: {type(exc).__name__}")
        user = claims.get(self.user_claim)
        if not isinstance(user, str) or user not in self.rt.charter.principals:
            self._refuse(str(user)[:100], "OIDC subject is not a principal of the charter")
        principal = self.rt.charter.principal(user)
        if not principal.active:
            self._refuse(user, "inactive user")
        return principal

    def _refuse(self, actor: str, reason: str) -> NoReturn:
        self.rt.audit.append(
            actor=actor,
            action="auth.refused",
            resource="oidc",
            outcome="denied",
            details={"reason": reason, "channel": "api"},
        )
        raise AuthenticationError("invalid token")


class Authenticator:
    """Turns a bearer (header or cookie) into a principal; shared by the API and the console."""

    def __init__(self, rt: Runtime, *, rate_limit_per_minute: int) -> None:
        self.rt = rt
        self.oidc = OIDCVerifier(rt) if rt.spec.identity.oidc is not None else None
        self.limiter = RateLimiter(rate_limit_per_minute, store=rt.store)

    def authenticate(self, bearer: str | None) -> Principal:
        from charter.identity import resolve_token

        if not bearer:
            raise AuthenticationError("authentication required: send 'Authorization: Bearer <token>'")
        text = bearer.strip()
        if text[:7].lower() == "bearer ":
            text = text[7:].strip()
        if text.count(".") == 2 and not text.startswith("chr_"):
            if self.oidc is None:
                raise AuthenticationError("invalid token")
            principal = self.oidc.principal(text)
        else:
            principal = resolve_token(self.rt, text, channel="api")
        self.limiter.check(principal.id)
        return principal


# ------------------------------------------------------------------------------------------ authorisation
def workflow_resource(rt: Runtime) -> str:
    return f"workflow:{rt.spec.workflow.id}"


def allowed(
    rt: Runtime,
    principal: Principal,
    action: str,
    resource: str | None = None,
    context: dict[str, Any] | None = None,
) -> bool:
    return rt.authorizer.authorize(principal, action, resource or workflow_resource(rt), context).allowed


def require(
    rt: Runtime,
    principal: Principal,
    action: str,
    resource: str | None = None,
    context: dict[str, Any] | None = None,
) -> None:
    """Cedar must permit ``action``; a deny is audited and raised as :class:`Denied` (HTTP 403)."""
    rt.authorizer.require(principal, action, resource or workflow_resource(rt), context, audit=rt.audit)


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


def tool_callable(rt: Runtime, principal: Principal, tool: str) -> bool:
    return allowed(rt, principal, "tools.call", f"tool:{tool}", {"args": {}})


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


def parse_principal_id(rt: Runtime, value: str) -> str:
    if value not in rt.charter.principals:
        raise UsageError("unknown user")
    return value
