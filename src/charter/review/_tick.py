"""``tick``: advance every timer (approval expiry, approval and draft escalations) to the clock's now.

The server runs it periodically; ``charter review tick`` runs it once (cron-friendly). It is idempotent:
running it twice at the same time changes nothing the second time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from charter.review._approvals import tick_approvals
from charter.review._drafts import tick_reviews
from charter.store.clock import Clock, clock_or_default

if TYPE_CHECKING:
    from charter.runtime import Runtime


@dataclass(frozen=True)
class TickReport:
    """What one tick changed."""

    at: str
    approvals_expired: list[str] = field(default_factory=list)
    approvals_escalated: list[str] = field(default_factory=list)
    reviews_escalated: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def tick(rt: Runtime, *, clock: Clock | None = None) -> TickReport:
    """Expire and escalate whatever is due at ``clock.now()``."""
    now = clock_or_default(clock).now()
    approvals = tick_approvals(rt, now)
    reviews = tick_reviews(rt, now)
    return TickReport(
        at=now.isoformat(),
        approvals_expired=approvals["expired"],
        approvals_escalated=approvals["escalated"],
        reviews_escalated=reviews,
    )
