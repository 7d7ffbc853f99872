"""The ``extractive`` provider's tool planner for ``agent`` runs: deterministic, no weights, a baseline.

It does what a cautious colleague does with a task and a list of tools, without understanding language:

* a tool is **relevant** when a word of its *name* that tells it apart from the other tools (``close`` in
  ``close_ticket``, not ``ticket``) appears in the task (prefix match, so "closes", "look up" match);
* its **arguments are filled from the task text** by their JSON schema: a ``pattern`` is searched for
  (``^T-\\d{4}$`` finds ``T-1042``), an ``enum`` value that appears is taken, a number is taken when the
  task holds exactly one number outside the pattern matches, free-text arguments named like a reason or a
  note get the task itself; a tool whose required arguments cannot all be filled is not called;
* each tool is called at most once per run, the most relevant first; when no tool is left to call, the
  provider answers extractively from the passages and the tool results (:mod:`charter.models._extractive`).

Every call is still a *proposal* the tools layer decides (Cedar, validation, approvals, limits). Real agent
workflows point ``model`` at an LLM (``openai``); this planner makes the examples, their evals and the
tests run offline and the same every time.
"""

from __future__ import annotations

import json
import re
from typing import Any

from charter.models._types import GenerationRequest, ToolCall, ToolOffer

_WORD = re.compile(r"[a-z0-9]+")
#: argument names that take free text from the task
FREE_TEXT_ARGS = ("reason", "note", "comment", "description", "message", "text", "summary", "details")
_NUMBER = re.compile(r"(?<![\w.-])\d+(?:[.,]\d+)?(?![\w-])")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _matches(name_word: str, task_words: list[str]) -> bool:
    if len(name_word) < 3:
        return name_word in task_words
    stem = name_word[: max(4, len(name_word) - 2)]
    return any(
        w == name_word or (len(w) >= 4 and (w.startswith(stem) or name_word.startswith(w)))
        for w in task_words
    )


def relevance(offer: ToolOffer, task: str, offers: tuple[ToolOffer, ...]) -> int:
    """How many distinctive words of the tool's name the task contains (words shared by every tool's name
    say nothing about which one to call)."""
    names = [set(_words(o.name.replace("_", " "))) for o in offers]
    common = set.intersection(*names) if len(names) > 1 else set()
    task_words = _words(task)
    return sum(1 for w in set(_words(offer.name.replace("_", " "))) - common if _matches(w, task_words))


def _pattern_value(pattern: str, task: str) -> str | None:
    body = pattern.removeprefix("^").removesuffix("$")
    try:
        m = re.search(rf"(?<![\w-])(?:{body})(?![\w-])", task)
    except re.error:
        return None
    return m.group(0) if m else None


def fill_arguments(schema: dict[str, Any], task: str) -> dict[str, Any] | None:
    """Arguments for a tool from the task text, by its JSON schema; ``None`` when a required one is missing."""
    props: dict[str, Any] = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    defs = schema.get("$defs") or {}
    args: dict[str, Any] = {}
    taken: list[str] = []
    for name, prop in props.items():  # patterns first: their digits are not amounts
        prop = _resolve(prop, defs)
        if isinstance(prop.get("pattern"), str):
            value = _pattern_value(prop["pattern"], task)
            if value is not None:
                args[name] = value
                taken.append(value)
    rest = task
    for value in taken:
        rest = rest.replace(value, " ")
    numbers = [n.replace(",", ".") for n in _NUMBER.findall(rest)]
    for name, prop in props.items():
        if name in args:
            continue
        prop = _resolve(prop, defs)
        kind = prop.get("type")
        if isinstance(prop.get("enum"), list):
            found = [v for v in prop["enum"] if isinstance(v, str) and v.lower() in task.lower()]
            if len(found) == 1:
                args[name] = found[0]
        elif kind in ("number", "integer") and len(numbers) == 1:
            number = float(numbers[0])
            if kind == "integer" and number.is_integer():
                args[name] = int(number)
            elif kind == "number":
                args[name] = number
        elif kind == "string" and "pattern" not in prop and any(w in name.lower() for w in FREE_TEXT_ARGS):
            limit = int(prop.get("maxLength") or 500)
            args[name] = task.strip()[:limit]
    if not required <= set(args):
        return None
    return args


def _resolve(prop: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """A property with its ``$ref`` or single-branch ``anyOf`` (optional values) resolved."""
    if "$ref" in prop:
        ref = str(prop["$ref"]).rsplit("/", 1)[-1]
        return {**defs.get(ref, {}), **{k: v for k, v in prop.items() if k != "$ref"}}
    branches = [b for b in prop.get("anyOf", []) if b.get("type") != "null"]
    if len(branches) == 1:
        return {**branches[0], **{k: v for k, v in prop.items() if k != "anyOf"}}
    return prop


def plan(request: GenerationRequest) -> list[ToolCall]:
    """The next call for this step (at most one), or ``[]`` to answer."""
    called = {c.name for t in request.turns for c in t.calls}
    ranked = sorted(
        ((relevance(o, request.question, request.tools), i, o) for i, o in enumerate(request.tools)),
        key=lambda x: (-x[0], x[1]),
    )
    for score, _, offer in ranked:
        if score <= 0 or offer.name in called:
            continue
        try:
            schema = json.loads(offer.parameters)
        except ValueError:
            continue
        args = fill_arguments(schema, request.question)
        if args is not None:
            step = len(request.turns) + 1
            return [ToolCall(id=f"plan_{step}", name=offer.name, arguments=json.dumps(args))]
    return []


def readable_result(content: str) -> str:
    """A tool result as sentences the drafter can quote: ``result: {"status": "delivered", ...}`` becomes
    ``status: delivered; total_eur: 39.9; ...``. Anything else is returned as it is."""
    if not content.startswith("result: "):
        return content
    try:
        value = json.loads(content[len("result: ") :])
    except ValueError:
        return content
    if isinstance(value, dict):
        return "; ".join(f"{k}: {v}" for k, v in value.items() if not isinstance(v, dict | list)) + "."
    return content
