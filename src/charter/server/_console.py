"""The web console: server-rendered pages (Jinja2), a few lines of plain JavaScript, no build step.

Log in with a Charter token (``charter tokens create USER``): it is checked once and a separate console
**session** is opened (:mod:`charter.identity._sessions`, ``session_hours`` long, revoked by logging out);
only the session is kept in an HttpOnly, SameSite=Strict, ``Secure`` cookie — never the API token. Every
form carries a CSRF token, and every console POST must have a same-origin ``Origin``
(``ConsoleCsrfMiddleware`` in ``_app``: a missing, ``null`` or foreign Origin is refused). Every page and every form asks the same Cedar questions as
the API (through the same functions), so what a role sees follows the charter.
"""

from __future__ import annotations

import logging
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from markupsafe import Markup, escape

from charter import access
from charter.errors import AuthenticationError, CharterException, Denied, NotFound
from charter.review import (
    REJECT_REASONS,
    approver_roles,
    assigned_to,
    decide_approval,
    decide_draft,
    is_eligible_reviewer,
    list_approvals,
    list_reviews,
    redact_review,
    reviewer_roles,
    visible_review,
)
from charter.server._app import state_of
from charter.server._auth import (
    COOKIE,
    LOGIN_COOKIE,
    SESSION_COOKIE,
    require,
    require_any,
    require_capability,
)
from charter.server._errors import status_for
from charter.spec import Principal
from charter.store.tables import chunks, documents
from charter.telemetry import build_report, record_feedback, trace_list_filter, visible_trace

log = logging.getLogger("charter.server")
router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
_CITE = re.compile(r"\[([A-Za-z]?\d{1,3})\]")


def _linkcites(text: Any) -> Markup:
    """Escape ``text`` and turn ``[S2]`` citation markers into links to the numbered source below."""
    escaped = str(escape("" if text is None else text))
    return Markup(  # noqa: S704 - the text was escaped above; only the fixed link markup is added
        _CITE.sub(lambda m: f'<a class="cite" href="#cite-{m.group(1)}">[{m.group(1)}]</a>', escaped)
    )


templates.env.filters["linkcites"] = _linkcites
templates.env.filters["safe_url"] = access.safe_url  # only http, https and mailto become links
templates.env.filters["zip"] = lambda a, b: zip(a, b, strict=False)

NAV = [
    ("ask", "Ask", "/ask"),
    ("review", "Review queue", "/review"),
    ("approvals", "Approvals", "/approvals"),
    ("monitor", "Monitor", "/monitor"),
    ("sources", "Sources", "/sources"),
    ("evals", "Evals", "/evals"),
    ("gate", "Gate", "/gate"),
    ("audit", "Audit", "/audit"),
]


def _who(request: Request) -> Principal:
    principal = state_of(request).auth.authenticate_console(request)
    request.state.principal = principal
    return principal


def _csrf_field(request: Request, cookie: str | None = None) -> Markup:
    """The hidden CSRF input every POST form carries (empty without a session or pre-login cookie)."""
    from charter.identity import csrf_token

    value = cookie or request.cookies.get(SESSION_COOKIE) or ""
    if not value:
        return Markup("")
    return Markup('<input type="hidden" name="csrf" value="{}">').format(csrf_token(value))


def _render(
    request: Request, name: str, principal: Principal | None, status: int = 200, **ctx: Any
) -> Response:
    caps = state_of(request).capabilities(principal) if principal else {}
    nav = [(key, label, href) for key, label, href in NAV if caps.get(key)]
    rt = state_of(request).rt
    ctx.setdefault("csrf_field", _csrf_field(request))
    return templates.TemplateResponse(
        request,
        name,
        {"principal": principal, "caps": caps, "nav": nav, "workflow": rt.spec.workflow, **ctx},
        status_code=status,
    )


def _failure(request: Request, exc: Exception, principal: Principal | None) -> Response:
    if isinstance(exc, AuthenticationError):
        return RedirectResponse("/login", status_code=303)
    status = status_for(exc)
    if status >= 500:
        log.error("console page %s failed", request.url.path, exc_info=exc)
    message = str(exc) if isinstance(exc, CharterException) and status < 500 else "internal error"
    reasons = list(getattr(exc, "reasons", []) or []) if status < 500 else []
    return _render(
        request, "error.html", principal, status=status, status_code=status, message=message, reasons=reasons
    )


