"""Who may see which stored content: the one place every front end asks (CLI, REST, console, OpenAI, MCP…).

Two questions, kept apart on purpose:

1. **May this principal open this item at all?** (a trace, a review item). Traces: your own, or any with
   ``traces.read_all``. Review items: the submitter, an *eligible* reviewer (a holder of a role the item is
   with who may read every source it cites), or the user it escalated to. Anything else raises
   :class:`~charter.errors.NotFound` with the *same* message as a missing id, so probing ids reveals nothing.
2. **Which parts of it may they read?** A stored item carries the documents it came from (citations,
   retrieved chunks). Every part that came from a document the reader may not read *now* (its current ACL in
   the index, else the sync catalog; unknown documents are unreadable: fail closed) is replaced by
   ``[redacted: 1 passage from a source you cannot read]`` — never its text, title, heading, link, doc id or
   chunk id. Roles (``traces.read_all``, ``review.decide``, ``reports.read``) answer question 1 only; they
   never widen question 2.

Invariants:

* :func:`may_read` is the only document-read rule; the retrieval filter uses the same token rule
  (``principal.acl_tokens`` ∩ document ACL ≠ ∅).
* Redaction is by sentence: a sentence citing ``[S<n>]`` of an unreadable document is redacted; so is an
  uncited sentence of an item that used any unreadable document (it cannot be attributed, so it is treated
  as coming from it). Consecutive redacted sentences collapse into one marker with their count.
* Redacting is idempotent and never adds content: the output's strings are the input's strings or markers.

The packages that own stored items apply these rules to their own records, so they sit above this module
(which never imports them): traces in :mod:`charter.telemetry`, drafts and approvals in :mod:`charter.review`.

Calls other front ends use::

    telemetry.visible_trace(rt, principal, request_id) # 404 or the redacted trace document (redact_trace)
    telemetry.trace_list_filter(rt, principal)         # None (all) or the stored principal key
    review.visible_review(rt, principal, item_id)      # 404 or the ReviewItem
    review.redact_review(rt, principal, item)          # dict ready to show
    review.visible_approval(rt, principal, approval_id)  # 404 or the approval request
    access.may_read(rt, principal, source_id, doc_id)  # one document
    access.Reader(rt, principal)                       # cached checks for many documents
    review.eligible_reviewers(rt, item)                # who may decide a draft (routing uses it)
    access.safe_url(url)                               # http/https/mailto, else None
    access.redact_eval_output(reader, output, …)       # an eval case's output in a report, for a reader
    access.document_redaction(n)                       # the report row replacing n unreadable documents
    access.scrub_documents(value, refs)                # strings naming unreadable documents → marker
    access.require_source_owner(rt, principal_id, source_id, action=…, verb=…)  # owner actions, audited
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from charter.errors import Denied

if TYPE_CHECKING:
    from charter.context import RuntimeContext
    from charter.spec import Principal

#: Link schemes that may be rendered as links anywhere (console, Markdown, API ``url`` fields).
SAFE_SCHEMES = frozenset({"http", "https", "mailto"})
_CITE = re.compile(r"\[(S\d{1,3})\]")
# sentence ends: ., ! or ? (optionally followed by citation markers or a closing quote) then whitespace
_SENTENCE_END = re.compile(r"(?<=[.!?])((?:\s*\[S\d{1,3}\])*[\"')\]]?)\s+")


def redaction(count: int = 1) -> str:
    """The marker that replaces ``count`` passages from sources the reader cannot read."""
    return f"[redacted: {count} passage{'s' if count != 1 else ''} from a source you cannot read]"


_MARKER = re.compile(r"\[redacted: (\d+) passages? from a source you cannot read\]")


def document_redaction(count: int, what: str = "document") -> str:
    """The marker that replaces ``count`` report rows naming documents (or sources) the reader cannot read:
    ``[redacted: 3 documents from sources you cannot read]``."""
    plural = f"{what}s" if count != 1 else what
    if what == "source":
        return f"[redacted: {count} {plural} with documents you cannot read]"
    return f"[redacted: {count} {plural} from sources you cannot read]"


def safe_url(url: Any) -> str | None:
    """``url`` when its scheme is http, https or mailto (after stripping controls and spaces), else None."""
    if not isinstance(url, str) or not url.strip():
        return None
    stripped = url.strip()
    # A URL holding any control, format, separator or whitespace character is refused (such characters
    # hide a scheme from a reader: "java\tscript:"). ``isprintable`` is False for every one of them except
    # the ASCII space, which is checked apart — one C-level pass instead of a per-character loop.
    if not stripped.isprintable() or " " in stripped:
        return None
    try:
        scheme = urlsplit(stripped).scheme.lower()
    except ValueError:
        return None
    return stripped if scheme in SAFE_SCHEMES else None


@dataclass(frozen=True)
class DocRef:
    """A document by source id and document id (``source_id/doc_id`` as a key)."""

    source_id: str
    doc_id: str

    @property
    def key(self) -> str:
        return f"{self.source_id}/{self.doc_id}"


def document_acls(rt: RuntimeContext, refs: Iterable[DocRef]) -> dict[DocRef, frozenset[str] | None]:
    """Current ACL tokens of each document: the index's, else the sync catalog's, else ``None``."""
    from sqlalchemy import select, tuple_

    from charter.store.tables import acl, documents, source_documents

    wanted = sorted(set(refs), key=lambda r: (r.source_id, r.doc_id))
    out: dict[DocRef, frozenset[str] | None] = dict.fromkeys(wanted)
    if not wanted:
        return out
    found: dict[DocRef, set[str]] = {}
    pairs = [(r.source_id, r.doc_id) for r in wanted]
    with rt.store.connect() as conn:
        for i in range(0, len(pairs), 200):
            part = pairs[i : i + 200]
            rows = conn.execute(
                select(documents.c.source_id, documents.c.doc_id, acl.c.token)
                .select_from(documents.outerjoin(acl, acl.c.doc_pk == documents.c.id))
                .where(tuple_(documents.c.source_id, documents.c.doc_id).in_(part))
            ).all()
            for source_id, doc_id, token in rows:
                tokens = found.setdefault(DocRef(source_id, doc_id), set())
                if token is not None:
                    tokens.add(token)
        missing = [(r.source_id, r.doc_id) for r in wanted if r not in found]
        for i in range(0, len(missing), 200):
            part = missing[i : i + 200]
            for source_id, doc_id, tokens in conn.execute(
                select(
                    source_documents.c.source_id, source_documents.c.doc_id, source_documents.c.acl_tokens
                ).where(tuple_(source_documents.c.source_id, source_documents.c.doc_id).in_(part))
            ).all():
                found[DocRef(source_id, doc_id)] = {t for t in (tokens or []) if isinstance(t, str)}
    for ref, tokens in found.items():
        out[ref] = frozenset(tokens)
    return out


def tokens_may_read(tokens: frozenset[str], document_acl: frozenset[str] | None) -> bool:
    """The document-read rule: a shared token (``public``, ``user:<id>``, ``group:<id>``). No ACL: no."""
    return bool(document_acl) and bool(tokens & document_acl)  # type: ignore[operator]


#: ``source_id`` of a citation of an ``agent`` run's tool result: ``tool:<tool name>`` (``doc_id``: the action).
TOOL_SOURCE = "tool:"


def tool_result_readable(rt: RuntimeContext, principal: Principal, source_id: str) -> bool | None:
    """The read rule for a tool's result (``source_id`` ``tool:<name>``): whoever may call the tool may read
    what it returns — Cedar ``tools.call`` on it, as the tool list offered to a model is decided. ``None``
    when ``source_id`` names a document, not a tool result."""
    if not source_id.startswith(TOOL_SOURCE):
        return None
    name = source_id[len(TOOL_SOURCE) :]
    return rt.authorizer.authorize(principal, "tools.call", f"tool:{name}", {"args": {}}).allowed


class Reader:
    """What one principal may read, with the ACL lookups cached for the life of this object (one request)."""

    def __init__(self, rt: RuntimeContext, principal: Principal) -> None:
        self.rt = rt
        self.principal = principal
        self.tokens = frozenset(principal.acl_tokens)
        self._acls: dict[DocRef, frozenset[str] | None] = {}

    def load(self, refs: Iterable[DocRef]) -> None:
        todo = [r for r in set(refs) if r not in self._acls]
        if todo:
            self._acls.update(document_acls(self.rt, todo))

    def may_read(self, ref: DocRef) -> bool:
        tool = tool_result_readable(self.rt, self.principal, ref.source_id)
        if tool is not None:
            return tool
        self.load([ref])
        return tokens_may_read(self.tokens, self._acls.get(ref))

    def unreadable(self, refs: Iterable[DocRef]) -> list[DocRef]:
        refs = list(refs)
        self.load([r for r in refs if not r.source_id.startswith(TOOL_SOURCE)])
        return sorted({r for r in refs if not self.may_read(r)}, key=lambda r: r.key)


def may_read(rt: RuntimeContext, principal: Principal, source_id: str, doc_id: str) -> bool:
    """Whether ``principal`` may read the document now (its current ACL; unknown documents: no)."""
    return Reader(rt, principal).may_read(DocRef(source_id, doc_id))


may_read_source = may_read  # the name other modules were told to call


# ------------------------------------------------------------------------------------------------ text
def _sentences(line: str) -> list[str]:
    """``line`` cut after each sentence end (citation markers stay with their sentence); joins back exactly
    with single spaces where the split happened."""
    parts: list[str] = []
    start = 0
    for m in _SENTENCE_END.finditer(line):
        end = m.end(1)
        parts.append(line[start:end])
        start = m.end()
    parts.append(line[start:])
    return [p for p in parts if p]


def redact_text(text: Any, cited: dict[str, DocRef | None], unreadable: set[DocRef], *, tainted: bool) -> Any:
    """``text`` with each sentence from an unreadable document replaced by the marker.

    ``cited`` maps citation ids (``S1``…) to their documents (``None``: unknown, treated as unreadable).
    ``tainted``: the item used an unreadable document, so uncited sentences are redacted too.
    """
    if not isinstance(text, str) or not text:
        return text
    if not unreadable and not tainted and all(v is not None for v in cited.values()):
        unknown = {c for c in _CITE.findall(text) if c not in cited}
        if not unknown:
            return text
    out_lines = []
    for line in text.split("\n"):
        pieces: list[str] = []
        pending = 0
        for sentence in _sentences(line):
            if _MARKER.fullmatch(sentence.strip()):
                pending += int(_MARKER.fullmatch(sentence.strip()).group(1))  # type: ignore[union-attr]
                continue
            ids = _CITE.findall(sentence)
            if ids:
                hide = any(cited.get(c) is None or cited[c] in unreadable for c in ids)
            else:
                hide = tainted and bool(sentence.strip())
            if hide:
                pending += 1
                continue
            if pending:
                pieces.append(redaction(pending))
                pending = 0
            pieces.append(sentence)
        if pending:
            pieces.append(redaction(pending))
        out_lines.append(" ".join(pieces))
    return "\n".join(out_lines)


def _scrub(value: Any, keys: list[str]) -> Any:
    """Any string naming an unreadable document (``source/doc``) becomes the marker; containers recurse."""
    if isinstance(value, str):
        return redaction() if any(k in value for k in keys) else value
    if isinstance(value, list):
        return [_scrub(v, keys) for v in value]
    if isinstance(value, dict):
        return {k: _scrub(v, keys) for k, v in value.items()}
    return value


def _redact_citation(c: dict[str, Any]) -> dict[str, Any]:
    return {"id": c.get("id"), "redacted": True, "title": redaction(), "heading": "", "url": None}


def _ref_of(d: dict[str, Any]) -> DocRef | None:
    """The document a citation or retrieved entry names (``source_id``/``doc_id``, else its ``chunk_id``
    ``source/doc#n``); ``None`` when it names none (callers treat that as unreadable)."""
    source = d.get("source_id") or d.get("source")
    doc = d.get("doc_id")
    if isinstance(source, str) and isinstance(doc, str):
        return DocRef(source, doc)
    chunk = d.get("chunk_id")
    if isinstance(chunk, str) and "/" in chunk:
        source, _, rest = chunk.partition("/")
        doc = rest.rsplit("#", 1)[0] if "#" in rest else rest
        if source and doc:
            return DocRef(source, doc)
    return None


def _safe_citation(c: dict[str, Any]) -> dict[str, Any]:
    out = dict(c)
    if "url" in out:
        out["url"] = safe_url(out["url"])
    return out


def redact_parts(
    reader: Reader,
    *,
    citations: list[Any],
    texts: dict[str, Any],
    extra_refs: Iterable[DocRef] = (),
) -> tuple[list[Any], dict[str, Any], list[DocRef]]:
    """Redact citations and free texts of one item for ``reader``. Returns (citations, texts, unreadable)."""
    cited: dict[str, DocRef | None] = {}
    refs: list[DocRef] = list(extra_refs)
    for c in citations:
        if isinstance(c, dict) and isinstance(c.get("id"), str):
            ref = _ref_of(c)
            cited[c["id"]] = ref
            if ref is not None:
                refs.append(ref)
    unreadable = set(reader.unreadable(refs))
    tainted = bool(unreadable) or any(v is None for v in cited.values())
    out_citations: list[Any] = []
    for c in citations:
        if not isinstance(c, dict):
            out_citations.append(redaction())
            continue
        ref = _ref_of(c)
        out_citations.append(_redact_citation(c) if ref is None or ref in unreadable else _safe_citation(c))
    out_texts = {k: redact_text(v, cited, unreadable, tainted=tainted) for k, v in texts.items()}
    return out_citations, out_texts, sorted(unreadable, key=lambda r: r.key)


# ------------------------------------------------------------------------------------------------ actions
# The Cedar checks every front end makes (REST, console, MCP), on the workflow unless a resource is named.
def workflow_resource(rt: RuntimeContext) -> str:
    return f"workflow:{rt.spec.workflow.id}"


def allowed(
    rt: RuntimeContext,
    principal: Principal,
    action: str,
    resource: str | None = None,
    context: dict[str, Any] | None = None,
) -> bool:
    return rt.authorizer.authorize(principal, action, resource or workflow_resource(rt), context).allowed


def require(
    rt: RuntimeContext,
    principal: Principal,
    action: str,
    resource: str | None = None,
    context: dict[str, Any] | None = None,
) -> None:
    """Cedar must permit ``action``; a deny is audited and raised as :class:`Denied` (HTTP 403)."""
    rt.authorizer.require(principal, action, resource or workflow_resource(rt), context, audit=rt.audit)


def tool_callable(rt: RuntimeContext, principal: Principal, tool: str) -> bool:
    return allowed(rt, principal, "tools.call", f"tool:{tool}", {"args": {}})


# ------------------------------------------------------------------------------------------------ traces
def may_list_all_traces(rt: RuntimeContext, principal: Principal) -> bool:
    """``traces.read_all``: which *requests* you may open (never which documents you may read)."""
    return bool(
        rt.authorizer.authorize(principal, "traces.read_all", f"workflow:{rt.spec.workflow.id}").allowed
    )


def redact_trace(rt: RuntimeContext, principal: Principal, doc: dict[str, Any]) -> dict[str, Any]:
    """The stored trace document with every part from an unreadable document redacted."""
    reader = Reader(rt, principal)
    retrieved = [r for r in doc.get("retrieved") or [] if isinstance(r, dict)]
    retrieved_refs = [ref for r in retrieved if (ref := _ref_of(r)) is not None]
    citations, texts, unreadable = redact_parts(
        reader,
        citations=list(doc.get("citations") or []),
        texts={"answer": doc.get("answer"), "agent_notes": doc.get("agent_notes")},
        extra_refs=retrieved_refs,
    )
    out = dict(doc)
    out["citations"] = citations
    out.update(texts)
    if not unreadable:
        return out
    keys = [r.key for r in unreadable]
    bad = set(unreadable)
    out["retrieved"] = [
        {"rank": r.get("rank"), "redacted": True, "chunk_id": redaction()} if _ref_of(r) in bad else r
        for r in retrieved
    ]
    for name, value in list(out.items()):
        if name not in ("citations", "answer", "agent_notes", "retrieved", "question"):
            out[name] = _scrub(value, keys)
    out["redacted_sources"] = len(unreadable)
    return out


# ------------------------------------------------------------------------------------------------ reviews
class CitingItem(Protocol):
    """A stored item that cites passages — a :class:`charter.review.ReviewItem` (whose visibility rules,
    built on these, are :mod:`charter.review`'s: ``visible_review``, ``eligible_reviewers``, …)."""

    @property
    def citations(self) -> list[Any]: ...


def item_sources(item: CitingItem) -> list[DocRef]:
    """The documents a draft cites or notes (its citations; agent notes cite the same ids)."""
    out = []
    for c in item.citations or []:
        if isinstance(c, dict) and (ref := _ref_of(c)) is not None:
            out.append(ref)
    return out


def _unknown_citations(item: CitingItem) -> bool:
    return any(not isinstance(c, dict) or _ref_of(c) is None for c in item.citations or [])


def may_read_item(
    rt: RuntimeContext, principal: Principal, item: CitingItem, reader: Reader | None = None
) -> bool:
    """Whether ``principal`` may read every source ``item`` cites (eligibility to review it)."""
    if _unknown_citations(item):
        return False
    return not (reader or Reader(rt, principal)).unreadable(item_sources(item))


def restricting_owners(rt: RuntimeContext, item: CitingItem, readers: Iterable[str]) -> list[str]:
    """Owners of the sources that stop ``readers`` (the role's members) from reviewing ``item``; the
    charter's ``owners.sources`` when a source has no owner. In source order, without duplicates."""
    members = [rt.charter.principals[r] for r in readers if r in rt.charter.principals]
    blocking: list[str] = []
    for ref in item_sources(item):
        blocked = not members or any(not Reader(rt, m).may_read(ref) for m in members)
        if blocked and ref.source_id not in blocking:
            blocking.append(ref.source_id)
    owners: list[str] = []
    for source_id in blocking:
        try:
            owner = rt.spec.source(source_id).owner
        except KeyError:
            owner = None
        owner = owner or getattr(rt.spec.owners, "sources", None)
        if owner and owner not in owners:
            owners.append(owner)
    return owners


# ------------------------------------------------------------------------------------------------ reports, evals
def scrub_documents(value: Any, refs: Iterable[DocRef]) -> Any:
    """``value`` with every string that names one of ``refs`` (``source/doc``) replaced by the marker;
    lists and dicts recurse. For free text that may quote a document id (error messages, failure details)."""
    keys = [r.key for r in refs]
    return _scrub(value, keys) if keys else value


def doc_ref(key: str) -> DocRef | None:
    """``source_id/doc_id`` as a :class:`DocRef` (source ids hold no ``/``); ``None`` if it is not one."""
    source, sep, doc = key.partition("/")
    return DocRef(source, doc) if sep and source and doc else None


def redact_eval_output(
    reader: Reader,
    output: dict[str, Any],
    *,
    expected_sources: Iterable[str] = (),
    details: Iterable[str] = (),
) -> dict[str, Any]:
    """What an eval report may show ``reader`` of one case's stored output.

    ``output`` is ``CaseOutput.as_dict()`` (the pipeline's result for the case's ``as`` user: draft, agent
    notes, citations; the retrieved chunks; an error), ``expected_sources`` the case's ``source/doc`` keys,
    ``details`` its failure details. The same rule as traces: sentences citing, or (uncited) in an output
    that used, a document the reader may not read become the marker; such citations, retrieved entries and
    expected sources become the marker; any detail or error naming one does too. Returns ``draft``,
    ``agent_notes``, ``citations``, ``retrieved`` (``source/doc`` keys or markers), ``expected_sources``,
    ``details``, ``error`` and ``redacted_sources`` (how many documents were hidden) — nothing else of the
    output, so a field added to results later is not shown until it is redacted here.
    """
    stored = output.get("result")
    result: dict[str, Any] = stored if isinstance(stored, dict) else {}
    retrieved = [r for r in output.get("retrieved") or [] if isinstance(r, dict)]
    retrieved_refs = [_ref_of(r) for r in retrieved]
    expected = [(k, doc_ref(k)) for k in expected_sources if isinstance(k, str)]
    citations, texts, unreadable = redact_parts(
        reader,
        citations=list(result.get("citations") or []),
        texts={"draft": result.get("draft"), "agent_notes": result.get("agent_notes")},
        extra_refs=[r for r in retrieved_refs if r is not None],
    )
    hidden = set(unreadable) | set(reader.unreadable(r for _, r in expected if r is not None))
    out_retrieved = [redaction() if ref is None or ref in hidden else ref.key for ref in retrieved_refs]
    out_expected = [redaction() if ref is None or ref in hidden else key for key, ref in expected]
    return {
        "draft": texts["draft"],
        "agent_notes": texts["agent_notes"],
        "citations": citations,
        "retrieved": out_retrieved,
        "expected_sources": out_expected,
        "details": [scrub_documents(d, hidden) for d in details],
        "error": scrub_documents(output.get("error"), hidden),
        "redacted_sources": len(hidden),
    }


def require_source_owner(
    rt: RuntimeContext,
    principal_id: str,
    source_id: str,
    *,
    action: str,
    verb: str,
    details: dict[str, Any] | None = None,
) -> None:
    """The one rule for a source owner's actions (listing its documents, approving screened ones): the
    source's ``owner`` or the charter's ``owners.sources``. Anyone else is refused with
    :class:`~charter.errors.Denied`, and the refusal is audited as ``action`` with outcome ``denied``."""
    source = rt.spec.source(source_id)
    if principal_id in (source.owner, rt.spec.owners.sources):
        return
    rt.audit.append(
        actor=principal_id,
        action=action,
        resource=f"source:{source_id}",
        outcome="denied",
        details={"reason": "not the source owner", **(details or {})},
    )
    raise Denied(
        f"{principal_id} may not {verb} source {source_id}",
        reasons=[
            f"only the source owner ({source.owner}) or the sources owner ({rt.spec.owners.sources}) may"
        ],
    )
