"""Helpers shared by the tools and review tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import select

from charter.runtime import Runtime
from charter.store.tables import audit_log


def billing_state(project: Path) -> dict[str, Any]:
    """Refunds issued and replies sent by the example tools (their own store beside the charter)."""
    path = project.parent / ".charter" / "billing-state.json"
    return json.loads(path.read_text()) if path.is_file() else {"refunds": [], "outbox": []}


def audit_rows(rt: Runtime, resource: str | None = None, action: str | None = None) -> list[Any]:
    query = select(audit_log).order_by(audit_log.c.seq)
    if resource is not None:
        query = query.where(audit_log.c.resource == resource)
    if action is not None:
        query = query.where(audit_log.c.action == action)
    with rt.store.connect() as conn:
        return list(conn.execute(query))


EXAMPLE_DATA = Path(__file__).resolve().parents[2] / "examples" / "billing-support" / "data"


def _pick_invoice() -> dict[str, Any]:
    """A paid, never-refunded invoice of at least 1,000 from the example data (whatever its number)."""
    invoices = json.loads((EXAMPLE_DATA / "invoices.json").read_text())["invoices"]
    return next(
        i for i in invoices if i["status"] == "paid" and not i["amount_refunded"] and i["amount_paid"] >= 1000
    )


INVOICE = _pick_invoice()
INVOICE_ID: str = INVOICE["id"]
CUSTOMER_ID: str = INVOICE["customer_id"]
CUSTOMER_EMAIL: str = next(
    c["billing_email"]
    for c in json.loads((EXAMPLE_DATA / "customers.json").read_text())["customers"]
    if c["id"] == CUSTOMER_ID
)
REFUND_50 = {"invoice_id": INVOICE_ID, "amount": 50, "reason": "duplicate charge"}
REFUND_500 = {"invoice_id": INVOICE_ID, "amount": 500, "reason": "duplicate charge"}


def details(row: Any) -> dict[str, Any]:
    """An audit row's details as a dict (the audit log may store them as canonical JSON text)."""
    value = row.details
    return json.loads(value) if isinstance(value, str) else dict(value)
