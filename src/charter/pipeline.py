"""The request flow, stage by stage: identify → admit → retrieve → generate → check → act → record.

Each stage is a plain function call and writes what it did into the request's :class:`Trace`. The caller
identifies the principal (token, OIDC or the CLI's ``--as``) and calls :func:`ask`.

Decisions that matter for security are made here in code, never by the model:

* admission (Cedar ``ask`` on the workflow, kill switch, input limits, budget reservation in the gateway);
* what the model sees: only chunks the principal may read, re-checked against the document's *current*
  ACL, from sources allowed in prompts and fresh enough, passed as quoted data with citation ids;
* what the user sees: citations must refer to passages retrieved for this request (others are removed and
  counted); in a ``draft`` workflow, sentences citing internal-only sources move from the outbound draft to
  internal notes (an ``answer`` workflow's output goes to the asker, who may see every passage they may
  read); canary tokens withhold the whole output; escalation rules — the workflow's, with the asker's role
  overrides (:meth:`Charter.scope_for`) — mark the result ``needs_human`` instead of presenting it.

The workflow kind (``workflow.kind``) decides who the output is for (:attr:`Charter.output_to_asker`);
``agent`` workflows run several steps in :mod:`charter.agents`, which reuses these stages (admit, retrieve,
check, record); :func:`ask` refuses them with a pointer there.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Any

from charter import _answer_checks as checks
from charter.access import safe_url
from charter.canaries import canaries_for
from charter.documents import without_lone_surrogates
from charter.errors import CharterException, Denied, UsageError
from charter.models import INTERNAL, Passage, audience_for, split_draft, tone_parts
from charter.spec import Principal
from charter.store import state, utcnow
from charter.store.switches import KILL_SWITCH_KEY, RESTRICTED_KEY, switch_on
from charter.store.tables import source_state, versions
from charter.telemetry import masker_for, trace_store_for
from charter.telemetry.traces import Trace, TraceStore

if TYPE_CHECKING:
    from charter.models import Generation, GenerationRequest
    from charter.retrieval import Hit
    from charter.runtime import Runtime

NO_ANSWER = "I can't answer this from the knowledge base; I've routed it to a colleague."
WITHHELD = "This draft was withheld by a safety check and routed to a human."
OUT_OF_SCOPE = "This question is outside what this assistant may answer; it has been routed to a colleague."


@dataclass
class Citation:
    id: str
    chunk_id: str
    source_id: str
    doc_id: str
    title: str
    heading: str
    url: str | None
    page: int | None
    audience: str  # "outbound" (the draft) | "internal" (internal notes) | "asker" (answer workflows)

    def as_dict(self) -> dict[str, Any]:
        """Every field is a scalar: a shallow copy (``dataclasses.asdict`` deep-copies, ~10× slower)."""
        return dict(self.__dict__)


@dataclass
class AskResult:
    """What the caller (CLI, API, eval) gets back. Only content the principal may read."""

    request_id: str
    status: str  # answered | needs_human | refused | error
    draft: str
    agent_notes: str
    citations: list[Citation]
    groundedness: float | None
    escalation: dict[str, Any] | None
    model: str | None
    prompt_version: str | None
    input_tokens: int
    output_tokens: int
    cost_usd: float
    latency_ms: dict[str, float]
    removed_citations: int = 0
    warnings: list[str] = field(default_factory=list)
    review_id: str | None = None
    sentence_scores: list[dict[str, Any]] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    #: ``agent`` workflows (``charter.agents``): the run and its state (running, waiting, completed, stopped)
    run_id: str | None = None
    run_status: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RequestState:
    """The mutable workflow state one request depends on, read once, in one statement, when it is
    admitted: the kill switch, restricted mode, each source's last successful sync and the index version
    (the search reuses its counters to check that its in-memory snapshot is current).

    Nothing here is cached across requests — turning the kill switch on stops the very next request."""

    killed: bool
    restricted: bool
    last_syncs: dict[str, datetime]
    index_version: str
    index_counters: tuple[int, int] | None = None  # (content, acl) counters, None when never indexed
    acl_syncs: dict[str, datetime] = field(default_factory=dict)  # last full or --acl-only sync


@cache
def _state_query() -> Any:
    """Switches, last successful syncs and index versions as one ``UNION ALL`` (built once). Each part fills
    its own typed columns, so the driver's results are converted exactly as a per-table read would be."""
    from sqlalchemy import BigInteger, String, cast, literal, null, or_, select, union_all

    def typed_null(column: Any) -> Any:
        return cast(null(), column.type)

    return union_all(
        select(
            literal("switch").label("kind"),
            state.c.key.label("name"),
            state.c.value.label("value"),
            typed_null(source_state.c.last_success_at).label("at"),
            cast(null(), BigInteger).label("counter"),
            cast(null(), String).label("stamp"),
        ).where(or_(state.c.key == KILL_SWITCH_KEY, state.c.key == RESTRICTED_KEY)),  # no expanding IN
        select(
            literal("sync"),
            source_state.c.source_id,
            null(),
            source_state.c.last_success_at,
            null(),
            null(),
        ).where(source_state.c.last_success_at.is_not(None)),
        select(
            literal("aclsync"),
            source_state.c.source_id,
            null(),
            source_state.c.acl_synced_at,
            null(),
            null(),
        ).where(source_state.c.acl_synced_at.is_not(None)),
        select(literal("version"), versions.c.name, null(), null(), versions.c.counter, versions.c.stamp),
    )


