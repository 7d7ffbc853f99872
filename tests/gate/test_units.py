"""Small, fast pieces of the gate: vague jobs, intervals, exported names."""

from __future__ import annotations

import pytest

import charter.gate
from charter.cli._gate import parse_interval
from charter.errors import UsageError
from charter.gate._checks import vague_job


@pytest.mark.parametrize(
    "job", ["Support.", "automate support", "Help customers with questions and tickets and support and stuff"]
)
def test_vague_jobs_are_flagged(job: str) -> None:
    assert vague_job(job)


def test_specific_job_passes() -> None:
    assert (
        vague_job("Draft replies to customer billing questions for support agents, citing the help centre")
        is None
    )


def test_interval() -> None:
    assert parse_interval("1h") == 3600 and parse_interval("30s") == 30 and parse_interval("15m") == 900
    with pytest.raises(UsageError):
        parse_interval("soon")


def test_exported_names() -> None:
    assert set(charter.gate.__all__) == {n for n in dir(charter.gate) if not n.startswith("_")} - {
        "annotations"
    }


def test_webhook_notification_posts_json(project) -> None:  # type: ignore[no-untyped-def]
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from charter.gate import notify
    from charter.runtime import Runtime
    from tests.gate.conftest import edit_yaml

    received: list[dict] = []  # type: ignore[type-arg]

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        edit_yaml(project, lambda d: d["drift"].update(notify=url))
        rt = Runtime.open(project)
        try:
            assert notify(rt, {"event": "charter.gate.drift", "failed": ["sources"]}) == "webhook 204"
        finally:
            rt.close()
    finally:
        server.shutdown()
    assert received == [{"event": "charter.gate.drift", "failed": ["sources"]}]


def test_every_gate_command_and_option_is_documented() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "gate.md").read_text(encoding="utf-8")
    for item in (
        "charter gate verify",
        "approve-policies",
        "ack-private",
        "--report",
        "--json",
        "--strict",
        "--watch",
        "--interval",
        "--once",
        "--as",
        "workflow.restricted",
        "DriftScheduler",
    ):
        assert item in doc, item
