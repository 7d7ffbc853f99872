"""Reports of an eval run: Markdown, JSON and one self-contained HTML file (no external assets).

Each case's output was produced as the case's ``as`` user; a report is read by someone else. Every
renderer takes the ``reader`` (:class:`charter.access.Reader`): answers, agent notes, retrieved and expected
documents and failure details are shown as :func:`charter.access.redact_eval_output` allows them (a passage
from a document the reader may not read is ``[redacted: …]``). ``reader=None`` is the unredacted view of the
local operator running ``charter eval`` / ``charter evals show`` without ``--as`` (who can read the database
directly anyway).
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

from charter.access import Reader, redact_eval_output
from charter.evals._cases import CATEGORIES
from charter.evals._runner import CaseResult, EvalRun
from charter.store import private_dir, write_private

MAX_EXAMPLES = 3
AREAS = ("overall", "retrieval", "generation", "permission", "actions", "latency", "cost")


def format_metric(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 1 or v == 0:
        return f"{v:.2f}".rstrip("0").rstrip(".") if v != int(v) else f"{v:.0f}"
    return f"{v:.3f}"


def is_category_metric(name: str) -> bool:
    """``permission.permission.leaks``: the permission *category*'s leaks; ``permission.leaks``: overall."""
    parts = name.split(".")
    return len(parts) >= 3 and parts[0] in CATEGORIES and parts[1] in AREAS


def metric_rows(run: EvalRun) -> list[tuple[str, str, str, str, int]]:
    """(scope, metric, value, 95% CI, n) for the overall metrics and every category."""
    rows = []
    for scope in ("all", *CATEGORIES):
        for name, est in sorted(run.metrics.items()):
            parts = name.split(".")
            if scope == "all":
                if parts[0] not in AREAS or is_category_metric(name):
                    continue
            elif parts[0] != scope or not is_category_metric(name):
                continue
            metric = name if scope == "all" else ".".join(parts[1:])
            rows.append(
                (
                    scope,
                    metric,
                    format_metric(est.value),
                    f"[{format_metric(est.low)}, {format_metric(est.high)}]",
                    est.n,
                )
            )
    return rows


def _example(r: CaseResult, reader: Reader | None = None) -> dict[str, Any]:
    res = r.output.result or {}
    details = [f"{c}: {d}" for c, d in r.failures]
    shown: dict[str, Any] = {
        "draft": res.get("draft"),
        "error": r.output.error,
        "retrieved": [f"{x.get('source')}/{x.get('doc_id')}" for x in r.output.retrieved],
        "expected_sources": sorted(r.case.expected_sources),
        "details": details,
    }
    if reader is not None:
        shown = redact_eval_output(
            reader, r.output.as_dict(), expected_sources=sorted(r.case.expected_sources), details=details
        )
    return {
        "case": r.case.id,
        "category": r.case.category,
        "as": r.case.user,
        "question": r.case.question,
        "failure": r.failure,
        "details": shown["details"],
        "status": r.output.status,
        "answer": (shown["draft"] or shown["error"] or "")[:800],
        "retrieved": shown["retrieved"][:6],
        "expected_sources": shown["expected_sources"],
    }


def report_data(run: EvalRun, reader: Reader | None = None) -> dict[str, Any]:
    data = run.summary()
    data["failure_examples"] = {
        k: [_example(r, reader) for r in v[:MAX_EXAMPLES]] for k, v in run.failures_by_category().items()
    }
    if reader is not None:
        data["reader"] = reader.principal.id
    data["cases"] = [
        {
            "case": r.case.id,
            "category": r.case.category,
            "repeat": r.output.repeat,
            "status": r.output.status,
            "failure": r.failure,
            "request_id": r.output.request_id,
            "metrics": r.score.metrics,
        }
        for r in run.results
    ]
    return data


def render_markdown(run: EvalRun, reader: Reader | None = None) -> str:
    s = run.summary()
    out = [
        f"# Eval run {run.id}",
        "",
        f"**{'PASSED' if run.passed else 'FAILED'}** · workflow `{run.workflow}` · {s['cases']} cases "
        f"({', '.join(f'{k} {v}' for k, v in s['categories'].items())}) × {run.repeat} · "
        f"model `{run.model}` · "
        f"prompt `{run.prompt_version}` · index `{run.index_version}` · "
        f"charter `{run.charter_fingerprint[:19]}` · "
        f"{run.created_at:%Y-%m-%d %H:%M} UTC · {run.duration_s:.1f} s",
        "",
        "## Thresholds",
        "",
        "| threshold | observed | result |",
        "|---|---|---|",
    ]
    for t in run.thresholds:
        out.append(
            f"| `{t.threshold}` | {format_metric(t.observed)} | {'pass' if t.passed else 'FAIL'}"
            f"{' — ' + t.note if t.note else ''} |"
        )
    out += [
        "",
        "## Metrics (95% bootstrap intervals, clustered by case)",
        "",
        "| scope | metric | value | 95% CI | n |",
        "|---|---|---|---|---|",
    ]
    out += [f"| {a} | {b} | {c} | {d} | {e} |" for a, b, c, d, e in metric_rows(run)]
    groups = run.failures_by_category()
    out += ["", "## Failures by category", ""]
    if not groups:
        out.append("No failed cases.")
    for cat, items in groups.items():
        out += [f"### {cat} ({len(items)})", ""]
        for r in items[:MAX_EXAMPLES]:
            ex = _example(r, reader)
            out += [
                f"- **{ex['case']}** ({ex['category']}, as {ex['as']}): {ex['question']}",
                f"  - why: {'; '.join(ex['details'])}",
                f"  - retrieved: {', '.join(ex['retrieved']) or 'nothing'}"
                + (f" · expected: {', '.join(ex['expected_sources'])}" if ex["expected_sources"] else ""),
                f"  - output ({ex['status']}): {ex['answer'][:300].replace(chr(10), ' ')}",
            ]
        out.append("")
    if run.comparison:
        out += [
            "## Baseline comparison",
            "",
            f"Baseline `{run.baseline_id}`, paired by case.",
            "",
            "| metric | baseline | current | diff | 95% CI | p | significant |",
            "|---|---|---|---|---|---|---|",
        ]
        for c in run.comparison:
            out.append(
                f"| {c.metric} | {format_metric(c.baseline)} | {format_metric(c.current)} | {format_metric(c.diff)} | "
                f"[{format_metric(c.low)}, {format_metric(c.high)}] | {format_metric(c.p_value)} | {'yes' if c.significant else 'no'} |"
            )
    return "\n".join(out) + "\n"


_CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#f3f3f3}.pass{color:#080;font-weight:600}.fail{color:#b00;font-weight:600}
details{margin:.3em 0}pre{white-space:pre-wrap;background:#f8f8f8;padding:.5em}"""


def render_html(run: EvalRun, reader: Reader | None = None) -> str:
    e = html.escape
    s = run.summary()
    verdict = '<span class="pass">PASSED</span>' if run.passed else '<span class="fail">FAILED</span>'
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>Eval {e(run.id)}</title>"
        f"<style>{_CSS}</style></head><body><h1>Eval run {e(run.id)}</h1>",
        f"<p>{verdict} · workflow <code>{e(run.workflow)}</code> · {s['cases']} cases × {run.repeat} · model "
        f"<code>{e(str(run.model))}</code> · prompt <code>{e(str(run.prompt_version))}</code> · index "
        f"<code>{e(str(run.index_version))}</code> · {run.created_at:%Y-%m-%d %H:%M} UTC</p>",
        "<p>" + " · ".join(f"{e(k)}: {v}" for k, v in s["categories"].items()) + "</p>",
        "<h2>Thresholds</h2><table><tr><th>threshold</th><th>observed</th><th>result</th></tr>",
    ]
    for t in run.thresholds:
        cls = "pass" if t.passed else "fail"
        parts.append(
            f"<tr><td><code>{e(t.threshold)}</code></td><td>{format_metric(t.observed)}</td>"
            f"<td class='{cls}'>{'pass' if t.passed else 'FAIL'} {e(t.note)}</td></tr>"
        )
    parts.append(
        "</table><h2>Metrics (95% bootstrap intervals)</h2><table><tr><th>scope</th><th>metric</th>"
        "<th>value</th><th>95% CI</th><th>n</th></tr>"
    )
    for a, b, c, d, n in metric_rows(run):
        parts.append(f"<tr><td>{e(a)}</td><td>{e(b)}</td><td>{c}</td><td>{d}</td><td>{n}</td></tr>")
    parts.append("</table><h2>Failures by category</h2>")
    groups = run.failures_by_category()
    if not groups:
        parts.append("<p>No failed cases.</p>")
    for cat, items in groups.items():
        parts.append(f"<h3>{e(cat)} ({len(items)})</h3>")
        for r in items[:MAX_EXAMPLES]:
            ex = _example(r, reader)
            parts.append(
                f"<details><summary><b>{e(ex['case'])}</b> ({e(ex['category'])}, as {e(ex['as'])}): "
                f"{e(ex['question'])}</summary><p>{e('; '.join(ex['details']))}</p>"
                f"<p>retrieved: {e(', '.join(ex['retrieved']) or 'nothing')}<br>expected: "
                f"{e(', '.join(ex['expected_sources']) or '-')}</p><pre>{e(ex['answer'])}</pre></details>"
            )
    if run.comparison:
        parts.append(
            f"<h2>Baseline comparison</h2><p>Baseline <code>{e(str(run.baseline_id))}</code>, paired by "
            "case.</p><table><tr><th>metric</th><th>baseline</th><th>current</th><th>diff</th>"
            "<th>95% CI</th><th>p</th><th>significant</th></tr>"
        )
        for cmp in run.comparison:
            parts.append(
                f"<tr><td>{e(cmp.metric)}</td><td>{format_metric(cmp.baseline)}</td><td>{format_metric(cmp.current)}</td>"
                f"<td>{format_metric(cmp.diff)}</td><td>[{format_metric(cmp.low)}, {format_metric(cmp.high)}]</td>"
                f"<td>{format_metric(cmp.p_value)}</td>"
                f"<td>{'yes' if cmp.significant else 'no'}</td></tr>"
            )
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


def render_json(run: EvalRun, reader: Reader | None = None) -> str:
    """:func:`report_data` as indented JSON (the ``<run>.json`` report)."""
    return json.dumps(report_data(run, reader), indent=2, default=str, ensure_ascii=False) + "\n"


def write_reports(run: EvalRun, directory: Path, reader: Reader | None = None) -> dict[str, Path]:
    """Write ``<run>.md``, ``<run>.json`` and ``<run>.html`` into ``directory`` as ``reader`` may see them
    (None: the local operator, unredacted); returns their paths."""
    private_dir(directory)  # 0700 when created here; the reports (0600) quote answers and sources
    paths = {
        "markdown": directory / f"{run.id}.md",
        "json": directory / f"{run.id}.json",
        "html": directory / f"{run.id}.html",
    }
    write_private(paths["markdown"], render_markdown(run, reader).encode())
    write_private(paths["json"], render_json(run, reader).encode())
    write_private(paths["html"], render_html(run, reader).encode())
    return paths