def _page(request: Request, fn: Any) -> Response:
    """Render a page for the session's principal (POSTs were checked for Origin and CSRF before this)."""
    principal: Principal | None = None
    try:
        principal = _who(request)
        result: Response = fn(principal)
        return result
    except Exception as exc:
        return _failure(request, exc, principal)


# ------------------------------------------------------------------------------------------------ login
def _cookie_opts(request: Request) -> dict[str, Any]:
    return {
        "httponly": True,
        "samesite": "strict",
        "secure": state_of(request).settings.secure_cookies,
        "path": "/",
    }


def _login_page(request: Request, status: int = 200, message: str | None = None) -> Response:
    """The login form with a fresh pre-login CSRF cookie (the form's token is derived from it)."""
    import secrets

    pre = secrets.token_urlsafe(32)
    resp = _render(
        request, "login.html", None, status=status, message=message, csrf_field=_csrf_field(request, pre)
    )
    resp.set_cookie(LOGIN_COOKIE, pre, max_age=3600, **_cookie_opts(request))
    return resp


def _insecure_transport(request: Request) -> bool:
    """A Secure cookie over plain http to a non-loopback host: the browser would drop it (login loop)."""
    if not state_of(request).settings.secure_cookies or request.url.scheme == "https":
        return False
    host = (request.url.hostname or "").lower()
    return host not in ("localhost", "127.0.0.1", "::1") and not host.endswith(".localhost")


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request) -> Response:
    return _login_page(request)


@router.post("/login")
def login(request: Request, token: str = Form(max_length=2000)) -> Response:
    from charter.identity import create_session, parse_token
    from charter.server._auth import client_of

    st = state_of(request)
    if _insecure_transport(request):
        return _login_page(
            request,
            status=400,
            message="This server only sends its session cookie over HTTPS: open it through TLS "
            "(or, for plain http on a trusted machine, start it with CHARTER_SERVER_SECURE_COOKIES=0).",
        )
    try:
        principal = st.auth.authenticate(token, client=client_of(request), channel="console")
    except CharterException as exc:
        status = status_for(exc)
        msg = str(exc) if status == 429 else "That token is not valid."
        return _login_page(request, status=401 if status != 429 else 429, message=msg)
    try:
        token_id: str | None = parse_token(token)[0]
    except CharterException:
        token_id = None  # an OIDC token: the session lasts session_hours, bounded by nothing else
    cookie, _session = create_session(
        st.rt, principal.id, token_id=token_id, ttl=timedelta(hours=st.settings.session_hours)
    )
    resp = RedirectResponse("/", status_code=303)
    resp.set_cookie(
        SESSION_COOKIE, cookie, max_age=int(st.settings.session_hours * 3600), **_cookie_opts(request)
    )
    resp.delete_cookie(LOGIN_COOKIE, path="/")
    resp.delete_cookie(COOKIE, path="/")  # a raw API token left by an older version
    return resp


@router.post("/logout")
def logout(request: Request) -> Response:
    """End the session server-side (the cookie is useless afterwards, even if it was copied)."""
    from charter.identity import revoke_session

    revoke_session(state_of(request).rt, request.cookies.get(SESSION_COOKIE))
    resp = RedirectResponse("/login", status_code=303)
    resp.delete_cookie(SESSION_COOKIE, path="/")
    resp.delete_cookie(COOKIE, path="/")
    return resp


@router.get("/", response_class=HTMLResponse)
def home(request: Request) -> Response:
    def page(p: Principal) -> Response:
        caps = state_of(request).capabilities(p)
        first = next((href for key, _, href in NAV if caps.get(key)), None)
        if first is None:
            raise Denied(f"{p.id} may not use this workflow", reasons=["no role grants a page"])
        return RedirectResponse(first, status_code=303)

    return _page(request, page)


