"""Loading and checking a charter: schema validation, cross-references, secrets, with file:line errors."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from charter.errors import Problem, SpecError, UsageError
from charter.spec._schema import Charter, ServiceAccount, User, UsersFile
from charter.spec._yaml import Loc, LocatedYAML, load_yaml_file

CHARTER_FILENAMES = ("charter.yaml", "charter.yml")

# Things that look like credentials. A charter names environment variables, never holds secrets.
_SECRET_PATTERNS = [
    (re.compile(r"\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{16,}"), "an OpenAI/Anthropic-style API key"),
    (re.compile(r"\bAKIA[0-9A-Z]{16}\b"), "an AWS access key id"),
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}"), "a GitHub token"),
    (re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"), "a Slack token"),
    (re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"), "a Google API key"),
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"), "a private key"),
    (re.compile(r"\bchr_[a-z0-9]{12}_[A-Za-z0-9_-]{20,}"), "a Charter API token"),
    (re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/-]{20,}"), "a bearer token"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"), "a JWT"),
]
_SECRET_KEYS = re.compile(r"(?i)^(api_?key|secret|password|passwd|token|access_?key|private_?key)$")


@dataclass(frozen=True)
class Principal:
    """A user or service account as the runtime sees it."""

    id: str
    kind: str  # "user" | "service"
    name: str
    email: str | None
    groups: tuple[str, ...]
    roles: tuple[str, ...]
    active: bool

    @property
    def acl_tokens(self) -> frozenset[str]:
        """ACL tokens this principal holds: ``public``, ``user:<id>`` and ``group:<id>`` for each group."""
        return frozenset({"public", f"user:{self.id}", *(f"group:{g}" for g in self.groups)})


@dataclass
class LoadedCharter:
    """A validated charter with everything resolved relative to its folder."""

    spec: Charter
    path: Path
    users: UsersFile
    located: LocatedYAML
    warnings: list[Problem] = field(default_factory=list)

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def resolve(self, relative: str) -> Path:
        """A path named in the charter, resolved against the charter's folder."""
        p = Path(relative)
        return p if p.is_absolute() else (self.base_dir / p)

    @cached_property
    def principals(self) -> dict[str, Principal]:
        out: dict[str, Principal] = {}
        for u in self.users.users:
            out[u.id] = _principal(u)
        for s in self.users.service_accounts:
            out[s.id] = _principal(s)
        return out

    def principal(self, principal_id: str) -> Principal:
        try:
            return self.principals[principal_id]
        except KeyError:
            known = ", ".join(sorted(self.principals)) or "none"
            raise UsageError(f"unknown user {principal_id!r} (known: {known})") from None

    def fingerprint(self) -> str:
        from charter.spec._fingerprint import fingerprint

        return fingerprint(self)


def _principal(p: User | ServiceAccount) -> Principal:
    return Principal(
        id=p.id,
        kind="user" if isinstance(p, User) else "service",
        name=p.name,
        email=p.email if isinstance(p, User) else None,
        groups=tuple(p.groups),
        roles=tuple(p.roles),
        active=p.active,
    )


def find_charter(start: Path | str | None = None) -> Path:
    """The charter file: an explicit path, ``CHARTER_FILE``, or ``charter.yaml`` in the current folder."""
    candidate = start or os.environ.get("CHARTER_FILE")
    if candidate:
        p = Path(candidate)
        if p.is_dir():
            for name in CHARTER_FILENAMES:
                if (p / name).is_file():
                    return p / name
            raise UsageError(f"no charter.yaml in {p}")
        if not p.exists():
            raise UsageError(f"charter file not found: {p}")
        return p
    for name in CHARTER_FILENAMES:
        if Path(name).is_file():
            return Path(name)
    raise UsageError("no charter.yaml in the current folder; pass --charter PATH or set CHARTER_FILE")


