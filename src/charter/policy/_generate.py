"""Cedar policies and entities generated from a charter.

Namespace ``Charter``; entity types:

* ``Charter::User`` / ``Charter::ServiceAccount`` — principals; their groups and roles are their
  parents; attributes ``active`` (bool) and ``kind`` (``"user"``/``"service"``).
* ``Charter::Group``, ``Charter::Role`` — from the users file and the charter's ``roles``.
* ``Charter::Workflow`` — the workflow (``workflow.id``); ``Charter::Tool`` and ``Charter::Source`` are its
  children, so ``resource in Charter::Workflow::"<id>"`` covers them.
* ``Charter::Action`` — the actions below.

Generated policies (each carries an ``@id`` and remembers the charter line it came from):

* ``role.<role>.<permission>`` — ``permit`` a role's workflow action on the workflow and its children.
* ``tool.<tool>.call.<role>`` — ``permit`` ``tools.call`` on ``Charter::Tool::"<tool>"`` per allowed role.
* ``tool.<tool>.approve.<role>`` (rule ``always``) and ``tool.<tool>.approve.<n>.<role>`` (rule
  ``conditional``, n-th condition) — ``permit`` ``tools.approve``; the first condition that holds decides
  the approver role, so condition *n* also requires that conditions 1..n-1 do not hold.
* ``identity.inactive`` — ``forbid`` everything to inactive principals.
* ``scope.forbidden_actions`` — ``forbid`` ``tools.call`` on any tool named in ``scope.forbidden_actions``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from charter.errors import Problem, UsageError
from charter.policy._conditions import Condition, parse_condition
from charter.spec import LoadedCharter

NAMESPACE = "Charter"

#: Workflow actions a role's ``permissions`` may name (others may be declared; these are the built-in ones).
WORKFLOW_ACTIONS: frozenset[str] = frozenset(
    {
        "ask",
        "search",
        "feedback",
        "review.submit",
        "review.decide",
        "traces.read_all",
        "audit.read",
        "sources.sync",
        "kill_switch",
        "gate.run",
        "evals.run",
        "reports.read",
        "users.manage",
    }
)
#: Actions on tools; granted per tool (``tools[].roles`` and ``tools[].approval``), never through a role.
TOOL_ACTIONS: frozenset[str] = frozenset({"tools.call", "tools.approve"})

ENTITY_TYPES = ("User", "ServiceAccount", "Group", "Role", "Workflow", "Tool", "Source", "Action")
_ACTION_NAME = re.compile(r"^[a-z][a-z0-9_]*(?:\.[a-z0-9_]+)*$")


def uid(kind: str, ident: str) -> dict[str, str]:
    return {"type": f"{NAMESPACE}::{kind}", "id": ident}


def cedar_uid(kind: str, ident: str) -> str:
    escaped = ident.replace("\\", "\\\\").replace('"', '\\"')
    return f'{NAMESPACE}::{kind}::"{escaped}"'


@dataclass(frozen=True)
class PolicyInfo:
    """One policy in the authorizer's set, with where it came from."""

    id: str  # stable id: the @id annotation, or "<file>:<line>" for a custom policy without one
    effect: str  # "permit" | "forbid"
    text: str
    source: str  # e.g. "charter.yaml:44 (roles.agent.permissions[0])" or "policies/extra.cedar:3"
    generated: bool


def _source(loaded: LoadedCharter, loc: tuple[str | int, ...]) -> str:
    located = loaded.located
    dotted = ""
    for part in loc:
        dotted += f"[{part}]" if isinstance(part, int) else ("." if dotted else "") + str(part)
    return f"{located.file}:{located.line_of(loc)} ({dotted})"


def _policy(pid: str, effect: str, body: str) -> str:
    return f'@id("{pid}")\n{effect} (\n{body}'


def charter_problems(loaded: LoadedCharter) -> list[Problem]:
    """Problems with the policy-relevant parts of the charter: permission names and approval conditions."""
    problems: list[Problem] = []
    located = loaded.located
    for role_id, role in loaded.spec.roles.items():
        for j, perm in enumerate(role.permissions):
            loc: tuple[str | int, ...] = ("roles", role_id, "permissions", j)
            field = f"roles.{role_id}.permissions[{j}]"
            if perm in TOOL_ACTIONS:
                problems.append(
                    Problem(
                        f"{perm!r} is granted per tool (tools[].roles, tools[].approval), not through a role",
                        file=located.file,
                        line=located.line_of(loc),
                        field=field,
                    )
                )
            elif not _ACTION_NAME.match(perm):
                problems.append(
                    Problem(
                        f"invalid action name {perm!r}; expected lower-case words joined by '.', "
                        f"e.g. 'review.decide'",
                        file=located.file,
                        line=located.line_of(loc),
                        field=field,
                    )
                )
    for i, tool in enumerate(loaded.spec.tools):
        for j, cond in enumerate(tool.approval.conditions):
            loc = ("tools", i, "approval", "conditions", j, "when")
            try:
                parse_condition(cond.when)
            except UsageError as exc:
                problems.append(
                    Problem(
                        exc.problem.message,
                        file=located.file,
                        line=located.line_of(loc),
                        field=f"tools[{i}].approval.conditions[{j}].when",
                    )
                )
    return problems


