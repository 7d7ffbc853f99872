"""Console sessions: short-lived, revocable, and separate from API tokens.

Logging in to the web console with an API token creates a **session**; the browser's cookie holds only the
session (``chs_<id>_<secret>``), never the 90-day API token. A session:

* expires after ``ttl`` (the server's ``session_hours``, 8 hours by default) whatever the token's lifetime;
* is revoked by logging out (:func:`revoke_session`), and ends with the token it was opened with (revoking
  or expiring that token, or deactivating the user, ends every session opened with it);
* is stored as a SHA-256 of its 32-byte random secret (a random secret needs no slow hash: there is
  nothing to brute-force), so checking a cookie costs one indexed lookup and one hash — no scrypt.

:func:`csrf_token` derives the console's CSRF token from the cookie value: only someone who can read the
(HttpOnly) cookie or the page the server rendered can know it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import select

from charter.errors import AuthenticationError
from charter.store import utcnow
from charter.store.tables import console_sessions, tokens

if TYPE_CHECKING:
    from charter.identity._tokens import RuntimeLike
    from charter.spec import Principal

PREFIX = "chs_"
_ALPHABET = string.ascii_lowercase + string.digits
_SESSION = re.compile(r"^chs_([a-z0-9]{16})_([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True)
class Session:
    """A console session (the cookie value is only returned by :func:`create_session`)."""

    id: str
    principal_id: str
    token_id: str | None
    expires_at: datetime


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_session(
    rt: RuntimeLike, principal_id: str, *, token_id: str | None, ttl: timedelta, now: datetime | None = None
) -> tuple[str, Session]:
    """Open a session for a principal who just proved a credential; returns ``(cookie value, session)``."""
    now = now or utcnow()
    sid = "".join(secrets.choice(_ALPHABET) for _ in range(16))
    secret = secrets.token_urlsafe(32)
    session = Session(sid, principal_id, token_id, now + ttl)
    with rt.store.begin() as conn:
        conn.execute(
            console_sessions.insert().values(
                id=sid,
                secret_hash=_hash(secret),
                principal_id=principal_id,
                token_id=token_id,
                created_at=now,
                expires_at=session.expires_at,
            )
        )
    rt.audit.append(
        actor=principal_id,
        action="auth.session_opened",
        resource=f"session:{sid}",
        outcome="ok",
        details={"token_id": token_id, "expires_at": session.expires_at.isoformat()},
    )
    return f"{PREFIX}{sid}_{secret}", session


def _parse(cookie: str | None) -> tuple[str, str]:
    m = _SESSION.match(cookie or "")
    if not m:
        raise AuthenticationError("not logged in")
    return m.group(1), m.group(2)


def resolve_session(rt: RuntimeLike, cookie: str | None, *, now: datetime | None = None) -> Principal:
    """The principal of a live session; :class:`AuthenticationError` for anything else (not audited per
    attempt: a bad cookie costs one lookup, and the caller aggregates refusals)."""
    sid, secret = _parse(cookie)
    now = now or utcnow()
    with rt.store.connect() as conn:
        row = conn.execute(select(console_sessions).where(console_sessions.c.id == sid)).first()
        token = None
        if row is not None and row.token_id is not None:
            token = conn.execute(
                select(tokens.c.revoked_at, tokens.c.expires_at).where(tokens.c.id == row.token_id)
            ).first()
    if row is None or not hmac.compare_digest(row.secret_hash, _hash(secret)):
        raise AuthenticationError("not logged in")
    if row.revoked_at is not None:
        raise AuthenticationError("session ended (logged out)")
    if row.expires_at <= now:
        raise AuthenticationError("session expired: log in again")
    if row.token_id is not None and (
        token is None
        or token.revoked_at is not None
        or (token.expires_at is not None and token.expires_at <= now)
    ):
        raise AuthenticationError("the token this session was opened with is no longer valid")
    principal = rt.charter.principals.get(row.principal_id)
    if principal is None or not principal.active:
        raise AuthenticationError("user is no longer active")
    return principal


def revoke_session(rt: RuntimeLike, cookie: str | None, *, now: datetime | None = None) -> bool:
    """End the session of ``cookie`` (logout). False when there was no live session to end."""
    try:
        sid, secret = _parse(cookie)
    except AuthenticationError:
        return False
    now = now or utcnow()
    with rt.store.begin() as conn:
        row = conn.execute(select(console_sessions).where(console_sessions.c.id == sid)).first()
        if (
            row is None
            or not hmac.compare_digest(row.secret_hash, _hash(secret))
            or row.revoked_at is not None
        ):
            return False
        conn.execute(console_sessions.update().where(console_sessions.c.id == sid).values(revoked_at=now))
    rt.audit.append(
        actor=row.principal_id,
        action="auth.session_closed",
        resource=f"session:{sid}",
        outcome="ok",
        details={},
    )
    return True


def csrf_token(cookie: str) -> str:
    """The CSRF token that goes with a session (or pre-login) cookie: a hash of the secret cookie value."""
    return hashlib.sha256(b"charter-csrf/v1\x00" + cookie.encode()).hexdigest()[:40]