def read_request_state(rt: Runtime) -> RequestState:
    """One statement on one connection (see :func:`_state_query`)."""
    from charter.retrieval import Index

    switches: dict[str, Any] = {}
    syncs: dict[str, datetime] = {}
    acl_syncs: dict[str, datetime] = {}
    counters: dict[str, tuple[int, str]] = {}
    for kind, name, value, at, counter, stamp in rt.store.read_constant(_state_query()):
        if kind == "switch":
            switches[name] = value
        elif kind == "sync":
            syncs[name] = at
        elif kind == "aclsync":
            acl_syncs[name] = at
        else:
            counters[name] = (int(counter), stamp)
    c, a = counters.get("content"), counters.get("acl")
    return RequestState(
        killed=switch_on(switches.get(KILL_SWITCH_KEY)),
        restricted=switch_on(switches.get(RESTRICTED_KEY)),
        last_syncs=syncs,
        index_version=Index.format_version(c, a),
        index_counters=None if c is None or a is None else (c[0], a[0]),
        acl_syncs=acl_syncs,
    )


# ------------------------------------------------------------------------------------------------ stages
def admit(
    rt: Runtime, principal: Principal, question: str, trace: Trace, state: RequestState | None = None
) -> str:
    """Cedar decision, kill switch and input limits. Returns the normalised question."""
    with trace.span("admit") as span:
        if not principal.active:
            raise Denied(f"user {principal.id!r} is not active", reasons=["inactive principal"])
        decision = rt.authorizer.authorize(principal, "ask", _workflow_resource(rt))
        span["policy"] = {"allowed": decision.allowed, "policies": list(decision.policy_ids)}
        if not decision.allowed:
            rt.audit.append(
                actor=principal.id,
                action="ask.denied",
                resource=_workflow_resource(rt),
                outcome="denied",
                details={"reasons": list(decision.reasons), "request_id": trace.request_id},
            )
            raise Denied(
                f"{principal.id} may not use workflow {rt.spec.workflow.id}", reasons=list(decision.reasons)
            )
        if (state or read_request_state(rt)).killed:
            span["kill_switch"] = True
            raise Denied(
                f"workflow {rt.spec.workflow.id} is switched off (kill switch)", reasons=["kill switch on"]
            )
        if not isinstance(question, str):
            raise UsageError("question must be text")
        if "\x00" in question:
            raise UsageError("question contains NUL bytes")
        q = question.strip()
        if not q:
            raise UsageError("question is empty")
        limit = rt.spec.limits.max_question_chars
        if len(q) > limit:
            raise UsageError(f"question is {len(q)} characters; the limit is {limit}")
        span["question_chars"] = len(q)
        return q


def _workflow_resource(rt: Runtime) -> str:
    return f"workflow:{rt.spec.workflow.id}"


