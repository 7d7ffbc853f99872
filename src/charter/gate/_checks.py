"""The gate's evidence-gathering checks that read the charter and the store (the drills are in
``_drill.py``). Each function fills one :class:`CheckResult`; none of them writes anything."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from charter.gate._approvals import policies_approval, policy_set_hash, private_ack, private_documents
from charter.gate._types import CheckResult
from charter.store import storage_wide_modes, utcnow
from charter.store.tables import eval_results, traces

if TYPE_CHECKING:
    from charter.evals import EvalRun
    from charter.runtime import Runtime
    from charter.spec import Source

#: Jobs made of these words only, or this short, say nothing about who, what and for whom.
VAGUE_WORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "the",
        "to",
        "of",
        "for",
        "with",
        "in",
        "on",
        "ai",
        "automate",
        "automation",
        "support",
        "help",
        "assist",
        "handle",
        "answer",
        "answers",
        "questions",
        "question",
        "tickets",
        "ticket",
        "stuff",
        "things",
        "customers",
        "customer",
        "users",
        "user",
        "do",
        "it",
        "everything",
        "process",
        "work",
        "tasks",
        "task",
        "chatbot",
        "bot",
        "agent",
    ]
)
MIN_JOB_WORDS = 8
MIN_FIELD_WORDS = 3


def _words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z0-9']+", text.lower())


def vague_job(job: str) -> str | None:
    """Why ``job`` is too vague to launch on, or None."""
    words = _words(job)
    if len(words) < MIN_JOB_WORDS:
        return (
            f"the job has {len(words)} words; say who it serves, what it produces and from what "
            f"(at least {MIN_JOB_WORDS} words)"
        )
    specific = [w for w in words if w not in VAGUE_WORDS]
    if len(specific) < 3:
        return "the job uses only generic words (e.g. 'automate support'); name the task and its users"
    return None


def check_scope_static(rt: Runtime, c: CheckResult) -> None:
    s = rt.spec.scope
    why = vague_job(s.job)
    if why:
        c.add("fail", f"vague job: {why}", fix="rewrite scope.job in charter.yaml", job=s.job)
    else:
        c.add("pass", "the job is specific", job=" ".join(s.job.split()), words=len(_words(s.job)))
    for name in ("inputs", "outputs"):
        items = list(getattr(s, name))
        short = [i for i in items if len(_words(i)) < MIN_FIELD_WORDS]
        c.add(
            "fail" if short else "pass",
            f"scope.{name}: {len(items)} listed" + (f"; too short to be specific: {short}" if short else ""),
            fix=f"describe each of scope.{name} in at least {MIN_FIELD_WORDS} words in charter.yaml",
            **{name: items},
        )
    if len(_words(s.next_step)) < MIN_FIELD_WORDS:
        c.add(
            "fail",
            "scope.next_step does not say what happens to the output",
            fix="set scope.next_step in charter.yaml (who reads or reviews the output, what happens then)",
            next_step=s.next_step,
        )
    else:
        c.add("pass", "scope.next_step is documented", next_step=" ".join(s.next_step.split()))
    unknown_roles = [u for u in s.users if u not in rt.spec.roles]
    c.add(
        "fail" if unknown_roles else "pass",
        f"scope.users: {len(s.users)} roles",
        users=list(s.users),
        unknown=unknown_roles,
    )
    c.add(
        "pass" if s.out_of_scope else "fail",
        "out-of-scope topics listed" if s.out_of_scope else "scope.out_of_scope is empty",
        fix="list the topics the workflow must not answer under scope.out_of_scope in charter.yaml",
        out_of_scope=list(s.out_of_scope),
    )
    c.add(
        "pass" if s.forbidden_actions else "fail",
        "forbidden actions listed" if s.forbidden_actions else "scope.forbidden_actions is empty",
        fix="list the actions no tool may ever perform under scope.forbidden_actions in charter.yaml",
        forbidden_actions=list(s.forbidden_actions),
    )
    tools = [t.name for t in rt.spec.tools]
    clash = sorted(set(tools) & set(s.forbidden_actions))
    c.add(
        "fail" if clash else "pass",
        f"{len(tools)} tools listed" + (f"; forbidden: {clash}" if clash else ""),
        tools=tools,
    )
    _check_grounding(rt, c)


def _check_grounding(rt: Runtime, c: CheckResult) -> None:
    """``review.grounding: optional`` is a declared choice, shown to whoever signs the launch off."""
    if rt.spec.review.grounding == "optional":
        c.add(
            "warn",
            "review.grounding is optional: answers may contain the model's own, uncited sentences",
            fix="keep it only for a model gateway or a workflow without sources; otherwise set "
            "review.grounding: required in charter.yaml (docs/pipeline.md, Grounding)",
            grounding="optional",
            sources=len(rt.spec.sources),
        )
    else:
        c.add("pass", "review.grounding is required: every answer cites a retrieved passage")


# --------------------------------------------------------------------------------------------- sources
def check_storage_modes(rt: Runtime, c: CheckResult) -> None:
    """The database (and ``-wal``/``-shm``), keys, anchors and reports must be private (0600 in 0700)."""
    db = rt.store.url if rt.store.is_sqlite else None
    wide = storage_wide_modes(rt.charter.base_dir, db, rt.key_dir)
    for w in wide:
        c.add("fail", f"storage: {w.message()}", **w.as_dict())
    if not wide:
        c.add("pass", "storage: .charter/, keys and database are private (folders 0700, files 0600)")


def check_sources(rt: Runtime, c: CheckResult, now: datetime) -> None:
    from charter.sources import source_freshness

    check_storage_modes(rt, c)

    principals = rt.charter.principals
    fresh = source_freshness(rt, now=now)
    for s in rt.spec.sources:
        owner = principals.get(s.owner)
        ev: dict[str, Any] = {
            "source": s.id,
            "owner": s.owner,
            "sensitivity": s.sensitivity,
            "permission_model": s.permissions.model,
        }
        if owner is None or not owner.active:
            c.add(
                "fail",
                f"{s.id}: owner {s.owner!r} does not exist or is inactive",
                fix=f"set sources[{s.id}].owner in charter.yaml to an active user of users.yaml",
                **ev,
            )
        _check_source_approval(rt, c, s, ev)
        _check_freshness(c, s, fresh[s.id])
        _check_private_documents(rt, c, s)
    _check_policy_approval(rt, c)


def _check_source_approval(rt: Runtime, c: CheckResult, s: Source, ev: dict[str, Any]) -> None:
    """The source's approval: recorded, by an active approver, bound to its current configuration."""
    from charter.sources import approval_status

    a = approval_status(rt, s)
    ev_a = {**ev, "approval": a}
    approve = f"charter sources approve {s.id} --as {s.owner}"
    if a["state"] == "approved" and a["approver_active"]:
        c.add(
            "pass",
            f"{s.id}: approved by {a['by']} at {a['at']}, bound to {a['current_config_hash']}",
            **ev_a,
        )
    elif a["state"] == "approved":
        c.add(
            "fail",
            f"{s.id}: approver {a['by']!r} does not exist or is inactive",
            fix=f"{approve} (the owner approves again)",
            **ev_a,
        )
    elif a["state"] == "unapproved":
        c.add(
            "fail",
            f"{s.id}: no approval record",
            fix=f"{approve} (recorded in the database; the charter fingerprint and eval runs stay valid)",
            **ev_a,
        )
    elif a["state"] == "config_changed":
        c.add(
            "fail",
            f"{s.id}: configuration changed since approval ({a['config_hash']} approved, "
            f"now {a['current_config_hash']})",
            fix=f"{approve} (after reviewing the change)",
            **ev_a,
        )
    else:
        c.add(
            "fail",
            f"{s.id}: approval not bound to a configuration hash "
            f"(set approval.config_hash: {a['current_config_hash']})",
            fix=f"{approve}, or set sources[{s.id}].approval.config_hash: {a['current_config_hash']}",
            **ev_a,
        )


