"""The runner: every case through the real pipeline (``charter.pipeline.ask``), concurrently; scoring,
failure categories, aggregates with bootstrap intervals, thresholds and the baseline comparison."""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from charter.errors import CharterException, Denied, UsageError
from charter.evals._cases import CATEGORIES, EvalCase
from charter.evals._scorers import (
    FAILURE_CATEGORIES,
    CaseOutput,
    CaseScore,
    ScoreContext,
    Scorer,
    get_scorers,
)
from charter.evals._stats import Comparison, Estimate, bootstrap_mean, bootstrap_stat, paired_comparison
from charter.store import sealer_for, utcnow

if TYPE_CHECKING:
    from charter.runtime import Runtime

Progress = Callable[[int, int], None]  # (done, total)


@dataclass
class CaseResult:
    output: CaseOutput
    score: CaseScore
    failure: str | None  # the primary failure category
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def case(self) -> EvalCase:
        return self.output.case


@dataclass
class ThresholdResult:
    threshold: str
    metric: str
    observed: float | None
    passed: bool
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "metric": self.metric,
            "observed": self.observed,
            "passed": self.passed,
            "note": self.note,
        }


@dataclass
class EvalRun:
    """A finished run. ``metrics`` maps ``area.metric`` and ``category.area.metric`` to an Estimate."""

    id: str
    workflow: str
    created_at: datetime
    charter_fingerprint: str
    model: str | None
    prompt_version: str | None
    index_version: str | None
    sets: list[str]
    repeat: int
    results: list[CaseResult]
    metrics: dict[str, Estimate]
    thresholds: list[ThresholdResult]
    duration_s: float
    options: dict[str, Any] = field(default_factory=dict)
    baseline_id: str | None = None
    comparison: list[Comparison] = field(default_factory=list)
    finished_at: datetime | None = None

    @property
    def passed(self) -> bool:
        return all(t.passed for t in self.thresholds)

    @property
    def n_cases(self) -> int:
        return len({r.case.id for r in self.results})

    def failures_by_category(self) -> dict[str, list[CaseResult]]:
        out: dict[str, list[CaseResult]] = {}
        for r in self.results:
            if r.failure:
                out.setdefault(r.failure, []).append(r)
        return {k: out[k] for k in FAILURE_CATEGORIES if k in out}

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "workflow": self.workflow,
            "created_at": self.created_at.isoformat(),
            "charter_fingerprint": self.charter_fingerprint,
            "model": self.model,
            "prompt_version": self.prompt_version,
            "index_version": self.index_version,
            "sets": self.sets,
            "repeat": self.repeat,
            "cases": self.n_cases,
            "results": len(self.results),
            "passed": self.passed,
            "duration_s": round(self.duration_s, 3),
            "categories": {
                c: sum(1 for r in self.results if r.case.category == c and r.output.repeat == 0)
                for c in CATEGORIES
            },
            "metrics": {k: v.as_dict() for k, v in sorted(self.metrics.items())},
            "thresholds": [t.as_dict() for t in self.thresholds],
            "failures": {k: len(v) for k, v in self.failures_by_category().items()},
            "baseline_id": self.baseline_id,
            "comparison": [c.as_dict() for c in self.comparison],
        }


# --------------------------------------------------------------------------------------------- running
def _use_model(rt: Runtime, model: str | None) -> Runtime:
    """``rt``, or with ``model`` (``provider`` or ``provider:name``) other than the charter's, a runtime
    derived from it whose gateway uses that model (the shared runtime's gateway is left as it is)."""
    if not model:
        return rt
    from charter.models import ScriptedModel, build_gateway, create_model

    provider, _, name = model.partition(":")
    endpoint = rt.spec.model
    if provider == endpoint.provider and (not name or name == endpoint.name):
        return rt
    if provider == "scripted":
        primary: Any = ScriptedModel(name or "scripted", default="I can't answer that from the sources.")
    else:
        primary = create_model(
            endpoint.model_copy(update={"provider": provider, "name": name or endpoint.name}),
            base_dir=rt.charter.base_dir,
        )
    derived = rt.derive()
    derived.services.gateway = build_gateway(derived, primary=primary)
    return derived