def retrieve(
    rt: Runtime, principal: Principal, question: str, trace: Trace, state: RequestState | None = None
) -> tuple[list[Hit], list[str]]:
    """Permission-filtered hybrid search (every returned chunk re-checked against its document's current ACL
    in the store, see :meth:`Index.search`), with the prompt and freshness rules."""
    from charter.retrieval import Index

    warnings: list[str] = []
    spec = rt.spec
    index = Index.for_runtime(rt)
    tokens = principal.acl_tokens
    state = state or read_request_state(rt)
    with trace.span("retrieve") as span:
        allowed_sources = {s.id for s in spec.sources if s.allowed_in_prompts}
        ages = state.last_syncs
        now = utcnow()
        excluded_stale: set[str] = set()
        for s in spec.sources:
            synced = ages.get(s.id)
            if s.id in allowed_sources and (synced is None or now - synced > s.freshness.max_age):
                if s.freshness.on_stale == "exclude":
                    excluded_stale.add(s.id)
                else:
                    warnings.append(f"source {s.id} is stale (last sync {synced or 'never'})")
            acl_synced = state.acl_syncs.get(s.id) or synced
            acl_max_age = s.freshness.acl_max_age or s.freshness.max_age
            if s.id in allowed_sources and (acl_synced is None or now - acl_synced > acl_max_age):
                if s.freshness.on_acl_stale == "exclude":  # stale permissions: fail closed
                    excluded_stale.add(s.id)
                else:
                    warnings.append(f"source {s.id} has stale ACLs (last ACL sync {acl_synced or 'never'})")
        sources = allowed_sources - excluded_stale
        hits = (
            index.search(
                tokens,
                question,
                k=spec.retrieval.top_k,
                fusion=spec.retrieval.fusion,
                sources=sources,
                min_score=spec.retrieval.min_score,
                mode=spec.retrieval.mode,
                versions=state.index_counters,
            )
            if sources
            else []
        )
        # Index.search re-checks every hit against its document's ACL in the store as it reads the chunk
        # text (and re-ranks on a stale snapshot), so each hit carries the token that admitted it.
        kept = [h for h in hits if h.acl_reason and set(h.acl_reason) <= tokens]
        if spec.retrieval.mode != "bm25" and sources:  # the question was embedded: in which precision
            span.update(question_precision=index.question_precision_used())
        span.update(
            k=spec.retrieval.top_k,
            returned=len(hits),
            kept=len(kept),
            recheck="store ACL of every returned chunk",
            excluded_stale=sorted(excluded_stale),
            index_version=state.index_version,
            chunks=[{"chunk_id": h.chunk_id, "score": round(h.score, 4), "rank": h.rank} for h in kept],
        )
        trace.index_version = state.index_version
        trace.retrieved = [
            {
                "chunk_id": h.chunk_id,
                "source": h.source_id,
                "doc_id": h.doc_id,
                "rank": h.rank,
                "score": h.score,
            }
            for h in kept
        ]
    return kept, warnings


def _audience(rt: Runtime, source_id: str) -> str:
    try:
        sensitivity = rt.spec.source(source_id).sensitivity
    except KeyError:
        return INTERNAL
    return audience_for(sensitivity, rt.charter)


def _passages(rt: Runtime, hits: list[Hit]) -> tuple[dict[str, Hit], dict[str, str]]:
    by_id: dict[str, Hit] = {}
    audience: dict[str, str] = {}
    for i, h in enumerate(hits, 1):
        cid = f"S{i}"
        by_id[cid] = h
        audience[cid] = _audience(rt, h.source_id)
    return by_id, audience


def _split_audience(text: str, audience: dict[str, str]) -> tuple[list[str], list[str]]:
    """Sentences citing any internal-only passage move to the internal notes (least-privileged audience).
    Returns (outbound sentences, moved sentences)."""
    outbound, notes = [], []
    for sentence in checks.split_sentences(text):
        cited = checks.CITATION.findall(sentence)
        if any(audience.get(c) == INTERNAL for c in cited):
            notes.append(sentence)
        else:
            outbound.append(sentence)
    return outbound, notes


def _passage(cid: str, hit: Hit, audience: str) -> Any:
    return Passage(
        id=cid,
        text=hit.text,
        title=hit.title,
        heading=hit.heading,
        audience=audience,  # type: ignore[arg-type]
        source_id=hit.source_id,
        chunk_id=hit.chunk_id,
        url=hit.url or "",
    )


def _tone(rt: Runtime, recipient: str, sender: str) -> tuple[str, str]:
    """Greeting and sign-off of a ``draft`` workflow's tone; an ``answer`` goes to the asker as it is."""
    if rt.spec.output_to_asker:
        return "", ""
    return tone_parts(rt.spec.review.tone, recipient=recipient, sender=sender)