def _check_freshness(c: CheckResult, s: Source, f: Any) -> None:
    c.add(
        "pass" if f.is_fresh else "fail",
        f"{s.id}: {f.state}"
        + (
            f" (age {f.age_seconds:.0f} s, max {f.max_age_seconds:.0f} s)"
            if f.age_seconds is not None
            else ""
        ),
        fix=f"charter sync --source {s.id}",
        source=s.id,
        freshness=f.as_dict(),
    )


def _check_private_documents(rt: Runtime, c: CheckResult, s: Source) -> None:
    """Private-by-default documents (no ACL) need the source owner's acknowledgement."""
    private = private_documents(rt, s.id)
    if private:
        ack = private_ack(rt, s.id) or {}
        acked = set(ack.get("documents") or []) if ack.get("by") == s.owner else set()
        missing = sorted(set(private) - acked)
        if missing:
            c.add(
                "fail",
                f"{s.id}: {len(missing)} private-by-default documents without the owner's "
                f"acknowledgement (charter gate ack-private {s.id} --as {s.owner})",
                fix=f"give the documents an ACL (docs/sources.md), or charter gate ack-private {s.id} --as {s.owner}",
                source=s.id,
                documents=missing,
                acknowledgement=ack or None,
            )
        else:
            c.add(
                "pass",
                f"{s.id}: {len(private)} private-by-default documents acknowledged by "
                f"{ack['by']} at {ack['at']}",
                source=s.id,
                documents=private,
            )