# ------------------------------------------------------------------------------------------ validation
def _model_fields(model: type[BaseModel], loc: Loc) -> list[str]:
    """Field names valid at ``loc`` inside ``model`` (for "did you mean" suggestions)."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        ann = (
            current.model_fields.get(part)
            if isinstance(current, type) and issubclass(current, BaseModel)
            else None
        )
        if ann is None:
            return []
        current = _inner_model(ann.annotation)
        if current is None:
            return []
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _inner_model(annotation: Any) -> Any:
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def _problems_from_validation(
    exc: ValidationError, located: LocatedYAML, model: type[BaseModel]
) -> list[Problem]:
    problems: list[Problem] = []
    for err in exc.errors(include_url=False):
        loc: Loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        dotted = _dotted(loc)
        if err["type"] == "extra_forbidden":
            key = str(loc[-1])
            options = _model_fields(model, loc[:-1])
            hint = difflib.get_close_matches(key, options, n=1, cutoff=0.6)
            msg = f"unknown key {key!r}"
            msg += (
                f"; did you mean {hint[0]!r}?"
                if hint
                else (f"; expected one of: {', '.join(options)}" if options else "")
            )
            problems.append(Problem(msg, file=located.file, line=located.line_of(loc), field=dotted))
        elif err["type"] == "missing":
            problems.append(
                Problem(
                    "required field is missing", file=located.file, line=located.line_of(loc), field=dotted
                )
            )
        else:
            msg = err["msg"]
            if msg.startswith("Value error, "):
                msg = msg[len("Value error, ") :]
            problems.append(Problem(msg, file=located.file, line=located.line_of(loc), field=dotted or None))
    return problems


def _dotted(loc: Iterable[str | int]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _scan_secrets(data: Any, loc: Loc, located: LocatedYAML) -> list[Problem]:
    problems: list[Problem] = []
    if isinstance(data, dict):
        for k, v in data.items():
            if isinstance(k, str) and _SECRET_KEYS.match(k) and isinstance(v, str) and v:
                problems.append(
                    Problem(
                        "looks like a secret; put it in an environment variable and name the variable "
                        "(e.g. api_key_env: MY_API_KEY)",
                        file=located.file,
                        line=located.line_of((*loc, k)),
                        field=_dotted((*loc, k)),
                    )
                )
            else:
                problems += _scan_secrets(v, (*loc, k), located)
    elif isinstance(data, list):
        for i, v in enumerate(data):
            problems += _scan_secrets(v, (*loc, i), located)
    elif isinstance(data, str):
        for pattern, what in _SECRET_PATTERNS:
            if pattern.search(data):
                problems.append(
                    Problem(
                        f"contains what looks like {what}; secrets never go in the charter — set an environment "
                        f"variable and reference it with api_key_env",
                        file=located.file,
                        line=located.line_of(loc),
                        field=_dotted(loc),
                    )
                )
                break
    return problems


def _without(data: Any, loc: Loc) -> bool:
    """Remove the value at ``loc`` from nested data (in place); False if there is nothing to remove."""
    if not loc:
        return False
    parent = data
    for part in loc[:-1]:
        try:
            parent = parent[part]
        except (KeyError, IndexError, TypeError):
            return False
    last = loc[-1]
    if isinstance(parent, dict) and last in parent:
        del parent[last]
        return True
    if isinstance(parent, list) and isinstance(last, int) and 0 <= last < len(parent):
        parent.pop(last)
        return True
    return False


def _validate(model: type[BaseModel], located: LocatedYAML) -> tuple[Any, list[Problem], Any]:
    """Validate; returns (model or None, problems, best-effort model for further cross-checks).

    When validation fails, the offending values are removed one by one and validation is retried, so
    that the cross-reference checks can still run on what is valid and *all* problems are reported at once.
    """
    import copy

    problems = _scan_secrets(located.data, (), located)
    if not isinstance(located.data, dict):
        return (
            None,
            [
                *problems,
                Problem("expected a mapping of sections at the top level", file=located.file, line=1),
            ],
            None,
        )
    try:
        result = model.model_validate(located.data)
        return result, problems, result
    except ValidationError as exc:
        problems += _problems_from_validation(exc, located, model)
        errors = exc.errors(include_url=False)
    data = copy.deepcopy(located.data)
    for _ in range(5):
        removed = False
        # remove deepest locations first so list indices stay valid
        for err in sorted(errors, key=lambda e: len(e["loc"]), reverse=True):
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
            if err["type"] != "missing":
                removed = _without(data, loc) or removed
        if not removed:
            break
        try:
            return None, problems, model.model_validate(data)
        except ValidationError as exc2:
            errors = exc2.errors(include_url=False)
    return None, problems, None


# ------------------------------------------------------------------------------------------ cross-refs
@dataclass
class _Refs:
    """Collects cross-reference problems of a charter, with the line of each field in its file."""

    spec: Charter
    located: LocatedYAML
    roles: set[str]
    people: dict[str, User]
    problems: list[Problem] = field(default_factory=list)

    def add(self, msg: str, loc: Loc) -> None:
        self.problems.append(
            Problem(msg, file=self.located.file, line=self.located.line_of(loc), field=_dotted(loc))
        )

    def role(self, role: str, loc: Loc) -> None:
        if role not in self.roles:
            hint = difflib.get_close_matches(role, sorted(self.roles), n=1)
            self.add(
                f"role {role!r} is not defined in 'roles'"
                + (
                    f"; did you mean {hint[0]!r}?" if hint else f" (defined: {', '.join(sorted(self.roles))})"
                ),
                loc,
            )

    def user(self, uid: str, loc: Loc, what: str) -> None:
        if uid not in self.people:
            hint = difflib.get_close_matches(uid, sorted(self.people), n=1)
            self.add(
                f"{what} {uid!r} is not a user in {self.spec.identity.users_file}"
                + (f"; did you mean {hint[0]!r}?" if hint else ""),
                loc,
            )
        elif not self.people[uid].active:
            self.add(f"{what} {uid!r} is not an active user", loc)


def _check_owners(r: _Refs) -> None:
    spec = r.spec
    for i, role in enumerate(spec.scope.users):
        r.role(role, ("scope", "users", i))
    for duty, uid in spec.owners.model_dump().items():
        r.user(uid, ("owners", duty), "owner")
    for i, s in enumerate(spec.sources):
        r.user(s.owner, ("sources", i, "owner"), "source owner")
        if s.approval:
            r.user(s.approval.by, ("sources", i, "approval", "by"), "approver")
    for i, m in enumerate(spec.mcp.servers):
        r.user(m.owner, ("mcp", "servers", i, "owner"), "MCP server owner")


def _check_tools(r: _Refs) -> None:
    forbidden = set(r.spec.scope.forbidden_actions)
    for i, t in enumerate(r.spec.tools):
        if t.name in forbidden:
            r.add(
                f"tool {t.name!r} is listed in scope.forbidden_actions; a forbidden action cannot be a tool",
                ("tools", i, "name"),
            )
        for j, role in enumerate(t.roles):
            r.role(role, ("tools", i, "roles", j))
        if t.approval.approver_role:
            r.role(t.approval.approver_role, ("tools", i, "approval", "approver_role"))
        for j, c in enumerate(t.approval.conditions):
            r.role(c.approver_role, ("tools", i, "approval", "conditions", j, "approver_role"))


def _check_review(r: _Refs) -> None:
    r.role(r.spec.review.reviewer_role, ("review", "reviewer_role"))
    for i, e in enumerate(r.spec.review.escalations):
        r.role(e.to, ("review", "escalations", i, "to"))
        if e.then:
            r.role(e.then, ("review", "escalations", i, "then"))


def _check_prompt_binding(r: _Refs) -> None:
    names = [p.name for p in r.spec.prompts]
    bound = r.spec.workflow.prompts.system
    if bound is not None and bound not in names:
        r.add(
            f"names prompt {bound!r}, which is not in 'prompts' ({', '.join(names) or 'none defined'}); set "
            f"workflow.prompts.system to one of them or add a prompt named {bound!r}",
            ("workflow", "prompts", "system"),
        )
    if bound is None and len(names) > 1:
        r.add(
            f"the charter has {len(names)} prompts ({', '.join(names)}); set workflow.prompts.system to the "
            "one every request uses",
            ("prompts",),
        )


def _check_role_scopes(r: _Refs) -> None:
    spec = r.spec
    for rid, role in spec.roles.items():
        for key, listed, where in (
            ("allowed_topics", spec.scope.out_of_scope, "scope.out_of_scope"),
            ("not_sensitive", spec.review.sensitive_topics, "review.sensitive_topics"),
        ):
            for i, topic in enumerate(getattr(role.scope, key)):
                if topic not in listed:
                    r.add(
                        f"{topic!r} is not in {where}: a role may only lift a workflow-wide topic; add it to "
                        f"{where} or remove it from roles.{rid}.scope.{key}",
                        ("roles", rid, "scope", key, i),
                    )
        for i, e in enumerate(role.scope.escalations):
            r.role(e.to, ("roles", rid, "scope", "escalations", i, "to"))
            if e.then:
                r.role(e.then, ("roles", rid, "scope", "escalations", i, "then"))


def _users_file_problems(users: UsersFile, roles: set[str], users_located: LocatedYAML) -> list[Problem]:
    """The users file: roles must exist; service account owners must be users; groups must be declared."""
    problems: list[Problem] = []
    people = {u.id for u in users.users}
    for i, u in enumerate(users.users):
        for j, role in enumerate(u.roles):
            if role not in roles:
                problems.append(
                    Problem(
                        f"role {role!r} is not defined in the charter's 'roles'",
                        file=users_located.file,
                        line=users_located.line_of(("users", i, "roles", j)),
                        field=f"users[{i}].roles[{j}]",
                    )
                )
    for i, account in enumerate(users.service_accounts):
        if account.owner not in people:
            problems.append(
                Problem(
                    f"owner {account.owner!r} is not a user",
                    file=users_located.file,
                    line=users_located.line_of(("service_accounts", i, "owner")),
                    field=f"service_accounts[{i}].owner",
                )
            )
    declared_groups = {g.id for g in users.groups}
    if declared_groups:
        members: list[User | ServiceAccount] = [*users.users, *users.service_accounts]
        for i, member in enumerate(members):
            for g in member.groups:
                if g not in declared_groups:
                    problems.append(
                        Problem(
                            f"group {g!r} is not declared under 'groups'",
                            file=users_located.file,
                            line=users_located.line_of(("users", i)),
                            field=f"{member.id}.groups",
                        )
                    )
    return problems


def _cross_references(
    spec: Charter, users: UsersFile, located: LocatedYAML, users_located: LocatedYAML
) -> list[Problem]:
    r = _Refs(spec, located, set(spec.roles), {u.id: u for u in users.users})
    _check_owners(r)
    _check_tools(r)
    _check_review(r)
    _check_prompt_binding(r)
    _check_role_scopes(r)
    for i, p in enumerate(spec.prompts):
        for j, v in enumerate(p.versions):
            if v.approval:
                r.user(v.approval.by, ("prompts", i, "versions", j, "approval", "by"), "prompt approver")
    return r.problems + _users_file_problems(users, r.roles, users_located)


def _referenced_files(spec: Charter, located: LocatedYAML, base: Path) -> list[Problem]:
    problems: list[Problem] = []

    def need(rel: str, loc: Loc, what: str, *, directory: bool = False) -> None:
        p = Path(rel) if Path(rel).is_absolute() else base / rel
        ok = p.is_dir() if directory else p.is_file()
        if not ok:
            problems.append(
                Problem(
                    f"{what} not found: {rel}",
                    file=located.file,
                    line=located.line_of(loc),
                    field=_dotted(loc),
                )
            )

    for i, p in enumerate(spec.prompts):
        for j, v in enumerate(p.versions):
            need(v.file, ("prompts", i, "versions", j, "file"), "prompt file")
    for i, f in enumerate(spec.policies):
        need(f, ("policies", i), "policy file")
    for i, f in enumerate(spec.evals.sets):
        need(f, ("evals", "sets", i), "eval set")
    for i, s in enumerate(spec.sources):
        if s.connector in ("folder", "jsonl") and "://" not in s.location:
            need(s.location, ("sources", i, "location"), "source location", directory=s.connector == "folder")
    return problems


def _display(path: Path) -> str:
    """How a file is named in messages: relative to the current folder when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def load_charter(path: Path | str | None = None) -> LoadedCharter:
    """Load and check a charter: schema, users, cross-references, referenced files. Raises
    :class:`SpecError` listing *every* problem found.

    Its Cedar policies are checked one layer up, by :func:`charter.policy.load_checked_charter` (what
    ``Runtime.open`` and ``charter check`` use): compiling them needs the policy package, which builds on
    this one."""
    path = find_charter(path)
    located = load_yaml_file(path, display=_display(path))
    spec, problems, partial = _validate(Charter, located)
    users: UsersFile | None = None
    users_located: LocatedYAML | None = None
    partial_users: UsersFile | None = None
    if partial is not None:
        users_path = path.parent / partial.identity.users_file
        try:
            users_located = load_yaml_file(users_path, display=_display(users_path))
        except SpecError as exc:
            problems += exc.problems
        else:
            users, user_problems, partial_users = _validate(UsersFile, users_located)
            problems += user_problems
        if partial_users is not None and users_located is not None:
            problems += _cross_references(partial, partial_users, located, users_located)
        problems += _referenced_files(partial, located, path.parent)
    if problems:
        raise SpecError(sorted(problems, key=lambda p: (p.file or "", p.line or 0)))
    assert spec is not None and users is not None and users_located is not None
    loaded = LoadedCharter(spec=spec, path=path.resolve(), users=users, located=located)
    if spec.workflow.kind == "agent" and not spec.tools:
        loaded.warnings.append(
            Problem(
                "an 'agent' workflow without tools can only answer from its sources: declare the tools its "
                "tasks need under `tools` (docs/agents.md), or set workflow.kind to 'answer'",
                file=located.file,
                line=located.line_of(("workflow", "kind")),
                field="workflow.kind",
            )
        )
    return loaded