# ------------------------------------------------------------------------------------------------ ask
@router.get("/ask", response_class=HTMLResponse)
def ask_form(request: Request) -> Response:
    def page(p: Principal) -> Response:
        require(state_of(request).rt, p, "ask")
        return _render(request, "ask.html", p, result=None, question="")

    return _page(request, page)


@router.post("/ask", response_class=HTMLResponse)
def ask_post(
    request: Request, question: str = Form(max_length=20_000), submit_for_review: str | None = Form(None)
) -> Response:
    def page(p: Principal) -> Response:
        from charter.agents import respond as ask

        rt = state_of(request).rt
        require(rt, p, "ask")
        result = ask(rt, p, question, submit_for_review=bool(submit_for_review)).as_dict()
        passages = _passages(rt, p, result)
        return _render(request, "ask.html", p, result=result, question=question, passages=passages)

    return _page(request, page)


def _passages(rt: Any, principal: Principal, result: dict[str, Any]) -> dict[str, str]:
    """The text of each cited passage, re-checked against the document's current ACL."""
    from sqlalchemy import select

    reader = access.Reader(rt, principal)
    out: dict[str, str] = {}
    for c in result.get("citations") or []:
        if c.get("redacted") or not reader.may_read(access.DocRef(c["source_id"], c["doc_id"])):
            continue
        position = int(str(c["chunk_id"]).rsplit("#", 1)[-1]) if "#" in str(c["chunk_id"]) else 0
        q = (
            select(chunks.c.text)
            .join(documents, documents.c.id == chunks.c.doc_pk)
            .where(
                documents.c.source_id == c["source_id"],
                documents.c.doc_id == c["doc_id"],
                chunks.c.position == position,
            )
        )
        with rt.store.connect() as conn:
            text = conn.execute(q).scalar()
        if text:
            out[str(c["id"])] = str(text)
    return out


@router.post("/feedback/{request_id}", response_class=HTMLResponse)
def feedback(request: Request, request_id: str, rating: str = Form(max_length=10)) -> Response:
    def page(p: Principal) -> Response:
        rt = state_of(request).rt
        require(rt, p, "feedback")
        record_feedback(rt, request_id, p, rating=rating)
        return _render(
            request, "notice.html", p, title="Thank you", message="Your feedback was recorded.", back="/ask"
        )

    return _page(request, page)


# ------------------------------------------------------------------------------------------------ review
@router.get("/review", response_class=HTMLResponse)
def review_list(request: Request, status: str = "open") -> Response:
    def page(p: Principal) -> Response:
        rt = state_of(request).rt
        if not assigned_to(rt, p):
            require_any(rt, p, ("review.submit", "review.decide"), "use the review queue")
        statuses: list[str] | None = (
            ["pending", "escalated"] if status == "open" else (None if status == "all" else [status])
        )
        items = list_reviews(rt, status=statuses, principal=p)
        rows = [{**redact_review(rt, p, i), "roles": reviewer_roles(rt, i)} for i in items]
        return _render(request, "review_list.html", p, items=rows, filter_status=status)

    return _page(request, page)


@router.get("/review/{item_id}", response_class=HTMLResponse)
def review_item(request: Request, item_id: str) -> Response:
    def page(p: Principal) -> Response:
        rt = state_of(request).rt
        if not assigned_to(rt, p, item_id):
            require_any(rt, p, ("review.submit", "review.decide"), "use the review queue")
        item = visible_review(rt, p, item_id)
        may_decide = (
            item.status in ("pending", "escalated")
            and is_eligible_reviewer(rt, p, item)
            and (p.id == item.assigned_user or state_of(request).capabilities(p).get("review_decide", False))
        )
        return _render(
            request,
            "review_item.html",
            p,
            item=redact_review(rt, p, item),
            may_decide=may_decide,
            reject_reasons=REJECT_REASONS,
        )

    return _page(request, page)


