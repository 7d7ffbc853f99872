"""What a gate run produces: one :class:`CheckResult` per launch item, gathered in a :class:`GateResult`."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

Status = Literal["pass", "warn", "fail"]

#: The seven launch items, in report order: (id, title, owners duty responsible for fixing it).
CHECKS: tuple[tuple[str, str, str], ...] = (
    ("scope", "Scope documented", "scope"),
    ("sources", "Sources and permissions approved", "sources"),
    ("evaluation", "Evaluation passes", "failures"),
    ("review", "Human review and escalation work", "incidents"),
    ("monitoring", "Monitoring and logs available", "incidents"),
    ("cost_latency", "Cost and latency acceptable", "cost"),
    ("owners", "Owners assigned", "scope"),
)
CHECK_IDS = tuple(c[0] for c in CHECKS)


#: What to do next about a problem of each check when the finding names nothing more specific.
NEXT_STEPS: dict[str, str] = {
    "scope": "edit the scope section of charter.yaml (job, inputs, outputs, next_step, out_of_scope, "
    "forbidden_actions), then run `charter check` and `charter gate` again",
    "sources": "see `charter sources` for each source's owner, freshness and approval; fix the source in "
    "charter.yaml or run `charter sync`, then `charter gate` again",
    "evaluation": "run `charter eval --permission-probes` for the current charter, fix the failing cases or "
    "thresholds (evals section), then `charter gate` again",
    "review": "set review.reviewer_role and review.escalations in charter.yaml to roles that have members, "
    "then `charter gate` again",
    "monitoring": "fix the monitoring section of charter.yaml (fields, masking, exporters), then `charter gate` "
    "again",
    "cost_latency": "lower the cost or latency (model, retrieval.top_k) or raise budgets / latency in "
    "charter.yaml with the cost owner, then `charter eval` and `charter gate` again",
    "owners": "set every owners.<duty> in charter.yaml to an active person with a role in users.yaml, then "
    "`charter gate` again",
}


@dataclass
class Finding:
    """One observation inside a check: what was looked at, what was found, whether it is a problem, and —
    for a problem — what to do next (``fix``: a command or the charter key to set; never empty)."""

    status: Status
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)
    fix: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "message": self.message, "fix": self.fix, "evidence": self.evidence}


@dataclass
class CheckResult:
    """One launch item: overall status (the worst finding), its findings, and the owner who must fix it."""

    id: str
    title: str
    owner_duty: str
    owner: str | None
    findings: list[Finding] = field(default_factory=list)
    duration_s: float = 0.0

    @property
    def status(self) -> Status:
        statuses = {f.status for f in self.findings}
        if "fail" in statuses:
            return "fail"
        if "warn" in statuses:
            return "warn"
        return "pass"

    def add(self, status: Status, message: str, *, fix: str | None = None, **evidence: Any) -> Finding:
        """Record a finding; a problem (``warn``/``fail``) without ``fix`` gets the check's next step."""
        if status != "pass" and not fix:
            fix = NEXT_STEPS.get(
                self.id, "see docs/gate.md for this check, fix it, then run `charter gate` again"
            )
        f = Finding(status, message, evidence, fix if status != "pass" else None)
        self.findings.append(f)
        return f

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "status": self.status,
            "owner_duty": self.owner_duty,
            "owner": self.owner,
            "duration_s": round(self.duration_s, 3),
            "findings": [f.as_dict() for f in self.findings],
        }


@dataclass
class GateResult:
    """A whole gate run."""

    id: str
    workflow: str
    charter_fingerprint: str
    started_at: datetime
    finished_at: datetime
    checks: list[CheckResult]
    only: tuple[str, ...] = ()

    def status(self, strict: bool = False) -> Status:
        statuses = {c.status for c in self.checks}
        if "fail" in statuses or (strict and "warn" in statuses):
            return "fail"
        return "warn" if "warn" in statuses else "pass"

    def passed(self, strict: bool = False) -> bool:
        return self.status(strict) != "fail"

    def check(self, check_id: str) -> CheckResult:
        for c in self.checks:
            if c.id == check_id:
                return c
        raise KeyError(check_id)

    @property
    def failed(self) -> list[str]:
        return [c.id for c in self.checks if c.status == "fail"]

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": "charter.gate.report",
            "version": 1,
            "id": self.id,
            "workflow": self.workflow,
            "charter_fingerprint": self.charter_fingerprint,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
            "duration_s": round((self.finished_at - self.started_at).total_seconds(), 3),
            "status": self.status(),
            "failed": self.failed,
            "only": list(self.only),
            "checks": [c.as_dict() for c in self.checks],
        }