def search(
    rt: Runtime,
    principal: Principal,
    query: str,
    *,
    k: int | None = None,
    sources: set[str] | None = None,
    explain: bool = False,
) -> list[Hit]:
    """Permission-filtered search as ``principal`` — the one search every front end calls (CLI, REST, MCP,
    the root API). Cedar must permit ``search`` (a deny is audited and raised as :class:`Denied`); then
    :meth:`~charter.retrieval.Index.search` ranks only the chunks the principal may read (and re-checks each
    hit's document ACL in the store), with the charter's ``retrieval.mode``, fusion and minimum score. ``sources`` narrows
    the search to some source ids (unknown ids are a :class:`UsageError`); ``k`` defaults to
    ``retrieval.top_k``."""
    from charter.retrieval import Index

    spec = rt.spec
    rt.authorizer.require(principal, "search", _workflow_resource(rt), audit=rt.audit)
    configured = {s.id for s in spec.sources}
    if sources:
        unknown = sorted(set(sources) - configured)
        if unknown:
            raise UsageError(
                f"unknown source id(s) {', '.join(unknown)}; the charter has {', '.join(sorted(configured))}"
            )
    return Index.for_runtime(rt).search(
        principal.acl_tokens,
        query,
        k=k or spec.retrieval.top_k,
        fusion=spec.retrieval.fusion,
        sources=set(sources) if sources else configured,
        min_score=spec.retrieval.min_score,
        mode=spec.retrieval.mode,
        explain=explain,
    )


def gateway_for(rt: Runtime) -> Any:
    """The runtime's gateway, built once (prompt approvals are checked when it is built)."""
    cached = rt.services.gateway
    if cached is None:
        from charter.models import build_gateway

        cached = rt.services.gateway = build_gateway(rt)
        # the extractive drafter embeds sentences with this runtime's index model and reuses its query vector
        # (its own binding: a process-wide one would outlive the runtime that set it, e.g. a drill's copy)
        from charter.models import SentenceVectors, use_sentence_vectors
        from charter.retrieval import Index

        index = Index.for_runtime(rt)
        vectors = SentenceVectors()
        vectors.bind(index.embedder, index._query_vector, index)
        use_sentence_vectors(cached.model, vectors)
    return cached


def escalation_target(rt: Runtime, reason: str, principal: Principal | None = None) -> dict[str, Any]:
    """Where an escalation goes: the asker's role rule for ``reason``, else the workflow's, else the
    reviewer role (:meth:`Charter.scope_for`)."""
    rules = rt.spec.scope_for(principal.roles if principal else ()).escalations
    rule = rules.get(reason)
    if rule is not None:
        return {"reason": reason, "to": rule.to, "sla": rule.sla.total_seconds(), "then": rule.then}
    return {"reason": reason, "to": rt.spec.review.reviewer_role, "sla": None, "then": None}


# ------------------------------------------------------------------------------------------------ ask
def ask(
    rt: Runtime,
    principal: Principal,
    question: str,
    *,
    trace_store: TraceStore | None = None,
    submit_for_review: bool = True,
    subject_id: str | None = None,
) -> AskResult:
    """Run one question through the whole flow. Raises ``Denied``/``UsageError`` on refusal (recorded).

    ``subject_id`` is whom the conversation is about (when there is one): tools see it (and only it)
    and the draft is bound to it (a ``draft_approved`` tool sends it to that party only).

    A lone UTF-16 surrogate (JSON's ``"\\ud800"`` decodes to one) cannot be encoded, tokenized or stored:
    each becomes U+FFFD before anything else sees the question."""
    t0 = time.perf_counter()
    question = without_lone_surrogates(question)
    spec = rt.spec
    trace = Trace(
        workflow=spec.workflow.id,
        principal_id=principal.id,
        question=question,
        charter_fingerprint=rt.fingerprint,
    )
    store = trace_store or traces_for(rt)
    try:
        state = read_request_state(rt)
        q = admit(rt, principal, question, trace, state)
        if spec.workflow.kind == "agent":
            raise UsageError(
                f"workflow {spec.workflow.id} is an 'agent' workflow: its tasks run in the agent loop "
                "(charter.agents.run_task; `charter ask` and POST /api/ask route there)"
            )
        hits, warnings = retrieve(rt, principal, q, trace, state)
        passages, audience = _passages(rt, hits)
        gen, request = _generate(rt, principal, q, passages, audience, trace)
        greeting, signoff = _tone(rt, request.recipient_name, request.sender_name)
        checked = check(rt, principal, q, gen.text, passages, audience, trace, template=(greeting, signoff))
        tool_calls = act(rt, principal, gen.text, trace, subject_id=subject_id)
        result = checked.result(
            trace.request_id,
            model=gen.model,
            prompt_version=gen.prompt_version,
            input_tokens=trace.input_tokens,
            output_tokens=trace.output_tokens,
            cost_usd=gen.cost_usd,
            warnings=warnings,
            tool_calls=tool_calls,
        )
    except (Denied, UsageError) as exc:
        record_failure(trace, store, exc, t0, "refused")
        raise
    except CharterException as exc:
        record_failure(trace, store, exc, t0, "error")
        raise
    review_id = _record(
        rt,
        principal,
        q,
        result,
        trace,
        review=submit_for_review,
        subject_id=subject_id,
        restricted=state.restricted,
    )
    trace.latency_ms = (time.perf_counter() - t0) * 1000
    store.write(trace)
    return replace(
        result,
        review_id=review_id,
        latency_ms={**trace.stage_latency_ms, "total": round(trace.latency_ms, 3)},
    )


