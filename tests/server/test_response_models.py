"""Every REST endpoint answers with a typed model (docs/server.md, "Responses"): no free-form object in the
schema, and a response carries exactly the keys the server put in it (optional keys absent, not null)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel

from charter.server import _schemas as S
from charter.server._api import router as api_router
from charter.server._launch import router as launch_router
from tests.server.conftest import Served


def _routes() -> list[APIRoute]:
    return [r for r in [*api_router.routes, *launch_router.routes] if isinstance(r, APIRoute)]


def test_every_json_endpoint_has_a_typed_response_model() -> None:
    untyped, checked = [], 0
    for route in _routes():
        if isinstance(route.response_class, type) and route.response_class is not JSONResponse:
            continue  # downloads, Prometheus text (an explicit non-JSON response class)
        checked += 1
        model = route.response_model
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or not model.model_fields:
            untyped.append(f"{sorted(route.methods)} {route.path}")
    assert not untyped, f"endpoints without a typed response model: {untyped}"
    assert checked >= 30, checked  # the checker sees the JSON endpoints
    assert not hasattr(S, "Obj") and not hasattr(S, "ObjList")


def test_the_schema_has_no_free_form_response_object() -> None:
    app = FastAPI()
    app.include_router(api_router)
    app.include_router(launch_router)
    schema = app.openapi()
    components = schema["components"]["schemas"]
    loose = []
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            content = op["responses"].get("200", op["responses"].get("202", {})).get("content", {})
            ref = content.get("application/json", {}).get("schema", {}).get("$ref")
            if ref is None:
                continue
            body = components[ref.rsplit("/", 1)[1]]
            if not body.get("properties"):
                loose.append(f"{method.upper()} {path}")
    assert not loose, f"responses without properties: {loose}"
    # shapes the server builds are closed: an unknown key would be a server bug
    for name in (
        "SearchHit",
        "TraceSummary",
        "ReviewOut",
        "ActionOut",
        "SourceStatus",
        "AuditEvent",
        "GateOut",
    ):
        assert components[name]["additionalProperties"] is False, name


def test_responses_keep_exactly_their_keys(client: Any, served: Served) -> None:
    """Optional keys stay absent (``exclude_unset``); the typed fields are the keys the code returns."""
    hits = client.post("/api/search", headers=served.headers("ana"), json={"query": "refund timing"}).json()
    assert hits["items"] and all(set(h) == set(S.SearchHit.model_fields) for h in hits["items"])

    ask = client.post(
        "/api/ask", headers=served.headers("ana"), json={"question": "How long do refunds take?"}
    )
    rid = ask.json()["request_id"]
    trace = client.get(f"/api/traces/{rid}", headers=served.headers("ana")).json()
    assert "redacted_sources" not in trace  # ana may read everything her answer used
    assert {"request_id", "spans", "feedback", "reviews"} <= set(trace)
    rows = client.get("/api/traces", headers=served.headers("ana")).json()["items"]
    assert rows and all(set(r) == set(S.TraceSummary.model_fields) for r in rows)
    pending = client.post(
        "/api/tools/issue_refund/calls",
        headers=served.headers("ana"),
        json={"args": {"invoice_id": "INV-2026-00093", "amount": 20.0, "reason": "duplicate seat"}},
    ).json()
    assert pending["status"] == "pending" and pending["approval_id"] == pending["id"]
    listed = client.get("/api/approvals", headers=served.headers("lena")).json()["items"]
    assert {"approver_roles", "may_decide"} <= set(listed[0]) and "approval_id" not in listed[0]
    one = client.get(f"/api/approvals/{pending['id']}", headers=served.headers("lena")).json()
    assert not {"approver_roles", "may_decide", "approval_id"} & set(one)

    omar = served.headers("omar")
    switches = client.get("/api/kill-switch", headers=omar).json()
    assert switches["workflow"] == {"on": False}  # no by/at/reason: nobody has set it
    assert set(switches["tools"]) == {"lookup_invoice", "issue_refund", "send_reply"}
    changed = client.post("/api/kill-switch", headers=omar, json={"on": True, "tool": "issue_refund"}).json()
    assert set(changed["tools"]["issue_refund"]) == {"on", "by", "at", "reason"}
    assert changed["tools"]["send_reply"] == {"on": False}