def _tool_calls(rt: Runtime, request_id: str | None) -> list[dict[str, Any]]:
    if not request_id:
        return []
    from sqlalchemy import select

    from charter.store.tables import tool_actions as t

    sealer = sealer_for(rt)  # arguments are sealed at rest (charter.tools._records.seal_values)
    with rt.store.connect() as conn:
        rows = conn.execute(
            select(t.c.tool, t.c.status, t.c.args, t.c.needs_approval, t.c.required_role).where(
                t.c.request_id == request_id
            )
        ).all()
    return [
        {
            "tool": r.tool,
            "status": r.status,
            "args": sealer.open_json(r.args),
            "needs_approval": bool(r.needs_approval),
            "required_role": r.required_role,
        }
        for r in rows
    ]


def run_case(rt: Runtime, case: EvalCase, repeat: int = 0, *, timeout_s: float | None = None) -> CaseOutput:
    """One case through :func:`charter.pipeline.ask`, as production calls it (without review submission)."""
    from charter.agents import respond as ask
    from charter.pipeline import traces_for
    from charter.telemetry import recording_channel

    t0 = time.perf_counter()
    out = CaseOutput(case=case, repeat=repeat, status="error")
    try:
        principal = rt.charter.principal(case.user)
        with recording_channel("eval"):  # never production traffic, even when a server runs the eval
            res = ask(rt, principal, case.question, submit_for_review=False)
        out.result = res.as_dict()
        out.status, out.request_id, out.cost_usd = res.status, res.request_id, float(res.cost_usd or 0.0)
    except (Denied, UsageError) as exc:
        out.status, out.error = "refused", f"{type(exc).__name__}: {exc}"
    except CharterException as exc:
        out.status, out.error = "error", f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # a scorer must see a crash as an error case, never stop the run
        out.status, out.error = "error", f"{type(exc).__name__}: {exc}"
    out.latency_ms = (time.perf_counter() - t0) * 1000
    if out.result is not None:
        out.latency_ms = float(out.result.get("latency_ms", {}).get("total", out.latency_ms))
    if timeout_s is not None and out.latency_ms > timeout_s * 1000:
        out.status, out.error = "timeout", f"took {out.latency_ms:.0f} ms (limit {timeout_s:g} s)"
    rid = out.request_id  # refusals raise before the caller learns the request id; they retrieve nothing
    if rid:
        try:
            trace = traces_for(rt).get(rid)
        except CharterException:
            trace = None
        if trace:
            out.trace = trace
            out.retrieved = list(trace.get("retrieved") or [])
    out.tool_calls = _tool_calls(rt, out.request_id)
    return out


def primary_failure(fails: Sequence[tuple[str, str]]) -> str | None:
    cats = {c for c, _ in fails}
    for c in FAILURE_CATEGORIES:
        if c in cats:
            return c
    return None


def run_cases(
    rt: Runtime,
    cases: Sequence[EvalCase],
    *,
    repeat: int = 1,
    concurrency: int = 4,
    timeout_s: float | None = None,
    progress: Progress | None = None,
) -> list[CaseOutput]:
    """Run every (case, repeat) with ``concurrency`` threads; outputs in case order."""
    if repeat < 1:
        raise UsageError("--repeat must be at least 1")
    if concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    from charter.pipeline import gateway_for, warm_up

    gateway_for(rt)  # build once before the threads start (prompt approvals are checked here)
    warm_up(rt)  # the embedder and the rest load before timing starts: the first case is not the model load
    jobs = [(c, r) for r in range(repeat) for c in cases]
    outputs: dict[int, CaseOutput] = {}
    done = 0
    lock = threading.Lock()
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="eval") as pool:
        futures = {pool.submit(run_case, rt, c, r, timeout_s=timeout_s): i for i, (c, r) in enumerate(jobs)}
        for fut in as_completed(futures):
            outputs[futures[fut]] = fut.result()
            with lock:
                done += 1
                if progress:
                    progress(done, len(jobs))
    return [outputs[i] for i in range(len(jobs))]


