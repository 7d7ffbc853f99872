"""The REST API under ``/api`` (plus ``/metrics``). Every endpoint authenticates and asks Cedar.

Resources that belong to someone (traces, review items, approval requests) are visible to their owner and
to whoever the charter lets decide or read them; anyone else gets 404, the same as for a missing id. What
is shown of stored content (traces, drafts) is decided by :mod:`charter.access`: parts from documents the
caller may not read are redacted, whatever their role.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import PlainTextResponse

from charter.errors import Conflict, NotFound, UsageError
from charter.server import _schemas as S
from charter.server._app import state_of
from charter.server._auth import require, require_any, require_capability, tool_callable
from charter.spec import Principal
from charter.telemetry import build_report, metrics_for, record_feedback, trace_list_filter, visible_trace

if TYPE_CHECKING:
    from charter.runtime import Runtime

router = APIRouter(responses=S.ERRORS)


def current_principal(request: Request) -> Principal:
    """The authenticated principal (401 without a valid bearer token — cookies never count here; 429 over
    the rate limit or after too many failed attempts)."""
    principal = state_of(request).auth.authenticate_request(request)
    request.state.principal = principal
    return principal


Caller = Annotated[Principal, Depends(current_principal)]


def _rt(request: Request) -> Runtime:
    return state_of(request).rt


def _iso(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in r.items()} for r in rows]


# ------------------------------------------------------------------------------------------------ health
@router.get("/api/health", response_model=S.Health, tags=["health"])
def health() -> S.Health:
    """Liveness: the process answers. No authentication."""
    return S.Health(status="ok")


@router.get("/api/ready", response_model=S.Health, tags=["health"], responses={503: {"model": S.Health}})
def ready(request: Request) -> Any:
    """Readiness: the database answers and the charter is loaded. No authentication."""
    from fastapi.responses import JSONResponse
    from sqlalchemy import text

    rt = _rt(request)
    try:
        with rt.store.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception:
        return JSONResponse(
            S.Health(status="unavailable", checks={"database": False}).model_dump(), status_code=503
        )
    return S.Health(status="ready", checks={"database": True, "workflow": rt.spec.workflow.id})


@router.get("/api/me", response_model=S.Me, tags=["identity"])
def me(request: Request, principal: Caller) -> S.Me:
    """Who the token stands for and what they may do (the console's navigation follows this)."""
    return S.Me(
        id=principal.id,
        name=principal.name,
        kind=principal.kind,
        roles=list(principal.roles),
        groups=list(principal.groups),
        capabilities=state_of(request).capabilities(principal),
    )


# ------------------------------------------------------------------------------------------------ ask
@router.post("/api/ask", response_model=S.AskOut, tags=["ask"])
def ask(request: Request, body: S.AskIn, principal: Caller) -> Any:
    """Run a question through the governed pipeline (Cedar ``ask``)."""
    from charter.agents import respond as run

    rt = _rt(request)
    require(rt, principal, "ask")
    return run(
        rt, principal, body.question, submit_for_review=body.submit_for_review, subject_id=body.subject_id
    ).as_dict()


@router.post("/api/search", response_model=S.SearchOut, response_model_exclude_unset=True, tags=["ask"])
def search(request: Request, body: S.SearchIn, principal: Caller) -> S.SearchOut:
    """Permission-filtered hybrid search (Cedar ``search``): only chunks this principal may read."""
    from charter.pipeline import search as governed_search

    hits = governed_search(_rt(request), principal, body.query, k=body.k)
    items = [
        {
            "chunk_id": h.chunk_id,
            "source_id": h.source_id,
            "doc_id": h.doc_id,
            "title": h.title,
            "heading": h.heading,
            "page": h.page,
            "text": h.text,
            "score": h.score,
        }
        for h in hits
    ]
    return S.SearchOut.model_validate({"items": items})


# ------------------------------------------------------------------------------------------------ traces
@router.get("/api/traces", response_model=S.TraceList, response_model_exclude_unset=True, tags=["traces"])
def list_traces(
    request: Request,
    principal: Caller,
    status: Annotated[str | None, Query(max_length=40)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> S.TraceList:
    """Recent requests: your own; everyone's with ``traces.read_all``."""
    from charter.pipeline import traces_for

    rt = _rt(request)
    require_any(rt, principal, ("ask", "traces.read_all"), "read traces")
    who = trace_list_filter(rt, principal)
    return S.TraceList.model_validate(
        {"items": _iso(traces_for(rt).list(status=status, principal_id=who, limit=limit))}
    )


@router.get(
    "/api/traces/{request_id}", response_model=S.TraceOut, response_model_exclude_unset=True, tags=["traces"]
)
def get_trace(request: Request, request_id: str, principal: Caller) -> Any:
    """One trace with every stage (masked as the charter says). Others' traces need ``traces.read_all``."""
    rt = _rt(request)
    require_any(rt, principal, ("ask", "traces.read_all"), "read traces")
    return _iso([visible_trace(rt, principal, request_id)])[0]


@router.post("/api/traces/{request_id}/feedback", response_model=S.IdOut, tags=["traces"])
def feedback(request: Request, request_id: str, body: S.FeedbackIn, principal: Caller) -> S.IdOut:
    """Rate an answer (Cedar ``feedback``; only your own requests unless you may read all traces)."""
    rt = _rt(request)
    require(rt, principal, "feedback")
    rating: int | str = body.rating
    if isinstance(rating, int) and rating not in (-1, 1):
        raise UsageError("rating must be 'up', 'down', 1 or -1")
    fid = record_feedback(
        rt, request_id, principal, rating=rating, reasons=body.reasons, comment=body.comment
    )
    return S.IdOut(id=fid)


# ------------------------------------------------------------------------------------------------ review
@router.get("/api/reviews", response_model=S.ReviewList, response_model_exclude_unset=True, tags=["review"])
def list_reviews(
    request: Request, principal: Caller, status: Annotated[str | None, Query(max_length=40)] = None
) -> S.ReviewList:
    """Drafts you submitted or may decide now (parts from sources you cannot read are redacted)."""
    from charter.review import assigned_to, redact_review
    from charter.review import list_reviews as items

    rt = _rt(request)
    if not assigned_to(rt, principal):
        require_any(rt, principal, ("review.submit", "review.decide"), "use the review queue")
    shown = [redact_review(rt, principal, i) for i in items(rt, status=status, principal=principal)]
    return S.ReviewList.model_validate({"items": shown})


@router.get(
    "/api/reviews/{item_id}", response_model=S.ReviewOut, response_model_exclude_unset=True, tags=["review"]
)
def get_review(request: Request, item_id: str, principal: Caller) -> Any:
    """One draft: yours, or one you may decide (404 otherwise, the same as a missing id)."""
    from charter.review import assigned_to, redact_review, visible_review

    rt = _rt(request)
    if not assigned_to(rt, principal, item_id):
        require_any(rt, principal, ("review.submit", "review.decide"), "use the review queue")
    return redact_review(rt, principal, visible_review(rt, principal, item_id))


@router.post(
    "/api/reviews/{item_id}/decision",
    response_model=S.ReviewOut,
    response_model_exclude_unset=True,
    tags=["review"],
)
def decide_review(request: Request, item_id: str, body: S.ReviewDecisionIn, principal: Caller) -> Any:
    """Approve, edit or reject a draft (Cedar ``review.decide``; never your own). An edit needs another
    reviewer's approval before it can be sent."""
    from charter.review import assigned_to, decide_draft, redact_review, visible_review

    rt = _rt(request)
    if not assigned_to(rt, principal, item_id):
        require(rt, principal, "review.decide")
    visible_review(rt, principal, item_id)
    item = decide_draft(
        rt, item_id, principal, body.decision, text=body.text, reason=body.reason, comment=body.comment
    )
    return redact_review(rt, principal, item)


# ------------------------------------------------------------------------------------------------ approvals
def _visible_approval(rt: Runtime, principal: Principal, approval_id: str) -> Any:
    from charter.review import visible_approval

    return visible_approval(rt, principal, approval_id)


@router.get(
    "/api/approvals", response_model=S.ActionList, response_model_exclude_unset=True, tags=["approvals"]
)
def list_approvals(
    request: Request, principal: Caller, status: Annotated[str | None, Query(max_length=40)] = None
) -> S.ActionList:
    """Approval requests you asked for or may decide now."""
    from charter.review import approver_roles
    from charter.review import list_approvals as items

    rt = _rt(request)
    require_capability(rt, principal, "approvals", "see approval requests")
    out = []
    for a in items(rt, status=status, principal=principal):
        d = a.to_dict()
        d["approver_roles"] = approver_roles(rt, a)
        d["may_decide"] = a.requester != principal.id and bool(
            set(d["approver_roles"]) & set(principal.roles)
        )
        out.append(d)
    return S.ActionList.model_validate({"items": out})


@router.get(
    "/api/approvals/{approval_id}",
    response_model=S.ActionOut,
    response_model_exclude_unset=True,
    tags=["approvals"],
)
def get_approval(request: Request, approval_id: str, principal: Caller) -> Any:
    rt = _rt(request)
    require_capability(rt, principal, "approvals", "see approval requests")
    return _visible_approval(rt, principal, approval_id).to_dict()


@router.post(
    "/api/approvals/{approval_id}/decision",
    response_model=S.ActionOut,
    response_model_exclude_unset=True,
    tags=["approvals"],
)
def decide_approval(request: Request, approval_id: str, body: S.ApprovalDecisionIn, principal: Caller) -> Any:
    """Approve (runs the action once) or reject. Nobody decides their own request (403)."""
    from charter.review import decide_approval

    rt = _rt(request)
    require_capability(rt, principal, "approvals", "decide approval requests")
    _visible_approval(rt, principal, approval_id)
    decided = decide_approval(rt, approval_id, principal, body.decision, reason=body.reason)
    if rt.spec.workflow.kind == "agent":  # the agent run that waits for it goes on, in the background
        from charter.server._app import resume_runs_soon

        resume_runs_soon(rt)
    return decided.to_dict()


# ------------------------------------------------------------------------------------------------ agent runs
@router.get("/api/runs", response_model=S.RunList, tags=["agent"])
def list_agent_runs(
    request: Request,
    principal: Caller,
    status: Annotated[str | None, Query(max_length=20)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> S.RunList:
    """Agent runs (``workflow.kind: agent``): your own, or everyone's with ``traces.read_all``. No task text."""
    from charter.agents import shown_run, visible_runs

    rt = _rt(request)
    require(rt, principal, "ask")
    runs = visible_runs(rt, principal, status=status, limit=limit)
    return S.RunList(items=[S.RunOut(**shown_run(r, principal)) for r in runs])


@router.get("/api/runs/{run_id}", response_model=S.RunOut, tags=["agent"])
def get_agent_run(request: Request, run_id: str, principal: Caller) -> S.RunOut:
    """One agent run's state (its final answer for the asker)."""
    from charter.agents import shown_run, visible_run

    rt = _rt(request)
    require(rt, principal, "ask")
    return S.RunOut(**shown_run(visible_run(rt, principal, run_id), principal))


@router.post("/api/runs/{run_id}/resume", response_model=S.AskOut, tags=["agent"])
def resume_agent_run(request: Request, run_id: str, principal: Caller) -> Any:
    """Continue a run whose approvals are decided, now (the server also does it by itself); 409 when there is
    nothing to do yet (an approval is open, another worker has it, or it has ended)."""
    from charter.agents import resume_run, visible_run

    rt = _rt(request)
    require(rt, principal, "ask")
    visible_run(rt, principal, run_id)
    result = resume_run(rt, run_id)
    if result is None:
        raise Conflict(f"agent run {run_id} cannot go on now (an approval is open, or it is not waiting)")
    return result.as_dict()


# ------------------------------------------------------------------------------------------------ tools
@router.get("/api/tools", response_model=S.ToolList, response_model_exclude_unset=True, tags=["tools"])
def list_tools(request: Request, principal: Caller) -> S.ToolList:
    """The charter's tools this principal may call, with effect, approval rule and kill switch."""
    from charter.tools import is_killed

    rt = _rt(request)
    require_capability(rt, principal, "tools", "call tools")
    items = []
    for t in rt.spec.tools:
        if not tool_callable(rt, principal, t.name):
            continue
        items.append(
            {
                "name": t.name,
                "description": t.description,
                "effect": t.effect,
                "approval": t.approval if isinstance(t.approval, str) else t.approval.model_dump(mode="json"),
                "killed": is_killed(rt, t.name),
            }
        )
    return S.ToolList.model_validate({"items": items})


@router.post(
    "/api/tools/{name}/calls", response_model=S.ActionOut, response_model_exclude_unset=True, tags=["tools"]
)
def call_tool(request: Request, name: str, body: S.ToolCallIn, principal: Caller) -> Any:
    """Propose a call: runs at once, or stores an approval request (Cedar ``tools.call``, charter rules)."""
    from charter.tools import propose

    rt = _rt(request)
    if name not in {t.name for t in rt.spec.tools}:
        raise NotFound(f"no tool {name!r}")
    return propose(
        rt, principal, name, body.args, request_id=body.request_id, origin="api", reason=body.reason
    ).to_dict()


# ------------------------------------------------------------------------------------------------ sources
@router.get("/api/sources", response_model=S.SourceList, response_model_exclude_unset=True, tags=["sources"])
def list_sources(request: Request, principal: Caller) -> S.SourceList:
    """Owners, freshness against policy, last sync, document counts (``sources.sync`` or a source owner)."""
    from charter.sources import source_statuses

    rt = _rt(request)
    require_capability(rt, principal, "sources", "see sources")
    return S.SourceList.model_validate({"items": source_statuses(rt)})


@router.post(
    "/api/sources/{source_id}/sync",
    response_model=S.SyncOut,
    response_model_exclude_unset=True,
    tags=["sources"],
)
def sync_source(request: Request, source_id: str, principal: Caller) -> Any:
    """Sync one source now (Cedar ``sources.sync`` on the source)."""
    from charter.sources import sync_sources

    rt = _rt(request)
    if source_id not in {s.id for s in rt.spec.sources}:
        raise NotFound(f"no source {source_id!r}")
    require(rt, principal, "sources.sync", f"source:{source_id}")
    summaries = sync_sources(rt, source_id, actor=principal.id)
    return {"sources": [s.as_dict() for s in summaries], "ok": all(s.ok for s in summaries)}


# ------------------------------------------------------------------------------------------------ reports
@router.get(
    "/api/reports", response_model=S.ReportOut, response_model_exclude_unset=True, tags=["monitoring"]
)
def report(
    request: Request,
    principal: Caller,
    since_days: Annotated[int, Query(ge=1, le=366)] = 7,
    min_support: Annotated[int, Query(ge=1, le=1000)] = 5,
) -> Any:
    """The operator report: usage, quality, cost, failures, source blame (Cedar ``reports.read``)."""
    import json

    rt = _rt(request)
    require(rt, principal, "reports.read")
    doc = build_report(rt, since=timedelta(days=since_days), min_support=min_support, principal=principal)
    return json.loads(json.dumps(doc, default=str))


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    tags=["monitoring"],
    responses={200: {"content": {"text/plain": {}}}},
)
def metrics(request: Request, principal: Caller) -> PlainTextResponse:
    """Prometheus metrics (a bearer token with ``reports.read`` or ``traces.read_all``)."""
    rt = _rt(request)
    require_any(rt, principal, ("reports.read", "traces.read_all"), "read metrics")
    return PlainTextResponse(metrics_for(rt).exposition(), media_type="text/plain; version=0.0.4")


# ------------------------------------------------------------------------------------------------ audit
@router.get("/api/audit/tail", response_model=S.AuditList, response_model_exclude_unset=True, tags=["audit"])
def audit_tail(
    request: Request,
    principal: Caller,
    n: Annotated[int, Query(ge=1, le=1000)] = 50,
    action: Annotated[str | None, Query(max_length=100)] = None,
) -> S.AuditList:
    """The most recent audit events (Cedar ``audit.read``)."""
    rt = _rt(request)
    require(rt, principal, "audit.read")
    return S.AuditList.model_validate({"items": [e.to_dict() for e in rt.audit.tail(n, action=action)]})


@router.post(
    "/api/audit/verify", response_model=S.AuditVerifyOut, response_model_exclude_unset=True, tags=["audit"]
)
def audit_verify(request: Request, principal: Caller) -> Any:
    """Recompute the hash chain and check the signed checkpoints (Cedar ``audit.read``)."""
    rt = _rt(request)
    require(rt, principal, "audit.read")
    return rt.audit.verify().to_dict()


# ------------------------------------------------------------------------------------------------ kill switch
@router.get(
    "/api/kill-switch",
    response_model=S.KillSwitchOut,
    response_model_exclude_unset=True,
    tags=["kill switch"],
)
def kill_switch(request: Request, principal: Caller) -> Any:
    from charter.tools import kill_switch_status

    rt = _rt(request)
    require_capability(rt, principal, "kill_switch", "see the kill switch")
    return kill_switch_status(rt)


@router.post(
    "/api/kill-switch",
    response_model=S.KillSwitchOut,
    response_model_exclude_unset=True,
    tags=["kill switch"],
)
def set_kill(request: Request, body: S.KillSwitchIn, principal: Caller) -> Any:
    """Turn the workflow's (or one tool's) kill switch on or off (``kill_switch`` or the incidents owner)."""
    from charter.tools import kill_switch_status, set_kill_switch

    rt = _rt(request)
    require_capability(rt, principal, "kill_switch", "operate the kill switch")
    set_kill_switch(rt, principal, body.on, tool=body.tool, reason=body.reason)
    return kill_switch_status(rt)
