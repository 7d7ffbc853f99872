"""API tokens against a real SQLite store and the real audit log."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from charter.errors import AuthenticationError, NotFound, UsageError
from charter.identity import create_token, list_tokens, parse_token, resolve_token, revoke_token
from charter.identity._tokens import verify_cache
from charter.runtime import Runtime
from charter.store import utcnow


@pytest.fixture
def rt(project: Path) -> Iterator[Runtime]:
    verify_cache.clear()
    runtime = Runtime.open(project)
    yield runtime
    runtime.close()


def _refusals(rt: Runtime) -> list[dict[str, object]]:
    return [
        dict(e.details, actor=e.actor, resource=e.resource) for e in rt.audit.tail(100, action="auth.refused")
    ]


def test_create_and_resolve(rt: Runtime) -> None:
    issued = create_token(rt, "ana", expires_in=timedelta(days=30), label="laptop")
    assert re.fullmatch(r"chr_[a-z0-9]{12}_[A-Za-z0-9_-]{43}", issued.token)
    token_id, _ = parse_token(issued.token)
    assert token_id == issued.info.id
    principal = resolve_token(rt, issued.token)
    assert principal.id == "ana" and principal.roles == ("agent",)
    assert resolve_token(rt, f"Bearer {issued.token}").id == "ana"
    [info] = list_tokens(rt, "ana")
    assert info.id == issued.info.id and info.label == "laptop" and info.status() == "active"
    assert info.last_used_at is not None
    actions = [e.action for e in rt.audit.tail(10)]
    assert "token.created" in actions and actions.count("auth.token_used") == 2


def test_unknown_malformed_and_wrong_secret_are_refused_and_audited(rt: Runtime) -> None:
    issued = create_token(rt, "ana")
    token_id, secret = parse_token(issued.token)
    wrong_secret = f"chr_{token_id}_{'A' * 43}"
    unknown = f"chr_{'z' * 12}_{secret}"
    bad = [
        "",
        "chr_",
        "Bearer",
        "chr_ABCDEFGHIJKL_" + "a" * 43,
        "chr_abc_" + "a" * 43,
        "x" * 5000,
        f"chr_{token_id}_short",
        issued.token + "\x00",
        issued.token.replace("chr_", "ch_"),
    ]
    for bearer in [wrong_secret, unknown, *bad]:
        with pytest.raises(AuthenticationError) as exc:
            resolve_token(rt, bearer)
        assert str(exc.value) == "invalid token"  # no hint for someone who does not hold the secret
    reasons = [r["reason"] for r in _refusals(rt)]
    assert reasons.count("wrong secret") == 1
    assert reasons.count("unknown token") == 1
    assert reasons.count("malformed token") == len(bad)


def test_expired_token(rt: Runtime) -> None:
    issued = create_token(rt, "ben", expires_in=timedelta(hours=1))
    assert resolve_token(rt, issued.token).id == "ben"
    later = utcnow() + timedelta(hours=2)
    with pytest.raises(AuthenticationError, match="expired"):
        resolve_token(rt, issued.token, now=later)
    [refusal] = _refusals(rt)
    assert refusal["reason"] == "expired token" and refusal["actor"] == "ben"
    assert list_tokens(rt)[0].status(later) == "expired"


def test_revoke_takes_effect_immediately_even_when_cached(rt: Runtime, project: Path) -> None:
    issued = create_token(rt, "ana")
    assert resolve_token(rt, issued.token).id == "ana"  # verification now cached in this process
    other = Runtime.open(project)  # another "process" revokes it
    try:
        revoke_token(other, issued.info.id)
    finally:
        other.close()
    with pytest.raises(AuthenticationError, match="revoked"):
        resolve_token(rt, issued.token)
    assert _refusals(rt)[0]["reason"] == "revoked token"
    again = revoke_token(rt, issued.token)  # by full token; idempotent
    assert again.status() == "revoked"
    assert [e.outcome for e in rt.audit.tail(20, action="token.revoked")] == ["ok", "unchanged"]


def test_revoke_unknown(rt: Runtime) -> None:
    with pytest.raises(NotFound):
        revoke_token(rt, "abcdefghijkl")
    with pytest.raises(UsageError):
        revoke_token(rt, "not-an-id")


def test_inactive_or_removed_user_is_refused(rt: Runtime, project: Path) -> None:
    issued = create_token(rt, "ben")
    users = project.parent / "users.yaml"
    users.write_text(
        users.read_text().replace(
            "groups: [support], roles: [agent]}", "groups: [support], roles: [agent], active: false}"
        )
    )
    later = Runtime.open(project)
    try:
        with pytest.raises(AuthenticationError, match="inactive"):
            resolve_token(later, issued.token)
        assert _refusals(later)[-1]["reason"] == "inactive user"
        with pytest.raises(UsageError):
            create_token(later, "ana")  # ana is inactive too now (first match replaced)
    finally:
        later.close()
    users.write_text(
        "\n".join(line for line in users.read_text().splitlines() if "id: ben" not in line) + "\n"
    )
    removed = Runtime.open(project)
    try:
        with pytest.raises(AuthenticationError):
            resolve_token(removed, issued.token)
        assert _refusals(removed)[-1]["reason"] == "user no longer in the charter"
    finally:
        removed.close()


def test_create_refuses_unknown_user_and_bad_lifetime(rt: Runtime) -> None:
    with pytest.raises(UsageError):
        create_token(rt, "mallory")
    with pytest.raises(UsageError):
        create_token(rt, "ana", expires_in=timedelta(seconds=-1))


def test_secret_never_stored_or_logged(rt: Runtime, project: Path) -> None:
    issued = create_token(rt, "ana", label="ci")
    _, secret = parse_token(issued.token)
    resolve_token(rt, issued.token)
    with pytest.raises(AuthenticationError):
        resolve_token(rt, issued.token[:-1] + ("A" if issued.token[-1] != "A" else "B"))
    revoke_token(rt, issued.info.id)
    with pytest.raises(AuthenticationError):
        resolve_token(rt, issued.token)
    rt.store.dispose()
    db_dir = project.parent / ".charter"
    blobs = b"".join(p.read_bytes() for p in db_dir.rglob("*") if p.is_file())
    assert blobs  # the database (and WAL) exist
    for needle in (secret, secret[:16], secret[-16:]):
        assert needle.encode() not in blobs
    for entry in rt.audit.tail(100):
        assert secret[:16] not in repr(entry)


def test_verification_cache_is_bound_to_the_stored_hash(rt: Runtime) -> None:
    issued = create_token(rt, "ana")
    resolve_token(rt, issued.token)
    # Replace the row's hash (as a re-issued token with the same id would): the cached entry must not match.
    from charter.store.tables import tokens

    with rt.store.begin() as conn:
        conn.execute(
            tokens.update()
            .where(tokens.c.id == issued.info.id)
            .values(secret_hash="scrypt$n=16384,r=8,p=1$AA==$AA==")
        )
    with pytest.raises(AuthenticationError):
        resolve_token(rt, issued.token)


def test_successful_verification_is_cached(rt: Runtime) -> None:
    issued = create_token(rt, "ana")
    _, _ = parse_token(issued.token)
    from sqlalchemy import select

    from charter.store.tables import tokens

    with rt.store.connect() as conn:
        stored = conn.execute(select(tokens.c.secret_hash).where(tokens.c.id == issued.info.id)).scalar_one()
    assert not verify_cache.hit(issued.token, issued.info.id, stored)
    resolve_token(rt, issued.token)
    assert verify_cache.hit(issued.token, issued.info.id, stored)
    revoke_token(rt, issued.info.id)
    assert not verify_cache.hit(issued.token, issued.info.id, stored)  # forgotten on revoke in this process