def _check_policy_approval(rt: Runtime, c: CheckResult) -> None:
    """The role and policy set must be approved, as it is now, by the scope owner."""
    current = policy_set_hash(rt)
    appr = policies_approval(rt)
    ev_p: dict[str, Any] = {
        "policy_set_hash": current,
        "policies": len(rt.authorizer.policies),
        "custom_files": list(rt.spec.policies),
        "approval": appr,
    }
    scope_owner = rt.spec.owners.scope
    approve_p = f"charter gate approve-policies --as {scope_owner}"
    if appr is None:
        c.add(
            "fail",
            f"the role and policy set has no approval (charter gate approve-policies --as {scope_owner})",
            fix=approve_p,
            **ev_p,
        )
    elif appr.get("hash") != current:
        c.add(
            "fail",
            f"the policy set changed since {appr.get('by')} approved it at {appr.get('at')}",
            fix=f"review `charter policy show`, then {approve_p}",
            **ev_p,
        )
    elif appr.get("by") != scope_owner:
        c.add(
            "fail",
            f"the policy set was approved by {appr.get('by')}, not the scope owner",
            fix=approve_p,
            **ev_p,
        )
    else:
        c.add("pass", f"policy set approved by {appr['by']} at {appr['at']}", **ev_p)


# --------------------------------------------------------------------------------------------- evaluation
def current_run(rt: Runtime) -> EvalRun | None:
    from charter.evals import latest_run

    return latest_run(rt, with_results=True)


def _check_run_configuration(rt: Runtime, c: CheckResult, run: EvalRun, ev: dict[str, Any]) -> None:
    """The run must have measured the current model, active prompt versions and index version."""
    from charter.retrieval import Index

    active = ",".join(sorted(p.active for p in rt.spec.prompts)) or None
    index_version = Index.for_runtime(rt).version
    bound = {
        "model": (run.model, rt.spec.model.name),
        "prompt_version": (run.prompt_version, active),
        "index_version": (run.index_version, index_version),
    }
    for name, (got, want) in bound.items():
        ok = want is None or got == want or (name == "model" and want in (got or "").split(","))
        c.add(
            "pass" if ok else "fail",
            f"{name}: run {got!r}, current {want!r}",
            fix="charter eval --permission-probes (the run must measure the current configuration)",
            **ev,
        )