def score_outputs(
    rt: Runtime,
    outputs: Sequence[CaseOutput],
    *,
    scorers: dict[str, Scorer] | None = None,
    extra_canaries: dict[str, str] | None = None,
) -> list[CaseResult]:
    scorers = scorers if scorers is not None else get_scorers()
    ctx = ScoreContext(rt, extra_canaries=extra_canaries)
    merged = [CaseScore() for _ in outputs]
    for sc in scorers.values():
        for m, s in zip(merged, sc.score(outputs, ctx), strict=True):
            m.metrics.update(s.metrics)
            m.failures.extend(s.failures)
    results = []
    for o, s in zip(outputs, merged, strict=True):
        fails = list(s.failures)
        if o.status in ("error", "timeout"):
            fails.insert(0, (o.status, o.error or o.status))
        results.append(CaseResult(o, s, primary_failure(fails), fails))
    return results


def _total(a: np.ndarray) -> float:
    return float(a.sum())


def _quantile(q: float) -> Callable[[np.ndarray], float]:
    return lambda a: float(np.quantile(a, q))


def aggregate(
    results: Sequence[CaseResult], scorers: dict[str, Scorer], *, seed: int = 0
) -> dict[str, Estimate]:
    """Mean of every per-case metric (clustered by case), overall and per category, plus the declared
    aggregates of the scorers."""
    by_metric: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        for name, v in r.score.metrics.items():
            if v is None or (isinstance(v, float) and math.isnan(v)):
                continue
            by_metric[name][r.case.id].append(float(v))
            by_metric[f"{r.case.category}.{name}"][r.case.id].append(float(v))
        failed = 0.0 if r.failure is None else 1.0
        by_metric["overall.pass_rate"][r.case.id].append(1.0 - failed)
        by_metric[f"{r.case.category}.overall.pass_rate"][r.case.id].append(1.0 - failed)
    out: dict[str, Estimate] = {}
    for name, clusters in by_metric.items():
        out[name] = bootstrap_mean(list(clusters.values()), seed=seed)
    for sc in scorers.values():
        for agg in getattr(sc, "aggregates", ()):
            for prefix in ("", *CATEGORIES):
                src = f"{prefix}.{agg.metric}" if prefix else agg.metric
                found = by_metric.get(src)
                if not found:
                    continue
                name = f"{prefix}.{agg.name}" if prefix else agg.name
                if agg.kind == "sum":
                    out[name] = bootstrap_stat(
                        [[float(np.mean(c))] for c in found.values()], _total, seed=seed
                    )
                elif agg.kind.startswith("p"):
                    q = float(agg.kind[1:]) / 100
                    out[name] = bootstrap_stat(list(found.values()), _quantile(q), seed=seed)
    return out


def resolve_metric(metrics: dict[str, Estimate], name: str) -> Estimate | None:
    """``name`` itself, or the short form of a category metric: ``negative.refusal_accuracy`` is
    ``negative.generation.refusal_accuracy``, ``edge.pass_rate`` is ``edge.overall.pass_rate``."""
    if name in metrics:
        return metrics[name]
    parts = name.split(".")
    if len(parts) == 2 and parts[0] in CATEGORIES:
        for area in ("generation", "overall", "retrieval", "permission", "actions", "latency", "cost"):
            found = metrics.get(f"{parts[0]}.{area}.{parts[1]}")
            if found is not None:
                return found
    return None


def check_thresholds(rt: Runtime, metrics: dict[str, Estimate]) -> list[ThresholdResult]:
    """The charter's ``evals.thresholds`` against ``metrics``."""
    return evaluate_thresholds(rt.spec.evals.thresholds, metrics)


def evaluate_thresholds(thresholds: Sequence[Any], metrics: dict[str, Estimate]) -> list[ThresholdResult]:
    """Each threshold on its point estimate or 95% bound; a metric the run did not measure fails."""
    out = []
    for t in thresholds:
        est = resolve_metric(metrics, t.metric)
        if est is None or est.n == 0:
            out.append(ThresholdResult(str(t), t.metric, None, False, "not measured by this run"))
            continue
        observed = {"point": est.value, "lower": est.low, "upper": est.high}[t.bound]
        out.append(ThresholdResult(str(t), t.metric, observed, t.passes(observed)))
    return out


