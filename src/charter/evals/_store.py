"""Storing and reading eval runs. The launch gate reads :func:`latest_run` for the current fingerprint."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import desc, select

from charter.errors import NotFound
from charter.evals._cases import EvalCase
from charter.evals._runner import CaseResult, EvalRun, ThresholdResult
from charter.evals._scorers import CaseOutput, CaseScore
from charter.evals._stats import Comparison, Estimate
from charter.store.tables import eval_results, eval_runs

if TYPE_CHECKING:
    from charter.runtime import Runtime


def record_run(rt: Runtime, run: EvalRun, actor: str, **details: object) -> str:
    """Store ``run`` (:func:`save_run`) and audit it as ``evals.run`` by ``actor``; ``details`` are added to
    the audit entry (e.g. the server's job id). Returns the run id."""
    save_run(rt, run)
    rt.audit.append(
        actor=actor,
        action="evals.run",
        resource=f"workflow:{rt.spec.workflow.id}",
        outcome="passed" if run.passed else "failed",
        details={
            "run_id": run.id,
            "cases": run.n_cases,
            "fingerprint": run.charter_fingerprint,
            "failures": {k: len(v) for k, v in run.failures_by_category().items()},
            **details,
        },
    )
    return run.id


def save_run(rt: Runtime, run: EvalRun) -> str:
    """Store the run and every (case, repeat) result in one transaction; returns the run id."""
    with rt.store.begin(immediate=True) as conn:
        conn.execute(
            eval_runs.insert().values(
                id=run.id,
                workflow=run.workflow,
                created_at=run.created_at,
                finished_at=run.finished_at,
                charter_fingerprint=run.charter_fingerprint,
                model=run.model,
                prompt_version=run.prompt_version,
                index_version=run.index_version,
                sets=list(run.sets),
                repeat=run.repeat,
                n_cases=run.n_cases,
                passed=run.passed,
                metrics={k: v.as_dict() for k, v in run.metrics.items()},
                thresholds=[t.as_dict() for t in run.thresholds],
                failures={k: len(v) for k, v in run.failures_by_category().items()},
                baseline_id=run.baseline_id,
                comparison=[c.as_dict() for c in run.comparison] or None,
                options=run.options,
                duration_s=run.duration_s,
            )
        )
        rows = [
            {
                "run_id": run.id,
                "case_id": r.case.id,
                "repeat": r.output.repeat,
                "category": r.case.category,
                "request_id": r.output.request_id,
                "status": r.output.status,
                "failure": r.failure,
                "case": r.case.as_dict(),
                "output": _jsonable(r.output.as_dict()),
                "metrics": r.score.metrics,
                "details": "\n".join(f"{c}: {d}" for c, d in r.failures) or None,
            }
            for r in run.results
        ]
        if rows:
            conn.execute(eval_results.insert(), rows)
    return run.id


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    import json

    return dict(json.loads(json.dumps(d, default=str)))


def _pair(line: str) -> tuple[str, str]:
    cat, _, detail = line.partition(": ")
    return cat, detail


def _est(d: dict[str, Any]) -> Estimate:
    def f(x: Any) -> float:
        return float("nan") if x is None else float(x)

    return Estimate(f(d.get("value")), f(d.get("low")), f(d.get("high")), int(d.get("n", 0)))


def _run_from_row(row: Any, results: list[CaseResult]) -> EvalRun:
    comp = [
        Comparison(
            c["metric"], c["current"], c["baseline"], c["diff"], c["low"], c["high"], c["p_value"], c["n"]
        )
        for c in (row.comparison or [])
    ]
    return EvalRun(
        id=row.id,
        workflow=row.workflow,
        created_at=row.created_at,
        charter_fingerprint=row.charter_fingerprint,
        model=row.model,
        prompt_version=row.prompt_version,
        index_version=row.index_version,
        sets=list(row.sets),
        repeat=row.repeat,
        results=results,
        metrics={k: _est(v) for k, v in row.metrics.items()},
        thresholds=[ThresholdResult(**t) for t in row.thresholds],
        duration_s=row.duration_s,
        options=dict(row.options or {}),
        baseline_id=row.baseline_id,
        comparison=comp,
        finished_at=row.finished_at,
    )


def load_run(rt: Runtime, run_id: str, *, with_results: bool = True) -> EvalRun:
    """One stored run (``NotFound`` if there is none with that id)."""
    with rt.store.connect() as conn:
        row = conn.execute(select(eval_runs).where(eval_runs.c.id == run_id)).first()
        if row is None:
            raise NotFound(f"no eval run {run_id!r}")
        rows = (
            conn.execute(
                select(eval_results).where(eval_results.c.run_id == run_id).order_by(eval_results.c.id)
            ).all()
            if with_results
            else []
        )
    results = []
    for r in rows:
        case = EvalCase.from_dict(r.case)
        o = r.output
        out = CaseOutput(
            case=case,
            repeat=o["repeat"],
            status=o["status"],
            result=o.get("result"),
            error=o.get("error"),
            request_id=o.get("request_id"),
            retrieved=o.get("retrieved") or [],
            tool_calls=o.get("tool_calls") or [],
            latency_ms=o.get("latency_ms", 0.0),
            cost_usd=o.get("cost_usd", 0.0),
        )
        fails = [_pair(line) for line in (r.details or "").splitlines() if ": " in line]
        results.append(CaseResult(out, CaseScore(dict(r.metrics), fails), r.failure, fails))
    return _run_from_row(row, results)


def list_runs(rt: Runtime, *, fingerprint: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
    """Newest first: id, created_at, fingerprint, model, cases, passed, failures."""
    q = (
        select(
            eval_runs.c.id,
            eval_runs.c.created_at,
            eval_runs.c.charter_fingerprint,
            eval_runs.c.model,
            eval_runs.c.prompt_version,
            eval_runs.c.index_version,
            eval_runs.c.n_cases,
            eval_runs.c.passed,
            eval_runs.c.failures,
            eval_runs.c.options,
        )
        .order_by(desc(eval_runs.c.created_at))
        .limit(limit)
    )
    if fingerprint:
        q = q.where(eval_runs.c.charter_fingerprint == fingerprint)
    with rt.store.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(q).all()]


def latest_run(
    rt: Runtime, *, fingerprint: str | None = None, since: datetime | None = None, with_results: bool = False
) -> EvalRun | None:
    """The newest run for ``fingerprint`` (default: the runtime's current charter fingerprint), optionally
    not older than ``since``; ``None`` if there is none. Runs with generated probes only count too."""
    fp = fingerprint or rt.fingerprint
    q = (
        select(eval_runs.c.id)
        .where(eval_runs.c.charter_fingerprint == fp)
        .order_by(desc(eval_runs.c.created_at))
    )
    if since is not None:
        q = q.where(eval_runs.c.created_at >= since)
    with rt.store.connect() as conn:
        rid = conn.execute(q.limit(1)).scalar()
    return None if rid is None else load_run(rt, rid, with_results=with_results)