def _check_coverage(rt: Runtime, c: CheckResult, run: EvalRun, ev: dict[str, Any]) -> None:
    """Enough cases per category (evals.min_cases), and generated permission probes."""
    from charter.evals import CATEGORIES

    spec = rt.spec.evals
    cases = [r for r in run.results if r.output.repeat == 0]
    counts = {
        cat: sum(1 for r in cases if r.case.category == cat and "generated" not in r.case.tags)
        for cat in CATEGORIES
    }
    low = {k: (counts.get(k, 0), v) for k, v in spec.min_cases.items() if counts.get(k, 0) < v}
    c.add(
        "fail" if low else "pass",
        "category coverage "
        + ", ".join(f"{k} {n}" for k, n in counts.items())
        + (f"; below minimum: {low}" if low else ""),
        fix="add eval cases (evals.sets) until every category reaches evals.min_cases, then charter eval "
        "--permission-probes",
        **ev,
        counts=counts,
        minimum=dict(spec.min_cases),
    )
    probes = sum(1 for r in cases if "generated" in r.case.tags)
    c.add(
        "pass" if probes else "fail",
        f"{probes} generated permission probes in the run",
        fix="charter eval --permission-probes (probes need at least one document that some user may not read)",
        **ev,
        probes=probes,
    )


def check_evaluation(rt: Runtime, c: CheckResult, run: EvalRun | None, now: datetime) -> None:
    from charter.evals import check_thresholds, list_runs

    spec = rt.spec.evals
    if run is None:
        older = list_runs(rt, limit=1)
        c.add(
            "fail",
            "no eval run for the current charter fingerprint"
            + (f" (newest run {older[0]['id']} is for {older[0]['charter_fingerprint']})" if older else ""),
            fix="charter eval --permission-probes",
            fingerprint=rt.fingerprint,
            newest_other=older[0] if older else None,
        )
        return
    ev = {"run": run.id, "created_at": run.created_at.isoformat(), "fingerprint": run.charter_fingerprint}
    age = (now - run.created_at).total_seconds()
    max_age = spec.max_age.total_seconds()
    c.add(
        "pass" if age <= max_age else "fail",
        f"run {run.id} is {age / 3600:.1f} h old (max {max_age / 3600:.0f} h)",
        fix="charter eval --permission-probes (a fresh run), or raise evals.max_age",
        **ev,
        age_seconds=age,
    )
    _check_run_configuration(rt, c, run, ev)
    _check_coverage(rt, c, run, ev)
    results = check_thresholds(rt, run.metrics)
    for t in results:
        d = t.as_dict()
        c.add(
            "pass" if t.passed else "fail",
            f"threshold {d.get('threshold') or d}: observed {d.get('observed')}",
            fix="see the failing cases (charter eval --report DIR), fix the sources, prompt or retrieval, and "
            "run charter eval again; or change evals.thresholds with the failures owner",
            **ev,
            threshold=d,
        )
    if not results:
        c.add(
            "fail",
            "the charter sets no eval thresholds",
            fix="add evals.thresholds to charter.yaml, e.g. `permission.leaks == 0`",
            **ev,
        )


# --------------------------------------------------------------------------------------------- cost / latency
def _metric(run: EvalRun, name: str) -> float | None:
    est = run.metrics.get(name)
    return None if est is None or est.value != est.value else float(est.value)


#: Production traffic the cost and latency check also reads: this recent, and at least this many requests.
LOAD_WINDOW = timedelta(days=7)
LOAD_MIN_REQUESTS = 20


