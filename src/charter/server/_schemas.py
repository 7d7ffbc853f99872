"""Request and response bodies of the REST API (what the OpenAPI schema documents)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorDetail(BaseModel):
    type: str
    message: str
    code: int
    reasons: list[str] = []
    request_id: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": desc}
    for code, desc in {
        400: "Bad request (a usage error)",
        401: "Missing or invalid token",
        402: "A budget is used up",
        403: "Refused by policy",
        404: "Not found (or not yours)",
        409: "A concurrent change won",
        413: "Request body too large",
        422: "Invalid request body or parameters",
        429: "Rate limit reached",
        502: "The model or tool backend failed",
        503: "Backend unavailable, retry",
    }.items()
}


class AskIn(_In):
    question: str = Field(min_length=1, max_length=20_000, description="The question.")
    submit_for_review: bool = Field(True, description="Queue the draft for review (as the charter says).")
    subject_id: str | None = Field(
        None,
        max_length=100,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="Whom the conversation is about, if anyone (a client, an employee, a case): tools see "
        "only them; a `draft_approved` tool sends only to them (its `subject_argument`).",
    )


class AskOut(BaseModel):
    request_id: str
    status: str
    draft: str
    agent_notes: str
    citations: list[dict[str, Any]]
    groundedness: float | None
    escalation: dict[str, Any] | None
    model: str | None
    prompt_version: str | None
    input_tokens: int
    output_tokens: int
    cost_usd: float
    latency_ms: dict[str, float]
    removed_citations: int = 0
    warnings: list[str] = []
    review_id: str | None = None
    sentence_scores: list[dict[str, Any]] = []
    tool_calls: list[dict[str, Any]] = []
    run_id: str | None = None
    run_status: str | None = None


class RunOut(BaseModel):
    """An ``agent`` run: its state; ``result`` (the final answer, checked) only for the asker."""

    id: str
    workflow: str
    principal_id: str
    status: str
    steps: int
    waiting_on: list[str]
    stop_reason: str | None
    segments: int
    active_ms: float
    created_at: str
    updated_at: str
    result: dict[str, Any] | None = None


class RunList(BaseModel):
    items: list[RunOut]


class SearchIn(_In):
    query: str = Field(min_length=1, max_length=2000)
    k: int = Field(5, ge=1, le=50)


class FeedbackIn(_In):
    rating: Literal["up", "down"] | int = Field(description="'up', 'down', +1 or -1.")
    reasons: list[str] = Field(default_factory=list, max_length=20)
    comment: str | None = Field(None, max_length=4000)


class IdOut(BaseModel):
    id: str


class ReviewDecisionIn(_In):
    decision: Literal["approve", "edit", "reject"]
    text: str | None = Field(None, max_length=20_000, description="The edited text (for 'edit').")
    reason: str | None = Field(None, max_length=100, description="A reject reason (REJECT_REASONS).")
    comment: str = Field("", max_length=4000)


class ApprovalDecisionIn(_In):
    decision: Literal["approve", "reject"]
    reason: str = Field("", max_length=4000)


class ToolCallIn(_In):
    args: dict[str, Any] = Field(default_factory=dict)
    reason: str = Field("", max_length=4000)
    request_id: str | None = Field(None, max_length=100)


class KillSwitchIn(_In):
    on: bool
    tool: str | None = Field(None, max_length=200)
    reason: str = Field("", max_length=4000)


class Me(BaseModel):
    id: str
    name: str
    kind: str
    roles: list[str]
    groups: list[str]
    capabilities: dict[str, bool]


class Health(BaseModel):
    status: str
    checks: dict[str, Any] = {}


# ------------------------------------------------------------------------------------------ responses
# Every endpoint's response is one of the models below. A route serves them with
# ``response_model_exclude_unset=True``: a key is in the response exactly when the code put it there, so an
# optional key (``redacted_sources``, a kill switch's ``by``) is absent, not null, as it was before the
# models existed. ``_Row`` models describe shapes the code builds (an unknown key is a bug: 500 in tests);
# ``_Document`` models describe documents read back from storage or disk (a trace body, a gate report), which
# an older or newer version may have written with other keys: the known keys are typed, others pass through.


class _Row(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Document(BaseModel):
    model_config = ConfigDict(extra="allow")


class SearchHit(_Row):
    """One chunk the caller may read, ranked by hybrid search."""

    chunk_id: str
    source_id: str
    doc_id: str
    title: str
    heading: str
    page: int | None
    text: str
    score: float


class SearchOut(_Row):
    items: list[SearchHit]


class TraceSummary(_Row):
    """A trace as listed: the indexed columns (``principal_id`` as the monitoring policy stores it)."""

    request_id: str
    started_at: str
    principal_id: str
    status: str
    model: str | None
    prompt_version: str | None
    cost_usd: float
    latency_ms: float
    escalation: str | None
    groundedness: float | None
    error_type: str | None


class TraceList(_Row):
    items: list[TraceSummary]


class TraceOut(_Document):
    """One stored trace document (masked as the charter's monitoring policy says; parts from documents the
    caller may not read redacted), with its feedback and review decisions. docs/pipeline.md describes it."""

    request_id: str
    channel: str | None = None
    workflow: str
    principal_id: str | None
    started_at: str
    status: str
    question: Any = None
    answer: Any = None
    agent_notes: Any = None
    citations: list[dict[str, Any] | str] = []
    retrieved: list[dict[str, Any]] = []
    tool_calls: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    model: str | None = None
    provider: str | None = None
    prompt_version: str | None = None
    index_version: str | None = None
    charter_fingerprint: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    usage_source: str | None = None
    cost_usd: float = 0.0
    cost_source: str | None = None
    latency_ms: float = 0.0
    groundedness: float | None = None
    escalation: dict[str, Any] | None = None
    checks: dict[str, Any] = {}
    spans: list[dict[str, Any]] = []
    feedback: list[dict[str, Any]] = []
    reviews: list[dict[str, Any]] = []
    redacted_sources: int | None = Field(None, description="Present when parts were redacted for the caller.")


class ReviewOut(_Row):
    """A draft in (or through) the review queue, as the caller may see it (docs/server.md)."""

    id: str
    request_id: str | None
    submitter: str
    question: str
    draft: str
    citations: list[dict[str, Any] | str] = Field(
        description="The cited passages (a citation the caller may not read is a redaction marker)."
    )
    agent_notes: Any = Field(description="Notes for the reviewer: text, or a list of notes.")
    groundedness: float | None
    escalation_reason: str | None
    status: str
    assigned_role: str | None
    escalation_level: int
    sla_due_at: str | None
    created_at: str
    updated_at: str
    decision: str | None
    decided_by: str | None
    decided_at: str | None
    final_text: str | None
    diff: str | None
    reject_reason: str | None
    comment: str | None
    version: int
    assigned_user: str | None
    routing: str | None
    subject_id: str | None
    edited_by: str | None
    edit_checks: Any = Field(description="What the checks found in a reviewer's edit (groundedness, flags).")
    reviewer_roles: list[str]
    redacted_sources: int | None = Field(None, description="Present when parts were redacted for the caller.")


class ReviewList(_Row):
    items: list[ReviewOut]


class ActionOut(_Row):
    """A proposed tool call (and approval request while it waits): arguments as they may be shown (masked).
    A proposal adds ``approval_id``; the approvals list adds ``approver_roles`` and ``may_decide``."""

    id: str
    request_id: str | None
    tool: str
    requester: str
    origin: str
    args: Any
    args_hash: str
    reason: str
    status: str
    needs_approval: bool
    required_role: str | None
    assigned_role: str | None
    escalation_level: int
    created_at: str
    updated_at: str
    expires_at: str | None
    sla_due_at: str | None
    decided_by: str | None
    decided_at: str | None
    decision_reason: str | None
    started_at: str | None
    finished_at: str | None
    result: Any = Field(description="What the tool returned, once it ran.")
    error: str | None
    version: int
    approval_id: str | None = Field(None, description="The approval request's id while one is needed.")
    approver_roles: list[str] | None = None
    may_decide: bool | None = None


class ActionList(_Row):
    items: list[ActionOut]


class ToolOut(_Row):
    name: str
    description: str
    effect: str
    approval: str | dict[str, Any] = Field(description="`none`, `always`, or the rule with its conditions.")
    killed: bool


class ToolList(_Row):
    items: list[ToolOut]


class LastSyncRun(_Row):
    id: int
    status: str
    finished_at: str | None
    failed: int
    error: str | None


class SourceApproval(_Row):
    state: str
    by: str | None
    at: str | None
    config_hash: str | None
    current_config_hash: str
    matches: bool | None
    approver_active: bool | None
    recorded_in: str | None


class SourceStatus(_Row):
    """One source: owner, policy, freshness against it, last sync, counts, approval."""

    id: str
    title: str
    connector: str
    location: str
    owner: str
    sensitivity: str
    permission_model: str
    groups: list[str]
    allowed_in_prompts: bool
    cadence: str
    documents: int
    chunks: int
    private_by_default: int
    last_successful_sync: str | None
    age_seconds: float | None
    max_age_seconds: float | None
    freshness: str
    on_stale: str
    acl_synced_at: str | None
    acl_freshness: str
    on_acl_stale: str
    last_run: LastSyncRun | None
    config_hash: str
    approval: SourceApproval


class SourceList(_Row):
    items: list[SourceStatus]


class SyncSummaryOut(_Row):
    source: str
    status: str
    mode: str
    run_id: int | None
    added: int
    updated: int
    acl_changed: int
    deleted: int
    moved: int
    unchanged: int
    private_by_default: int
    failed: int
    quarantined: int
    documents: int
    failures: list[dict[str, Any]]
    private: list[dict[str, Any]]
    warnings: list[dict[str, Any]]
    error: str | None
    rechunked: bool
    started_at: str | None
    finished_at: str | None


class SyncOut(_Row):
    sources: list[SyncSummaryOut]
    ok: bool


class ReportOut(_Row):
    """The operator report (docs/monitoring.md describes each section)."""

    workflow: str
    generated_at: str
    period: dict[str, Any]
    previous_period: dict[str, Any]
    usage: dict[str, Any]
    quality: dict[str, Any]
    cost: dict[str, Any]
    failures: list[dict[str, Any]]
    source_blame: dict[str, Any]
    trends: dict[str, Any]
    rate_comparisons: dict[str, Any]
    time_series: dict[str, Any]
    production_failures: dict[str, Any]
    screened_documents: list[dict[str, Any]]
    reader: str | None = None


class AuditEvent(_Row):
    seq: int
    ts: str
    actor: str
    action: str
    resource: str
    outcome: str
    details: dict[str, Any]
    prev_hash: str
    hash: str


class AuditList(_Row):
    items: list[AuditEvent]


class AuditVerifyOut(_Row):
    """What recomputing the hash chain and checking the signed checkpoints found."""

    ok: bool
    entries_verified: int
    checkpoints_verified: int
    first_bad_seq: int | None
    reason: str | None
    head_seq: int
    head_hash: str | None
    last_checkpoint_seq: int | None
    anchor_seq: int | None
    elapsed_s: float
    notes: list[str]
    unsigned_tail: int
    tail_checked: bool


class SwitchState(_Document):
    """One kill switch: ``on``, and once someone has set it, who, when and why."""

    on: bool
    by: str | None = None
    at: str | None = None
    reason: str | None = None


class KillSwitchOut(_Row):
    workflow: SwitchState
    tools: dict[str, SwitchState]


class EvalRunSummary(_Row):
    """A stored evaluation run as listed."""

    id: str
    created_at: str
    charter_fingerprint: str
    model: str | None
    prompt_version: str | None
    index_version: str | None
    n_cases: int
    passed: bool
    failures: dict[str, Any] = Field(description="Failed cases per category.")
    options: dict[str, Any]


class EvalRunList(_Row):
    items: list[EvalRunSummary]


class GateSummary(_Document):
    """A gate (or drift) run as remembered: status per check, the owners of failing ones, the report."""

    id: str | None = None
    status: str | None = None
    strict: bool | None = None
    fingerprint: str | None = None
    at: str | None = None
    checks: dict[str, str] = {}
    owners: dict[str, str | None] = {}
    report: str | None = None
    report_files: Any = None
    signature: Any = None


class ReportVerification(_Row):
    """Whether a gate report verifies: its signature and file hashes, and whether it is for the running
    configuration (null: unknown)."""

    signature: bool | None
    current: bool | None
    message: str


class GateReport(_Document):
    """The signed gate report (``gate-report.json``; docs/gate.md)."""

    kind: str | None = None
    version: int | None = None
    id: str | None = None
    workflow: str | None = None
    charter_fingerprint: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    duration_s: float | None = None
    status: str | None = None
    failed: list[str] = []
    only: list[str] = []
    checks: list[dict[str, Any]] = []


class GateOut(_Row):
    latest: GateSummary | None
    report: GateReport | None
    verification: ReportVerification | None
    drift: GateSummary | None


class GateHistoryItem(_Row):
    id: str | None
    kind: Literal["gate", "drift"]
    at: str | None
    actor: str
    status: str | None
    fingerprint: str | None
    checks: dict[str, str]
    owners: dict[str, str | None]
    report: bool
    verification: ReportVerification | None
    audit_seq: int


class GateHistory(_Row):
    items: list[GateHistoryItem]


class EvalRunIn(_In):
    permission_probes: bool = Field(
        True, description="Also run the generated ACL probes (the launch gate requires them)."
    )
    repeat: int = Field(1, ge=1, le=10, description="Run every case this many times.")
    concurrency: int = Field(4, ge=1, le=16, description="Cases in parallel.")
    timeout_s: float = Field(60.0, gt=0, le=600, description="Seconds after which a case counts as timeout.")
    cases: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = Field(
        None,
        max_length=1000,
        description="Only these case ids of the charter's eval sets (default: every case).",
    )


class JobOut(BaseModel):
    """A background run (evaluation or launch gate) and, when it has finished, its outcome."""

    id: str
    kind: Literal["eval", "gate"]
    status: Literal["running", "succeeded", "failed"]
    actor: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    progress: dict[str, int] | None = None
    summary: dict[str, Any] | None = None
    error: str | None = None
    href: str
