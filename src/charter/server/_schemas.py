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


class Obj(BaseModel):
    """A JSON object (documented in docs/server.md)."""

    model_config = ConfigDict(extra="allow")


class ObjList(BaseModel):
    items: list[dict[str, Any]]


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