def production_load(rt: Runtime, now: datetime, *, window: timedelta = LOAD_WINDOW) -> dict[str, Any]:
    """Latency and cost of real requests in ``window`` before ``now``, from the stored traces.

    Only served requests are production traffic: traces of the ``server`` channel (not CLI asks, whose
    cold starts would count model loading as latency, nor evals or drills; traces written before channels
    were recorded have none and are left out). Eval cases are left out by request id too, also when a
    server ran them (gate drills and permission probes run in isolated copies, so their traces never reach
    this store).
    Refused requests are left out too: they never reach a model, and would dilute both numbers.
    ``requests`` counts what is left; ``p95_ms`` and ``cost_per_request_usd`` are None without requests."""
    import numpy as np
    from sqlalchemy import and_, func, select

    since = now - window
    in_window = and_(
        traces.c.workflow == rt.spec.workflow.id,
        traces.c.started_at >= since,
        traces.c.started_at <= now,
        traces.c.status != "refused",
    )
    served = traces.c.channel == "server"
    evals = select(eval_results.c.request_id).where(eval_results.c.request_id.is_not(None))
    with rt.store.connect() as conn:
        rows = conn.execute(
            select(traces.c.latency_ms, traces.c.cost_usd).where(
                in_window, served, traces.c.request_id.not_in(evals)
            )
        ).all()
        excluded = conn.execute(
            select(func.count()).select_from(traces).where(in_window, traces.c.request_id.in_(evals))
        ).scalar()
        not_served = conn.execute(
            select(func.count())
            .select_from(traces)
            .where(in_window, ~served | traces.c.channel.is_(None), traces.c.request_id.not_in(evals))
        ).scalar()
    lat = np.array([float(r[0] or 0.0) for r in rows])
    cost = np.array([float(r[1] or 0.0) for r in rows])
    return {
        "window_days": window.total_seconds() / 86400,
        "from": since.isoformat(),
        "to": now.isoformat(),
        "requests": len(rows),
        "eval_requests_excluded": int(excluded or 0),
        "not_served_excluded": int(not_served or 0),  # CLI, drills, in-process calls, pre-0017 traces
        "p50_ms": float(np.percentile(lat, 50)) if len(rows) else None,
        "p95_ms": float(np.percentile(lat, 95)) if len(rows) else None,
        "cost_per_request_usd": float(cost.mean()) if len(rows) else None,
    }


def check_load(rt: Runtime, c: CheckResult, now: datetime) -> None:
    """Production p95 latency and cost per request against the charter's targets, when there is enough
    recent traffic (:data:`LOAD_MIN_REQUESTS` in :data:`LOAD_WINDOW`)."""
    b, lat = rt.spec.budgets, rt.spec.latency
    load = production_load(rt, now)
    if load["requests"] < LOAD_MIN_REQUESTS:
        c.add(
            "pass",
            f"load measurements: {load['requests']} production requests in the last "
            f"{load['window_days']:g} days (fewer than {LOAD_MIN_REQUESTS}: not used)",
            load=load,
        )
        return
    p95, per_request = load["p95_ms"], load["cost_per_request_usd"]
    c.add(
        "pass" if p95 <= lat.p95_ms else "fail",
        f"production p95 latency {p95:.0f} ms over {load['requests']} requests in the last "
        f"{load['window_days']:g} days (target {lat.p95_ms:.0f} ms)",
        load=load,
        observed_ms=p95,
        target_ms=lat.p95_ms,
    )
    c.add(
        "pass" if per_request <= b.per_task_usd else "fail",
        f"production cost per request {per_request:.6f} USD over {load['requests']} requests "
        f"(budget {b.per_task_usd} USD per task)",
        load=load,
        observed_usd=per_request,
        budget_per_task_usd=b.per_task_usd,
    )


def check_cost_latency(rt: Runtime, c: CheckResult, run: EvalRun | None, now: datetime | None = None) -> None:
    """Cost and latency from the eval run, then from production traffic where there is enough of it."""
    _check_eval_cost_latency(rt, c, run)
    check_load(rt, c, now or utcnow())


