"""The governed agent loop: a task carried out with tools over several model steps.

One step = one model call. The model sees the task, the passages the asker may read and every earlier
step (its tool calls and their results, as quoted data), and either asks for tool calls or answers.

* Every call is a **proposal** through :func:`charter.tools.propose` as the asking principal
  (``origin="model"``): tool list and forbidden actions, argument validation, Cedar, kill switches,
  preconditions, rate limits and approval rules all apply; a refusal is reported to the model as the call's
  result and the loop goes on. The model is offered only the tools Cedar lets the asker call.
* A call that needs an **approval pauses the run**: its state is saved (sealed) in ``agent_runs`` with
  status ``waiting``; :func:`resume_run` continues it once every approval it waits for is decided —
  approved (the action runs exactly once, through the same execution path), rejected or expired (reported
  to the model as refused). A restarted server picks waiting runs up (:func:`resume_ready`).
* **Limits**, checked between steps: ``agent.max_steps``, ``agent.max_duration`` (working time),
  ``budgets.per_task_usd`` over all the task's model calls (the gateway's ledger, keyed by the run id),
  ``agent.repeat_limit`` (the same call asked for again and again is a loop), the workflow kill switch.
  A run stopped by one ends ``stopped`` and goes to a human like any escalation.
* The **final answer is checked like any other** (:func:`charter.pipeline.check`): citations must refer to
  passages or tool results of this run, groundedness, canaries, instruction echoes, personal data, scope.
* **Every step is a span** (``step``) of the run's trace; a run that pauses writes one trace per segment
  (the first has the run's id as request id, later ones ``<run id>-r<N>``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import or_, select, update

from charter import _answer_checks as checks
from charter import pipeline
from charter.access import TOOL_SOURCE, DocRef, Reader, may_list_all_traces
from charter.documents import without_lone_surrogates
from charter.errors import BudgetExceeded, CharterException, Conflict, Denied, NotFound, UsageError
from charter.models import OUTBOUND, Passage, ToolCall, ToolOffer, ToolResult, Turn, evolve
from charter.retrieval import Hit
from charter.spec import Principal
from charter.store import sealer_for, utcnow
from charter.telemetry.traces import Trace, TraceStore
from charter.tools import (
    OPEN_STATES,
    agent_runs,
    canonical_args,
    execute,
    get_action,
    is_killed,
    propose,
    resolve_principal,
    tool_registry,
)

if TYPE_CHECKING:
    from charter.runtime import Runtime

RUN_STATES = ("running", "waiting", "completed", "stopped", "failed")
#: how long a process may work on a run without saving a step before another may take it over
MIN_LEASE = timedelta(minutes=5)
MAX_RESULT_CHARS = 8_000


@dataclass
class AgentRun:
    """A run as stored (task and state unsealed). ``state`` holds ``passages`` (citation id → hit fields),
    ``turns`` (the steps so far), ``waiting`` (approval ids) and ``calls`` (how often each call was asked)."""

    id: str
    workflow: str
    principal_id: str
    subject_id: str | None
    status: str
    task: str
    state: dict[str, Any]
    steps: int
    waiting_on: str | None
    stop_reason: str | None
    result: dict[str, Any] | None
    segments: int
    active_ms: float
    created_at: datetime
    updated_at: datetime
    lease_until: datetime | None
    version: int

    def summary(self) -> dict[str, Any]:
        """What a listing shows: no task text, no results."""
        return {
            "id": self.id,
            "workflow": self.workflow,
            "principal_id": self.principal_id,
            "status": self.status,
            "steps": self.steps,
            "waiting_on": list(self.state.get("waiting", [])),
            "stop_reason": self.stop_reason,
            "segments": self.segments,
            "active_ms": round(self.active_ms, 1),
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


@dataclass
class _Segment:
    """One process's stretch of work on a run (from start or resume to pause or end)."""

    run: AgentRun
    principal: Principal
    trace: Trace
    started: float
    records: list[dict[str, Any]] = field(default_factory=list)
    text: str = ""


