"""Charter: run AI workflows in production under a charter.

The public API is the names below; everything else is private to its package and may move. Embedding
Charter in a program takes three calls::

    import charter

    rt = charter.open("my-workflow/charter.yaml")
    result = charter.ask(rt, "ana", "How many days of leave do I get?")
    print(result.status, result.draft)
    hits = charter.search(rt, "ana", "leave policy")

``ask`` and ``search`` are the same governed functions the CLI, the REST API, the console, the
OpenAI-compatible endpoint and the MCP server call: Cedar decides, only documents the user may read are
searched, every request is masked, traced and audited. Plug-ins register with the decorators ``tool``,
``connector``, ``provider``, ``scorer`` and ``embedder``. Errors: :class:`CharterError` for a user's mistake
(a bad charter, an unknown id), :class:`CharterRuntimeError` for a refusal at run time (:class:`Denied`, a
budget, a conflict) — both are :class:`CharterException`.

Names are loaded on first use, so ``import charter`` stays cheap (no model, no database).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from charter.errors import (
        CharterError,
        CharterException,
        CharterRuntimeError,
        Denied,
        SpecError,
    )
    from charter.evals import scorer
    from charter.models import provider
    from charter.pipeline import AskResult, Citation
    from charter.retrieval import Hit, embedder
    from charter.runtime import Runtime
    from charter.sources import connector
    from charter.spec import Principal
    from charter.tools import tool

__all__ = [
    "AskResult",
    "CharterError",
    "CharterException",
    "CharterRuntimeError",
    "Citation",
    "Denied",
    "Hit",
    "Principal",
    "Runtime",
    "SpecError",
    "ask",
    "connector",
    "embedder",
    "open",
    "provider",
    "scorer",
    "search",
    "tool",
]

_LAZY = {
    "AskResult": "charter.pipeline",
    "Citation": "charter.pipeline",
    "CharterError": "charter.errors",
    "CharterException": "charter.errors",
    "CharterRuntimeError": "charter.errors",
    "Denied": "charter.errors",
    "SpecError": "charter.errors",
    "Hit": "charter.retrieval",
    "embedder": "charter.retrieval",
    "Principal": "charter.spec",
    "Runtime": "charter.runtime",
    "connector": "charter.sources",
    "provider": "charter.models",
    "scorer": "charter.evals",
    "tool": "charter.tools",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'charter' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


def open(charter_path: Path | str | None = None, *, database_url: str | None = None) -> Runtime:
    """Load and check the charter (``charter.yaml`` in the current folder by default, or ``CHARTER_FILE``),
    open and migrate its store, and return the :class:`Runtime` every call takes. Close it with
    ``rt.close()``."""
    from charter.runtime import Runtime

    return Runtime.open(charter_path, database_url=database_url)


def _principal(rt: Runtime, user: Principal | str) -> Principal:
    return rt.charter.principal(user) if isinstance(user, str) else user


def ask(rt: Runtime, user: Principal | str, question: str, *, submit_for_review: bool = True) -> AskResult:
    """Run ``question`` through the governed pipeline as ``user`` (an id from the charter's users, or a
    :class:`Principal`): admitted by Cedar and the kill switch, answered only from documents the user may
    read, checked, escalated and recorded. Raises :class:`Denied` when refused (the refusal is recorded)."""
    from charter.agents import respond as _ask

    return _ask(rt, _principal(rt, user), question, submit_for_review=submit_for_review)


def search(
    rt: Runtime, user: Principal | str, query: str, *, k: int | None = None, sources: set[str] | None = None
) -> list[Hit]:
    """Hybrid search as ``user``: only chunks the user may read are ranked and returned (Cedar ``search``)."""
    from charter.pipeline import search as _search

    return _search(rt, _principal(rt, user), query, k=k, sources=sources)
