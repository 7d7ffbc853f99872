"""Cedar policy: policies generated from the charter plus custom ``.cedar`` files; deny by default.

Build an :class:`Authorizer` once per charter (``Runtime.authorizer`` does) and call
:meth:`Authorizer.authorize` (returns a :class:`Decision`) or :meth:`Authorizer.require` (audits and raises
:class:`charter.errors.Denied` on deny). :func:`check_policy_files` is what ``charter check`` runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from charter.errors import Problem
from charter.policy._authorizer import AuditSink, Authorizer, Decision, custom_policies, parse_resource
from charter.policy._conditions import Condition, parse_condition
from charter.policy._generate import TOOL_ACTIONS, WORKFLOW_ACTIONS, PolicyInfo, charter_problems

if TYPE_CHECKING:
    from charter.spec import LoadedCharter


def check_policy_files(loaded: LoadedCharter) -> list[Problem]:
    """Every problem with the charter's policies: approval conditions that do not translate to Cedar,
    invalid permission names, custom ``.cedar`` files that do not parse (with file and line) or that name
    entities or actions that do not exist."""
    problems = charter_problems(loaded)
    problems += custom_policies(loaded)[1]
    if not problems:
        from charter.errors import SpecError

        try:  # whatever passes the checks must also build: the runtime builds exactly this
            Authorizer.from_charter(loaded)
        except SpecError as exc:
            problems += exc.problems
    return problems


__all__ = [
    "TOOL_ACTIONS",
    "WORKFLOW_ACTIONS",
    "AuditSink",
    "Authorizer",
    "Condition",
    "Decision",
    "PolicyInfo",
    "check_policy_files",
    "parse_condition",
    "parse_resource",
]