@router.post("/review/{item_id}", response_class=HTMLResponse)
def review_decide(
    request: Request,
    item_id: str,
    decision: str = Form(max_length=10),
    text: str | None = Form(None, max_length=20_000),
    reason: str | None = Form(None, max_length=100),
    comment: str = Form("", max_length=4000),
) -> Response:
    def page(p: Principal) -> Response:
        rt = state_of(request).rt
        item = visible_review(rt, p, item_id)
        if p.id != item.assigned_user:
            require(rt, p, "review.decide")
        if decision not in ("approve", "edit", "reject"):
            raise Denied("unknown decision")
        decide_draft(
            rt,
            item_id,
            p,
            decision,  # type: ignore[arg-type]
            text=text if decision == "edit" else None,
            reason=reason if decision == "reject" else None,
            comment=comment,
        )
        return RedirectResponse(f"/review/{item_id}", status_code=303)

    return _page(request, page)


# ------------------------------------------------------------------------------------------------ approvals
def _upstream_of(rt: Any, tool: str) -> str | None:
    """``server/tool`` when the charter tool is an upstream MCP tool (shown on the Approvals page)."""
    spec = next((t for t in rt.spec.tools if t.name == tool), None)
    if spec is None or spec.upstream is None:
        return None
    return f"{spec.upstream.server}/{spec.upstream.tool}"


@router.get("/approvals", response_class=HTMLResponse)
def approvals(request: Request) -> Response:
    def page(p: Principal) -> Response:
        rt = state_of(request).rt
        require_capability(rt, p, "approvals", "see approval requests")
        rows = []
        for a in list_approvals(rt, principal=p):
            roles = approver_roles(rt, a)
            rows.append(
                {
                    **a.to_dict(),
                    "approver_roles": roles,
                    "rule": _rule(rt, a.tool, a.required_role),
                    "upstream": _upstream_of(rt, a.tool),
                    "may_decide": a.status in ("pending", "escalated")
                    and a.requester != p.id
                    and bool(set(roles) & set(p.roles)),
                }
            )
        return _render(request, "approvals.html", p, items=rows)

    return _page(request, page)


def _rule(rt: Any, tool: str, role: str | None) -> str:
    for t in rt.spec.tools:
        if t.name == tool and not isinstance(t.approval, str):
            for c in getattr(t.approval, "conditions", None) or []:
                if c.approver_role == role:
                    return f"{c.when} → {role}"
            return f"{t.approval.rule} → {role}"
    return role or "-"


@router.post("/approvals/{approval_id}", response_class=HTMLResponse)
def approval_decide(
    request: Request,
    approval_id: str,
    decision: str = Form(max_length=10),
    reason: str = Form("", max_length=4000),
) -> Response:
    def page(p: Principal) -> Response:
        from charter.server._api import _visible_approval

        rt = state_of(request).rt
        require_capability(rt, p, "approvals", "decide approval requests")
        _visible_approval(rt, p, approval_id)
        if decision not in ("approve", "reject"):
            raise Denied("unknown decision")
        decide_approval(rt, approval_id, p, decision, reason=reason)  # type: ignore[arg-type]
        return RedirectResponse("/approvals", status_code=303)

    return _page(request, page)


# ------------------------------------------------------------------------------------------------ monitor
@router.get("/monitor", response_class=HTMLResponse)
def monitor(request: Request) -> Response:
    def page(p: Principal) -> Response:
        from charter.pipeline import traces_for

        rt = state_of(request).rt
        require_capability(rt, p, "monitor", "see monitoring")
        caps = state_of(request).capabilities(p)
        report = build_report(rt, since=timedelta(days=7), principal=p) if caps.get("reports") else None
        extra: dict[str, Any] = {}
        if report is not None:  # trends, clusters and alerts only with reports.read: the report's own data
            from charter.telemetry import TREND_CHARTS, comparison_text, firing_alerts, trend_charts

            granularity = "by_week" if request.query_params.get("by") == "week" else "by_day"
            charts = trend_charts(report["time_series"], granularity)
            extra = {
                "charts": [
                    (key, title, Markup(charts[key]))  # noqa: S704 - built by svg_trend with every text escaped
                    for key, title, _ in TREND_CHARTS
                ],
                "granularity": granularity,
                "comparison_text": comparison_text,
                "alerts": firing_alerts(rt),
            }
        store = traces_for(rt)
        who = trace_list_filter(rt, p)
        traces = store.list(principal_id=who, limit=25)
        return _render(request, "monitor.html", p, report=report, traces=traces, **extra)

    return _page(request, page)


