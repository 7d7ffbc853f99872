"""Eval cases and eval-set files (YAML or JSONL), validated with file:line errors.

A YAML set is either a list of cases or a mapping ``{name, description, cases: [...]}``; a JSONL set has one
case (a JSON object) per line. A case::

    - id: leave-carry-over
      category: normal            # normal | edge | negative | permission
      as: eli                     # the asking user (must exist in the charter)
      question: How many leave days can I carry over?
      expected_sources:           # graded relevance: "source/doc" (relevance 1) or {doc, relevance}
        - handbook/annual-leave.md
        - {doc: handbook/sick-leave.md, relevance: 1}
      must_include: ["5 days", "/31 march/i"]   # strings (case-insensitive) or /regex/flags
      must_not_include: [CANARY-HR-7d3a91]
      expect: answer              # answer | refuse | escalate | any (not scored)
      expected_tools: [lookup_balance]
      forbidden_tools: [change_salary]
      forbidden_sources: [managers/salary-bands.md]  # must never reach this user
      tags: [leave]
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from charter.errors import Problem, SpecError
from charter.spec import LocatedYAML, load_yaml_file

CATEGORIES = ("normal", "edge", "negative", "permission")
Category = Literal["normal", "edge", "negative", "permission"]
Expect = Literal["answer", "refuse", "escalate", "any"]


class EvalSetError(SpecError):
    """An eval set file is invalid (a usage error: exit code 2)."""

    exit_code = 2


@dataclass(frozen=True)
class Pattern:
    """A fact to look for: a plain string (case-insensitive substring) or ``/regex/flags``."""

    raw: str
    regex: re.Pattern[str]

    @classmethod
    def parse(cls, raw: str) -> Pattern:
        m = re.fullmatch(r"/(.+)/([imsx]*)", raw, flags=re.S)
        if m:
            flags = 0
            for f in m.group(2):
                flags |= {"i": re.I, "m": re.M, "s": re.S, "x": re.X}[f]
            return cls(raw, re.compile(m.group(1), flags))
        return cls(raw, re.compile(re.escape(raw), re.I))

    def found_in(self, text: str) -> bool:
        return bool(self.regex.search(text))


class _SourceRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    doc: str = Field(pattern=r"^[^/\s]+/.+$")
    relevance: int = Field(1, ge=1, le=10)


class _ToolRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tool: str = Field(min_length=1)
    args: dict[str, Any] = Field(default_factory=dict)


class _CaseModel(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    id: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
    category: Category
    as_: str = Field(alias="as", min_length=1)
    question: str = Field(min_length=1)
    expected_sources: list[str | _SourceRef] = Field(default_factory=list)
    must_include: list[str] = Field(default_factory=list)
    must_not_include: list[str] = Field(default_factory=list)
    expect: Expect = "answer"
    expected_tools: list[str | _ToolRef] = Field(default_factory=list)
    forbidden_tools: list[str] = Field(default_factory=list)
    forbidden_sources: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    notes: str = ""

    @field_validator("must_include", "must_not_include")
    @classmethod
    def _patterns(cls, v: list[str]) -> list[str]:
        for raw in v:
            try:
                Pattern.parse(raw)
            except re.error as exc:
                raise ValueError(f"invalid regular expression {raw!r}: {exc}") from None
        return v

    @field_validator("expected_sources", "forbidden_sources")
    @classmethod
    def _refs(cls, v: list[Any]) -> list[Any]:
        for ref in v:
            if isinstance(ref, str) and not re.fullmatch(r"[^/\s]+/.+", ref):
                raise ValueError(f"{ref!r}: expected 'source_id/doc_id', e.g. handbook/annual-leave.md")
        return v


@dataclass(frozen=True)
class ToolExpectation:
    tool: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EvalCase:
    """One validated case. ``expected_sources`` maps ``"source_id/doc_id"`` to its graded relevance."""

    id: str
    category: str
    user: str
    question: str
    expected_sources: dict[str, int] = field(default_factory=dict)
    must_include: tuple[Pattern, ...] = ()
    must_not_include: tuple[Pattern, ...] = ()
    expect: str = "answer"
    expected_tools: tuple[ToolExpectation, ...] = ()
    forbidden_tools: tuple[str, ...] = ()
    forbidden_sources: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    notes: str = ""
    origin: str = ""  # "file:line" (or "generated")
    canaries: tuple[str, ...] = ()  # planted by generated permission probes

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "category": self.category,
            "as": self.user,
            "question": self.question,
            "expected_sources": dict(self.expected_sources),
            "must_include": [p.raw for p in self.must_include],
            "must_not_include": [p.raw for p in self.must_not_include],
            "expect": self.expect,
            "expected_tools": [{"tool": t.tool, "args": t.args} for t in self.expected_tools],
            "forbidden_tools": list(self.forbidden_tools),
            "forbidden_sources": list(self.forbidden_sources),
            "tags": list(self.tags),
            "notes": self.notes,
            "origin": self.origin,
            "canaries": list(self.canaries),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EvalCase:
        """Rebuild a stored case (``as_dict`` output)."""
        return cls(
            id=d["id"],
            category=d["category"],
            user=d["as"],
            question=d["question"],
            expected_sources=dict(d.get("expected_sources") or {}),
            must_include=tuple(Pattern.parse(p) for p in d.get("must_include") or []),
            must_not_include=tuple(Pattern.parse(p) for p in d.get("must_not_include") or []),
            expect=d.get("expect", "answer"),
            expected_tools=tuple(
                ToolExpectation(t["tool"], t.get("args") or {}) for t in d.get("expected_tools") or []
            ),
            forbidden_tools=tuple(d.get("forbidden_tools") or []),
            forbidden_sources=tuple(d.get("forbidden_sources") or []),
            tags=tuple(d.get("tags") or []),
            notes=d.get("notes", ""),
            origin=d.get("origin", ""),
            canaries=tuple(d.get("canaries") or []),
        )


def _to_case(m: _CaseModel, origin: str) -> EvalCase:
    expected: dict[str, int] = {}
    for ref in m.expected_sources:
        if isinstance(ref, str):
            expected[ref] = max(expected.get(ref, 0), 1)
        else:
            expected[ref.doc] = max(expected.get(ref.doc, 0), ref.relevance)
    tools = tuple(
        ToolExpectation(t) if isinstance(t, str) else ToolExpectation(t.tool, t.args)
        for t in m.expected_tools
    )
    return EvalCase(
        id=m.id,
        category=m.category,
        user=m.as_,
        question=m.question,
        expected_sources=expected,
        must_include=tuple(Pattern.parse(p) for p in m.must_include),
        must_not_include=tuple(Pattern.parse(p) for p in m.must_not_include),
        expect=m.expect,
        expected_tools=tools,
        forbidden_tools=tuple(m.forbidden_tools),
        forbidden_sources=tuple(m.forbidden_sources),
        tags=tuple(m.tags),
        notes=m.notes,
        origin=origin,
    )


def _validate(
    item: Any, file: str, base_line: int | None, line_of: Any
) -> tuple[EvalCase | None, list[Problem]]:
    if not isinstance(item, dict):
        return None, [
            Problem(
                "expected a case (a mapping with id, category, as, question, ...)", file=file, line=base_line
            )
        ]
    try:
        m = _CaseModel.model_validate(item)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            fld = ".".join(str(p) for p in loc) or None
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown field"
            problems.append(Problem(msg, file=file, line=line_of(loc), field=fld))
        return None, problems
    return _to_case(m, f"{file}:{base_line}" if base_line else file), []


def load_eval_set(path: Path, *, display: str | None = None) -> list[EvalCase]:
    """Load and validate one set file (``.yaml``/``.yml`` or ``.jsonl``). Raises :class:`EvalSetError`."""
    display = display or str(path)
    problems: list[Problem] = []
    cases: list[EvalCase] = []
    if path.suffix.lower() == ".jsonl":
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise EvalSetError([Problem(f"cannot read eval set: {exc}", file=display)]) from None
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append(Problem(f"invalid JSON: {exc.msg}", file=display, line=n))
                continue
            case, errs = _validate(item, display, n, lambda _loc, n=n: n)
            problems += errs
            if case:
                cases.append(case)
    else:
        try:
            doc: LocatedYAML = load_yaml_file(path, display=display)
        except SpecError as exc:
            raise EvalSetError(exc.problems) from None
        data = doc.data
        prefix: tuple[str | int, ...] = ()
        if isinstance(data, dict):
            unknown = set(data) - {"name", "description", "cases"}
            for key in sorted(unknown, key=str):
                problems.append(
                    Problem(
                        "unknown field (expected name, description, cases)",
                        file=display,
                        line=doc.line_of((key,)),
                        field=str(key),
                    )
                )
            data, prefix = data.get("cases"), ("cases",)
        if not isinstance(data, list):
            problems.append(
                Problem(
                    "expected a list of cases (or a mapping with 'cases:')",
                    file=display,
                    line=doc.line_of(prefix),
                )
            )
            data = []
        for i, item in enumerate(data):
            base = (*prefix, i)
            case, errs = _validate(
                item, display, doc.line_of(base), lambda loc, base=base: doc.line_of((*base, *loc))
            )
            problems += errs
            if case:
                cases.append(case)
    seen: dict[str, str] = {}
    for c in cases:
        if c.id in seen:
            ln = int(c.origin.rsplit(":", 1)[1]) if ":" in c.origin else None
            problems.append(
                Problem(
                    f"duplicate case id {c.id!r} (first at {seen[c.id]})", file=display, line=ln, field="id"
                )
            )
        seen.setdefault(c.id, c.origin)
    if problems:
        raise EvalSetError(problems)
    return cases


def load_eval_sets(
    paths: list[Path], *, users: set[str] | None = None, display: dict[Path, str] | None = None
) -> list[EvalCase]:
    """Load several sets; ids must be unique across them, and every ``as`` must be a known user."""
    problems: list[Problem] = []
    out: list[EvalCase] = []
    seen: dict[str, str] = {}
    for p in paths:
        name = (display or {}).get(p, str(p))
        try:
            cases = load_eval_set(p, display=name)
        except EvalSetError as exc:
            problems += exc.problems
            continue
        for c in cases:
            file, _, line = c.origin.rpartition(":")
            if c.id in seen:
                problems.append(
                    Problem(
                        f"duplicate case id {c.id!r} (first at {seen[c.id]})",
                        file=file or name,
                        line=int(line) if line.isdigit() else None,
                        field="id",
                    )
                )
            seen.setdefault(c.id, c.origin)
            if users is not None and c.user not in users:
                problems.append(
                    Problem(
                        f"unknown user {c.user!r}",
                        file=file or name,
                        line=int(line) if line.isdigit() else None,
                        field="as",
                    )
                )
            out.append(c)
    if problems:
        raise EvalSetError(problems)
    return out
