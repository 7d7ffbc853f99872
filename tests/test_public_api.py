"""The root API (docs/api.md): exactly these names are public, each resolves, and the documented example runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import charter

PUBLIC = {
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
}


def test_the_public_names_are_exactly_the_documented_ones() -> None:
    # Adding or removing a public name means updating this set and docs/api.md together.
    assert set(charter.__all__) == PUBLIC
    assert sorted(charter.__all__) == charter.__all__
    doc = (Path(__file__).resolve().parents[1] / "docs" / "api.md").read_text(encoding="utf-8")
    for name in PUBLIC:
        assert f"`{name}" in doc, f"docs/api.md does not document charter.{name}"


def test_every_public_name_resolves_and_unknown_names_fail() -> None:
    for name in charter.__all__:
        assert getattr(charter, name) is not None
    assert issubclass(charter.Denied, charter.CharterRuntimeError)
    assert issubclass(charter.SpecError, charter.CharterError)
    try:
        charter.nano_to_usd
    except AttributeError:
        pass
    else:
        raise AssertionError("charter.nano_to_usd should not be public")


def test_import_charter_is_cheap() -> None:
    code = "import sys, charter; print(sorted(m for m in sys.modules if m.startswith(('torch', 'sqlalchemy', 'charter.'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_the_documented_example_runs(synced_project: Path) -> None:
    rt = charter.open(synced_project)
    try:
        result = charter.ask(rt, "ana", "How long does a refund to a credit card take to arrive?")
        assert isinstance(result, charter.AskResult)
        assert result.status in {"answered", "needs_human"}
        assert result.citations and all(isinstance(c, charter.Citation) for c in result.citations)
        hits = charter.search(rt, "ana", "refund timing")
        assert hits and all(isinstance(h, charter.Hit) for h in hits)
        assert all(h.acl_reason and set(h.acl_reason) <= rt.charter.principal("ana").acl_tokens for h in hits)
        try:  # casey (contractor) has no `search` permission: Cedar refuses, and the refusal is audited
            charter.search(rt, "casey", "refund timing")
        except charter.Denied:
            pass
        else:
            raise AssertionError("casey may not search")
        try:
            charter.search(rt, "ana", "refund", sources={"no-such-source"})
        except charter.CharterError as exc:
            assert "unknown source" in str(exc)
        else:
            raise AssertionError("an unknown source id must be refused")
    finally:
        rt.close()
