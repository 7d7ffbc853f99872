"""Console pages for evaluation and the launch gate (server-rendered, no script needed).

* ``/evals`` — stored runs (fingerprint, cases per category, thresholds with pass/fail) and, for whoever
  may ``evals.run``, "Start eval run"; ``/evals/{id}`` — one run (metrics with intervals against the
  thresholds, failures with examples redacted for the reader by :mod:`charter.access`, report downloads)
  or a background run's status (the page refreshes itself while it runs).
* ``/gate`` — the latest gate result with each of the seven checks' status, owner, findings and evidence,
  whether its signed report verifies, the latest drift pass, the history of runs and downloads of the
  reports; "Run gate" for the owners and whoever may ``gate.run``; ``/gate/runs/{job}`` — a background gate run's status.

Every page and form asks the same questions as the API (``charter.server._launch``); a hidden button is
also refused by the server.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from charter.access import Reader
from charter.server._app import state_of
from charter.server._auth import require, require_any, require_capability
from charter.server._console import _page, _render
from charter.server._launch import EVAL_READERS, eval_detail, gate_history, gate_report
from charter.spec import Principal

router = APIRouter(include_in_schema=False)
REFRESH_SECONDS = 2


def _category_counts(rt: Any, run_ids: list[str]) -> dict[str, dict[str, int]]:
    """Hand-written and generated cases per category of each run (first repeat only), in one query."""
    from sqlalchemy import func, select

    from charter.store.tables import eval_results as r

    if not run_ids:
        return {}
    q = (
        select(r.c.run_id, r.c.category, func.count())
        .where(r.c.run_id.in_(run_ids), r.c.repeat == 0)
        .group_by(r.c.run_id, r.c.category)
    )
    out: dict[str, dict[str, int]] = {}
    with rt.store.connect() as conn:
        for run_id, category, n in conn.execute(q).all():
            out.setdefault(run_id, {})[category] = int(n)
    return out


# ------------------------------------------------------------------------------------------------ evals
@router.get("/evals", response_class=HTMLResponse)
def evals_page(request: Request) -> Response:
    def page(p: Principal) -> Response:
        from charter.evals import CATEGORIES, list_runs, load_run

        st = state_of(request)
        rt = st.rt
        require_any(rt, p, EVAL_READERS, "see evaluation runs")
        rows = list_runs(rt, limit=30)
        counts = _category_counts(rt, [r["id"] for r in rows])
        runs = []
        for r in rows:
            run = load_run(rt, r["id"], with_results=False)
            runs.append(
                {
                    **r,
                    "created_at": r["created_at"].isoformat(),
                    "categories": counts.get(r["id"], {}),
                    "thresholds": [t.as_dict() for t in run.thresholds],
                    "current": r["charter_fingerprint"] == rt.fingerprint,
                }
            )
        running = st.jobs.running("eval")
        return _render(
            request,
            "evals.html",
            p,
            runs=runs,
            categories=CATEGORIES,
            running=running.as_dict() if running else None,
            fingerprint=rt.fingerprint,
        )

    return _page(request, page)


@router.post("/evals/runs", response_class=HTMLResponse)
def evals_start(request: Request, permission_probes: str | None = Form(None)) -> Response:
    def page(p: Principal) -> Response:
        from charter.server._jobs import eval_cases, eval_job

        st = state_of(request)
        rt = st.rt
        require(rt, p, "evals.run")
        st.jobs.ensure_free("eval")
        sets, cases = eval_cases(rt, None)
        work = eval_job(
            rt, p.id, sets, cases, probes=bool(permission_probes), repeat=1, concurrency=4, timeout_s=60.0
        )
        job = st.jobs.start("eval", p.id, work)
        return RedirectResponse(f"/evals/{job.id}", status_code=303)

    return _page(request, page)


@router.get("/evals/{run_id}", response_class=HTMLResponse)
def eval_page(request: Request, run_id: str) -> Response:
    def page(p: Principal) -> Response:
        from charter.evals import AREAS, is_category_metric

        st = state_of(request)
        require_any(st.rt, p, EVAL_READERS, "see evaluation runs")
        doc = eval_detail(st.rt, st.jobs, run_id[:100])
        if doc["id"].startswith("job_"):
            return _render(
                request,
                "job.html",
                p,
                job=doc,
                refresh=REFRESH_SECONDS if doc["status"] == "running" else None,
            )
        from charter.evals import load_run, report_data

        s = doc["summary"]
        overall = {
            k: v for k, v in s["metrics"].items() if k.split(".")[0] in AREAS and not is_category_metric(k)
        }
        # failure examples as this reader may see them: outputs were produced as each case's user
        examples = report_data(load_run(st.rt, doc["id"]), Reader(st.rt, p))["failure_examples"]
        return _render(request, "eval_run.html", p, run=s, overall=overall, examples=examples)

    return _page(request, page)


@router.get("/evals/{run_id}/report/{fmt}")
def eval_report_page(request: Request, run_id: str, fmt: str) -> Response:
    """The console's download of a run's report, redacted for the signed-in reader (as the API's)."""
    from charter.server._launch import eval_report_response

    def page(p: Principal) -> Response:
        st = state_of(request)
        require_any(st.rt, p, EVAL_READERS, "see evaluation runs")
        return eval_report_response(st.rt, p, run_id[:100], fmt)

    return _page(request, page)


# ------------------------------------------------------------------------------------------------ gate
@router.get("/gate", response_class=HTMLResponse)
def gate_page(request: Request) -> Response:
    def page(p: Principal) -> Response:
        st = state_of(request)
        rt = st.rt
        require_capability(rt, p, "gate", "see the launch gate")
        latest = rt.get_state("gate.latest")
        report, verification = gate_report(rt, latest)
        running = st.jobs.running("gate")
        return _render(
            request,
            "gate.html",
            p,
            latest=latest,
            report=report,
            verification=verification,
            drift=rt.get_state("gate.drift.latest"),
            history=gate_history(rt, limit=20, kind="gate"),
            running=running.as_dict() if running else None,
            fingerprint=rt.fingerprint,
        )

    return _page(request, page)


@router.post("/gate/runs", response_class=HTMLResponse)
def gate_start(request: Request) -> Response:
    def page(p: Principal) -> Response:
        from charter.server._jobs import gate_job

        st = state_of(request)
        require_capability(st.rt, p, "gate_run", "run the launch gate")
        job = st.jobs.start("gate", p.id, gate_job(st.rt, p.id))
        return RedirectResponse(f"/gate/runs/{job.id}", status_code=303)

    return _page(request, page)


@router.get("/gate/runs/{job_id}", response_class=HTMLResponse)
def gate_job_page(request: Request, job_id: str) -> Response:
    def page(p: Principal) -> Response:
        st = state_of(request)
        require_capability(st.rt, p, "gate", "see the launch gate")
        doc = st.jobs.get(job_id[:100], "gate")
        return _render(
            request, "job.html", p, job=doc, refresh=REFRESH_SECONDS if doc["status"] == "running" else None
        )

    return _page(request, page)


@router.get("/gate/reports/{gate_run}/{fmt}")
def gate_report_page(request: Request, gate_run: str, fmt: str) -> Response:
    """The console's download of a signed gate report (the API's needs a bearer token, not the session)."""
    from charter.server._launch import REPORT_FILES, report_download

    def page(p: Principal) -> Response:
        st = state_of(request)
        require_capability(st.rt, p, "gate", "see the launch gate")
        if fmt not in REPORT_FILES or not gate_run.replace("_", "").isalnum():
            from charter.errors import NotFound

            raise NotFound("no such report")
        return report_download(st.rt, gate_run[:100], fmt)

    return _page(request, page)
