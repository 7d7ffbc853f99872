"""Authentication, attacked: bogus-token floods, cross-site requests with the console cookie, logout.

The real app (TestClient over https://testserver, so the Secure session cookie is sent back), real tokens,
real scrypt — ``hashlib.scrypt`` is only wrapped to count how often it runs.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from charter.identity._sessions import csrf_token
from charter.server._auth import LOGIN_COOKIE, SESSION_COOKIE
from tests.server.conftest import Served

BASE = "https://testserver"
SAME = {"Origin": BASE}
EVIL = {"Origin": "https://evil.example"}


@pytest.fixture
def web(served: Served) -> Iterator[TestClient]:
    with TestClient(served.app, base_url=BASE, raise_server_exceptions=False) as c:  # type: ignore[arg-type]
        yield c


def login(c: TestClient, token: str) -> str:
    """Log in through the form like a browser; returns the session cookie value."""
    form = c.get("/login")
    assert form.status_code == 200
    field = re.search(r'name="csrf" value="([0-9a-f]+)"', form.text)
    assert field, "the login form carries a CSRF token"
    r = c.post("/login", data={"token": token, "csrf": field.group(1)}, headers=SAME, follow_redirects=False)
    assert r.status_code == 303, r.text
    set_cookie = r.headers.get("set-cookie", "")
    assert "Secure" in set_cookie and "HttpOnly" in set_cookie and "samesite=strict" in set_cookie.lower()
    cookie = c.cookies.get(SESSION_COOKIE)
    assert cookie and cookie.startswith("chs_")
    return cookie


def test_the_console_cookie_is_a_session_not_the_api_token(web: TestClient, served: Served) -> None:
    cookie = login(web, served.tokens["omar"])
    assert served.tokens["omar"] not in cookie and served.tokens["omar"] not in str(web.cookies)
    assert web.get("/audit").status_code == 200


def test_the_rest_api_refuses_the_cookie(web: TestClient, served: Served) -> None:
    login(web, served.tokens["omar"])
    for method, path in (
        ("post", "/api/audit/verify"),
        ("post", "/api/sources/help-center/sync"),
        ("post", "/api/gate/runs"),
        ("get", "/api/audit/tail"),
    ):
        r = getattr(web, method)(path, headers=EVIL)
        assert r.status_code == 401, (path, r.status_code, r.text[:200])
        r = getattr(web, method)(path, headers=SAME)
        assert r.status_code == 401, (path, r.status_code)
    # the same call with the bearer header works: only the cookie is refused
    assert web.post("/api/audit/verify", headers=served.headers("omar")).status_code == 200


def test_cross_origin_and_tokenless_console_posts_are_refused(web: TestClient, served: Served) -> None:
    cookie = login(web, served.tokens["omar"])
    good = csrf_token(cookie)
    before = served.rt.audit.head()  # type: ignore[attr-defined]
    for headers, data in (
        (EVIL, {"csrf": good}),  # another site
        ({}, {"csrf": good}),  # no Origin
        ({"Origin": "null"}, {"csrf": good}),  # sandboxed frame / data: URL
        (SAME, {}),  # same origin, no CSRF token
        (SAME, {"csrf": "0" * 40}),  # wrong token
    ):
        r = web.post("/audit/verify", headers=headers, data=data)
        assert r.status_code == 403, (headers, data, r.status_code)
        r = web.post("/sources/help-center/sync", headers=headers, data=data)
        assert r.status_code == 403, (headers, data, r.status_code)
    assert served.rt.audit.head() == before, "a refused POST must not reach its route"  # type: ignore[attr-defined]
    ok = web.post("/audit/verify", headers=SAME, data={"csrf": good})
    assert ok.status_code == 200 and "Intact" in ok.text


def test_logout_revokes_the_session_even_if_the_cookie_was_copied(web: TestClient, served: Served) -> None:
    cookie = login(web, served.tokens["lena"])
    assert web.get("/review", follow_redirects=False).status_code == 200
    r = web.post("/logout", headers=SAME, data={"csrf": csrf_token(cookie)}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"
    web.cookies.set(SESSION_COOKIE, cookie)  # an attacker replays the copied cookie
    r = web.get("/review", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"


def test_revoking_the_token_ends_its_console_sessions(web: TestClient, served: Served) -> None:
    from charter.identity import parse_token, revoke_token

    login(web, served.tokens["ana"])
    assert web.get("/ask", follow_redirects=False).status_code == 200
    revoke_token(served.rt, parse_token(served.tokens["ana"])[0])  # type: ignore[arg-type]
    assert web.get("/ask", follow_redirects=False).status_code == 303


def test_login_without_its_form_token_is_refused(web: TestClient, served: Served) -> None:
    web.get("/login")
    r = web.post("/login", data={"token": served.tokens["ana"]}, headers=SAME, follow_redirects=False)
    assert r.status_code == 403 and SESSION_COOKIE not in web.cookies
    pre = web.cookies.get(LOGIN_COOKIE)
    assert pre
    r = web.post(
        "/login",
        data={"token": served.tokens["ana"], "csrf": csrf_token(pre)},
        headers=EVIL,
        follow_redirects=False,
    )
    assert r.status_code == 403


@pytest.fixture
def scrypt_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = hashlib.scrypt

    def counting(*args: Any, **kwargs: Any) -> bytes:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(hashlib, "scrypt", counting)
    return calls


def test_a_bogus_token_flood_does_not_burn_scrypt_or_the_audit_log(
    client: Any, served: Served, scrypt_calls: list[int]
) -> None:
    from charter.identity import parse_token
    from charter.identity._tokens import verify_cache

    verify_cache.clear()
    assert client.get("/api/me", headers=served.headers("ana")).status_code == 200  # real user, verified once
    head = served.rt.audit.head()[0]  # type: ignore[attr-defined]
    scrypt_calls.clear()
    known_id = parse_token(served.tokens["ben"])[0]
    statuses: dict[int, int] = {}
    bogus = (
        [f"nonsense-{i}" for i in range(40)]  # malformed
        + [f"chr_{i:012d}_{'A' * 43}" for i in range(40)]  # well-formed, unknown ids
        + [f"chr_{known_id}_{'B' * 42}{i % 10}" for i in range(40)]  # a real id, wrong secrets
    )
    for token in bogus:
        r = client.get("/api/me", headers={"Authorization": f"Bearer {token}"})
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
    assert set(statuses) <= {401, 429}, statuses
    assert statuses.get(429, 0) > 0, "the flood must hit the failure limit"
    # malformed and unknown ids cost no scrypt; wrong secrets stop at the per-client limit (20 a minute)
    assert len(scrypt_calls) <= 20, len(scrypt_calls)
    # the real user, already verified, still gets in from the same client
    assert client.get("/api/me", headers=served.headers("ana")).status_code == 200
    # refusals are audited as counts per window, not one row per attempt
    st = served.app.state.charter  # type: ignore[attr-defined]
    st.auth.refusals.flush()
    entries = [e for e in served.rt.audit.tail(500) if e.seq > head]  # type: ignore[attr-defined]
    refused = [e for e in entries if e.action == "auth.refused"]
    assert 1 <= len(refused) <= 5, [e.details for e in refused]
    assert sum(e.details["count"] for e in refused) == statuses.get(401, 0)


def test_a_throttled_client_waits_for_its_429_without_holding_up_anyone_else(live: Served) -> None:
    """The tarpit: over the failure limit, each refusal is answered only after the delay — 60 of them at
    once (more than the server's worker threads) — while the real user behind the same address is
    answered at once; refusals before the limit (401) are not delayed."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    st = live.app.state.charter  # type: ignore[attr-defined]
    st.auth.failure_delay, st.auth.client_failures.per_minute = 2.0, 3
    bogus = {"Authorization": f"Bearer chr_{0:012d}_{'A' * 43}"}

    def timed(headers: dict[str, str]) -> tuple[int, float]:
        start = time.monotonic()
        code = httpx.get(live.url + "/api/me", headers=headers, timeout=30).status_code
        return code, time.monotonic() - start

    assert timed(live.headers("ana"))[0] == 200  # the real user, verified once
    before_limit = [timed(bogus) for _ in range(3)]
    assert [c for c, _ in before_limit] == [401] * 3 and all(t < 2.0 for _, t in before_limit)
    with ThreadPoolExecutor(60) as pool:
        flood = [pool.submit(timed, bogus) for _ in range(60)]
        time.sleep(0.3)  # the flood is waiting in the tarpit
        user = timed(live.headers("ana"))
        refused = [f.result() for f in flood]
    assert all(code == 429 and took >= 2.0 for code, took in refused), refused
    assert user[0] == 200 and user[1] < 2.0, user


def test_per_token_id_limit_stops_guessing_one_token(
    client: Any, served: Served, scrypt_calls: list[int]
) -> None:
    from charter.identity import parse_token

    st = served.app.state.charter  # type: ignore[attr-defined]
    st.auth.client_failures.per_minute = 0  # many clients (a botnet): only the per-token limit applies
    known_id = parse_token(served.tokens["farid"])[0]
    codes = [
        client.get(
            "/api/me", headers={"Authorization": f"Bearer chr_{known_id}_{'C' * 42}{i % 10}"}
        ).status_code
        for i in range(30)
    ]
    assert codes.count(401) == 10 and codes.count(429) == 20, codes
    assert len(scrypt_calls) == 10