def _generate(
    rt: Runtime,
    principal: Principal,
    q: str,
    passages: dict[str, Hit],
    audience: dict[str, str],
    trace: Trace,
) -> tuple[Generation, GenerationRequest]:
    """The generate stage: the model's draft (and the request it answered), its usage recorded on the
    span and the trace."""
    gateway = gateway_for(rt)
    with trace.span("generate") as span:
        request = gateway.build_request(
            q,
            [_passage(cid, h, audience[cid]) for cid, h in passages.items()],
            sender_name=principal.name,
        )
        gen = gateway.generate(request, request_id=trace.request_id, principal=principal)
        span.update(
            model=gen.model,
            provider=gen.provider,
            prompt_version=gen.prompt_version,
            input_tokens=gen.input_tokens,
            output_tokens=gen.output_tokens,
            cost_usd=gen.cost_usd,
            usage_source=gen.usage_source,
            attempts=gen.attempts,
            fallback_used=gen.fallback_used,
            fallback_reason=gen.fallback_reason,
            errors=list(gen.errors),
        )
    trace.model, trace.provider, trace.prompt_version = gen.model, gen.provider, gen.prompt_version
    trace.input_tokens, trace.output_tokens = gen.input_tokens or 0, gen.output_tokens or 0
    trace.usage_source, trace.cost_usd, trace.cost_source = gen.usage_source, gen.cost_usd, gen.cost_source
    return gen, request


def _record(
    rt: Runtime,
    principal: Principal,
    q: str,
    result: AskResult,
    trace: Trace,
    *,
    review: bool,
    subject_id: str | None,
    restricted: bool,
) -> str | None:
    """The record stage: the draft submitted for review when it needs one (its review id returned), the
    outcome on the trace."""
    review_id: str | None = None
    with trace.span("record") as span:
        if review and needs_review(rt, result, restricted):
            review_id = submit_review(rt, principal, q, result, subject_id)
            span["review_id"] = review_id
        trace.status = result.status  # type: ignore[assignment]
        trace.answer, trace.agent_notes = result.draft, result.agent_notes
        trace.citations = [c.as_dict() for c in result.citations]
        trace.groundedness, trace.escalation = result.groundedness, result.escalation
    return review_id


@dataclass(frozen=True)
class CheckedDraft:
    """What the check stage decided about one draft: what may be shown (draft, internal notes, the
    citations they use, the per-sentence scores), its groundedness and escalation. :meth:`result` makes it
    the caller's :class:`AskResult` once the rest of the request (model usage, tool calls) is known."""

    status: str  # answered | needs_human
    draft: str
    agent_notes: str
    citations: list[Citation]
    groundedness: float | None
    escalation: dict[str, Any] | None
    removed_citations: int
    sentence_scores: list[dict[str, Any]]

    def result(
        self,
        request_id: str,
        *,
        model: str | None = None,
        prompt_version: str | None = None,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cost_usd: float = 0.0,
        warnings: list[str] | None = None,
        tool_calls: list[dict[str, Any]] | None = None,
        run_id: str | None = None,
        run_status: str | None = None,
    ) -> AskResult:
        return AskResult(
            request_id=request_id,
            status=self.status,
            draft=self.draft,
            agent_notes=self.agent_notes,
            citations=self.citations,
            groundedness=self.groundedness,
            escalation=self.escalation,
            model=model,
            prompt_version=prompt_version,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_usd=cost_usd,
            latency_ms={},
            removed_citations=self.removed_citations,
            warnings=list(warnings or []),
            sentence_scores=self.sentence_scores,
            tool_calls=list(tool_calls or []),
            run_id=run_id,
            run_status=run_status,
        )


