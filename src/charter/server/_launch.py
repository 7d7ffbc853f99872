"""The REST API for evaluation and the launch gate: stored runs, background runs, reports, history.

Reading needs Cedar ``evals.run`` / ``gate.run`` or ``reports.read`` (the gate also: being one of the
workflow's owners); starting a run needs ``evals.run`` / for the gate ``gate.run`` or being an owner (denials
audited). Starting answers 202 with a job; a second start while one of the same kind
runs in this process answers 409. The helpers at the bottom (:func:`gate_history`, :func:`gate_report`,
:func:`eval_detail`) are shared with the console pages.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Body, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import Response

from charter.access import Reader
from charter.errors import CharterException, IntegrityError, NotFound
from charter.server import _schemas as S
from charter.server._api import Caller, _iso, _rt
from charter.server._app import state_of
from charter.server._auth import require, require_any, require_capability
from charter.server._jobs import eval_cases, eval_job, gate_job

if TYPE_CHECKING:
    from charter.runtime import Runtime
    from charter.spec import Principal

router = APIRouter(responses=S.ERRORS)
EVAL_READERS = ("evals.run", "reports.read")
RunId = Annotated[str, PathParam(min_length=1, max_length=100)]
REPORT_FILES = {
    "json": ("gate-report.json", "application/json"),
    "md": ("gate-report.md", "text/markdown; charset=utf-8"),
    "html": ("gate-report.html", "text/html; charset=utf-8"),
}


# ------------------------------------------------------------------------------------------------ evals
@router.get("/api/evals", response_model=S.EvalRunList, response_model_exclude_unset=True, tags=["evals"])
def list_eval_runs(
    request: Request, principal: Caller, limit: Annotated[int, Query(ge=1, le=200)] = 20
) -> S.EvalRunList:
    """Stored evaluation runs, newest first (Cedar ``evals.run`` or ``reports.read``)."""
    from charter.evals import list_runs

    rt = _rt(request)
    require_any(rt, principal, EVAL_READERS, "see evaluation runs")
    return S.EvalRunList.model_validate({"items": _iso(list_runs(rt, limit=limit))})


@router.post("/api/evals", response_model=S.JobOut, status_code=202, tags=["evals"])
def start_eval_run(
    request: Request, principal: Caller, body: Annotated[S.EvalRunIn | None, Body()] = None
) -> S.JobOut:
    """Start an evaluation run of the charter's eval sets in the background, as ``charter eval`` does
    (Cedar ``evals.run``). 409 while another one runs in this server process; poll ``href``."""
    rt = _rt(request)
    require(rt, principal, "evals.run")
    body = body or S.EvalRunIn()
    jobs = state_of(request).jobs
    jobs.ensure_free("eval")  # before loading the sets: a refused start costs nothing
    sets, cases = eval_cases(rt, body.cases)
    work = eval_job(
        rt,
        principal.id,
        sets,
        cases,
        probes=body.permission_probes,
        repeat=body.repeat,
        concurrency=body.concurrency,
        timeout_s=body.timeout_s,
    )
    return _job_out(jobs.start("eval", principal.id, work).as_dict())


@router.get("/api/evals/{run_id}", response_model=S.JobOut, tags=["evals"])
def get_eval_run(request: Request, run_id: RunId, principal: Caller) -> S.JobOut:
    """A background run started here (``job_eval_…``: running, succeeded or failed, with its summary or
    error) or a stored run (``eval_…``: its full summary)."""
    rt = _rt(request)
    require_any(rt, principal, EVAL_READERS, "see evaluation runs")
    return _job_out(eval_detail(rt, state_of(request).jobs, run_id))


EVAL_REPORT_MEDIA = {
    "json": "application/json",
    "md": "text/markdown; charset=utf-8",
    "html": "text/html; charset=utf-8",
}


@router.get(
    "/api/evals/{run_id}/report/{fmt}",
    tags=["evals"],
    response_class=Response,
    responses={
        200: {
            "content": {"application/json": {}, "text/markdown": {}, "text/html": {}},
            "description": "The run's report (a download)",
        }
    },
)
def eval_report_file(
    request: Request, run_id: RunId, fmt: Literal["json", "md", "html"], principal: Caller
) -> Response:
    """A stored run's report as JSON, Markdown or HTML, as ``charter evals show RUN --report DIR --as YOU``
    writes it: failure examples (answers, notes, retrieved and expected documents) show only what the
    caller may read now; the rest is ``[redacted: …]`` (Cedar ``evals.run`` or ``reports.read``)."""
    rt = _rt(request)
    require_any(rt, principal, EVAL_READERS, "see evaluation runs")
    return eval_report_response(rt, principal, run_id, fmt)


# ------------------------------------------------------------------------------------------------ gate
@router.get("/api/gate", response_model=S.GateOut, response_model_exclude_unset=True, tags=["gate"])
def gate_latest(request: Request, principal: Caller) -> Any:
    """The latest launch-gate result, its report with every check's evidence (when one was written) and
    whether its signature verifies, and the latest drift check (owners, Cedar ``gate.run`` or ``reports.read``)."""
    rt = _rt(request)
    require_capability(rt, principal, "gate", "see the launch gate")
    latest = rt.get_state("gate.latest")
    report, verified = gate_report(rt, latest)
    return {
        "latest": latest,
        "report": report,
        "verification": verified,
        "drift": rt.get_state("gate.drift.latest"),
    }


@router.get(
    "/api/gate/history", response_model=S.GateHistory, response_model_exclude_unset=True, tags=["gate"]
)
def gate_history_api(
    request: Request,
    principal: Caller,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
    kind: Literal["gate", "drift", "all"] = "gate",
) -> S.GateHistory:
    """Gate runs from the audit log, newest first: time, actor, result, fingerprint, failed checks and
    whether the signed report verifies (``drift``: the drift passes; ``all``: both)."""
    rt = _rt(request)
    require_capability(rt, principal, "gate", "see the launch gate")
    return S.GateHistory.model_validate({"items": gate_history(rt, limit=limit, kind=kind)})


@router.post("/api/gate/runs", response_model=S.JobOut, status_code=202, tags=["gate"])
def start_gate_run(request: Request, principal: Caller) -> S.JobOut:
    """Run the seven checks in the background, write the signed report and record it, as ``charter gate
    --report`` does (the workflow's owners, or Cedar ``gate.run``). 409 while another gate run runs in this
    server process."""
    rt = _rt(request)
    require_capability(rt, principal, "gate_run", "run the launch gate")
    job = state_of(request).jobs.start("gate", principal.id, gate_job(rt, principal.id))
    return _job_out(job.as_dict())


@router.get("/api/gate/runs/{job_id}", response_model=S.JobOut, tags=["gate"])
def get_gate_run(request: Request, job_id: RunId, principal: Caller) -> S.JobOut:
    """A gate run started here: running, succeeded (with the result) or failed (with the error)."""
    rt = _rt(request)
    require_capability(rt, principal, "gate", "see the launch gate")
    return _job_out(state_of(request).jobs.get(job_id, "gate"))


@router.get(
    "/api/gate/reports/{gate_run}/{fmt}",
    tags=["gate"],
    response_class=Response,
    responses={
        200: {
            "content": {"application/json": {}, "text/markdown": {}, "text/html": {}},
            "description": "The report file (a download)",
        }
    },
)
def gate_report_file(
    request: Request, gate_run: RunId, fmt: Literal["json", "md", "html"], principal: Caller
) -> Response:
    """Download a gate run's signed report as JSON, Markdown or HTML (verify it with
    ``charter gate verify``)."""
    rt = _rt(request)
    require_capability(rt, principal, "gate", "see the launch gate")
    return report_download(rt, gate_run, fmt)


# ------------------------------------------------------------------------------------------------ helpers
def _job_out(doc: dict[str, Any]) -> S.JobOut:
    base = "/api/evals/" if doc["kind"] == "eval" else "/api/gate/runs/"
    fields = {k: doc.get(k) for k in S.JobOut.model_fields if k != "href"}
    return S.JobOut(**fields, href=base + doc["id"])


def eval_detail(rt: Runtime, jobs: Any, run_id: str) -> dict[str, Any]:
    """A job record (``job_…``) or a stored run shaped like one (status ``succeeded``, full summary)."""
    from charter.evals import load_run

    if run_id.startswith("job_"):
        return dict(jobs.get(run_id, "eval"))
    run = load_run(rt, run_id)
    return {
        "id": run.id,
        "kind": "eval",
        "status": "succeeded",
        "actor": None,
        "started_at": run.created_at.isoformat(),
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "progress": None,
        "summary": run.summary(),
        "error": None,
    }


def eval_report_response(rt: Runtime, principal: Principal, run_id: str, fmt: str) -> Response:
    """A stored eval run's report in ``fmt`` for ``principal`` (redacted by :mod:`charter.access`)."""
    from charter.evals import load_run, render_html, render_json, render_markdown

    if fmt not in EVAL_REPORT_MEDIA:
        raise NotFound(f"no {fmt!r} report; formats: {', '.join(EVAL_REPORT_MEDIA)}")
    run = load_run(rt, run_id)
    render = {"json": render_json, "md": render_markdown, "html": render_html}[fmt]
    body = render(run, Reader(rt, principal))
    name = f"{run.id}.{fmt}"
    return Response(
        body.encode(),
        media_type=EVAL_REPORT_MEDIA[fmt],
        headers={"content-disposition": f'attachment; filename="{name}"', "cache-control": "no-store"},
    )


