"""Quillo's billing tools for the billing-support workflow.

The invoices and customers are demo data in ``data/`` (read-only). What the tools change — refunds
issued and replies sent — is kept in ``.charter/billing-state.json`` beside the charter, under a file lock,
so the example needs no payment provider or mail server.

What each tool may do, who may call it and who must approve it is decided by ``charter.yaml`` alone.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from charter.errors import Denied, NotFound, UsageError
from charter.tools import ToolContext, tool

DATA = Path(__file__).resolve().parent / "data"

InvoiceId = Annotated[
    str, Field(pattern=r"^INV-\d{4}-\d{5}$", description="Invoice number, e.g. INV-2026-00073.")
]
CustomerId = Annotated[str, Field(pattern=r"^cus_\d{4}$", description="Customer id, e.g. cus_1001.")]


def _load(name: str) -> list[dict[str, Any]]:
    with (DATA / f"{name}.json").open(encoding="utf-8") as fh:
        items: list[dict[str, Any]] = json.load(fh)[name]
    return items


def _invoice(invoice_id: str) -> dict[str, Any]:
    for inv in _load("invoices"):
        if inv["id"] == invoice_id:
            return inv
    raise NotFound(f"no invoice {invoice_id}")


def _customer(customer_id: str) -> dict[str, Any]:
    for cus in _load("customers"):
        if cus["id"] == customer_id:
            return cus
    raise NotFound(f"no customer {customer_id}")


@contextmanager
def _state(base_dir: Path) -> Iterator[dict[str, Any]]:
    """The mutable state, locked for the duration (across threads and processes), written back atomically."""
    folder = base_dir / ".charter"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "billing-state.json"
    with (folder / "billing-state.lock").open("a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            state: dict[str, Any] = (
                json.loads(path.read_text(encoding="utf-8"))
                if path.is_file()
                else {"refunds": [], "outbox": []}
            )
            yield state
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(state, indent=2), encoding="utf-8")
            os.replace(tmp, path)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _money(value: float | Decimal) -> Decimal:
    return Decimal(str(value)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def _refundable(inv: dict[str, Any], state: dict[str, Any]) -> Decimal:
    local = sum((_money(r["amount"]) for r in state["refunds"] if r["invoice_id"] == inv["id"]), Decimal(0))
    return max(Decimal(0), _money(inv["amount_paid"]) - _money(inv["amount_refunded"]) - local)


def read_state(base_dir: Path) -> dict[str, Any]:
    """Refunds issued and replies sent so far (for tests and demos)."""
    path = base_dir / ".charter" / "billing-state.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"refunds": [], "outbox": []}


def _for_conversation(invoice_id: str, ctx: ToolContext) -> dict[str, Any]:
    """The invoice, only when it belongs to the conversation's customer; another customer's invoice gets the
    same answer as a missing one (ids cannot be probed)."""
    if ctx.subject_id is None:
        raise Denied(
            "invoice look-ups are scoped to the conversation's customer: ask with the customer id "
            "(e.g. `charter ask --subject cus_1001`) and pass that request's id"
        )
    try:
        inv = _invoice(invoice_id)
    except NotFound:
        inv = None
    if inv is None or inv["customer_id"] != ctx.subject_id:
        raise NotFound(f"no invoice {invoice_id} for customer {ctx.subject_id}")
    return inv


@tool
def lookup_invoice(invoice_id: InvoiceId, ctx: ToolContext) -> dict[str, Any]:
    """Look up one invoice of the conversation's customer: amounts, status, payment method (last 4 digits
    only), what is refundable."""
    inv = _for_conversation(invoice_id, ctx)
    with _state(ctx.base_dir) as state:
        refundable = _refundable(inv, state)
        local = [r for r in state["refunds"] if r["invoice_id"] == invoice_id]
    pm = inv.get("payment_method") or {}
    return {
        "id": inv["id"],
        "customer_id": inv["customer_id"],
        "status": inv["status"],
        "currency": inv["currency"],
        "issued_at": inv["issued_at"],
        "period": [inv.get("period_start"), inv.get("period_end")],
        "total": inv["total"],
        "amount_paid": inv["amount_paid"],
        "amount_refunded": float(
            _money(inv["amount_refunded"]) + sum((_money(r["amount"]) for r in local), Decimal(0))
        ),
        "amount_due": inv["amount_due"],
        "refundable": float(refundable),
        "payment_method": {k: pm[k] for k in ("type", "brand", "last4") if k in pm},
        "line_items": [li["description"] for li in inv.get("line_items", [])],
    }


@tool(idempotent=True)
def issue_refund(
    invoice_id: InvoiceId,
    amount: Annotated[float, Field(gt=0, le=1_000_000)],
    reason: Annotated[str, Field(min_length=3, max_length=500)],
    ctx: ToolContext,
) -> dict[str, Any]:
    """Refund part or all of a paid invoice to its original payment method.

    Never more than what is still refundable. The action id is the idempotency key: running the same
    approved action again returns the refund already issued instead of refunding twice.
    """
    value = _money(amount)
    if Decimal(str(amount)) != value:
        raise UsageError("amount has more than 2 decimal places")
    inv = _invoice(invoice_id)
    with _state(ctx.base_dir) as state:
        for r in state["refunds"]:
            if r["idempotency_key"] == ctx.idempotency_key:
                return {**r, "duplicate": True}
        if inv["status"] not in ("paid", "partially_refunded"):
            raise Denied(f"invoice {invoice_id} is {inv['status']}; only paid invoices can be refunded")
        remaining = _refundable(inv, state)
        if value > remaining:
            raise Denied(
                f"cannot refund {value} {inv['currency']} on {invoice_id}: only {remaining} is refundable"
            )
        refund = {
            "id": "re_" + ctx.idempotency_key.removeprefix("act_")[:14],
            "invoice_id": invoice_id,
            "customer_id": inv["customer_id"],
            "amount": float(value),
            "currency": inv["currency"],
            "reason": reason,
            "requested_by": ctx.principal_id,
            "idempotency_key": ctx.idempotency_key,
            "created_at": datetime.now(UTC).isoformat(),
            "status": "succeeded",
        }
        state["refunds"].append(refund)
    return refund


@tool
def send_reply(
    review_id: Annotated[str, Field(pattern=r"^rev_[0-9a-f]{24}$")], customer_id: CustomerId, ctx: ToolContext
) -> dict[str, Any]:
    """Send the approved text of a reviewed draft to the customer's billing address (appends to the outbox).

    The text sent is the reviewer's approved (or edited) version; the caller cannot change it.
    """
    from charter.review import get_review

    item = get_review(ctx.runtime, review_id)
    if item.status != "approved" or item.final_text is None:
        raise Denied(f"review {review_id} is {item.status}; only an approved draft can be sent")
    customer = _customer(customer_id)
    with _state(ctx.base_dir) as state:
        for sent in state["outbox"]:
            if sent["review_id"] == review_id:
                if sent["idempotency_key"] == ctx.idempotency_key:
                    return {**sent, "duplicate": True}
                raise Denied(f"the reply for {review_id} was already sent ({sent['id']})")
        message = {
            "id": "msg_" + ctx.idempotency_key.removeprefix("act_")[:14],
            "review_id": review_id,
            "to": customer["billing_email"],
            "customer_id": customer_id,
            "body": item.final_text,
            "sent_by": ctx.principal_id,
            "idempotency_key": ctx.idempotency_key,
            "sent_at": datetime.now(UTC).isoformat(),
        }
        state["outbox"].append(message)
    return {k: v for k, v in message.items() if k != "body"} | {"chars": len(item.final_text)}
