"""API tokens: creation, listing, revocation and resolution to a :class:`~charter.spec.Principal`.

A token looks like ``chr_<id>_<secret>``: ``id`` is 12 lower-case letters and digits (the primary key, not
secret, safe to log), ``secret`` is 32 random bytes, URL-safe base64 (43 characters). Only an scrypt hash
of the secret is stored (``hashlib.scrypt``, N=2^14, r=8, p=1, 16-byte per-token salt; the parameters are
stored with the hash so they can be raised later). scrypt is in the standard library and memory-hard, so
no extra native dependency is needed; argon2id would be equally good.

Resolution (:func:`resolve_token`) is shared by the server and the CLI. On every call it re-reads the
token's row (a primary-key lookup) and the charter's principal, so revocation, expiry and deactivation
take effect immediately in every process. Only the expensive scrypt verification is cached, in-process,
keyed by an HMAC of the full token under a per-process random key, for :data:`VERIFY_CACHE_TTL` seconds;
the cache entry is bound to the stored hash, so a re-issued row never matches an old entry. Every
refusal is audited as ``auth.refused``, every success as ``auth.token_used``; the secret is never logged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import string
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from sqlalchemy import select

from charter.errors import AuthenticationError, NotFound, UsageError
from charter.store import utcnow
from charter.store.tables import tokens

if TYPE_CHECKING:
    from charter.spec import LoadedCharter, Principal
    from charter.store import Store

PREFIX = "chr_"
ID_LENGTH = 12
SECRET_BYTES = 32
VERIFY_CACHE_TTL = 60.0  # seconds a successful scrypt verification is reused in this process
VERIFY_CACHE_SIZE = 4096
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
_ID_ALPHABET = string.ascii_lowercase + string.digits
_TOKEN = re.compile(rf"^{PREFIX}([a-z0-9]{{{ID_LENGTH}}})_([A-Za-z0-9_-]{{32,128}})$")
_ID = re.compile(rf"^[a-z0-9]{{{ID_LENGTH}}}$")
_MAX_BEARER = 300


class AuditLike(Protocol):
    def append(
        self, *, actor: str, action: str, resource: str, outcome: str, details: dict[str, Any]
    ) -> Any: ...


class RuntimeLike(Protocol):
    """What token functions need: a :class:`charter.runtime.Runtime` satisfies it."""

    @property
    def store(self) -> Store: ...
    @property
    def charter(self) -> LoadedCharter: ...
    @property
    def audit(self) -> AuditLike: ...


@dataclass(frozen=True)
class TokenInfo:
    """A token's stored metadata (never the secret)."""

    id: str
    principal_id: str
    label: str | None
    created_by: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    def status(self, now: datetime | None = None) -> str:
        now = now or utcnow()
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"

    def as_dict(self, now: datetime | None = None) -> dict[str, Any]:
        return {
            "id": self.id,
            "user": self.principal_id,
            "label": self.label,
            "created_by": self.created_by,
            "created_at": _iso(self.created_at),
            "expires_at": _iso(self.expires_at),
            "revoked_at": _iso(self.revoked_at),
            "last_used_at": _iso(self.last_used_at),
            "status": self.status(now),
        }


@dataclass(frozen=True)
class IssuedToken:
    """The result of :func:`create_token`: the full token (shown once) and its metadata."""

    token: str
    info: TokenInfo


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


# ------------------------------------------------------------------------------------------ hashing
def hash_secret(secret: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return (
        f"scrypt$n={SCRYPT_N},r={SCRYPT_R},p={SCRYPT_P}$"
        f"{base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"
    )


def verify_secret(secret: str, stored: str) -> bool:
    """Constant-time check of ``secret`` against a stored ``scrypt$...`` hash; False for any junk."""
    try:
        scheme, params, salt_b64, digest_b64 = stored.split("$")
        if scheme != "scrypt":
            return False
        p = dict(kv.split("=", 1) for kv in params.split(","))
        n, r, par = int(p["n"]), int(p["r"]), int(p["p"])
        if not (2**10 <= n <= 2**20 and 1 <= r <= 32 and 1 <= par <= 16):
            return False
        salt, expected = base64.b64decode(salt_b64), base64.b64decode(digest_b64)
        actual = hashlib.scrypt(
            secret.encode(), salt=salt, n=n, r=r, p=par, dklen=len(expected), maxmem=256 * 1024 * 1024
        )
    except (ValueError, KeyError):
        return False
    return hmac.compare_digest(actual, expected)


class _VerifyCache:
    """Successful scrypt verifications, keyed by HMAC(process key, token) and bound to the stored hash."""

    def __init__(self, ttl: float = VERIFY_CACHE_TTL, size: int = VERIFY_CACHE_SIZE) -> None:
        self._key = secrets.token_bytes(32)
        self._ttl = ttl
        self._size = size
        self._entries: OrderedDict[bytes, tuple[str, str, float]] = OrderedDict()
        self._lock = threading.Lock()

    def _k(self, token: str) -> bytes:
        return hmac.new(self._key, token.encode(), hashlib.sha256).digest()

    def hit(self, token: str, token_id: str, stored_hash: str) -> bool:
        key = self._k(token)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return False
            tid, h, at = entry
            if time.monotonic() - at > self._ttl:
                return False  # kept (bounded by size) so that seen() still knows the token was once good
        return hmac.compare_digest(tid, token_id) and hmac.compare_digest(h, stored_hash)

    def seen(self, token: str) -> bool:
        """Whether this exact token verified in this process before (even if that result expired): the
        server lets such tokens through its failure limits — an attacker cannot produce one."""
        with self._lock:
            return self._k(token) in self._entries

    def remember(self, token: str, token_id: str, stored_hash: str) -> None:
        with self._lock:
            self._entries[self._k(token)] = (token_id, stored_hash, time.monotonic())
            self._entries.move_to_end(self._k(token))
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)

    def forget(self, token_id: str) -> None:
        with self._lock:
            for key in [k for k, (tid, _, _) in self._entries.items() if tid == token_id]:
                del self._entries[key]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