def _verify(rt: Runtime, folder: str | None) -> dict[str, Any]:
    """Does the report in ``folder`` verify? ``signature`` is about the signature and the file hashes;
    ``current`` says whether it is for the configuration running now."""
    from charter.gate import verify_report

    if not folder:
        return {"signature": None, "current": None, "message": "no report was written"}
    if not Path(folder).is_dir():  # e.g. written by `charter gate --report` on another machine
        return {"signature": None, "current": None, "message": f"the report {folder} is not on this server"}
    try:
        verify_report(rt, folder)
    except IntegrityError as exc:
        # verify_report checks the fingerprint last: a report of an older configuration is still signed
        older = str(exc).startswith("the report is for charter")
        return {"signature": older, "current": False, "message": str(exc)}
    except CharterException as exc:
        return {"signature": False, "current": None, "message": str(exc)}
    return {"signature": True, "current": True, "message": "signature and file hashes verify"}


def gate_history(rt: Runtime, *, limit: int = 20, kind: str = "gate") -> list[dict[str, Any]]:
    actions = {"gate": ["gate.run"], "drift": ["gate.drift"], "all": ["gate.run", "gate.drift"]}[kind]
    events = [e for a in actions for e in rt.audit.tail(limit, action=a)]
    events.sort(key=lambda e: e.seq, reverse=True)
    out = []
    for e in events[:limit]:
        d = e.details if isinstance(e.details, dict) else {}
        out.append(
            {
                "id": d.get("id"),
                "kind": "drift" if e.action == "gate.drift" else "gate",
                "at": d.get("at") or e.to_dict()["ts"],
                "actor": e.actor,
                "status": d.get("status"),
                "fingerprint": d.get("fingerprint"),
                "checks": d.get("checks") or {},
                "owners": d.get("owners") or {},
                "report": bool(d.get("report")),
                "verification": _verify(rt, d.get("report")) if e.action == "gate.run" else None,
                "audit_seq": e.seq,
            }
        )
    return out


