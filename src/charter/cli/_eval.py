"""``charter eval`` (run the eval sets through the real pipeline, gate on the charter's thresholds) and
``charter evals list|show`` (stored runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from charter.access import Reader
from charter.cli._app import app
from charter.cli._common import AsOpt, CharterOpt, JsonOpt, console, emit, err_console, open_runtime
from charter.errors import Denied, NotFound, UsageError

evals_app = typer.Typer(help="Stored eval runs.", no_args_is_help=True)
app.add_typer(evals_app, name="evals")


def _set_paths(rt: Any, sets: list[Path] | None) -> list[Path]:
    if sets:
        return [p if p.is_absolute() else Path.cwd() / p for p in sets]
    return [rt.charter.resolve(s) for s in rt.spec.evals.sets]


def _summary_table(s: dict[str, Any]) -> Table:
    from charter.evals import AREAS, is_category_metric

    t = Table("metric", "value", "95% CI", "n", title="Metrics (all cases)")
    for name, est in s["metrics"].items():
        if name.split(".")[0] in AREAS and not is_category_metric(name):
            t.add_row(name, _f(est["value"]), f"[{_f(est['low'])}, {_f(est['high'])}]", str(est["n"]))
    return t


def _f(v: Any) -> str:
    from charter.evals import format_metric

    return format_metric(None if v is None else float(v))


def _render(s: dict[str, Any]) -> None:
    verdict = "[green]PASSED[/]" if s["passed"] else "[red]FAILED[/]"
    cats = ", ".join(f"{k} {v}" for k, v in s["categories"].items())
    console.print(
        f"[bold]{s['id']}[/] {verdict} · {s['cases']} cases ({cats}) × {s['repeat']} · model {s['model']} "
        f"· prompt {s['prompt_version']} · index {s['index_version']} · {s['duration_s']:.1f} s",
        highlight=False,
    )
    per = Table(
        "category",
        "cases",
        "pass rate",
        "refusal acc.",
        "recall@5",
        "groundedness",
        "leaks",
        title="Per category",
    )
    m = s["metrics"]
    for c, n in s["categories"].items():

        def g(key: str, c: str = c) -> str:
            est = m.get(f"{c}.{key}")
            return _f(est["value"]) if est else "-"

        per.add_row(
            c,
            str(n),
            g("overall.pass_rate"),
            g("generation.refusal_accuracy"),
            g("retrieval.recall@5"),
            g("generation.groundedness"),
            g("permission.leaks"),
        )
    console.print(per)
    console.print(_summary_table(s))
    t = Table("threshold", "observed", "result", title="Thresholds (charter evals section)")
    for th in s["thresholds"]:
        t.add_row(
            th["threshold"],
            _f(th["observed"]),
            ("[green]pass[/]" if th["passed"] else "[red]FAIL[/]") + (f" {th['note']}" if th["note"] else ""),
        )
    console.print(t)
    if s["failures"]:
        console.print("failures: " + ", ".join(f"{k} {v}" for k, v in s["failures"].items()), highlight=False)
    for c in s.get("comparison") or []:
        if c["significant"]:
            console.print(
                f"significant vs baseline: {c['metric']} {_f(c['baseline'])} → {_f(c['current'])} "
                f"(diff {_f(c['diff'])}, p {_f(c['p_value'])})",
                highlight=False,
            )
    for k, p in (s.get("reports") or {}).items():
        console.print(f"{k} report: {p}", highlight=False)


def _eval_actor(rt: Any, user: str | None) -> tuple[str, Any]:
    """Who runs the eval (``--as``, who needs ``evals.run``) and the reader of its reports (``None``: the
    local operator, who can read the database anyway)."""
    if not user:
        return "cli", None
    from charter.cli._common import acting_principal

    principal = acting_principal(rt, user)
    decision = rt.authorizer.authorize(principal, "evals.run", f"workflow:{rt.spec.workflow.id}")
    if not decision.allowed:
        raise Denied(f"{user} may not run evals", reasons=list(decision.reasons))
    return principal.id, Reader(rt, principal)  # the reports are theirs: what they may not read is redacted


def _baseline_run(rt: Any, baseline: str | None) -> Any:
    from charter.evals import latest_run, load_run

    if not baseline:
        return None
    base = latest_run(rt, with_results=True) if baseline == "latest" else load_run(rt, baseline)
    if base is None:
        from charter.errors import NotFound

        raise NotFound("no stored eval run for this charter to compare with")
    return base


def _run_with_progress(
    rt: Any,
    cases: Any,
    *,
    sets: list[str],
    model: str | None,
    repeat: int,
    concurrency: int,
    timeout_s: float,
    baseline: Any,
    probes: bool,
    quiet: bool,
) -> Any:
    """:func:`charter.evals.run_eval` with a progress bar on stderr (unless ``quiet``)."""
    from charter.evals import run_eval

    with Progress(
        TextColumn("eval"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        disable=quiet,
    ) as bar:
        task = bar.add_task("cases", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        return run_eval(
            rt,
            cases,
            sets=sets,
            model=model,
            repeat=repeat,
            concurrency=concurrency,
            timeout_s=timeout_s,
            progress=progress,
            baseline=baseline,
            probes=probes,
            options={
                "concurrency": concurrency,
                "permission_probes": probes,
                "timeout_s": timeout_s,
                "model_option": model,
            },
        )


@app.command("eval")
def eval_command(
    sets: Annotated[
        list[Path] | None, typer.Argument(help="Eval set files (default: the charter's evals.sets).")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="Provider[:name] to evaluate instead of the charter's model, e.g. extractive or scripted.",
        ),
    ] = None,
    repeat: Annotated[int, typer.Option("--repeat", help="Run every case N times (1-100).")] = 1,
    baseline: Annotated[
        str | None, typer.Option("--baseline", help="Compare with this stored run id (or 'latest').")
    ] = None,
    report: Annotated[
        Path | None, typer.Option("--report", help="Write Markdown, JSON and HTML reports into this folder.")
    ] = None,
    probes: Annotated[
        bool,
        typer.Option(
            "--permission-probes", help="Also run generated ACL probes with canaries (in a temporary copy)."
        ),
    ] = False,
    concurrency: Annotated[int, typer.Option("--concurrency", help="Cases in parallel (1-64).")] = 4,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds after which a case counts as timeout.")
    ] = 60.0,
    user: Annotated[str | None, typer.Option("--as", help="Act as this user (needs evals.run).")] = None,
    charter: CharterOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run eval cases through the real pipeline; exit 0 only when every charter threshold passes."""
    from charter.evals import load_eval_sets, record_run, write_reports

    if not 1 <= repeat <= 100:
        raise UsageError("--repeat must be between 1 and 100")
    if not 1 <= concurrency <= 64:
        raise UsageError("--concurrency must be between 1 and 64")
    if timeout <= 0:
        raise UsageError("--timeout must be positive")
    rt = open_runtime(charter)
    actor, reader = _eval_actor(rt, user)
    paths = _set_paths(rt, sets)
    users = set(rt.charter.principals)
    cases = load_eval_sets(paths, users=users)
    base = _baseline_run(rt, baseline)
    run = _run_with_progress(
        rt,
        cases,
        sets=[str(p) for p in paths],
        model=model,
        repeat=repeat,
        concurrency=concurrency,
        timeout_s=timeout,
        baseline=base,
        probes=probes,
        quiet=as_json or not console.is_terminal,
    )
    record_run(rt, run, actor)
    summary = run.summary()
    if report:
        summary["reports"] = {k: str(v) for k, v in write_reports(run, report, reader).items()}
    emit(summary, as_json, _render)
    if not run.passed:
        raise typer.Exit(1)