def generate(loaded: LoadedCharter) -> tuple[list[PolicyInfo], list[dict[str, Any]], frozenset[str]]:
    """(policies, entities, actions) for a charter that :func:`charter_problems` found no fault with."""
    spec = loaded.spec
    wf = spec.workflow.id
    policies: list[PolicyInfo] = []

    def add(pid: str, effect: str, body: str, source: str) -> None:
        policies.append(PolicyInfo(pid, effect, _policy(pid, effect, body), source, True))

    add(
        "identity.inactive",
        "forbid",
        "  principal,\n  action,\n  resource\n) unless { principal.active };",
        f"{loaded.spec.identity.users_file}: principals with active: false",
    )
    for role_id, role in spec.roles.items():
        for j, perm in enumerate(role.permissions):
            add(
                f"role.{role_id}.{perm}",
                "permit",
                f"  principal in {cedar_uid('Role', role_id)},\n"
                f"  action == {cedar_uid('Action', perm)},\n"
                f"  resource in {cedar_uid('Workflow', wf)}\n);",
                _source(loaded, ("roles", role_id, "permissions", j)),
            )
    for i, tool in enumerate(spec.tools):
        resource = cedar_uid("Tool", tool.name)
        for j, role_id in enumerate(tool.roles):
            add(
                f"tool.{tool.name}.call.{role_id}",
                "permit",
                f"  principal in {cedar_uid('Role', role_id)},\n"
                f"  action == {cedar_uid('Action', 'tools.call')},\n"
                f"  resource == {resource}\n);",
                _source(loaded, ("tools", i, "roles", j)),
            )
        rule = tool.approval
        if rule.rule == "always" and rule.approver_role:
            add(
                f"tool.{tool.name}.approve.{rule.approver_role}",
                "permit",
                f"  principal in {cedar_uid('Role', rule.approver_role)},\n"
                f"  action == {cedar_uid('Action', 'tools.approve')},\n"
                f"  resource == {resource}\n);",
                _source(loaded, ("tools", i, "approval", "approver_role")),
            )
        previous: list[Condition] = []
        for j, cond in enumerate(rule.conditions):
            parsed = parse_condition(cond.when)
            guard = " && ".join([parsed.to_cedar(), *(f"!{p.to_cedar()}" for p in previous)])
            add(
                f"tool.{tool.name}.approve.{j + 1}.{cond.approver_role}",
                "permit",
                f"  principal in {cedar_uid('Role', cond.approver_role)},\n"
                f"  action == {cedar_uid('Action', 'tools.approve')},\n"
                f"  resource == {resource}\n) when {{\n  {guard}\n}};",
                _source(loaded, ("tools", i, "approval", "conditions", j, "when")),
            )
            previous.append(parsed)
    if spec.scope.forbidden_actions:
        targets = " || ".join(f"resource == {cedar_uid('Tool', n)}" for n in spec.scope.forbidden_actions)
        add(
            "scope.forbidden_actions",
            "forbid",
            f"  principal,\n  action == {cedar_uid('Action', 'tools.call')},\n  resource\n"
            f") when {{ {targets} }};",
            _source(loaded, ("scope", "forbidden_actions")),
        )

    return policies, entities(loaded), known_actions(loaded)


def known_actions(loaded: LoadedCharter) -> frozenset[str]:
    """The built-in actions plus every action a role's ``permissions`` names."""
    return frozenset(
        WORKFLOW_ACTIONS | TOOL_ACTIONS | {p for role in loaded.spec.roles.values() for p in role.permissions}
    )


def entities(loaded: LoadedCharter) -> list[dict[str, Any]]:
    """The entity graph: workflow, tools, sources, roles, groups and principals (as members)."""
    spec, users = loaded.spec, loaded.users
    wf = uid("Workflow", spec.workflow.id)
    out: list[dict[str, Any]] = [{"uid": wf, "attrs": {"name": spec.workflow.name}, "parents": []}]
    out += [{"uid": uid("Tool", t.name), "attrs": {"effect": t.effect}, "parents": [wf]} for t in spec.tools]
    out += [
        {"uid": uid("Source", s.id), "attrs": {"sensitivity": s.sensitivity}, "parents": [wf]}
        for s in spec.sources
    ]
    out += [{"uid": uid("Role", r), "attrs": {}, "parents": []} for r in spec.roles]
    groups = {g.id for g in users.groups} | {g for p in loaded.principals.values() for g in p.groups}
    out += [{"uid": uid("Group", g), "attrs": {}, "parents": []} for g in sorted(groups)]
    for p in loaded.principals.values():
        out.append(
            {
                "uid": principal_uid(p.kind, p.id),
                "attrs": {"active": p.active, "kind": p.kind},
                "parents": [*(uid("Group", g) for g in p.groups), *(uid("Role", r) for r in p.roles)],
            }
        )
    return out


def principal_uid(kind: str, ident: str) -> dict[str, str]:
    return uid("ServiceAccount" if kind == "service" else "User", ident)