verify_cache = _VerifyCache()


# ------------------------------------------------------------------------------------------ parsing
def parse_token(bearer: str) -> tuple[str, str]:
    """``(id, secret)`` from ``chr_<id>_<secret>`` (an ``Authorization: Bearer`` prefix is accepted).

    Raises :class:`AuthenticationError` for anything malformed (without echoing it).
    """
    if not isinstance(bearer, str) or len(bearer) > _MAX_BEARER:
        raise AuthenticationError("malformed token")
    text = bearer.strip()
    if text[:7].lower() == "bearer ":
        text = text[7:].strip()
    m = _TOKEN.match(text)
    if not m:
        raise AuthenticationError("malformed token")
    return m.group(1), m.group(2)


def _token_id_from(value: str) -> str:
    """A token id from an id or a full token."""
    value = value.strip()
    if _ID.match(value):
        return value
    try:
        return parse_token(value)[0]
    except AuthenticationError:
        raise UsageError(f"not a token id: expected {ID_LENGTH} lower-case letters and digits") from None


def _info(row: Any) -> TokenInfo:
    return TokenInfo(
        id=row.id,
        principal_id=row.principal_id,
        label=row.label,
        created_by=row.created_by,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
    )


# ------------------------------------------------------------------------------------------ operations
def create_token(
    rt: RuntimeLike,
    user: str,
    *,
    expires_in: timedelta | None = None,
    label: str | None = None,
    created_by: str = "local-operator",
    now: datetime | None = None,
) -> IssuedToken:
    """Issue a token for an active principal. The returned ``token`` is the only copy of the secret."""
    principal = rt.charter.principal(user)  # UsageError for unknown users
    if not principal.active:
        raise UsageError(f"user {user!r} is not active; tokens can only be issued to active users")
    if expires_in is not None and expires_in <= timedelta(0):
        raise UsageError("a token's lifetime must be positive")
    if label is not None and len(label) > 200:
        raise UsageError("a token label is at most 200 characters")
    now = now or utcnow()
    token_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(ID_LENGTH))
    secret = secrets.token_urlsafe(SECRET_BYTES)
    info = TokenInfo(
        id=token_id,
        principal_id=principal.id,
        label=label,
        created_by=created_by,
        created_at=now,
        expires_at=now + expires_in if expires_in else None,
        revoked_at=None,
        last_used_at=None,
    )
    with rt.store.begin() as conn:
        conn.execute(
            tokens.insert().values(
                id=info.id,
                principal_id=info.principal_id,
                secret_hash=hash_secret(secret),
                label=label,
                created_by=created_by,
                created_at=now,
                expires_at=info.expires_at,
            )
        )
    rt.audit.append(
        actor=created_by,
        action="token.created",
        resource=f"token:{token_id}",
        outcome="ok",
        details={"user": principal.id, "label": label, "expires_at": _iso(info.expires_at)},
    )
    return IssuedToken(token=f"{PREFIX}{token_id}_{secret}", info=info)


def list_tokens(rt: RuntimeLike, user: str | None = None) -> list[TokenInfo]:
    """Tokens (metadata only), newest first; optionally only ``user``'s."""
    query = select(tokens).order_by(tokens.c.created_at.desc(), tokens.c.id)
    if user is not None:
        query = query.where(tokens.c.principal_id == user)
    with rt.store.connect() as conn:
        return [_info(row) for row in conn.execute(query)]