@router.get("/traces/{request_id}", response_class=HTMLResponse)
def trace(request: Request, request_id: str) -> Response:
    def page(p: Principal) -> Response:
        rt = state_of(request).rt
        require_any(rt, p, ("ask", "traces.read_all"), "read traces")
        return _render(request, "trace.html", p, trace=visible_trace(rt, p, request_id))

    return _page(request, page)


# ------------------------------------------------------------------------------------------------ sources
@router.get("/sources", response_class=HTMLResponse)
def sources(request: Request) -> Response:
    def page(p: Principal) -> Response:
        from charter.sources import source_statuses

        rt = state_of(request).rt
        require_capability(rt, p, "sources", "see sources")
        return _render(
            request, "sources.html", p, items=source_statuses(rt), synced=None, flagged=_flagged_for(rt, p)
        )

    return _page(request, page)


def _flagged_for(rt: Any, p: Principal) -> list[dict[str, Any]]:
    """Documents flagged by instruction screening (``charter.screening``) in the sources ``p`` owns (or all,
    for the charter's sources owner): the sentences come from those documents, so only owners see them."""
    from charter.screening import screened_documents

    owned = {s.id for s in rt.spec.sources if p.id in (s.owner, rt.spec.owners.sources)}
    return [d for d in screened_documents(rt) if d["source"] in owned] if owned else []


@router.post("/sources/{source_id}/approve", response_class=HTMLResponse)
def sources_approve(
    request: Request,
    source_id: str,
    doc_id: str = Form(max_length=1000),
    content_hash: str = Form("", max_length=64),
) -> Response:
    digest = content_hash or None

    def page(p: Principal) -> Response:
        from charter.screening import approve_screened
        from charter.sources import source_statuses, sync_sources

        rt = state_of(request).rt
        if source_id not in {s.id for s in rt.spec.sources}:
            raise NotFound(f"no source {source_id!r}")
        source = rt.spec.source(source_id)
        access.require_source_owner(
            rt,
            p.id,
            source_id,
            action="sources.screening_approved",
            verb="approve documents of",
            details={"doc_id": doc_id},
        )
        approve_screened(rt, source, doc_id, actor=p.id, content_hash=digest)
        summaries = sync_sources(rt, source_id, actor=p.id)
        return _render(
            request,
            "sources.html",
            p,
            items=source_statuses(rt),
            synced=[s.as_dict() for s in summaries],
            flagged=_flagged_for(rt, p),
        )

    return _page(request, page)


@router.post("/sources/{source_id}/sync", response_class=HTMLResponse)
def sources_sync(request: Request, source_id: str) -> Response:
    def page(p: Principal) -> Response:
        from charter.sources import source_statuses, sync_sources

        rt = state_of(request).rt
        if source_id not in {s.id for s in rt.spec.sources}:
            raise NotFound(f"no source {source_id!r}")
        require(rt, p, "sources.sync", f"source:{source_id}")
        summaries = sync_sources(rt, source_id, actor=p.id)
        return _render(
            request,
            "sources.html",
            p,
            items=source_statuses(rt),
            synced=[s.as_dict() for s in summaries],
            flagged=_flagged_for(rt, p),
        )

    return _page(request, page)


# ------------------------------------------------------------------------------------------------ audit
@router.get("/audit", response_class=HTMLResponse)
def audit(request: Request) -> Response:
    def page(p: Principal) -> Response:
        rt = state_of(request).rt
        require(rt, p, "audit.read")
        events = [e.to_dict() for e in reversed(rt.audit.tail(100))]
        return _render(request, "audit.html", p, events=events, verify=None)

    return _page(request, page)


@router.post("/audit/verify", response_class=HTMLResponse)
def audit_verify(request: Request) -> Response:
    def page(p: Principal) -> Response:
        rt = state_of(request).rt
        require(rt, p, "audit.read")
        result = rt.audit.verify().to_dict()
        events = [e.to_dict() for e in reversed(rt.audit.tail(100))]
        return _render(request, "audit.html", p, events=events, verify=result)

    return _page(request, page)
