"""Fernhill Home's order tools for the order-desk agent workflow.

The orders are demo data in ``data/orders.json`` (read-only). What the tools change — refunds and notes —
is kept in ``.charter/order-desk-state.json`` beside the charter, under a file lock, so the example needs no
shop system. What each tool may do, who may call it and who must approve it is decided by ``charter.yaml``.
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

from charter.errors import NotFound, UsageError
from charter.tools import ToolContext, tool

DATA = Path(__file__).resolve().parent / "data"

OrderId = Annotated[str, Field(pattern=r"^ORD-\d{5}$", description="Order number, e.g. ORD-10422.")]


def _order(order_id: str) -> dict[str, Any]:
    with (DATA / "orders.json").open(encoding="utf-8") as fh:
        for order in json.load(fh)["orders"]:
            if order["id"] == order_id:
                return dict(order)
    raise NotFound(f"no order {order_id}")


@contextmanager
def _state(base_dir: Path) -> Iterator[dict[str, Any]]:
    """The mutable state, locked (threads and processes), written back atomically."""
    folder = base_dir / ".charter"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / "order-desk-state.json"
    with os.fdopen(os.open(folder / "order-desk-state.lock", os.O_RDWR | os.O_CREAT, 0o600), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            state: dict[str, Any] = (
                json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"refunds": [], "notes": []}
            )
            yield state
            tmp = path.with_suffix(".tmp")
            with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
                out.write(json.dumps(state, indent=2))
            os.replace(tmp, path)  # private like everything under .charter (the gate checks the modes)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@tool(idempotent=True)
def lookup_order(order_id: OrderId, ctx: ToolContext) -> dict[str, Any]:
    """Status, item, total and delivery of one order, with the refunds already issued for it."""
    order = _order(order_id)
    with _state(ctx.base_dir) as state:
        refunded = sum(Decimal(str(r["amount_eur"])) for r in state["refunds"] if r["order_id"] == order_id)
    order["refunded_eur"] = float(refunded)
    return order


@tool(idempotent=True)
def refund_order(
    order_id: OrderId,
    amount_eur: Annotated[float, Field(gt=0, le=10_000, description="Amount to refund in euros.")],
    reason: Annotated[str, Field(min_length=3, max_length=500, description="Why, in a few words.")],
    ctx: ToolContext,
) -> dict[str, Any]:
    """Refund part or all of a delivered order to the original payment method (at most what is left)."""
    order = _order(order_id)
    if order["status"] != "delivered":
        raise UsageError(f"order {order_id} is {order['status']}; only delivered orders are refunded")
    amount = Decimal(str(amount_eur)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    with _state(ctx.base_dir) as state:
        for r in state["refunds"]:
            if r["key"] == ctx.idempotency_key:  # a re-run with the same key changes nothing
                return dict(r)
        done = sum(Decimal(str(r["amount_eur"])) for r in state["refunds"] if r["order_id"] == order_id)
        left = Decimal(str(order["total_eur"])) - done
        if amount > left:
            raise UsageError(f"order {order_id} has {left} EUR left to refund; {amount} EUR asked")
        record = {
            "key": ctx.idempotency_key,
            "order_id": order_id,
            "amount_eur": float(amount),
            "reason": reason,
            "by": ctx.principal_id,
            "at": datetime.now(UTC).isoformat(),
        }
        state["refunds"].append(record)
    return dict(record)


@tool(idempotent=True)
def add_order_note(
    order_id: OrderId,
    note: Annotated[str, Field(min_length=3, max_length=1000, description="The note for the order's history.")],
    ctx: ToolContext,
) -> dict[str, Any]:
    """Add a note to an order's history (what was done and why)."""
    _order(order_id)
    with _state(ctx.base_dir) as state:
        for n in state["notes"]:
            if n["key"] == ctx.idempotency_key:
                return dict(n)
        record = {"key": ctx.idempotency_key, "order_id": order_id, "note": note, "by": ctx.principal_id}
        state["notes"].append(record)
    return dict(record)