def revoke_token(
    rt: RuntimeLike, token_or_id: str, *, revoked_by: str = "local-operator", now: datetime | None = None
) -> TokenInfo:
    """Revoke a token (by id or full token). Idempotent: revoking twice keeps the first time."""
    token_id = _token_id_from(token_or_id)
    now = now or utcnow()
    with rt.store.begin(immediate=True) as conn:
        row = conn.execute(select(tokens).where(tokens.c.id == token_id)).first()
        if row is None:
            raise NotFound(f"no token with id {token_id!r}")
        already = row.revoked_at is not None
        if not already:
            conn.execute(tokens.update().where(tokens.c.id == token_id).values(revoked_at=now))
        row = conn.execute(select(tokens).where(tokens.c.id == token_id)).one()
    verify_cache.forget(token_id)
    rt.audit.append(
        actor=revoked_by,
        action="token.revoked",
        resource=f"token:{token_id}",
        outcome="unchanged" if already else "ok",
        details={"user": row.principal_id},
    )
    return _info(row)


#: ``refused(actor, resource, reason, details)``: records a refusal instead of one audit entry per attempt
RefusalSink = Callable[[str, str, str, dict[str, Any]], None]


def resolve_token(
    rt: RuntimeLike,
    bearer: str,
    *,
    now: datetime | None = None,
    channel: str = "api",
    refused: RefusalSink | None = None,
    before_verify: Callable[[str], None] | None = None,
) -> Principal:
    """The principal a bearer token stands for; refusals raise :class:`AuthenticationError`, audited.

    Refused: malformed, unknown, wrong secret, expired, revoked, a user that is inactive or no longer in the
    charter. Malformed, unknown and wrong-secret tokens all get the same message ("invalid token"); the
    precise reason is given only once the secret has been verified, and is always in the audit event.
    ``channel`` (e.g. ``api``, ``cli``) is recorded. ``now`` is injectable for tests.

    Cheap refusals come first: a malformed token and an unknown token id cost no scrypt (ids are not
    secret). ``before_verify(token_id)`` runs right before an scrypt verification (a verification cache
    miss) and may raise, e.g. a rate limit; ``refused`` replaces the per-attempt audit entry (the server
    aggregates refusals into counts per window).
    """
    now = now or utcnow()
    try:
        token_id, secret = parse_token(bearer)
    except AuthenticationError:
        length = len(bearer) if isinstance(bearer, str) else None
        _refuse(rt, "anonymous", "token:?", "malformed token", channel, {"length": length}, sink=refused)
    with rt.store.connect() as conn:
        row = conn.execute(select(tokens).where(tokens.c.id == token_id)).first()
    if row is None:  # token ids are not secret: no scrypt for an id that does not exist
        _refuse(rt, "anonymous", f"token:{token_id}", "unknown token", channel, {}, sink=refused)
    full = f"{PREFIX}{token_id}_{secret}"
    if not verify_cache.hit(full, token_id, row.secret_hash):
        if before_verify is not None:
            before_verify(token_id)
        if not verify_secret(secret, row.secret_hash):
            _refuse(rt, "anonymous", f"token:{token_id}", "wrong secret", channel, {}, sink=refused)
        verify_cache.remember(full, token_id, row.secret_hash)
    actor, res = row.principal_id, f"token:{token_id}"
    if row.revoked_at is not None:
        details = {"revoked_at": _iso(row.revoked_at)}
        _refuse(rt, actor, res, "revoked token", channel, details, tell=True, sink=refused)
    if row.expires_at is not None and row.expires_at <= now:
        details = {"expired_at": _iso(row.expires_at)}
        _refuse(rt, actor, res, "expired token", channel, details, tell=True, sink=refused)
    principal = rt.charter.principals.get(row.principal_id)
    if principal is None:
        _refuse(rt, actor, res, "user no longer in the charter", channel, {}, tell=True, sink=refused)
    if not principal.active:
        _refuse(rt, actor, res, "inactive user", channel, {}, tell=True, sink=refused)
    _touch(rt, token_id, row.last_used_at, now)
    rt.audit.append(
        actor=principal.id,
        action="auth.token_used",
        resource=f"token:{token_id}",
        outcome="ok",
        details={"channel": channel},
    )
    return principal


def _touch(rt: RuntimeLike, token_id: str, last_used_at: datetime | None, now: datetime) -> None:
    """Record use, at most once a minute per token (a write per request would serialise readers)."""
    if last_used_at is not None and now - last_used_at < timedelta(seconds=60):
        return
    with rt.store.begin() as conn:
        conn.execute(tokens.update().where(tokens.c.id == token_id).values(last_used_at=now))


def _refuse(
    rt: RuntimeLike,
    actor: str,
    resource: str,
    reason: str,
    channel: str,
    details: dict[str, Any],
    *,
    tell: bool = False,
    sink: RefusalSink | None = None,
) -> NoReturn:
    """Audit a refusal and raise. Only a caller who proved the secret (``tell``) learns the exact reason."""
    if sink is not None:
        sink(actor, resource, reason, {"channel": channel, **details})
    else:
        rt.audit.append(
            actor=actor,
            action="auth.refused",
            resource=resource,
            outcome="denied",
            details={"reason": reason, "channel": channel, **details},
        )
    raise AuthenticationError(f"token refused: {reason}" if tell else "invalid token")
