"""Evaluation harness: eval sets, the runner (the real pipeline), scorers, statistics, probes, reports.

Public API:

* :func:`load_eval_set`, :func:`load_eval_sets`, :class:`EvalCase`, :class:`Pattern`, :class:`EvalSetError`
  — YAML/JSONL eval sets validated with file:line errors.
* :func:`run_eval` (-> :class:`EvalRun`), :func:`run_case`, :func:`score_outputs`, :func:`aggregate`,
  :func:`check_thresholds`, :func:`compare`.
* :class:`Scorer` protocol and the :func:`scorer` registering decorator; :class:`CaseOutput`,
  :class:`CaseScore`, :class:`Aggregate`, :class:`ScoreContext`, :func:`get_scorers`, :func:`scorer_names`,
  :func:`ranx_scores`; built-ins ``retrieval``, ``generation``, ``actions``, ``permission``, ``cost_latency``.
* :func:`bootstrap_mean`, :func:`bootstrap_stat`, :func:`paired_comparison`, :class:`Estimate`,
  :class:`Comparison`.
* :func:`permission_probes`, :func:`probe_runtime` — generated ACL probes in a temporary copy of the store.
* :func:`save_run`, :func:`load_run`, :func:`latest_run`, :func:`list_runs` — stored runs (the launch gate
  reads ``latest_run(rt)``: the newest run for the current charter fingerprint).
* :func:`write_reports`, :func:`render_markdown`, :func:`render_html`, :func:`render_json` — reports (for a
  reader: :mod:`charter.access` redacts what they may not read).
"""

from charter.evals._cases import CATEGORIES, EvalCase, EvalSetError, Pattern, load_eval_set, load_eval_sets
from charter.evals._probes import ProbeSet, copy_sqlite, permission_probes, probe_runtime
from charter.evals._report import (
    AREAS,
    format_metric,
    is_category_metric,
    render_html,
    render_json,
    render_markdown,
    report_data,
    write_reports,
)
from charter.evals._runner import (
    CaseResult,
    EvalRun,
    ThresholdResult,
    aggregate,
    check_thresholds,
    compare,
    evaluate_thresholds,
    run_case,
    run_cases,
    run_eval,
    score_outputs,
)
from charter.evals._scorers import (
    FAILURE_CATEGORIES,
    Aggregate,
    CaseOutput,
    CaseScore,
    ScoreContext,
    Scorer,
    get_scorers,
    ranx_scores,
    scorer,
    scorer_names,
)
from charter.evals._stats import (
    Comparison,
    Estimate,
    bootstrap_mean,
    bootstrap_stat,
    paired_comparison,
)
from charter.evals._store import latest_run, list_runs, load_run, record_run, save_run

__all__ = [
    "AREAS",
    "CATEGORIES",
    "FAILURE_CATEGORIES",
    "Aggregate",
    "CaseOutput",
    "CaseResult",
    "CaseScore",
    "Comparison",
    "Estimate",
    "EvalCase",
    "EvalRun",
    "EvalSetError",
    "Pattern",
    "ProbeSet",
    "ScoreContext",
    "Scorer",
    "ThresholdResult",
    "aggregate",
    "bootstrap_mean",
    "bootstrap_stat",
    "check_thresholds",
    "compare",
    "copy_sqlite",
    "evaluate_thresholds",
    "format_metric",
    "get_scorers",
    "is_category_metric",
    "latest_run",
    "list_runs",
    "load_eval_set",
    "load_eval_sets",
    "load_run",
    "paired_comparison",
    "permission_probes",
    "probe_runtime",
    "ranx_scores",
    "record_run",
    "render_html",
    "render_json",
    "render_markdown",
    "report_data",
    "run_case",
    "run_cases",
    "run_eval",
    "save_run",
    "score_outputs",
    "scorer",
    "scorer_names",
    "write_reports",
]