@evals_app.command("list")
def evals_list(
    charter: CharterOpt = None,
    as_json: JsonOpt = False,
    limit: Annotated[int, typer.Option("--limit", help="At most this many runs.")] = 20,
) -> None:
    """Stored eval runs, newest first."""
    from charter.evals import list_runs

    rt = open_runtime(charter)
    rows = list_runs(rt, limit=max(1, limit))

    def render(rows: list[dict[str, Any]]) -> None:
        t = Table("run", "when", "fingerprint", "model", "cases", "passed", "failures")
        for r in rows:
            t.add_row(
                r["id"],
                str(r["created_at"])[:19],
                r["charter_fingerprint"][:19],
                str(r["model"]),
                str(r["n_cases"]),
                "yes" if r["passed"] else "no",
                ", ".join(f"{k} {v}" for k, v in (r["failures"] or {}).items()),
            )
        console.print(t)

    emit(rows, as_json, render)


@evals_app.command("show")
def evals_show(
    run_id: Annotated[str, typer.Argument(help="Run id, or 'latest' (for the current charter fingerprint).")],
    charter: CharterOpt = None,
    as_json: JsonOpt = False,
    report: Annotated[
        Path | None, typer.Option("--report", help="Write the reports into this folder.")
    ] = None,
    user: Annotated[
        str | None,
        typer.Option(
            "--as",
            help="Read as this user (needs evals.run or reports.read); the reports then show only what they "
            "may read. Without it: the local operator's unredacted view.",
        ),
    ] = None,
) -> None:
    """One stored run: summary, thresholds, failures; optionally its reports."""
    from charter.evals import latest_run, load_run, write_reports

    rt = open_runtime(charter)
    reader = None
    if user:
        from charter.access import Reader
        from charter.cli._common import acting_principal

        principal = acting_principal(rt, user)
        wf = f"workflow:{rt.spec.workflow.id}"
        if not any(rt.authorizer.authorize(principal, a, wf).allowed for a in ("evals.run", "reports.read")):
            raise Denied(f"{user} may not see evaluation runs", reasons=["no evals.run or reports.read"])
        reader = Reader(rt, principal)
    run = latest_run(rt, with_results=True) if run_id == "latest" else load_run(rt, run_id)
    if run is None:
        raise NotFound("no eval run for the current charter fingerprint")
    summary = run.summary()
    if report:
        summary["reports"] = {k: str(v) for k, v in write_reports(run, report, reader).items()}
    emit(summary, as_json, _render)