def compare(
    results: Sequence[CaseResult], baseline: Sequence[CaseResult], *, seed: int = 0
) -> list[Comparison]:
    """Paired by case id: for every metric both runs measured, the mean difference and its significance."""

    def per_case(rs: Sequence[CaseResult]) -> dict[str, dict[str, float]]:
        acc: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        for r in rs:
            for k, v in r.score.metrics.items():
                acc[k][r.case.id].append(float(v))
            acc["overall.pass_rate"][r.case.id].append(0.0 if r.failure else 1.0)
        return {k: {c: float(np.mean(v)) for c, v in d.items()} for k, d in acc.items()}

    cur, base = per_case(results), per_case(baseline)
    return [paired_comparison(m, cur[m], base[m], seed=seed) for m in sorted(set(cur) & set(base))]


def _run_probes(
    rt: Runtime,
    *,
    model: str | None,
    repeat: int,
    concurrency: int,
    timeout_s: float | None,
    progress: Progress | None,
    scorers: dict[str, Scorer],
) -> list[CaseResult]:
    from charter.evals._probes import probe_runtime

    with probe_runtime(rt) as probe:
        probe_rt = _use_model(probe.runtime, model)
        outputs = run_cases(
            probe_rt,
            probe.cases,
            repeat=repeat,
            concurrency=concurrency,
            timeout_s=timeout_s,
            progress=progress,
        )
        return score_outputs(probe.runtime, outputs, scorers=scorers, extra_canaries=probe.canaries)


def run_eval(
    rt: Runtime,
    cases: Sequence[EvalCase],
    *,
    sets: Sequence[str] = (),
    model: str | None = None,
    repeat: int = 1,
    concurrency: int = 4,
    timeout_s: float | None = None,
    progress: Progress | None = None,
    scorer_names: Sequence[str] | None = None,
    baseline: EvalRun | None = None,
    extra_canaries: dict[str, str] | None = None,
    seed: int = 0,
    options: dict[str, Any] | None = None,
    probes: bool = False,
) -> EvalRun:
    """Run, score and aggregate (not stored: see :func:`charter.evals.save_run`). With ``probes``, the
    generated permission probes also run, in a temporary copy of the store (see ``charter.evals._probes``)."""
    if not cases and not probes:
        raise UsageError("no eval cases to run (name a set, or list sets in the charter's evals.sets)")
    from charter.retrieval import Index

    scorers = get_scorers(scorer_names)
    run_rt = _use_model(rt, model)  # with another model: a derived runtime, the shared one is untouched
    created = utcnow()
    t0 = time.perf_counter()
    outputs = run_cases(
        run_rt, cases, repeat=repeat, concurrency=concurrency, timeout_s=timeout_s, progress=progress
    )
    results = score_outputs(run_rt, outputs, scorers=scorers, extra_canaries=extra_canaries)
    if probes:
        results += _run_probes(
            rt,
            model=model,
            repeat=repeat,
            concurrency=concurrency,
            timeout_s=timeout_s,
            progress=progress,
            scorers=scorers,
        )
    metrics = aggregate(results, scorers, seed=seed)
    models = sorted({str(o.result["model"]) for o in outputs if o.result and o.result.get("model")})
    prompts = sorted(
        {str(o.result["prompt_version"]) for o in outputs if o.result and o.result.get("prompt_version")}
    )
    run = EvalRun(
        id="eval_" + uuid.uuid4().hex[:16],
        workflow=rt.spec.workflow.id,
        created_at=created,
        charter_fingerprint=rt.fingerprint,
        model=",".join(models) or model or rt.spec.model.name,
        prompt_version=",".join(prompts) or None,
        index_version=Index.for_runtime(rt).version,
        sets=list(sets),
        repeat=repeat,
        results=results,
        metrics=metrics,
        thresholds=check_thresholds(rt, metrics),
        duration_s=time.perf_counter() - t0,
        options=dict(options or {}),
        finished_at=utcnow(),
    )
    if baseline is not None:
        run.baseline_id = baseline.id
        run.comparison = compare(results, baseline.results, seed=seed)
    return run
