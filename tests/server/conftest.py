"""Server fixtures: the synced billing example behind the real app, a token per demo user, a live server."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

DEMO_USERS = ("ana", "ben", "lena", "farid", "omar", "casey", "svc-helpdesk", "guest")
#: A user the tests add to the example: in the support group but without any role (may not use the workflow).
GUEST = "  - {id: guest, name: Guest Visitor, email: guest@quillo.example, groups: [support], roles: []}\n"


@dataclass
class Served:
    charter: Path
    rt: object
    app: object
    tokens: dict[str, str]
    url: str = ""

    def headers(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[user]}"}


@pytest.fixture
def server_project(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """``synced_project``; or (quick local runs) a copy of the synced folder ``CHARTER_TEST_SYNCED_DIR``."""
    import os
    import shutil

    cached = os.environ.get("CHARTER_TEST_SYNCED_DIR")
    if cached and (Path(cached) / "charter.yaml").is_file():
        dest = tmp_path / "synced"
        shutil.copytree(cached, dest)
        for key in (dest / ".charter" / "keys").glob("*"):
            key.chmod(0o600)
        return dest / "charter.yaml"
    return Path(request.getfixturevalue("synced_project"))


def _build(charter: Path, **settings: object) -> Served:
    from charter.identity import create_token
    from charter.runtime import Runtime
    from charter.server import ServerSettings, create_app

    users = charter.parent / "users.yaml"
    text = users.read_text(encoding="utf-8")
    if "id: guest" not in text:
        users.write_text(text.replace("\nservice_accounts:", GUEST + "\nservice_accounts:"), encoding="utf-8")
    rt = Runtime.open(charter)
    tokens = {u: create_token(rt, u, label="test").token for u in DEMO_USERS}
    opts = {
        "background_telemetry": False,
        "review_tick_seconds": 0,
        "drift_seconds": 0,
        "warm_up": False,
        "auth_failure_delay": 0,  # the tarpit is tested on its own (test_auth_hardening)
        **settings,
    }
    app = create_app(rt, ServerSettings(**opts))  # type: ignore[arg-type]
    return Served(charter, rt, app, tokens)


@pytest.fixture
def served(server_project: Path) -> Iterator[Served]:
    s = _build(server_project)
    yield s
    s.rt.close()  # type: ignore[attr-defined]


@pytest.fixture
def client(served: Served) -> Iterator[object]:
    from fastapi.testclient import TestClient

    with TestClient(served.app, raise_server_exceptions=False) as c:  # type: ignore[arg-type]
        yield c


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def live(served: Served) -> Iterator[Served]:
    """The app served by uvicorn on a loopback port, in a thread."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(served.app, host="127.0.0.1", port=port, log_level="warning")  # type: ignore[arg-type]
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    served.url = f"http://127.0.0.1:{port}"
    yield served
    server.should_exit = True
    thread.join(10)


#: The console's origin in tests: https, so the Secure session cookie is sent back.
CONSOLE_BASE = "https://testserver"


def console_client(app: object, token: str) -> object:
    """A TestClient logged in to the console like a browser: it fetches the login form, posts the token with
    the form's CSRF field and a same-origin ``Origin``, and from then on sends ``Origin`` and the session's
    ``X-CSRF-Token`` with every request (what the console's own forms do). The caller closes it."""
    import re

    from fastapi.testclient import TestClient

    from charter.identity._sessions import csrf_token
    from charter.server._auth import SESSION_COOKIE

    client = TestClient(app, base_url=CONSOLE_BASE, raise_server_exceptions=False)  # type: ignore[arg-type]
    form = client.get("/login")
    field = re.search(r'name="csrf" value="([0-9a-f]+)"', form.text)
    assert form.status_code == 200 and field, f"no login form: {form.status_code} {form.text[:200]}"
    r = client.post(
        "/login",
        data={"token": token, "csrf": field.group(1)},
        headers={"Origin": CONSOLE_BASE},
        follow_redirects=False,
    )
    assert r.status_code in (302, 303), f"console login refused: {r.status_code} {r.text[:300]}"
    cookie = client.cookies.get(SESSION_COOKIE)
    assert cookie, "the console login set no session cookie"
    client.headers["Origin"] = CONSOLE_BASE
    client.headers["X-CSRF-Token"] = csrf_token(cookie)
    return client
