"""Cedar policy: policies generated from the charter plus custom ``.cedar`` files; deny by default.

Build an :class:`Authorizer` once per charter (``Runtime.authorizer`` does) and call
:meth:`Authorizer.authorize` (returns a :class:`Decision`) or :meth:`Authorizer.require` (audits and raises
:class:`charter.errors.Denied` on deny). :func:`check_policy_files` is what ``charter check`` runs;
:func:`load_checked_charter` loads a charter and checks its policies too (``Runtime.open`` uses it).
"""

from __future__ import annotations

from pathlib import Path

from charter.errors import Problem, SpecError
from charter.policy._authorizer import AuditSink, Authorizer, Decision, custom_policies, parse_resource
from charter.policy._conditions import Condition, parse_condition
from charter.policy._generate import TOOL_ACTIONS, WORKFLOW_ACTIONS, PolicyInfo, charter_problems
from charter.spec import LoadedCharter, load_charter


def check_policy_files(loaded: LoadedCharter) -> list[Problem]:
    """Every problem with the charter's policies: approval conditions that do not translate to Cedar,
    invalid permission names, custom ``.cedar`` files that do not parse (with file and line) or that name
    entities or actions that do not exist."""
    problems = charter_problems(loaded)
    problems += custom_policies(loaded)[1]
    if not problems:
        try:  # whatever passes the checks must also build: the runtime builds exactly this
            Authorizer.from_charter(loaded)
        except SpecError as exc:
            problems += exc.problems
    return problems


def load_checked_charter(path: Path | str | None = None) -> LoadedCharter:
    """:func:`charter.spec.load_charter` and then :func:`check_policy_files`: a charter whose policies
    compile. Raises :class:`SpecError` listing every problem found."""
    loaded = load_charter(path)
    problems = check_policy_files(loaded)
    if problems:
        raise SpecError(problems)
    return loaded


__all__ = [
    "TOOL_ACTIONS",
    "WORKFLOW_ACTIONS",
    "AuditSink",
    "Authorizer",
    "Condition",
    "Decision",
    "PolicyInfo",
    "check_policy_files",
    "load_checked_charter",
    "parse_condition",
    "parse_resource",
]