@dataclass(frozen=True)
class _Composed:
    """A draft with invalid citations removed, split by audience: the outbound sentences (the tone's
    greeting and sign-off taken out), the sentences moved to the internal notes, and the assembled texts."""

    cit: checks.CitationCheck
    outbound_sentences: list[str]
    moved: list[str]
    agent_notes: list[str]
    outbound_body: str
    notes: str
    draft: str

    def scored_sentences(self) -> list[str]:
        """Each sentence as it was classified (split once); agent-note lines may hold several."""
        return [
            *self.outbound_sentences,
            *self.moved,
            *(x for n in self.agent_notes for x in checks.split_sentences(n)),
        ]


def _compose(
    text: str, passage_ids: set[str], audience: dict[str, str], template: tuple[str, str]
) -> _Composed:
    # normalise first, so that look-alike tool-call markup (fullwidth brackets) is removed as well
    cit = checks.validate_citations(TOOL_CALL.sub("", checks.normalise(text)), passage_ids)
    parts = split_draft(cit.text)
    greeting, signoff = template
    body = parts.outbound
    for fixed in (greeting, signoff):
        if fixed:
            body = body.replace(fixed, "")
    body = body.strip()
    outbound_sentences, moved = _split_audience(body, audience)
    outbound_body = " ".join(outbound_sentences)
    notes = "\n".join([*moved, *parts.agent_notes])
    draft = "\n\n".join(p for p in (greeting, outbound_body, signoff) if p) if outbound_body else ""
    return _Composed(cit, outbound_sentences, moved, list(parts.agent_notes), outbound_body, notes, draft)


@dataclass(frozen=True)
class _Findings:
    """What the checks found in a composed draft and in the question."""

    scores: list[checks.SentenceScore]
    verdict: checks.GroundingVerdict
    echoes: list[dict[str, object]]
    canaries: list[str]
    pii: list[str]
    topics_out: list[str]
    topics_sensitive: list[str]

    @property
    def grounded(self) -> float | None:
        return self.verdict.score

    @property
    def unsupported(self) -> list[checks.SentenceScore]:
        return self.verdict.unsupported


def _findings(
    rt: Runtime, principal: Principal, question: str, c: _Composed, passages: dict[str, Hit]
) -> _Findings:
    from charter.models import NO_ANSWER_TEXT as NO_ANSWER_TEXT_MODEL

    spec = rt.spec
    raw_sources = {cid: h.text for cid, h in passages.items()}
    sources = {cid: checks.support_text(t) for cid, t in raw_sources.items()}  # instructions never support
    embed = checks.embedder_for(rt)
    scored = c.scored_sentences()
    scores = checks.score_sentences(scored, sources, embed, normalised=True)  # from cit.text
    own_text = frozenset(checks.split_sentences(NO_ANSWER_TEXT_MODEL))  # the drafter's "cannot answer" text
    verdict = checks.grounding_verdict(scores, spec.review.grounding, exempt=own_text)
    # requests for a forbidden action ("delete this account", "export the user list") are out of scope;
    # out-of-scope and sensitive topics are the workflow's with the asker's role overrides
    scope = spec.scope_for(principal.roles)
    forbidden = [a.replace("_", " ") for a in spec.scope.forbidden_actions]
    return _Findings(
        scores=scores,
        verdict=verdict,
        echoes=checks.instruction_echoes(scored, raw_sources),
        # cit.text comes from normalise(); the charter's canaries (monitoring.canaries) and the built-in one
        canaries=checks.find_canaries(c.cit.text, normalised=True, canaries=canaries_for(spec)),
        pii=checks.new_pii(c.cit.text, raw_sources),
        topics_out=_topics(question, [*scope.out_of_scope, *forbidden], embed),
        topics_sensitive=_topics(question, list(scope.sensitive_topics), embed),
    )


def _escalation_reason(
    f: _Findings, c: _Composed, has_passages: bool, *, grounding: str, threshold: float
) -> str | None:
    """The first escalation rule the draft meets, in order of precedence, or ``None``. Under
    ``review.grounding: optional`` an answer without retrieved passages or valid citations is not
    ``no_sources`` (an empty outbound text still is: there is nothing to show)."""
    if f.canaries:
        return "canary_in_output"
    if f.echoes:
        return "instruction_in_output"
    if f.topics_out:
        return "out_of_scope"
    sourced = has_passages and bool(c.cit.valid)
    if not c.outbound_body or (grounding == "required" and not sourced):
        return "no_sources"
    if f.verdict.low(threshold):
        return "low_groundedness"
    if f.topics_sensitive:
        return "sensitive_topic"
    if f.pii:
        return "pii_in_output"
    return None


