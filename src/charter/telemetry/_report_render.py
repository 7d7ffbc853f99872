"""Rendering the operator report as Markdown, HTML (with server-side SVG charts, no JavaScript) or JSON."""

from __future__ import annotations

import html
import json
from typing import Any

from charter.errors import UsageError

FORMATS = ("md", "html", "json")


def _n(v: Any, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _pct(v: Any) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def _usd(v: Any) -> str:
    return "n/a" if v is None else f"${v:,.4f}"


def _change(t: dict[str, Any], kind: str) -> str:
    c = t.get("change")
    if c is None:
        return "n/a"
    if kind == "pct":
        return f"{100 * c:+.1f} pp"
    if kind == "usd":
        return f"{c:+.4f} USD"
    return f"{c:+,.3f}" if isinstance(c, float) else f"{c:+,}"


_TRENDS = [
    ("requests", "Requests", "int"),
    ("active_users", "Active users", "int"),
    ("escalation_rate", "Escalation rate", "pct"),
    ("error_rate", "Error rate", "pct"),
    ("feedback_score", "Feedback score (up−down)/n", "num"),
    ("acceptance_rate", "Review acceptance", "pct"),
    ("groundedness_mean", "Mean groundedness", "num"),
    ("cost_usd", "Cost", "usd"),
    ("cost_per_request_usd", "Cost per request", "usd"),
]


def _fmt(v: Any, kind: str) -> str:
    return {"pct": _pct, "usd": _usd}.get(kind, _n)(v)


def blame_rows(rows: list[dict[str, Any]], top: int = 15) -> list[dict[str, Any]]:
    """The first ``top`` source-blame rows, then the redacted row (documents the reader may not read) if
    the report has one — it is always shown, wherever its counts would rank it."""
    shown = [d for d in rows if not d.get("redacted")][:top]
    return shown + [d for d in rows if d.get("redacted")]


_TREND_HEADERS = ["metric", "this period", "previous", "change"]
_PROMPT_HEADERS = ["prompt version", "requests", "escalation", "feedback score", "acceptance", "groundedness"]
_FAILURE_HEADERS = ["count", "category", "stage", "signature", "examples"]
_BLAME_HEADERS = ["rank", "source", "document", "cited (rated)", "negative", "rate", "Wilson lower", "blamed"]


def _trend_rows(r: dict[str, Any]) -> list[list[Any]]:
    return [
        [
            label,
            _fmt(r["trends"][k]["current"], kind),
            _fmt(r["trends"][k]["previous"], kind),
            _change(r["trends"][k], kind),
        ]
        for k, label, kind in _TRENDS
    ]


def _prompt_rows(q: dict[str, Any]) -> list[list[Any]]:
    return [
        [
            p["prompt_version"],
            p["requests"],
            _pct(p["escalation_rate"]),
            _n(p["feedback_score"]),
            _pct(p["acceptance_rate"]),
            _n(p["groundedness_mean"]),
        ]
        for p in q["by_prompt_version"]
    ]


def _failure_rows(failures: list[dict[str, Any]]) -> list[list[Any]]:
    return [
        [f["count"], f["category"], f["stage"], f["signature"], ", ".join(f["examples"])] for f in failures
    ]


def _blame_doc_rows(b: dict[str, Any]) -> list[list[Any]]:
    return [
        [
            i,
            d["source_id"],
            d["doc_id"],
            d["cited_in_rated"],
            d["negative"],
            _pct(d["negative_rate"]),
            _n(d["wilson_lower"]),
            "yes" if d["blamed"] else "no",
        ]
        for i, d in enumerate(blame_rows(b["documents"]), 1)
    ]


# -------------------------------------------------------------------------------------------- markdown
def _table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return out


def _md_trends(r: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    lines += _table(_TREND_HEADERS, _trend_rows(r))
    if r.get("rate_comparisons"):
        lines += ["", "Rates, this period against the previous one:", ""]
        lines += [f"- {k.replace('_', ' ')}: {comparison_text(c)}" for k, c in r["rate_comparisons"].items()]
    return lines


def _md_usage(u: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    lines += [
        "",
        "## Usage — is the system being used?",
        "",
        f"{u['requests']} requests by {u['active_users']} users (pseudonymous ids).",
        "",
    ]
    lines += _table(["status", "requests"], [[k, v] for k, v in u["by_status"].items()])
    lines += ["", *_table(["day", "requests"], [[d["day"], d["requests"]] for d in u["by_day"]])]
    return lines


def _md_quality(q: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    lines += [
        "",
        "## Quality — is it improving?",
        "",
        f"Review: {q['review']['unchanged']} approved unchanged, {q['review']['edited']} edited, "
        f"{q['review']['rejected']} rejected (acceptance {_pct(q['review']['acceptance_rate'])}).",
        f"Feedback: {q['feedback']['up']} up, {q['feedback']['down']} down "
        f"(score {_n(q['feedback']['score'])}).",
        f"Escalation rate {_pct(q['escalation_rate'])}; groundedness mean {_n(q['groundedness']['mean'])}, "
        f"p10 {_n(q['groundedness']['p10'])}, p50 {_n(q['groundedness']['p50'])}.",
        "",
    ]
    lines += _table(_PROMPT_HEADERS, _prompt_rows(q))
    return lines


def _md_cost(c: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    lines += [
        "",
        "## Cost — within range?",
        "",
        f"Total {_usd(c['total_usd'])}; per request {_usd(c['per_request_usd'])} "
        f"(p95 {_usd(c['per_request_p95_usd'])}) "
        f"vs budget {_usd(c['per_task_budget_usd'])} per task; {c['over_task_budget']} over budget.",
        f"Month to date {_usd(c['month_to_date_usd'])}; projected {_usd(c['monthly_projection_usd'])} "
        f"(from this period's rate {_usd(c['monthly_projection_from_period_usd'])}) vs budget "
        f"{_usd(c['monthly_budget_usd'])} ({_pct(c['projection_vs_budget'])}).",
        "",
    ]
    lines += _table(
        ["model", "prompt version", "requests", "cost", "share"],
        [
            [d["model"], d["prompt_version"], d["requests"], _usd(d["cost_usd"]), _pct(d["share"])]
            for d in c["top_drivers"]
        ],
    )
    return lines


def _md_failures(r: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    lines += ["", "## Repeating failures", ""]
    lines += (
        _table(_FAILURE_HEADERS, _failure_rows(r["failures"]))
        if r["failures"]
        else ["No failures in this period."]
    )
    return lines


def _md_blame(b: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    lines += [
        "",
        "## Source blame — which sources cause bad answers?",
        "",
        f"Base negative rate {_pct(b['base_negative_rate'])} over {b['rated_requests_with_citations']} rated "
        f"requests with citations; a document is blamed when the Wilson 95% lower bound of its negative rate "
        f"exceeds the base rate with at least {b['min_support']} rated citations.",
        "",
    ]
    lines += _table(_BLAME_HEADERS, _blame_doc_rows(b))
    lines += [
        "",
        *_table(
            ["source", "cited (rated)", "negative", "Wilson lower", "blamed"],
            [
                [
                    d["source_id"],
                    d["cited_in_rated"],
                    d["negative"],
                    _n(d["wilson_lower"]),
                    "yes" if d["blamed"] else "no",
                ]
                for d in b["sources"]
            ],
        ),
    ]
    return lines


def to_markdown(r: dict[str, Any]) -> str:
    q, c, u, b = r["quality"], r["cost"], r["usage"], r["source_blame"]
    lines = [
        f"# Operator report — {r['workflow']}",
        "",
        f"Period {r['period']['start']} → {r['period']['end']} "
        f"(compared with {r['previous_period']['start']} → "
        f"{r['previous_period']['end']}).",
        "",
        "## Trends",
        "",
    ]
    lines += _md_trends(r)
    lines += _md_usage(u)
    lines += _md_quality(q)
    lines += _md_cost(c)
    lines += _md_failures(r)
    lines += _md_blame(b)
    if r.get("time_series"):
        lines += ["", *time_series_markdown(r["time_series"])]
    if r.get("production_failures"):
        lines += ["", *failures_markdown(r["production_failures"])]
    if r.get("screened_documents"):
        lines += ["", *screened_markdown(r["screened_documents"])]
    return "\n".join(lines) + "\n"


def screened_markdown(items: list[dict[str, Any]]) -> list[str]:
    """The documents instruction screening flagged at sync, for their owners to review."""
    quarantined = sum(1 for d in items if d["state"] == "quarantined")
    return [
        "## Documents flagged by instruction screening",
        "",
        f"{len(items)} document(s) carry sentences addressed to an assistant; {quarantined} are quarantined "
        "until their owner approves them (`charter sources show SOURCE`, `charter sources approve`).",
        "",
        *_table(
            ["source", "document", "state", "owner", "reasons"],
            [[d["source"], d["doc_id"], d["state"], d["owner"], ", ".join(d["reasons"])] for d in items],
        ),
    ]


# -------------------------------------------------------------------------------------------- svg / html
def svg_bars(
    items: list[tuple[str, float]],
    *,
    title: str,
    width: int = 640,
    bar: int = 18,
    reference: float | None = None,
    fmt: str = "{:g}",
) -> str:
    """A horizontal bar chart as an SVG string (labels escaped; no scripts)."""
    label_w, pad = 220, 6
    h = 30 + len(items) * (bar + pad) + 10
    top = max([v for _, v in items] + [reference or 0, 1e-12])
    scale = (width - label_w - 80) / top
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{h}" role="img" '
        f'aria-label="{html.escape(title)}"><title>{html.escape(title)}</title>',
        f'<text x="4" y="18" font-size="14" font-weight="bold">{html.escape(title)}</text>',
    ]
    for i, (label, value) in enumerate(items):
        y = 30 + i * (bar + pad)
        parts.append(
            f'<text x="{label_w - 6}" y="{y + bar - 5}" font-size="12" text-anchor="end">'
            f"{html.escape(label[:34])}</text>"
        )
        parts.append(
            f'<rect x="{label_w}" y="{y}" width="{max(0.0, value * scale):.1f}" '
            f'height="{bar}" fill="#4a78b8"/>'
        )
        parts.append(
            f'<text x="{label_w + value * scale + 4:.1f}" y="{y + bar - 5}" font-size="12">'
            f"{html.escape(fmt.format(value))}</text>"
        )
    if reference is not None:
        x = label_w + reference * scale
        parts.append(
            f'<line x1="{x:.1f}" y1="26" x2="{x:.1f}" y2="{h - 6}" stroke="#c0392b" stroke-dasharray="4 3"/>'
        )
    parts.append("</svg>")
    return "".join(parts)


def svg_columns(items: list[tuple[str, float]], *, title: str, width: int = 640, height: int = 200) -> str:
    """A column chart (e.g. requests per day) as an SVG string."""
    n = max(1, len(items))
    top = max([v for _, v in items] + [1e-12])
    plot_h = height - 60
    col = (width - 40) / n
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="{html.escape(title)}"><title>{html.escape(title)}</title>',
        f'<text x="4" y="18" font-size="14" font-weight="bold">{html.escape(title)}</text>',
    ]
    for i, (label, value) in enumerate(items):
        hgt = value / top * plot_h
        x = 20 + i * col
        parts.append(
            f'<rect x="{x + 2:.1f}" y="{30 + plot_h - hgt:.1f}" width="{max(1.0, col - 4):.1f}" '
            f'height="{hgt:.1f}" fill="#4a78b8"><title>{html.escape(label)}: {value:g}</title></rect>'
        )
        if n <= 16 or i % max(1, n // 8) == 0:
            parts.append(
                f'<text x="{x + col / 2:.1f}" y="{height - 12}" font-size="10" text-anchor="middle">'
                f"{html.escape(label[-5:])}</text>"
            )
    parts.append("</svg>")
    return "".join(parts)


def _html_table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html_charts(
    q: dict[str, Any], c: dict[str, Any], u: dict[str, Any], b: dict[str, Any]
) -> dict[str, str]:
    return {
        "usage": svg_columns([(d["day"], d["requests"]) for d in u["by_day"]], title="Requests per day"),
        "groundedness": svg_columns(
            [(h["bin"], h["count"]) for h in q["groundedness"]["histogram"]],
            title="Groundedness distribution",
        ),
        "review": svg_bars(
            [
                ("approved unchanged", q["review"]["unchanged"]),
                ("edited", q["review"]["edited"]),
                ("rejected", q["review"]["rejected"]),
            ],
            title="Review decisions",
        ),
        "cost": svg_bars(
            [(f"{d['model']} / {d['prompt_version']}", d["cost_usd"]) for d in c["top_drivers"]],
            title="Top cost drivers (USD)",
            fmt="{:.4f}",
        ),
        "blame": svg_bars(
            [
                (
                    d["source_id"] if d.get("redacted") else f"{d['source_id']}/{d['doc_id']}",
                    d["wilson_lower"],
                )
                for d in blame_rows(b["documents"], 10)
            ],
            title="Source blame: Wilson lower bound of negative rate (red: base rate)",
            reference=b["base_negative_rate"],
            fmt="{:.2f}",
        ),
    }


def _html_screened(flagged: list[dict[str, Any]]) -> str:
    if not flagged:
        return ""
    return "<h2>Documents flagged by instruction screening</h2>" + _html_table(
        ["source", "document", "state", "owner", "reasons"],
        [[d["source"], d["doc_id"], d["state"], d["owner"], ", ".join(d["reasons"])] for d in flagged],
    )


def to_html(r: dict[str, Any]) -> str:
    q, c, u, b = r["quality"], r["cost"], r["usage"], r["source_blame"]
    charts = _html_charts(q, c, u, b)
    md_sections = to_markdown(r)
    screened = _html_screened(r.get("screened_documents") or [])
    trends = _html_table(_TREND_HEADERS, _trend_rows(r))
    failures = _html_table(_FAILURE_HEADERS, _failure_rows(r["failures"]))
    blame = _html_table(_BLAME_HEADERS, _blame_doc_rows(b))
    prompt = _html_table(_PROMPT_HEADERS, _prompt_rows(q))
    e = html.escape
    trend_svgs = "".join(trend_charts(r["time_series"]).values()) if r.get("time_series") else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Operator report — {e(r["workflow"])}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;margin:.5em 0 1.5em}}
td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px}}
th{{background:#f3f3f3}}svg{{display:block;margin:.5em 0}}</style></head><body>
<h1>Operator report — {e(r["workflow"])}</h1>
<p>Period {e(r["period"]["start"])} → {e(r["period"]["end"])}, compared with the previous period.</p>
<h2>Trends</h2>{trends}
<h2>Usage</h2><p>{u["requests"]} requests by {u["active_users"]} users (pseudonymous ids).</p>
{charts["usage"]}
<h2>Quality</h2><p>Review acceptance {_pct(q["review"]["acceptance_rate"])};
feedback score {_n(q["feedback"]["score"])};
escalation rate {_pct(q["escalation_rate"])}.</p>{charts["review"]}{charts["groundedness"]}{prompt}
<h2>Cost</h2><p>Total {_usd(c["total_usd"])}; per request {_usd(c["per_request_usd"])}
vs {_usd(c["per_task_budget_usd"])} per task; projected month {_usd(c["monthly_projection_usd"])}
vs budget {_usd(c["monthly_budget_usd"])}.</p>{charts["cost"]}
<h2>Trends over time</h2>{trend_svgs}
<h2>Repeating failures</h2>{failures}
<h2>Source blame</h2><p>Base negative rate {_pct(b["base_negative_rate"])};
blamed only when the Wilson 95% lower
bound exceeds it with at least {b["min_support"]} rated citations.</p>{charts["blame"]}{blame}
{screened}
<details><summary>Markdown version</summary><pre>{e(md_sections)}</pre></details>
</body></html>
"""


def render_report(report: dict[str, Any], fmt: str = "md") -> str:
    """Render :func:`build_report`'s document as ``md``, ``html`` or ``json``."""
    if fmt == "json":
        return json.dumps(report, indent=2, default=str, ensure_ascii=False) + "\n"
    if fmt == "html":
        return to_html(report)
    if fmt == "md":
        return to_markdown(report)
    raise UsageError(f"unknown report format {fmt!r}; expected one of {list(FORMATS)}")


# -------------------------------------------------------------------------------------------- time series
#: The trend charts: (key in a time-series point, title, kind).
TREND_CHARTS: list[tuple[str, str, str]] = [
    ("requests", "Requests", "int"),
    ("acceptance_rate", "Review acceptance", "pct"),
    ("rejection_rate", "Review rejection", "pct"),
    ("negative_feedback_rate", "Negative feedback", "pct"),
    ("escalation_rate", "Escalation rate", "pct"),
    ("groundedness_mean", "Mean groundedness", "num"),
    ("eval_pass_rate", "Eval pass rate", "pct"),
    ("cost_per_task_usd", "Cost per task (USD)", "usd"),
    ("latency_p95_ms", "p95 latency of served requests (ms)", "ms"),
]
_MARK_COLOURS = {
    "prompt_activated": "#c0392b",
    "source_synced": "#27ae60",
    "model_changed": "#8e44ad",
    "index_changed": "#d68910",
}


def _tick(v: float, kind: str) -> str:
    if kind == "pct":
        return f"{100 * v:.0f}%"
    if kind == "usd":
        return f"{v:.4f}"
    if kind == "int" or kind == "ms":
        return f"{v:,.0f}"
    return f"{v:.2f}"


def svg_trend(
    points: list[tuple[str, float | None]],
    *,
    title: str,
    kind: str = "num",
    markers: list[dict[str, Any]] | None = None,
    width: int = 420,
    height: int = 150,
) -> str:
    """A small line chart (one point per period; gaps where a period has no data) with change points as
    labelled vertical dashed lines. Plain SVG: escaped text, no scripts."""
    e = html.escape
    left, right, top, bottom = 44, 8, 22, 22
    pw, ph = width - left - right, height - top - bottom
    n = max(1, len(points))
    vals = [v for _, v in points if v is not None]
    hi = max(vals) if vals else 1.0
    lo = min(0.0, min(vals)) if vals else 0.0
    if kind == "pct":
        hi = max(hi, 1e-9) if hi > 0 else 1.0
    hi = hi if hi > lo else lo + 1.0

    def x(i: float) -> float:
        return left + (pw * (i + 0.5) / n)

    def y(v: float) -> float:
        return top + ph - (v - lo) / (hi - lo) * ph

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="trend" viewBox="0 0 {width} {height}" '
        f'width="100%" style="max-width:{width}px" role="img" aria-label="{e(title)}"><title>{e(title)}</title>',
        f'<text x="4" y="14" font-size="12" font-weight="bold">{e(title)}</text>',
        f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="#999"/>',
        f'<text x="{left - 4}" y="{top + 8}" font-size="9" text-anchor="end">{e(_tick(hi, kind))}</text>',
        f'<text x="{left - 4}" y="{top + ph}" font-size="9" text-anchor="end">{e(_tick(lo, kind))}</text>',
    ]
    index = {label: i for i, (label, _) in enumerate(points)}
    for m in markers or []:
        i = index.get(m.get("period", ""))
        if i is None:
            continue
        colour = _MARK_COLOURS.get(m.get("kind", ""), "#555")
        parts.append(
            f'<line class="change-point" data-kind="{e(m.get("kind", ""))}" x1="{x(i):.1f}" y1="{top}" '
            f'x2="{x(i):.1f}" y2="{top + ph}" stroke="{colour}" stroke-dasharray="3 2">'
            f"<title>{e(m.get('label', ''))} ({e(m.get('at', '')[:16])})</title></line>"
        )
    path: list[str] = []
    for i, (label, v) in enumerate(points):
        if v is None:
            if len(path) > 1:
                parts.append(
                    f'<polyline fill="none" stroke="#4a78b8" stroke-width="1.5" points="{" ".join(path)}"/>'
                )
            path = []
            continue
        path.append(f"{x(i):.1f},{y(v):.1f}")
        parts.append(
            f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="2" fill="#4a78b8">'
            f"<title>{e(label)}: {e(_tick(v, kind))}</title></circle>"
        )
    if len(path) > 1:
        parts.append(f'<polyline fill="none" stroke="#4a78b8" stroke-width="1.5" points="{" ".join(path)}"/>')
    if points:
        parts.append(
            f'<text x="{left}" y="{height - 6}" font-size="9">{e(points[0][0])}</text>'
            f'<text x="{left + pw}" y="{height - 6}" font-size="9" text-anchor="end">{e(points[-1][0])}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def trend_charts(ts: dict[str, Any], granularity: str = "by_day") -> dict[str, str]:
    """One SVG per :data:`TREND_CHARTS` metric over ``by_day`` or ``by_week``, change points marked."""
    series = ts.get(granularity) or []
    markers = []
    for c in ts.get("change_points") or []:
        period = c["day"]
        if granularity == "by_week":
            from datetime import date, timedelta

            d = date.fromisoformat(period)
            period = (d - timedelta(days=d.weekday())).isoformat()
        markers.append({**c, "period": period})
    return {
        key: svg_trend([(p["period"], p.get(key)) for p in series], title=title, kind=kind, markers=markers)
        for key, title, kind in TREND_CHARTS
    }


def _fmt_kind(v: Any, kind: str) -> str:
    if v is None:
        return "n/a"
    if kind == "pct":
        return _pct(v)
    if kind == "usd":
        return _usd(v)
    if kind == "ms":
        return f"{v:,.0f} ms"
    return _n(v)


def comparison_text(c: dict[str, Any]) -> str:
    """``62.0% → 41.0% (−21.0 pp, 95% CI −30.1…−11.8 pp; significant)`` or the minimum-sample note."""
    b, a = c["before"], c["after"]
    if c.get("change") is None:
        return f"{_pct(b['rate'])} → {_pct(a['rate'])} ({c.get('note', 'no data')})"
    ci = f"95% CI {100 * c['low']:+.1f}…{100 * c['high']:+.1f} pp"
    return (
        f"{_pct(b['rate'])} (n={b['n']}) → {_pct(a['rate'])} (n={a['n']}): "
        f"{100 * c['change']:+.1f} pp, {ci}; {c['note']}"
    )


_SERIES_COLS = [
    ("requests", "requests", "int"),
    ("acceptance_rate", "accept", "pct"),
    ("edit_rate", "edit", "pct"),
    ("rejection_rate", "reject", "pct"),
    ("negative_feedback_rate", "neg. feedback", "pct"),
    ("escalation_rate", "escalation", "pct"),
    ("tool_refusals", "tool refusals", "int"),
    ("groundedness_mean", "groundedness", "num"),
    ("eval_pass_rate", "eval pass", "pct"),
    ("cost_per_task_usd", "cost/task", "usd"),
    ("latency_p50_ms", "p50", "ms"),
    ("latency_p95_ms", "p95", "ms"),
]


def _series_rows(points: list[dict[str, Any]], first: str) -> tuple[list[str], list[list[Any]]]:
    headers = [first, *(label for _, label, _ in _SERIES_COLS)]
    rows = [
        [p[first] if first in p else p["period"], *(_fmt_kind(p.get(k), kind) for k, _, kind in _SERIES_COLS)]
        for p in points
    ]
    return headers, rows


def time_series_markdown(ts: dict[str, Any]) -> list[str]:
    lines = [
        "## Trends over time",
        "",
        f"Window {ts['window']['start'][:10]} → {ts['window']['end'][:10]}; rates compared between periods "
        f"carry a 95% interval and are never called significant below n = {ts['min_sample']} per side. "
        f"Latency resolution: {ts['latency_resolution']}.",
        "",
        "### Per week",
        "",
    ]
    lines += _table(*_series_rows(ts["by_week"], "period"))
    lines += ["", "### Per day", ""]
    lines += _table(*_series_rows([p for p in ts["by_day"] if p["requests"]], "period"))
    for dim, label in (
        ("prompt_version", "prompt version"),
        ("index_version", "index version"),
        ("model", "model"),
    ):
        lines += ["", f"### Per {label}", ""]
        lines += _table(*_series_rows(ts["by"][dim], dim))
    lines += ["", "### Change points", ""]
    if not ts["change_points"]:
        lines.append("No prompt activation, source sync or model change in the window.")
    for c in ts["change_points"]:
        lines += [
            f"- **{c['at'][:16]} {c['label']}** ({c['kind']}): days {c['before_days'][0]}…{c['before_days'][1]} "
            f"({c['before_requests']} requests) vs {c['after_days'][0]}…{c['after_days'][1]} "
            f"({c['after_requests']} requests), the change day excluded:",
        ]
        for k in ("acceptance_rate", "rejection_rate", "negative_feedback_rate", "escalation_rate"):
            lines.append(f"  - {k.replace('_', ' ')}: {comparison_text(c['rates'][k])}")
    return lines


def failures_markdown(f: dict[str, Any]) -> list[str]:
    lines = ["## Repeating failures from production", "", "### Categories", ""]
    if not f["categories"]:
        lines.append("No escalations, rejections, negative feedback, tool refusals or errors in the window.")
    else:
        lines += _table(
            ["count", "category", "trend", "owner", "example (masked)"],
            [
                [
                    c["count"],
                    c["category"],
                    f"{c['trend']} ({c['first_half']}→{c['second_half']})",
                    f"{c['owner']['principal']} ({c['owner']['duty']})",
                    (c["example"] or "–")[:100],
                ]
                for c in f["categories"]
            ],
        )
    lines += ["", f"### Near-duplicate question clusters ({f['method']})", ""]
    if not f["clusters"]:
        lines.append("No repeated failing question.")
    else:
        lines += _table(
            ["cluster", "count", "trend", "main category", "owner", "example (masked)"],
            [
                [
                    c["id"],
                    c["count"],
                    c["trend"] or "–",
                    c["main_category"],
                    f"{c['owner']['principal']} ({c['owner']['duty']})",
                    (c["example"] or "–")[:100],
                ]
                for c in f["clusters"]
            ],
        )
        lines += [
            "",
            "Turn a cluster into eval cases: `charter evals add-from-production CLUSTER --to FILE`.",
        ]
    return lines