def _case_asker(rt: Any, ask_as: str | None, wf: str) -> str:
    """The user the new cases ask as: ``--ask-as``, or the first active user who may ask."""
    if ask_as is None:
        found = next(
            (
                pid
                for pid, p in sorted(rt.charter.principals.items())
                if p.active and rt.authorizer.authorize(p, "ask", wf).allowed
            ),
            None,
        )
        if found is None:
            raise UsageError("no user may ask this workflow; pass --ask-as USER")
        return str(found)
    if ask_as not in rt.charter.principals:
        raise UsageError(f"--ask-as: unknown user {ask_as!r}")
    return ask_as


def _append_cases(to: Path, new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Append the cases not already in the eval set file ``to`` (by id or question), creating it; the file
    is validated before it replaces the old one. Returns the cases added."""
    import yaml

    from charter.evals import EvalSetError, load_eval_set

    path = to if to.is_absolute() else Path.cwd() / to
    doc: dict[str, Any] = {
        "name": "production",
        "description": "Cases from repeating production failures.",
        "cases": [],
    }
    if path.exists():
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict) or not isinstance(loaded.get("cases", []), list):
            raise UsageError(f"{to}: not an eval set (expected a mapping with a `cases` list)")
        doc = {**loaded, "cases": list(loaded.get("cases") or [])}
    have_ids = {c.get("id") for c in doc["cases"] if isinstance(c, dict)}
    have_q = {c.get("question") for c in doc["cases"] if isinstance(c, dict)}
    added = [c for c in new if c["id"] not in have_ids and c["question"] not in have_q]
    doc["cases"] += added
    tmp = path.with_name(path.name + ".tmp")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=110), encoding="utf-8")
    try:
        load_eval_set(tmp, display=str(to))
    except EvalSetError:
        tmp.unlink()
        raise
    tmp.replace(path)
    return added


@evals_app.command("add-from-production")
def evals_add_from_production(
    cluster: Annotated[str, typer.Argument(help="A failure cluster id (cl_…) from `charter report`.")],
    to: Annotated[Path, typer.Option("--to", help="Eval set file to create or append to.")],
    user: AsOpt,
    ask_as: Annotated[
        str | None, typer.Option("--ask-as", help="User the cases ask as (default: the first who may ask).")
    ] = None,
    since: Annotated[str, typer.Option("--since", help="The report window the cluster is from.")] = "28d",
    max_cases: Annotated[int, typer.Option("--max", min=1, max=100, help="At most this many cases.")] = 5,
    semantic: Annotated[
        bool, typer.Option("--semantic", help="Clusters by the index's embeddings (as the report did).")
    ] = False,
    charter: CharterOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Turn a cluster of repeating production failures into eval cases, so the eval set grows from real
    failures. The set file is validated before it is written; existing cases are kept."""
    from charter.cli._common import acting_principal
    from charter.spec import parse_duration
    from charter.store import utcnow
    from charter.telemetry import cases_from_cluster, find_cluster

    rt = open_runtime(charter)
    principal = acting_principal(rt, user)
    wf = f"workflow:{rt.spec.workflow.id}"
    decision = rt.authorizer.authorize(principal, "reports.read", wf)
    if not decision.allowed:
        raise Denied(
            f"{principal.id} may not read reports", reasons=list(decision.reasons) or ["no reports.read"]
        )
    ask_as = _case_asker(rt, ask_as, wf)
    embed = None
    if semantic:
        from charter.retrieval import Index

        emb = Index.for_runtime(rt).embedder
        embed = lambda texts: [list(map(float, v)) for v in emb.embed(list(texts))]  # noqa: E731
    found = find_cluster(rt, cluster, since=parse_duration(since), embed=embed)
    new = cases_from_cluster(rt, found, ask_as=ask_as, max_cases=max_cases, today=utcnow().date().isoformat())
    added = _append_cases(to, new)
    rt.audit.append(
        actor=principal.id,
        action="evals.add_from_production",
        resource=wf,
        outcome="added",
        details={"cluster": cluster, "file": str(to), "cases": [c["id"] for c in added]},
    )
    emit(
        {
            "cluster": cluster,
            "file": str(to),
            "added": [c["id"] for c in added],
            "skipped": len(new) - len(added),
        },
        as_json,
        lambda d: console.print(
            f"added {len(d['added'])} case(s) from {d['cluster']} to {d['file']}"
            + (f" ({d['skipped']} already there)" if d["skipped"] else "")
            + (f": {', '.join(d['added'])}" if d["added"] else ""),
            highlight=False,
        ),
    )