def _escalation(rt: Runtime, principal: Principal, reason: str | None, f: _Findings) -> dict[str, Any] | None:
    """Where the draft goes (:func:`escalation_target`) with what a reviewer needs to see why."""
    if not reason:
        return None
    escalation = escalation_target(rt, reason, principal)
    if f.topics_out:
        escalation["topics"] = f.topics_out
    if f.topics_sensitive and reason == "sensitive_topic":
        escalation["topics"] = f.topics_sensitive
    if f.unsupported and reason == "low_groundedness":
        escalation["unsupported"] = [s.sentence[:300] for s in f.unsupported]
    if f.echoes and reason == "instruction_in_output":
        escalation["instructions"] = f.echoes
    return escalation


def _citations(rt: Runtime, passages: dict[str, Hit], audience: dict[str, str], shown: str) -> list[Citation]:
    """The passages the shown text cites, in retrieval order."""
    used = set(checks.CITATION.findall(shown))
    return [
        Citation(
            id=cid,
            chunk_id=h.chunk_id,
            source_id=h.source_id,
            doc_id=h.doc_id,
            title=h.title,
            heading=h.heading,
            url=safe_url(h.url),  # only http, https and mailto links ever leave the pipeline
            page=h.page,
            audience="asker" if rt.spec.output_to_asker else audience[cid],
        )
        for cid, h in passages.items()
        if cid in used
    ]


def check(
    rt: Runtime,
    principal: Principal,
    question: str,
    text: str,
    passages: dict[str, Hit],
    audience: dict[str, str],
    trace: Trace,
    *,
    template: tuple[str, str] = ("", ""),
) -> CheckedDraft:
    """Validate citations, score groundedness, scan for canaries and PII, apply escalation rules.

    ``template`` is the tone's greeting and sign-off: fixed text from the charter, not claims, so it is
    neither scored nor required to carry a citation.
    """
    with trace.span("check") as span:
        c = _compose(text, set(passages), audience, template)
        f = _findings(rt, principal, question, c, passages)
        review = rt.spec.review
        reason = _escalation_reason(
            f, c, bool(passages), grounding=review.grounding, threshold=review.groundedness_threshold
        )
        escalation = _escalation(rt, principal, reason, f)
        draft, notes = c.draft, c.notes
        citations = _citations(rt, passages, audience, draft + " " + notes)
        shown_scores = [
            {"sentence": s.sentence, "citations": s.citations, "score": round(s.score, 3)} for s in f.scores
        ]
        if (
            f.canaries or f.echoes
        ):  # never show content that carries a canary or an instruction; a human looks
            draft, notes, citations, shown_scores = WITHHELD, "", [], []
        elif reason in ("no_sources", "out_of_scope"):
            draft = NO_ANSWER if reason == "no_sources" else OUT_OF_SCOPE
            notes, citations, shown_scores = "", [], []
        span.update(
            valid_citations=c.cit.valid,
            removed_citations=len(c.cit.removed),
            groundedness=f.grounded,
            canaries=len(f.canaries),
            instruction_echoes=len(f.echoes),
            unsupported=len(f.unsupported),
            pii=f.pii,
            escalation=reason,
            sentences=len(f.scores),
        )
        trace.checks = {
            "removed_citations": len(c.cit.removed),
            "uncited_sentences": sum(1 for s in f.scores if not s.citations),
            "canaries": len(f.canaries),
            "instruction_echoes": f.echoes,
            "unsupported_sentences": len(f.unsupported),
            "pii": f.pii,
            "out_of_scope": f.topics_out,
            "sensitive": f.topics_sensitive,
        }
    return CheckedDraft(
        status="needs_human" if escalation else "answered",
        draft=draft,
        agent_notes=notes,
        citations=citations,
        groundedness=None if f.grounded is None else round(f.grounded, 4),
        escalation=escalation,
        removed_citations=len(c.cit.removed),
        sentence_scores=shown_scores,
    )


TOOL_CALL = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)
MAX_TOOL_CALLS = 5