# ------------------------------------------------------------------------------------------ storage
def _row_to_run(rt: Runtime, row: Any) -> AgentRun:
    sealer = sealer_for(rt)
    m = row._mapping
    return AgentRun(
        id=m["id"],
        workflow=m["workflow"],
        principal_id=m["principal_id"],
        subject_id=m["subject_id"],
        status=m["status"],
        task=sealer.open_json(m["task"]),
        state=sealer.open_json(m["state"]),
        steps=m["steps"],
        waiting_on=m["waiting_on"],
        stop_reason=m["stop_reason"],
        result=sealer.open_json(m["result"]) if m["result"] is not None else None,
        segments=m["segments"],
        active_ms=m["active_ms"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        lease_until=m["lease_until"],
        version=m["version"],
    )


def get_run(rt: Runtime, run_id: str) -> AgentRun:
    """The run with this id; :class:`NotFound` if there is none (or it belongs to another workflow)."""
    with rt.store.connect() as conn:
        row = conn.execute(
            select(agent_runs).where(agent_runs.c.id == run_id, agent_runs.c.workflow == rt.spec.workflow.id)
        ).first()
    if row is None:
        raise NotFound(f"no agent run {run_id!r}")
    return _row_to_run(rt, row)


def visible_run(rt: Runtime, principal: Principal, run_id: str) -> AgentRun:
    """The run, for its asker or a principal who may read every trace (``traces.read_all``); anyone else gets
    :class:`NotFound`, as for a run that does not exist. Every front end reads runs through this rule."""
    run = get_run(rt, run_id)
    if run.principal_id != principal.id and not may_list_all_traces(rt, principal):
        raise NotFound(f"no agent run {run_id!r}")
    return run


def shown_run(run: AgentRun, principal: Principal) -> dict[str, Any]:
    """A run as ``principal`` may see it: the state for anyone it is visible to, the final answer (which may
    quote documents and tool results only the asker may read) for its asker alone."""
    return {**run.summary(), "result": run.result if run.principal_id == principal.id else None}


def visible_runs(
    rt: Runtime, principal: Principal, *, status: str | None = None, limit: int = 100
) -> list[AgentRun]:
    """The runs ``principal`` may see: everyone's with ``traces.read_all``, else their own."""
    mine = None if may_list_all_traces(rt, principal) else principal.id
    return list_runs(rt, status=status, principal_id=mine, limit=limit)


def list_runs(
    rt: Runtime, *, status: str | None = None, principal_id: str | None = None, limit: int = 100
) -> list[AgentRun]:
    """Runs of this workflow, newest first, optionally by status and by asker."""
    query = select(agent_runs).where(agent_runs.c.workflow == rt.spec.workflow.id)
    if status is not None:
        if status not in RUN_STATES:
            raise UsageError(f"status must be one of {', '.join(RUN_STATES)}")
        query = query.where(agent_runs.c.status == status)
    if principal_id is not None:
        query = query.where(agent_runs.c.principal_id == principal_id)
    with rt.store.connect() as conn:
        rows = conn.execute(query.order_by(agent_runs.c.created_at.desc()).limit(limit)).all()
    return [_row_to_run(rt, r) for r in rows]


def _lease(rt: Runtime) -> timedelta:
    longest: timedelta = rt.spec.agent.max_duration * 2
    return max(MIN_LEASE, longest)


def _insert(rt: Runtime, run: AgentRun) -> None:
    sealer = sealer_for(rt)
    with rt.store.begin() as conn:
        conn.execute(
            agent_runs.insert().values(
                id=run.id,
                workflow=run.workflow,
                principal_id=run.principal_id,
                subject_id=run.subject_id,
                status=run.status,
                task=sealer.seal_json(run.task),
                state=sealer.seal_json(run.state),
                steps=run.steps,
                waiting_on=run.waiting_on,
                stop_reason=run.stop_reason,
                result=None,
                segments=run.segments,
                active_ms=run.active_ms,
                created_at=run.created_at,
                updated_at=run.updated_at,
                lease_until=run.lease_until,
                version=run.version,
            )
        )


def _save(rt: Runtime, run: AgentRun, *, keep_lease: bool = True) -> None:
    """Store the run's progress (optimistic concurrency): :class:`Conflict` when another process saved it
    since it was read — this process must then stop working on it."""
    sealer = sealer_for(rt)
    now = utcnow()
    lease = now + _lease(rt) if keep_lease and run.status == "running" else None
    with rt.store.begin() as conn:
        done = conn.execute(
            update(agent_runs)
            .where(agent_runs.c.id == run.id, agent_runs.c.version == run.version)
            .values(
                status=run.status,
                state=sealer.seal_json(run.state),
                steps=run.steps,
                waiting_on=run.waiting_on,
                stop_reason=run.stop_reason,
                result=sealer.seal_json(run.result) if run.result is not None else None,
                segments=run.segments,
                active_ms=run.active_ms,
                updated_at=now,
                lease_until=lease,
                version=run.version + 1,
            )
        ).rowcount
    if done != 1:
        raise Conflict(f"agent run {run.id} was changed by another process; this one stops working on it")
    run.version += 1
    run.updated_at, run.lease_until = now, lease


def _claim(rt: Runtime, run: AgentRun) -> bool:
    """Move a waiting run (or a running one whose worker's lease ran out) to ``running`` for this process."""
    now = utcnow()
    with rt.store.begin() as conn:
        done = conn.execute(
            update(agent_runs)
            .where(
                agent_runs.c.id == run.id,
                agent_runs.c.version == run.version,
                or_(
                    agent_runs.c.status == "waiting",
                    (agent_runs.c.status == "running") & (agent_runs.c.lease_until < now),
                ),
            )
            .values(status="running", lease_until=now + _lease(rt), updated_at=now, version=run.version + 1)
        ).rowcount
    if done == 1:
        run.status, run.version, run.lease_until = "running", run.version + 1, now + _lease(rt)
    return done == 1


# ------------------------------------------------------------------------------------------ start
def run_task(
    rt: Runtime,
    principal: Principal,
    task: str,
    *,
    trace_store: TraceStore | None = None,
    subject_id: str | None = None,
    submit_for_review: bool = True,
) -> pipeline.AskResult:
    """Start an ``agent`` task and work on it until it answers, pauses for an approval or is stopped.

    Admission is :func:`charter.pipeline.admit` (Cedar ``ask``, kill switch, input limits); the passages are
    :func:`charter.pipeline.retrieve`'s (the asker's permitted chunks). Returns the same
    :class:`~charter.pipeline.AskResult` as ``ask``, with ``run_id`` and ``run_status`` set."""
    t0 = time.perf_counter()
    task = without_lone_surrogates(task) if isinstance(task, str) else task
    spec = rt.spec
    trace = Trace(
        workflow=spec.workflow.id,
        principal_id=principal.id,
        question=str(task),
        charter_fingerprint=rt.fingerprint,
    )
    store = trace_store or pipeline.traces_for(rt)
    try:
        if spec.workflow.kind != "agent":
            raise UsageError(
                f"workflow {spec.workflow.id} is a{'n' if spec.workflow.kind == 'answer' else ''} "
                f"{spec.workflow.kind!r} workflow; use charter.pipeline.ask (the agent loop runs "
                "workflow.kind: agent)"
            )
        state = pipeline.read_request_state(rt)
        q = pipeline.admit(rt, principal, task, trace, state)
        pipeline.gateway_for(rt)  # unapproved prompts refuse the task before it starts
        hits, warnings = pipeline.retrieve(rt, principal, q, trace, state) if spec.sources else ([], [])
    except (Denied, UsageError) as exc:
        pipeline.record_failure(trace, store, exc, t0, "refused")
        raise
    now = utcnow()
    run = AgentRun(
        id=trace.request_id,
        workflow=spec.workflow.id,
        principal_id=principal.id,
        subject_id=subject_id,
        status="running",
        task=q,
        state={
            "passages": {f"S{i}": _hit_fields(h) for i, h in enumerate(hits, 1)},
            "turns": [],
            "waiting": [],
            "calls": {},
            "warnings": warnings,
        },
        steps=0,
        waiting_on=None,
        stop_reason=None,
        result=None,
        segments=0,
        active_ms=0.0,
        created_at=now,
        updated_at=now,
        lease_until=now + _lease(rt),
        version=0,
    )
    _insert(rt, run)
    seg = _Segment(run=run, principal=principal, trace=trace, started=t0)
    return _work(rt, seg, store, submit_for_review=submit_for_review)


# ------------------------------------------------------------------------------------------ resume
def resume_run(
    rt: Runtime, run_id: str, *, trace_store: TraceStore | None = None, submit_for_review: bool = True
) -> pipeline.AskResult | None:
    """Continue a waiting run whose approvals are all decided (or a running one whose worker died: its lease
    ran out). Returns ``None`` when there is nothing to do yet (an approval is still open, another process
    holds the run, or it has ended). The asker is re-admitted with their *current* rights, and the stored
    passages are re-checked against their documents' current ACLs before the model sees them again."""
    run = get_run(rt, run_id)
    dead_worker = run.status == "running" and run.lease_until is not None and run.lease_until < utcnow()
    if run.status != "waiting" and not dead_worker:
        return None
    if any(get_action(rt, a).status in OPEN_STATES for a in run.state.get("waiting", [])):
        if dead_worker and _claim(rt, run):  # the dead worker's run waits again, for its open approvals
            run.status, run.waiting_on = "waiting", run.state["waiting"][0]
            _save(rt, run, keep_lease=False)
        return None  # an approval it waits for is still open
    if not _claim(rt, run):
        return None
    t0 = time.perf_counter()
    run.segments += 1
    trace = Trace(
        request_id=f"{run.id}-r{run.segments}",
        workflow=run.workflow,
        principal_id=run.principal_id,
        question=run.task,
        charter_fingerprint=rt.fingerprint,
    )
    store = trace_store or pipeline.traces_for(rt)
    try:
        principal = resolve_principal(rt, run.principal_id)
        pipeline.admit(rt, principal, run.task, trace)
    except (Denied, UsageError) as exc:
        pipeline.record_failure(trace, store, exc, t0, "refused")
        run.status, run.stop_reason = "stopped", f"refused on resume: {exc}"
        _save(rt, run)
        return None
    seg = _Segment(run=run, principal=principal, trace=trace, started=t0)
    passages = run.state["passages"]
    if passages:
        reader = Reader(rt, principal)
        refs = {cid: DocRef(p["source_id"], p["doc_id"]) for cid, p in passages.items()}
        reader.load(refs.values())
        for cid, ref in refs.items():
            if not reader.may_read(ref):
                passages[cid] = {
                    **passages[cid],
                    "text": "(no longer readable by the asker)",
                    "revoked": True,
                }
    with trace.span("resume") as span:
        outcomes = []
        for action_id in run.state.get("waiting", []):
            outcome = _outcome(rt, action_id, principal, run)
            _patch_result(run, action_id, outcome)
            outcomes.append({"action_id": action_id, "decision": outcome["decision"]})
            seg.records.append(
                {"name": outcome.get("tool"), "action_id": action_id, "decision": outcome["decision"]}
            )
        span.update(run_id=run.id, segment=run.segments, decided=outcomes)
    run.state["waiting"], run.waiting_on = [], None
    return _work(rt, seg, store, submit_for_review=submit_for_review)


def resume_ready(rt: Runtime, *, limit: int = 50) -> list[str]:
    """Resume every run of this workflow that can go on (approvals decided; dead worker). Returns the ids of
    the runs this call advanced. Called by the server's tick loop and after each approval decision, so a
    run survives a restart; ``charter agent resume`` does it from the command line."""
    now = utcnow()
    with rt.store.connect() as conn:
        ids = [
            r[0]
            for r in conn.execute(
                select(agent_runs.c.id)
                .where(
                    agent_runs.c.workflow == rt.spec.workflow.id,
                    or_(
                        agent_runs.c.status == "waiting",
                        (agent_runs.c.status == "running") & (agent_runs.c.lease_until < now),
                    ),
                )
                .order_by(agent_runs.c.updated_at)
                .limit(limit)
            ).all()
        ]
    advanced = []
    for run_id in ids:
        try:
            if resume_run(rt, run_id) is not None:
                advanced.append(run_id)
        except Conflict:
            continue  # another process took it
    return advanced


# ------------------------------------------------------------------------------------------ the loop
def _work(rt: Runtime, seg: _Segment, store: TraceStore, *, submit_for_review: bool) -> pipeline.AskResult:
    """Step until the model answers, a call waits for an approval, or a limit stops the run."""
    run, trace, principal = seg.run, seg.trace, seg.principal
    final: pipeline.CheckedDraft | None = None
    try:
        gateway = pipeline.gateway_for(rt)
        offers = _offers(rt, principal)
        while _step(rt, seg, gateway, offers):
            if run.state["waiting"]:
                run.status, run.waiting_on = "waiting", run.state["waiting"][0]
                break
            _save(rt, run)  # progress is durable after every step
        if run.status == "running":  # the model answered: checked like any other answer
            hits, audience = _check_inputs(rt, run)
            final = pipeline.check(rt, principal, run.task, seg.text, hits, audience, trace)
            run.status = "completed"
    except CharterException as exc:
        run.status, run.stop_reason = "failed", f"{type(exc).__name__}: {exc}"
        trace.errors.append(
            {"type": type(exc).__name__, "message": str(exc), "stage": pipeline.last_stage(trace)}
        )
    checked = final if final is not None else _unfinished(rt, run, principal)
    result = checked.result(
        trace.request_id,
        model=trace.model,
        prompt_version=trace.prompt_version,
        input_tokens=trace.input_tokens,
        output_tokens=trace.output_tokens,
        cost_usd=trace.cost_usd,
        warnings=list(run.state.get("warnings", [])),
        tool_calls=[{k: v for k, v in r.items() if k != "raw"} for r in seg.records],
        run_id=run.id,
        run_status=run.status,
    )
    run.active_ms += (time.perf_counter() - seg.started) * 1000
    review_id = _record(rt, seg, result, submit_for_review=submit_for_review)
    trace.latency_ms = (time.perf_counter() - seg.started) * 1000
    store.write(trace)
    return replace(
        result,
        review_id=review_id,
        latency_ms={**trace.stage_latency_ms, "total": round(trace.latency_ms, 3)},
    )


def _step(rt: Runtime, seg: _Segment, gateway: Any, offers: tuple[ToolOffer, ...]) -> bool:
    """One step of the run: the model's turn and its proposed calls. ``False`` when the run stops stepping
    (a limit, the budget, a final answer, a loop)."""
    run, trace, principal = seg.run, seg.trace, seg.principal
    limits = rt.spec.agent
    stop = _limit_reached(rt, seg)
    if stop is not None:
        run.status, run.stop_reason = "stopped", stop
        return False
    with trace.span("step", step=run.steps + 1) as span:
        request = gateway.build_request(run.task, _passages(run), sender_name=principal.name)
        request = evolve(request, {"tools": offers, "turns": _turns(run)})
        try:
            gen = gateway.generate(request, request_id=run.id, principal=principal)
        except BudgetExceeded as exc:
            span.update(budget=str(exc))
            run.status, run.stop_reason = "stopped", f"budget: {exc}"
            return False
        calls = list(gen.tool_calls) or _markup_calls(gen.text)
        trace.model, trace.provider, trace.prompt_version = gen.model, gen.provider, gen.prompt_version
        trace.input_tokens += gen.input_tokens or 0
        trace.output_tokens += gen.output_tokens or 0
        trace.cost_usd += gen.cost_usd
        trace.usage_source, trace.cost_source = gen.usage_source, gen.cost_source
        span.update(
            run_id=run.id,
            model=gen.model,
            input_tokens=gen.input_tokens,
            output_tokens=gen.output_tokens,
            cost_usd=gen.cost_usd,
            calls=[c.name for c in calls],
        )
        run.steps += 1
        if not calls:
            seg.text = gen.text
            run.state["turns"].append({"text": gen.text, "calls": [], "results": []})
            span["final"] = True
            return False
        looped = _propose_all(rt, seg, gen.text, calls[: limits.max_calls_per_step], span)
        if len(calls) > limits.max_calls_per_step:
            seg.records.append(
                {"decision": "refused", "reason": f"more than {limits.max_calls_per_step} calls in a step"}
            )
        if looped is not None:
            run.status, run.stop_reason = "stopped", looped
            _save(rt, run)
            return False
    return True


def _record(rt: Runtime, seg: _Segment, result: pipeline.AskResult, *, submit_for_review: bool) -> str | None:
    """The record stage of a segment: the review (when the draft needs one; its id returned), the outcome
    on the trace, and the run saved with its lease released."""
    run, trace = seg.run, seg.trace
    review_id: str | None = None
    with trace.span("record") as span:
        if submit_for_review and run.status != "waiting" and pipeline.needs_review(rt, result, False):
            review_id = pipeline.submit_review(rt, seg.principal, run.task, result, run.subject_id)
            span["review_id"] = review_id
        trace.status = "error" if run.status == "failed" else result.status  # type: ignore[assignment]
        trace.answer, trace.agent_notes = result.draft, result.agent_notes or None
        trace.citations = [c.as_dict() for c in result.citations]
        trace.groundedness, trace.escalation = result.groundedness, result.escalation
        trace.tool_calls = seg.records
        span.update(run_id=run.id, run_status=run.status, steps=run.steps)
        if run.status in ("completed", "stopped", "failed"):
            run.result = {"status": result.status, "draft": result.draft, "escalation": result.escalation}
        try:
            _save(rt, run, keep_lease=False)
        except Conflict as exc:
            trace.errors.append({"type": "Conflict", "message": str(exc), "stage": "record"})
    return review_id


def _limit_reached(rt: Runtime, seg: _Segment) -> str | None:
    """Why the run may not take another step, or ``None``: kill switch, step limit, working time."""
    run, limits = seg.run, rt.spec.agent
    if is_killed(rt):
        return "killed: the workflow's kill switch is on"
    if run.steps >= limits.max_steps:
        return f"step_limit: {run.steps} steps (agent.max_steps {limits.max_steps})"
    worked = run.active_ms / 1000 + (time.perf_counter() - seg.started)
    if worked > limits.max_duration.total_seconds():
        return f"time_limit: worked {worked:.1f} s (agent.max_duration {limits.max_duration.total_seconds():g} s)"
    return None


def _propose_all(
    rt: Runtime, seg: _Segment, text: str, calls: list[ToolCall], span: dict[str, Any]
) -> str | None:
    """Propose each call as the asker; record the results (quoted later). Returns a stop reason when a call
    repeats past ``agent.repeat_limit``."""
    run = seg.run
    results: list[dict[str, Any]] = []
    decisions = []
    stop: str | None = None
    for call in calls:
        record: dict[str, Any] = {"name": call.name, "call_id": call.id}
        content: str
        try:
            args = json.loads(call.arguments or "{}")
            key = f"{call.name}:{canonical_args(args)}"
        except (ValueError, UsageError):
            args, key = None, f"{call.name}:{call.arguments!r}"
        seen = run.state["calls"].get(key, 0) + 1
        run.state["calls"][key] = seen
        if seen > rt.spec.agent.repeat_limit:
            record.update(decision="refused", reason="loop: the same call again")
            content = "refused: this exact call was already made; it is not repeated"
            stop = f"loop_detected: {call.name} asked for {seen} times with the same arguments"
        elif args is None:
            record.update(decision="refused", reason="arguments are not valid JSON")
            content = "refused: the arguments are not valid JSON"
        else:
            try:
                proposal = propose(
                    rt,
                    seg.principal,
                    call.name,
                    args,
                    request_id=run.id,
                    origin="model",
                    reason=f"agent run {run.id}, step {run.steps}",
                    subject_id=run.subject_id,
                )
                action = proposal.action
                record.update(decision=action.status, action_id=action.id)
                if action.status in OPEN_STATES:
                    run.state["waiting"].append(action.id)
                    content = (
                        f"waiting for approval by {action.assigned_role or 'a human'} (approval {action.id})"
                    )
                else:
                    content = _action_content(action)
            except CharterException as exc:
                record.update(decision="refused", reason=str(exc), reasons=list(getattr(exc, "reasons", [])))
                content = f"refused: {exc}"
        cite = _next_citation(run)
        results.append(
            {
                "call_id": call.id,
                "content": content[:MAX_RESULT_CHARS],
                "citation": cite,
                "action_id": record.get("action_id"),
                "tool": call.name,
            }
        )
        seg.records.append(record)
        decisions.append(record["decision"])
        if stop:
            break
    run.state["turns"].append(
        {"text": text, "calls": [c.__dict__ for c in calls[: len(results)]], "results": results}
    )
    span.update(decisions=decisions)
    return stop


def _action_content(action: Any) -> str:
    if action.status == "executed":
        return "result: " + json.dumps(action.result, ensure_ascii=False, default=str)
    if action.status == "failed":
        return f"failed: {action.error}"
    if action.status == "rejected":
        return f"refused: the approver rejected the call ({action.decision_reason})"
    if action.status == "expired":
        return "refused: the approval request expired"
    return f"{action.status}"


def _outcome(rt: Runtime, action_id: str, principal: Principal, run: AgentRun) -> dict[str, Any]:
    """What became of an approval the run waited for; an approved call that has not run yet runs now
    (through :func:`charter.tools.execute`: exactly once, re-checked)."""
    action = get_action(rt, action_id)
    if action.status == "approved":
        try:
            action = execute(rt, action.id, actor=principal.id, subject_id=run.subject_id)
        except CharterException as exc:
            return {"decision": "refused", "tool": action.tool, "content": f"refused: {exc}"}
    return {"decision": action.status, "tool": action.tool, "content": _action_content(action)}


def _patch_result(run: AgentRun, action_id: str, outcome: dict[str, Any]) -> None:
    for turn in run.state["turns"]:
        for r in turn["results"]:
            if r.get("action_id") == action_id:
                r["content"] = outcome["content"][:MAX_RESULT_CHARS]


def _next_citation(run: AgentRun) -> str:
    used = len(run.state["passages"]) + sum(len(t["results"]) for t in run.state["turns"])
    return f"S{used + 1}"


def _markup_calls(text: str) -> list[ToolCall]:
    """Tool calls written as ``<tool_call>{"name": …, "arguments": {…}}</tool_call>`` (providers without
    native tool calling). Unparseable markup becomes a call with invalid arguments, refused and reported."""
    out = []
    for i, raw in enumerate(pipeline.TOOL_CALL.findall(checks.normalise(text)), 1):
        try:
            payload = json.loads(raw)
        except ValueError:
            out.append(ToolCall(id=f"m{i}", name="?", arguments=raw[:2000]))
            continue
        if not isinstance(payload, dict) or not isinstance(payload.get("name"), str):
            out.append(ToolCall(id=f"m{i}", name="?", arguments=raw[:2000]))
            continue
        args = payload.get("arguments", payload.get("args", {}))
        out.append(ToolCall(id=f"m{i}", name=payload["name"], arguments=json.dumps(args)))
    return out


# ------------------------------------------------------------------------------------------ requests
def _offers(rt: Runtime, principal: Principal) -> tuple[ToolOffer, ...]:
    """The tools offered to the model: those of the charter Cedar lets the asker call (least privilege)."""
    registry = tool_registry(rt)
    offers = []
    for reg in registry:
        if not rt.authorizer.authorize(principal, "tools.call", f"tool:{reg.name}", {"args": {}}).allowed:
            continue
        offers.append(
            ToolOffer(
                name=reg.name,
                description=reg.shown_description(),
                parameters=json.dumps(reg.json_schema(), sort_keys=True),
            )
        )
    return tuple(offers)


def _hit_fields(h: Hit) -> dict[str, Any]:
    return {
        "chunk_id": h.chunk_id,
        "source_id": h.source_id,
        "doc_id": h.doc_id,
        "title": h.title,
        "heading": h.heading,
        "page": h.page,
        "position": h.position,
        "text": h.text,
        "url": h.url,
    }


def _passages(run: AgentRun) -> list[Any]:
    return [
        Passage(
            id=cid,
            text=p["text"],
            title=p["title"],
            heading=p["heading"],
            audience=OUTBOUND,
            source_id=p["source_id"],
            chunk_id=p["chunk_id"],
            url=p.get("url") or "",
        )
        for cid, p in run.state["passages"].items()
    ]


def _turns(run: AgentRun) -> tuple[Turn, ...]:
    return tuple(
        Turn(
            text=t["text"],
            calls=tuple(ToolCall(**c) for c in t["calls"]),
            results=tuple(
                ToolResult(call_id=r["call_id"], content=r["content"], citation=r["citation"])
                for r in t["results"]
            ),
        )
        for t in run.state["turns"]
    )


def _check_inputs(rt: Runtime, run: AgentRun) -> tuple[dict[str, Hit], dict[str, str]]:
    """What the final answer may cite: the run's passages and every tool result (as a quoted source)."""
    hits: dict[str, Hit] = {}
    for cid, p in run.state["passages"].items():
        if p.get("revoked"):
            continue
        hits[cid] = _hit(p, cid)
    for turn in run.state["turns"]:
        for r in turn["results"]:
            hits[r["citation"]] = _hit(
                {
                    "chunk_id": f"{TOOL_SOURCE}{r.get('tool') or '?'}#{r.get('action_id') or r['call_id']}",
                    "source_id": f"{TOOL_SOURCE}{r.get('tool') or '?'}",
                    "doc_id": str(r.get("action_id") or r["call_id"]),
                    "title": f"result of {r.get('tool') or '?'}",
                    "heading": "",
                    "page": None,
                    "position": 0,
                    "text": r["content"],
                    "url": None,
                },
                r["citation"],
            )
    return hits, dict.fromkeys(hits, OUTBOUND)


def _hit(p: dict[str, Any], cid: str) -> Hit:
    return Hit(
        chunk_id=p["chunk_id"],
        source_id=p["source_id"],
        doc_id=p["doc_id"],
        title=p["title"],
        heading=p["heading"],
        page=p["page"],
        position=p["position"],
        text=p["text"],
        score=0.0,
        bm25=0.0,
        bm25_norm=0.0,
        dense=0.0,
        dense_norm=0.0,
        rank=int(cid[1:]) if cid[1:].isdigit() else 0,
        acl_reason=(),
        url=p.get("url"),
    )


def _unfinished(rt: Runtime, run: AgentRun, principal: Principal) -> pipeline.CheckedDraft:
    """The outcome of a run that did not answer: waiting for approvals, stopped by a limit, or failed."""
    escalation: dict[str, Any]
    if run.status == "waiting":
        text = "This task is waiting for an approval; it continues when the approval is decided."
        escalation = {"reason": "approval_pending", "to": None, "sla": None, "then": None}
        escalation["approvals"] = list(run.state["waiting"])
    else:
        text = "This task was stopped before it finished and has been routed to a colleague."
        escalation = pipeline.escalation_target(rt, "agent_stopped", principal)
        escalation["stop"] = "failed" if run.status == "failed" else (run.stop_reason or "").split(":", 1)[0]
        escalation["detail"] = run.stop_reason
    return pipeline.CheckedDraft(
        status="needs_human",
        draft=text,
        agent_notes="",
        citations=[],
        groundedness=None,
        escalation=escalation,
        removed_citations=0,
        sentence_scores=[],
    )


def respond(
    rt: Runtime,
    principal: Principal,
    text: str,
    *,
    trace_store: TraceStore | None = None,
    submit_for_review: bool = True,
    subject_id: str | None = None,
) -> pipeline.AskResult:
    """One input to the workflow, whatever its kind: an ``agent`` task runs in the loop (:func:`run_task`),
    a question of an ``answer`` or ``draft`` workflow goes through :func:`charter.pipeline.ask`. Every front
    end (CLI, REST, OpenAI-compatible endpoint, MCP, evals) calls this one function."""
    run = run_task if rt.spec.workflow.kind == "agent" else pipeline.ask
    return run(
        rt,
        principal,
        text,
        trace_store=trace_store,
        submit_for_review=submit_for_review,
        subject_id=subject_id,
    )