def _check_eval_cost_latency(rt: Runtime, c: CheckResult, run: EvalRun | None) -> None:
    b, lat, prices = rt.spec.budgets, rt.spec.latency, rt.spec.model.prices
    if run is None:
        from charter.evals import latest_run, list_runs

        newest = list_runs(rt, limit=1)
        if not newest:
            c.add("fail", "no eval run has measured cost and latency", fix="charter eval --permission-probes")
            return
        run = latest_run(rt, fingerprint=newest[0]["charter_fingerprint"], with_results=True)
        assert run is not None
        c.add(
            "warn",
            f"measured by run {run.id} of an older configuration ({run.charter_fingerprint}); "
            "the evaluation check requires a run for the current one",
            run=run.id,
        )
    measured = _metric(run, "cost.per_task_usd") or 0.0
    outs = [r.output for r in run.results if r.output.result]
    toks = [
        (int(o.result.get("input_tokens") or 0), int(o.result.get("output_tokens") or 0))  # type: ignore[union-attr]
        for o in outs
    ]
    repriced = (
        sum(i * prices.input_per_1k + o * prices.output_per_1k for i, o in toks) / 1000 / len(toks)
        if toks
        else 0.0
    )
    per_task = max(measured, repriced)
    ev: dict[str, Any] = {
        "run": run.id,
        "measured_cost_per_task_usd": measured,
        "cost_per_task_at_current_prices_usd": repriced,
        "tasks": len(toks),
        "budget_per_task_usd": b.per_task_usd,
    }
    c.add(
        "pass" if per_task <= b.per_task_usd else "fail",
        f"cost per task {per_task:.6f} USD (budget {b.per_task_usd} USD)",
        **ev,
    )
    monthly = per_task * b.expected_monthly_requests
    c.add(
        "pass" if monthly <= b.monthly_usd else "fail",
        f"monthly projection {monthly:.2f} USD at {b.expected_monthly_requests} requests "
        f"(budget {b.monthly_usd} USD)",
        projected_monthly_usd=monthly,
        budget_monthly_usd=b.monthly_usd,
    )
    for key, target in (("latency.p95_ms", lat.p95_ms), ("latency.p50_ms", lat.p50_ms)):
        v = _metric(run, key)
        if v is None:
            c.add("warn" if key.endswith("p50_ms") else "fail", f"{key} not measured in run {run.id}")
        else:
            c.add(
                "pass" if v <= target else "fail",
                f"{key} {v:.0f} ms (target {target:.0f} ms)",
                run=run.id,
                observed_ms=v,
                target_ms=target,
            )


# --------------------------------------------------------------------------------------------- owners
def check_owners(rt: Runtime, c: CheckResult) -> None:
    for duty, pid in rt.spec.owners.model_dump().items():
        p = rt.charter.principals.get(pid)
        ev = {"duty": duty, "principal": pid}
        if p is None:
            c.add(
                "fail",
                f"owners.{duty}: {pid!r} does not exist",
                fix=f"set owners.{duty} to a user in users.yaml",
                **ev,
            )
        elif not p.active:
            c.add(
                "fail", f"owners.{duty}: {pid} is inactive", fix=f"set owners.{duty} to an active user", **ev
            )
        elif p.kind != "user" or not p.email:
            c.add(
                "fail",
                f"owners.{duty}: {pid} has no contact address (a person must own it)",
                fix=f"set owners.{duty} to a person with an email in users.yaml",
                **ev,
            )
        elif not p.roles:
            c.add(
                "fail",
                f"owners.{duty}: {pid} holds no role in this workflow (left the team?)",
                fix=f"give {pid} a role in users.yaml, or set owners.{duty} to someone who has one",
                **ev,
            )
        else:
            c.add("pass", f"owners.{duty}: {pid} <{p.email}>", **ev, contact=p.email, roles=list(p.roles))