def act(
    rt: Runtime, principal: Principal, text: str, trace: Trace, *, subject_id: str | None = None
) -> list[dict[str, Any]]:
    """The model may *propose* tool calls (``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``);
    the system decides. Each proposal goes through ``charter.tools.propose`` with ``origin="model"`` as the
    asking principal — tool list, Cedar, argument validation, rate limit, kill switch and approval rules all
    apply, so a proposal can never do more than the principal could ask for directly, and anything that
    needs approval waits for another human. Refusals are recorded, not raised."""
    calls = TOOL_CALL.findall(checks.normalise(text))
    if not calls:
        return []
    from charter.errors import CharterException as _CE
    from charter.tools import propose

    out: list[dict[str, Any]] = []
    with trace.span("act") as span:
        for raw in calls[:MAX_TOOL_CALLS]:
            record: dict[str, Any] = {"raw": raw[:2000]}
            try:
                payload = json.loads(raw)
                if not isinstance(payload, dict) or not isinstance(payload.get("name"), str):
                    raise UsageError("a tool call must be an object with a string 'name'")
                args = payload.get("arguments", payload.get("args", {}))
                record.update(name=payload["name"], args=args)
                proposal = propose(
                    rt,
                    principal,
                    payload["name"],
                    args,
                    request_id=trace.request_id,
                    origin="model",
                    reason="proposed by the model",
                    subject_id=subject_id,
                )
                record.update(
                    decision=proposal.status, action_id=proposal.id, approval_id=proposal.approval_id
                )
            except ValueError:  # not JSON, or a value Python will not build (an integer of 4,301+ digits)
                record.update(decision="refused", reason="not valid JSON")
            except _CE as exc:
                record.update(decision="refused", reason=str(exc), reasons=list(getattr(exc, "reasons", [])))
            out.append(record)
        if len(calls) > MAX_TOOL_CALLS:
            out.append(
                {"decision": "refused", "reason": f"more than {MAX_TOOL_CALLS} tool calls in one answer"}
            )
        span.update(proposed=len(calls), decisions=[r.get("decision") for r in out])
    trace.tool_calls = out
    return [{k: v for k, v in r.items() if k != "raw"} for r in out]


def last_stage(trace: Trace) -> str:
    """The stage a request was in when it stopped (the last span), ``identify`` before any."""
    return trace.spans[-1].stage if trace.spans else "identify"


def record_failure(trace: Trace, store: TraceStore, exc: Exception, t0: float, status: str) -> None:
    """Write the trace of a request that was refused or failed: the error, the stage, the latency so far.
    Every refusal is recorded — the front ends re-raise after this."""
    trace.status = status  # type: ignore[assignment]
    trace.errors.append({"type": type(exc).__name__, "message": str(exc), "stage": last_stage(trace)})
    trace.latency_ms = (time.perf_counter() - t0) * 1000
    store.write(trace)


def _topics(question: str, topics: list[str], embed: checks.Embed | None) -> list[str]:
    return checks.topic_hits(question, topics)


def needs_review(rt: Runtime, result: AskResult, restricted: bool) -> bool:
    mode = rt.spec.review_drafts
    return mode == "all" or result.status == "needs_human" or restricted


def submit_review(
    rt: Runtime, principal: Principal, question: str, result: AskResult, subject_id: str | None = None
) -> str | None:
    try:
        from charter.review import submit_draft
    except ImportError:  # pragma: no cover - review package not present
        return None
    item = submit_draft(
        rt,
        request_id=result.request_id,
        principal=principal,
        question=question,
        draft=result.draft,
        citations=[c.as_dict() for c in result.citations],
        agent_notes=result.agent_notes,
        groundedness=result.groundedness,
        escalation_reason=(result.escalation or {}).get("reason"),
        subject_id=subject_id,
    )
    return str(getattr(item, "id", item))


def warm_up(rt: Runtime) -> dict[str, float]:
    """Build what a process's first request would otherwise pay for — policy set, index snapshot and
    embedder, masker, model gateway — and return the seconds each part took (the process warm-up, reported
    apart from any request's latency). A part that cannot be built yet (no sync, unapproved prompt) is
    skipped and logged: the request that needs it reports the problem itself. Used by the server at
    start-up, the eval runner before timing and the CLI's ``ask``."""
    import logging

    from charter.retrieval import Index

    log = logging.getLogger("charter.pipeline")
    steps: list[tuple[str, Any]] = [
        ("policies", lambda: rt.authorizer),
        ("index", lambda: Index.for_runtime(rt).warm_up()),
        ("masker", lambda: masker_for(rt).mask("warm-up ana@example.com")),
        ("gateway", lambda: gateway_for(rt)),
    ]
    took: dict[str, float] = {}
    for name, step in steps:
        t0 = time.perf_counter()
        try:
            step()
        except Exception as exc:  # the request that needs it will fail with a clear error instead
            log.warning("warm-up of %s skipped: %s: %s", name, type(exc).__name__, exc)
            continue
        took[name] = time.perf_counter() - t0
    return took


def traces_for(rt: Runtime) -> TraceStore:
    """The runtime's trace store (field policies, masker, metrics and export sinks from the charter)."""
    return trace_store_for(rt)