def _report_folder(rt: Runtime, gate_run: str) -> Path:
    for e in reversed(rt.audit.tail(1000, action="gate.run")):
        d = e.details if isinstance(e.details, dict) else {}
        if d.get("id") == gate_run:
            if not d.get("report"):
                raise NotFound(f"gate run {gate_run!r} wrote no report")
            return Path(str(d["report"]))
    raise NotFound(f"no gate run {gate_run!r}")


def gate_report(rt: Runtime, latest: Any) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The full report (every check's findings and evidence) of a ``gate.latest`` summary, and whether it
    verifies; ``(None, None)`` when no report was written."""
    if not isinstance(latest, dict) or not latest.get("report"):
        return None, None
    folder = Path(str(latest["report"]))
    verification = _verify(rt, str(folder))
    try:
        data = json.loads((folder / "gate-report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, verification
    return data, verification


def report_download(rt: Runtime, gate_run: str, fmt: str) -> Response:
    name, media = REPORT_FILES[fmt]
    path = _report_folder(rt, gate_run) / name
    try:
        blob = path.read_bytes()
    except OSError:
        raise NotFound(f"the {fmt} report of {gate_run!r} is no longer on this server") from None
    return Response(
        blob,
        media_type=media,
        headers={"content-disposition": f'attachment; filename="{gate_run}-{name}"'},
    )
