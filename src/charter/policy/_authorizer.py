"""The Cedar authorizer: one parsed policy set and entity graph per charter, reused for every decision.

Deny by default. Any malformed request — an unknown principal, action or resource, a context that is not
a mapping of ``args``, a NaN or infinite number, an unsupported value — is denied with the reason in
``Decision.errors``; :meth:`Authorizer.authorize` never raises for bad input and never allows it.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import cedarpy

from charter.errors import Denied, Problem, SpecError, UsageError
from charter.policy._cedar_text import statements
from charter.policy._conditions import cedar_decimal, to_decimal
from charter.policy._generate import (
    ENTITY_TYPES,
    NAMESPACE,
    PolicyInfo,
    charter_problems,
    entities,
    generate,
    known_actions,
    principal_uid,
    uid,
)
from charter.spec import Principal

if TYPE_CHECKING:
    from charter.spec import LoadedCharter

_POLICY_REF = re.compile(r"\bpolicy(\d+)\b")


def _policy_order(text: str) -> tuple[int, str]:
    """Sort key: the index of the first policy a diagnostic names (``policy<N>``), then the text."""
    m = _POLICY_REF.search(text)
    return (int(m.group(1)) if m else 1 << 30, text)


_RESOURCE_CEDAR = re.compile(r'^(?:Charter::)?([A-Za-z]+)::"([^"\\]{1,200})"$')
_RESOURCE_SHORT = re.compile(r"^([A-Za-z_]+):([^\s:\"]{1,200})$")
_SHORT_TYPES = {t.lower(): t for t in ENTITY_TYPES if t != "Action"} | {
    "service": "ServiceAccount",
    "service_account": "ServiceAccount",
}
_CONTEXT_KEYS = frozenset({"args"})
_MAX_DEPTH = 8
_MAX_ITEMS = 1000
_MAX_STRING = 10_000


ResourceRef = str | tuple[str, str] | None


class AuditSink(Protocol):
    """What :meth:`Authorizer.require` needs from the audit log (``charter.telemetry.audit.AuditLog``)."""

    def append(
        self, *, actor: str, action: str, resource: str, outcome: str, details: dict[str, Any]
    ) -> Any: ...


@dataclass(frozen=True)
class Decision:
    """The outcome of one authorization request.

    ``policy_ids`` are the policies that decided, in the policy set's order (the permits that allowed, or the forbids that denied;
    empty when nothing matched and the default deny applied). ``reasons`` explains in words, ``errors``
    lists malformed input and policies that failed to evaluate (which never allow).
    """

    allowed: bool
    reasons: tuple[str, ...]
    policy_ids: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()


class _Malformed(Exception):
    """Raised inside the authorizer for bad input; always turned into a deny."""

    pass


def parse_resource(resource: ResourceRef, workflow_id: str) -> tuple[str, str]:
    """``(type, id)`` from ``Charter::Tool::"x"``, ``Tool::"x"``, ``tool:x``, a tuple, or None (workflow)."""
    if resource is None:
        return "Workflow", workflow_id
    if isinstance(resource, tuple):
        if len(resource) != 2 or not all(isinstance(x, str) for x in resource):
            raise UsageError("a resource tuple must be (type, id)")
        kind, ident = resource
    elif isinstance(resource, str):
        text = resource.strip()
        m = _RESOURCE_CEDAR.match(text) or _RESOURCE_SHORT.match(text)
        if not m:
            raise UsageError(
                f"cannot read resource {resource!r}; expected e.g. 'tool:<name>', "
                f"'workflow:{workflow_id}' or 'Charter::Tool::\"<name>\"'"
            )
        kind, ident = m.group(1), m.group(2)
    else:
        raise UsageError(f"a resource must be a string, got {type(resource).__name__}")
    canonical = _SHORT_TYPES.get(kind.lower()) if kind not in ENTITY_TYPES else kind
    if canonical is None or canonical == "Action":
        raise UsageError(
            f"unknown resource type {kind!r}; expected one of: "
            f"{', '.join(t for t in ENTITY_TYPES if t != 'Action')}"
        )
    return canonical, ident


def _cedar_value(value: Any, path: str, depth: int = 0) -> Any:
    """A context value in Cedar JSON form. Numbers become ``decimal``; junk raises ``_Malformed``."""
    if depth > _MAX_DEPTH:
        raise _Malformed(f"{path} is nested too deeply")
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float | Decimal):
        try:
            return {"__extn": {"fn": "decimal", "arg": cedar_decimal(to_decimal(value, path))}}
        except UsageError as exc:
            raise _Malformed(exc.problem.message) from None
    if isinstance(value, str):
        if len(value) > _MAX_STRING:
            raise _Malformed(f"{path} is longer than {_MAX_STRING} characters")
        return value
    if isinstance(value, Mapping):
        if len(value) > _MAX_ITEMS:
            raise _Malformed(f"{path} has more than {_MAX_ITEMS} entries")
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise _Malformed(f"{path} has a non-string key {k!r}")
            if v is None:
                continue  # an absent optional argument is the same as a missing one
            out[k] = _cedar_value(v, f"{path}.{k}", depth + 1)
        return out
    if isinstance(value, list | tuple):
        if len(value) > _MAX_ITEMS:
            raise _Malformed(f"{path} has more than {_MAX_ITEMS} items")
        return [_cedar_value(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]
    raise _Malformed(f"{path} has an unsupported type {type(value).__name__}")


def _context(context: Mapping[str, Any] | None) -> dict[str, Any]:
    if context is None:
        return {}
    if not isinstance(context, Mapping):
        raise _Malformed(f"context must be a mapping, got {type(context).__name__}")
    extra = sorted(str(k) for k in context if k not in _CONTEXT_KEYS)
    if extra:
        raise _Malformed(f"unexpected context key(s): {', '.join(extra)} (expected only: args)")
    args = context.get("args")
    if args is None:
        return {}
    if not isinstance(args, Mapping):
        raise _Malformed(f"context.args must be a mapping, got {type(args).__name__}")
    return {"args": _cedar_value(args, "args")}


_MEMO_SIZE = 4096


def _memo_key(
    principal: Principal | str, action: str, resource: ResourceRef, context: Mapping[str, Any] | None
) -> tuple[str, str, str | tuple[str, str] | None] | None:
    """The memo key of a context-free request with well-typed parts; ``None``: decide without the memo."""
    if context:
        return None
    pid = principal.id if isinstance(principal, Principal) else principal
    if not isinstance(pid, str) or not isinstance(action, str):
        return None
    if resource is None or isinstance(resource, str):
        return (pid, action, resource)
    if (
        isinstance(resource, tuple)
        and len(resource) == 2
        and isinstance(resource[0], str)
        and isinstance(resource[1], str)
    ):
        return (pid, action, resource)
    return None


class Authorizer:
    """Decides ``(principal, action, resource, context)`` with Cedar. Build with :meth:`from_charter`."""

    def __init__(
        self,
        policies: list[PolicyInfo],
        entities: list[dict[str, Any]],
        actions: frozenset[str],
        principals: Mapping[str, Principal],
        workflow_id: str,
    ) -> None:
        self.policies: tuple[PolicyInfo, ...] = tuple(policies)
        self.actions = actions
        self.workflow_id = workflow_id
        self._principals = dict(principals)
        self.text = "\n\n".join(p.text for p in self.policies) + "\n"
        try:
            self._policy_set = cedarpy.PolicySet.from_str(self.text)
            self._entities = cedarpy.Entities.from_json_str(json.dumps(entities))
        except ValueError as exc:
            raise SpecError([Problem(f"the policy set does not parse: {exc}")]) from None
        count = len(self._policy_set) + len(self._policy_set.templates())
        if count != len(self.policies):
            raise SpecError(
                [
                    Problem(
                        f"policy count mismatch: parsed {count}, expected {len(self.policies)} "
                        f"(templates are not supported in custom policy files)"
                    )
                ]
            )
        self._resources = {(e["uid"]["type"], e["uid"]["id"]) for e in entities}
        self._by_id = {p.id: p for p in self.policies}
        # Policies, entities and principals are fixed for the authorizer's life, so a decision is a pure
        # function of the request: decisions without context are memoised (bounded; cleared when full).
        self._decisions: dict[tuple[str, str, str | tuple[str, str] | None], Decision] = {}
        # Per action, the policies whose action scope can match it (see :meth:`_slice`), built on first use.
        self._entity_list = entities
        self._slices: dict[str, tuple[Any, tuple[int, ...]]] = {}

    # ------------------------------------------------------------------------------------ building
    @classmethod
    def from_charter(cls, loaded: LoadedCharter) -> Authorizer:
        """Generate the policies and entities from ``loaded`` and add its custom ``.cedar`` files."""
        problems = charter_problems(loaded)
        custom, custom_problems = custom_policies(loaded)
        problems += custom_problems
        if problems:
            raise SpecError(problems)
        generated, entities, actions = generate(loaded)
        return cls([*generated, *custom], entities, actions, loaded.principals, loaded.spec.workflow.id)

    def policy(self, policy_id: str) -> PolicyInfo:
        try:
            return self._by_id[policy_id]
        except KeyError:
            raise UsageError(f"unknown policy id {policy_id!r}") from None

    # ------------------------------------------------------------------------------------ deciding
    def authorize(
        self,
        principal: Principal | str,
        action: str,
        resource: ResourceRef = None,
        context: Mapping[str, Any] | None = None,
    ) -> Decision:
        """Decide one request. Never raises for bad input: it denies, with the reason in ``errors``."""
        key = _memo_key(principal, action, resource, context)
        if key is not None:
            cached = self._decisions.get(key)
            if cached is not None:
                return cached
        decision = self._decide(principal, action, resource, context)
        if key is not None:
            if len(self._decisions) >= _MEMO_SIZE:
                self._decisions.clear()
            self._decisions[key] = decision
        return decision

    def _decide(
        self,
        principal: Principal | str,
        action: str,
        resource: ResourceRef,
        context: Mapping[str, Any] | None,
    ) -> Decision:
        try:
            request = self._request(principal, action, resource, context)
        except _Malformed as exc:
            return Decision(False, (f"malformed request: {exc}",), (), (str(exc),))
        try:
            policy_set, index = self._slice(action)
            result = cedarpy.is_authorized(request, policy_set, self._entities)

            def whole(text: str) -> str:  # the slice's ``policyK`` is the set's ``policy<index[K]>``
                return _POLICY_REF.sub(
                    lambda m: (
                        f"policy{index[int(m.group(1))]}" if int(m.group(1)) < len(index) else m.group()
                    ),
                    str(text),
                )

            decision = result.decision
            # Cedar reports the deciding policies as a set: listed in the policy set's order, so a decision
            # (and its audit entry) reads the same however the set was sliced
            reasons = sorted((whole(r) for r in result.diagnostics.reasons), key=_policy_order)
            errors = [
                self._rename(e)
                for e in sorted((whole(e) for e in result.diagnostics.errors), key=_policy_order)
            ]
        except Exception as exc:  # cedarpy raising is a bug or junk we did not catch: deny, never allow
            error = f"{type(exc).__name__}: {exc}"
            return Decision(False, ("authorizer error: request denied",), (), (error,))
        ids = tuple(self._policy_id(r) for r in reasons)
        who = request["principal"]["id"]
        what = f'{action} on {request["resource"]["type"].split("::")[-1]}::"{request["resource"]["id"]}"'
        if decision == cedarpy.Decision.Allow:
            return Decision(True, tuple(f"permitted by {self._cite(i)}" for i in ids), ids, tuple(errors))
        if decision == cedarpy.Decision.Deny and ids:
            return Decision(False, tuple(f"forbidden by {self._cite(i)}" for i in ids), ids, tuple(errors))
        if decision != cedarpy.Decision.Deny:
            return Decision(False, ("the request could not be evaluated: denied",), (), tuple(errors))
        why = f"no policy permits {who} to {what} (deny by default)"
        if errors:
            why += "; some policies could not be evaluated (see errors)"
        return Decision(False, (why,), (), tuple(errors))

    def require(
        self,
        principal: Principal | str,
        action: str,
        resource: ResourceRef = None,
        context: Mapping[str, Any] | None = None,
        *,
        audit: AuditSink | None,
    ) -> Decision:
        """Like :meth:`authorize`, but a deny is audited (``policy.denied``) and raised as :class:`Denied`.

        Pass ``audit=None`` only where auditing is done by the caller.
        """
        decision = self.authorize(principal, action, resource, context)
        if decision.allowed:
            return decision
        actor = principal.id if isinstance(principal, Principal) else str(principal)
        target = self._describe_resource(resource)
        if audit is not None:
            audit.append(
                actor=actor[:200],
                action="policy.denied",
                resource=target[:500],
                outcome="denied",
                details={
                    "action": str(action)[:200],
                    "policy_ids": list(decision.policy_ids),
                    "reasons": list(decision.reasons),
                    "errors": list(decision.errors),
                },
            )
        raise Denied(f"{actor} may not {action} on {target}", reasons=list(decision.reasons))

    # ------------------------------------------------------------------------------------ internals
    def _describe_resource(self, resource: ResourceRef) -> str:
        try:
            kind, ident = parse_resource(resource, self.workflow_id)
        except UsageError:
            return repr(resource)
        return f"{kind.lower()}:{ident}"

    def _request(
        self,
        principal: Principal | str,
        action: str,
        resource: ResourceRef,
        context: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        pid = principal.id if isinstance(principal, Principal) else principal
        if not isinstance(pid, str) or pid not in self._principals:
            raise _Malformed(f"unknown principal {pid!r}")
        known = self._principals[pid]  # the charter's view, never the caller's copy
        if not isinstance(action, str) or action not in self.actions:
            raise _Malformed(f"unknown action {action!r}")
        try:
            kind, ident = parse_resource(resource, self.workflow_id)
        except UsageError as exc:
            raise _Malformed(exc.problem.message) from None
        ruid = uid(kind, ident)
        if (ruid["type"], ruid["id"]) not in self._resources:
            raise _Malformed(f"unknown resource {kind}::{ident!r}")
        return {
            "principal": principal_uid(known.kind, known.id),
            "action": uid("Action", action),
            "resource": ruid,
            "context": _context(context),
        }

    def _slice(self, action: str) -> tuple[Any, tuple[int, ...]]:
        """The policy set a decision on ``action`` is made with, and the position in :attr:`policies` of each
        of its policies: every policy except those whose action scope cannot match ``action``.

        Cedar evaluates a policy's scope before its conditions (``principal && action && resource &&
        when && !unless``, short-circuiting), so a policy whose action scope is false for a request is
        never satisfied and never reports an error: leaving it out changes neither the decision, nor the
        policies that decided, nor the errors. Only a scope that certainly excludes ``action`` is left out
        (``action == A`` or ``action in [A, …]`` naming neither ``action`` nor one of its ancestors in the
        entity graph); anything else — ``action`` unconstrained, a form not recognised, a text that does
        not parse alone — stays in."""
        got = self._slices.get(action)
        if got is not None:
            return got
        target = uid("Action", action)
        ancestors = _ancestors(self._entity_list, target)
        index = tuple(
            i for i, p in enumerate(self.policies) if _may_match(_action_scope(p.text), target, ancestors)
        )
        text = "\n\n".join(self.policies[i].text for i in index) + "\n"
        got = (cedarpy.PolicySet.from_str(text), index)
        if len(got[0]) + len(got[0].templates()) != len(index):  # never decide with a set that lost one
            got = (self._policy_set, tuple(range(len(self.policies))))
        self._slices[action] = got
        return got

    def _cite(self, policy_id: str) -> str:
        info = self._by_id.get(policy_id)
        if info is None or info.source == policy_id:
            return policy_id
        return f"{policy_id} ({info.source})"

    def _policy_id(self, cedar_id: str) -> str:
        m = _POLICY_REF.fullmatch(cedar_id)
        if m and int(m.group(1)) < len(self.policies):
            return self.policies[int(m.group(1))].id
        return cedar_id

    def _rename(self, message: str) -> str:
        return _POLICY_REF.sub(lambda m: self._policy_id(m.group()), str(message))


# ---------------------------------------------------------------------------------------- slicing
def _action_scope(text: str) -> Any:
    """The action scope of the one policy in ``text`` (Cedar's JSON form), or ``None`` when unsure."""
    try:
        parsed = json.loads(cedarpy.policies_to_json_str(text))
    except Exception:
        return None
    found = [*parsed.get("staticPolicies", {}).values(), *parsed.get("templates", {}).values()]
    return found[0].get("action") if len(found) == 1 and isinstance(found[0], dict) else None


def _ancestors(entities: list[dict[str, Any]], target: dict[str, str]) -> list[dict[str, str]]:
    """Every ancestor of ``target`` in the entity graph (transitively)."""
    parents = {(e["uid"]["type"], e["uid"]["id"]): e.get("parents", []) for e in entities}
    out: list[dict[str, str]] = []
    seen: set[tuple[str, str]] = set()
    todo = [target]
    while todo:
        node = todo.pop()
        for parent in parents.get((node["type"], node["id"]), []):
            key = (parent["type"], parent["id"])
            if key not in seen:
                seen.add(key)
                out.append({"type": parent["type"], "id": parent["id"]})
                todo.append(parent)
    return out


def _may_match(scope: Any, target: dict[str, str], ancestors: list[dict[str, str]]) -> bool:
    """False only when the action scope certainly excludes ``target`` (see :meth:`Authorizer._slice`)."""
    if not isinstance(scope, dict):
        return True

    def same(entity: Any) -> bool:
        return (
            isinstance(entity, dict)
            and entity.get("type") == target["type"]
            and entity.get("id") == target["id"]
        )

    def under(entity: Any) -> bool:
        return same(entity) or any(
            isinstance(entity, dict) and entity.get("type") == a["type"] and entity.get("id") == a["id"]
            for a in ancestors
        )

    op = scope.get("op")
    if op == "==" and isinstance(scope.get("entity"), dict):
        return same(scope["entity"])
    if op == "in" and isinstance(scope.get("entity"), dict):
        return under(scope["entity"])
    if op == "in" and isinstance(scope.get("entities"), list):
        return any(under(e) for e in scope["entities"])
    return True


# ---------------------------------------------------------------------------------------- custom files
def custom_policies(loaded: LoadedCharter) -> tuple[list[PolicyInfo], list[Problem]]:
    """The charter's custom ``.cedar`` files as policies, plus every problem found in them."""
    from charter.policy._cedar_text import entity_refs, locate_parse_error

    policies: list[PolicyInfo] = []
    problems: list[Problem] = []
    generated_ids = _generated_ids(loaded)
    known = _known_entities(loaded)
    seen_ids: dict[str, str] = {}
    for i, rel in enumerate(loaded.spec.policies):
        path = loaded.resolve(rel)
        shown = _display(path)
        field = f"policies[{i}]"
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(Problem(f"cannot read policy file: {exc}", file=shown, field=field))
            continue
        located = locate_parse_error(text)
        if located is not None:
            line, message = located
            problems.append(Problem(f"Cedar syntax error: {message}", file=shown, line=line, field=field))
            continue
        for stmt in statements(text):
            pid = stmt.annotations.get("id") or f"{shown}:{stmt.line}"
            if pid in generated_ids or pid in seen_ids:
                where = "a generated policy" if pid in generated_ids else seen_ids[pid]
                problems.append(
                    Problem(
                        f"policy id {pid!r} is already used by {where}; choose another @id",
                        file=shown,
                        line=stmt.line,
                        field=field,
                    )
                )
            seen_ids[pid] = f"{shown}:{stmt.line}"
            toks = stmt.tokens
            if any(
                a.text == "?" and b.text in ("principal", "resource") for a, b in itertools.pairwise(toks)
            ):
                problems.append(
                    Problem(
                        "policy templates (?principal, ?resource) are not supported; write a static policy",
                        file=shown,
                        line=stmt.line,
                        field=field,
                    )
                )
            for ref in entity_refs(stmt):
                problem = _check_ref(ref.type, ref.id, known)
                if problem:
                    problems.append(Problem(problem, file=shown, line=ref.line, field=field))
            policies.append(
                PolicyInfo(pid, stmt.effect or "permit", stmt.text(text), f"{shown}:{stmt.line}", False)
            )
    return policies, problems


def _display(path: Path) -> str:
    """How a file is named in messages: relative to the current folder when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _generated_ids(loaded: LoadedCharter) -> set[str]:
    if charter_problems(loaded):
        return set()
    generated, _, _ = generate(loaded)
    return {p.id for p in generated}


def _known_entities(loaded: LoadedCharter) -> dict[str, set[str]]:
    known: dict[str, set[str]] = {t: set() for t in ENTITY_TYPES}
    for e in entities(loaded):
        known[e["uid"]["type"].split("::", 1)[1]].add(e["uid"]["id"])
    known["Action"] = set(known_actions(loaded))
    return known


def _check_ref(full_type: str, ident: str, known: dict[str, set[str]]) -> str | None:
    ns, _, kind = full_type.rpartition("::")
    if ns != NAMESPACE or kind not in known:
        return (
            f"entity type {full_type!r} is not used by Charter and can never match; "
            f"expected {NAMESPACE}::<{'|'.join(ENTITY_TYPES)}>"
        )
    if ident not in known[kind]:
        import difflib

        hint = difflib.get_close_matches(ident, sorted(known[kind]), n=1)
        what = "action" if kind == "Action" else kind
        return f'unknown {what} {ident!r} in {full_type}::"{ident}"' + (
            f"; did you mean {hint[0]!r}?" if hint else ""
        )
    return None
