"""``charter ask`` and the channel of its trace: in process (``cli``, warm-up reported apart) or against a
running server named by ``CHARTER_URL`` (``server``: the server has everything loaded)."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from sqlalchemy import select

from charter.store.tables import traces
from tests.conftest import run_cli
from tests.server.conftest import Served

QUESTION = "How do refunds work?"


def _channel(rt: Any, request_id: str) -> str | None:
    with rt.store.connect() as conn:
        return conn.execute(select(traces.c.channel).where(traces.c.request_id == request_id)).scalar()


def test_in_process_ask_is_the_cli_channel_with_its_warm_up_apart(
    live: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CHARTER_URL", raising=False)
    r = run_cli("ask", QUESTION, "--as", "ana", "--charter", str(live.charter), "--json")
    assert r.exit_code == 0, r.stderr
    out: Any = r.json()
    assert set(out["warm_up_ms"]) >= {"policies", "index", "gateway"}, out["warm_up_ms"]
    assert _channel(live.rt, out["request_id"]) == "cli"


def test_ask_uses_the_running_server_named_by_charter_url(
    live: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHARTER_URL", live.url)
    monkeypatch.setenv("CHARTER_TOKEN", live.tokens["ana"])
    r = run_cli("ask", QUESTION, "--as", "ana", "--json")  # no charter folder needed: the server has it
    assert r.exit_code == 0, r.stderr
    out: Any = r.json()
    assert out["status"] in ("answered", "needs_human") and out["citations"], out
    assert _channel(live.rt, out["request_id"]) == "server"

    wrong = run_cli("ask", QUESTION, "--as", "ben")  # ana's token, ben's name: refused before asking
    assert wrong.exit_code != 0 and "ana's token, not ben's" in wrong.stderr, wrong.stderr

    monkeypatch.setenv("CHARTER_TOKEN", "chr_000000000000_" + "A" * 43)
    bogus = run_cli("ask", QUESTION, "--as", "ana")
    assert bogus.exit_code != 0 and "refused CHARTER_TOKEN" in bogus.stderr, bogus.stderr

    monkeypatch.delenv("CHARTER_TOKEN")
    missing = run_cli("ask", QUESTION, "--as", "ana")
    assert missing.exit_code != 0 and "CHARTER_TOKEN is not" in missing.stderr, missing.stderr

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("CHARTER_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("CHARTER_TOKEN", live.tokens["ana"])
    down = run_cli("ask", QUESTION, "--as", "ana")
    assert down.exit_code != 0 and "charter serve" in down.stderr, down.stderr
