"""The fast text normalisers (translate tables filled lazily, ASCII fast paths) agree exactly with their
per-character definitions on arbitrary Unicode, including invisible and control characters."""

from __future__ import annotations

import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st

from charter import _answer_checks as checks
from charter.models._render import _invisible, clean_text

TRICKY = (
    "\u200b\u200e\u202e\u2066\u00ad\ufeff\U000e0041\u034f\u3164\u2028\u2029\x85\u00a0\u3000\r\x00\x7f\t\n"
)
text = st.text(alphabet=st.one_of(st.characters(), st.sampled_from(TRICKY)), max_size=200)


def clean_reference(s: str) -> str:
    out = []
    for ch in s:
        if _invisible(ch):
            continue
        if ch in "\u2028\u2029\x85":
            out.append("\n")
        elif ch != "\n" and ch != "\t" and unicodedata.category(ch) == "Zs":
            out.append(" ")
        elif unicodedata.category(ch) == "Cc" and ch not in "\n\t":
            continue
        else:
            out.append(ch)
    return "".join(out)


def normalise_reference(s: str) -> str:
    s = unicodedata.normalize("NFKC", s)
    return "".join(ch for ch in s if unicodedata.category(ch) != "Cf")


@given(text)
def test_clean_text_matches_definition(s: str) -> None:
    assert clean_text(s) == clean_reference(s)


@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=200))
def test_clean_text_ascii_fast_path(s: str) -> None:
    assert clean_text(s) == clean_reference(s)


@given(text)
def test_normalise_matches_definition(s: str) -> None:
    assert checks.normalise(s) == normalise_reference(s)


def test_invisible_characters_cannot_hide_a_canary() -> None:
    hidden = "CANARY-\u200bAB12-\u2060xyz9"
    assert checks.find_canaries(hidden) == ["CANARY-AB12-xyz9"]


def test_lexical_support_uses_the_cited_text() -> None:
    assert checks.lexical_support("Refunds take ten days.", "Refunds take ten business days") == 1.0
    assert checks.lexical_support("Refunds take ten days.", "Invoices are emailed monthly") == 0.0


_MIXED = st.text(
    alphabet=st.one_of(
        st.characters(max_codepoint=0x7F),
        st.sampled_from("–—’“é\u00a0\u2028\u2029\x85\u200b\u202e\ufeff\u00ad\u3000\ufe0f\U000e0041ﬁ"),
        st.characters(),
    ),
    max_size=60,
)


@settings(max_examples=500)
@given(_MIXED)
def test_the_no_change_shortcut_gives_exactly_the_full_translation(text: str) -> None:
    """clean_text and normalise skip str.translate when no non-ASCII character would change; the result
    must be identical to always translating."""
    import unicodedata

    from charter._answer_checks import _DROP_FORMAT, normalise
    from charter.models._render import _ASCII_CONTROLS, _CLEAN, clean_text

    full_clean = _ASCII_CONTROLS.sub("", text) if text.isascii() else text.translate(_CLEAN)
    assert clean_text(text) == full_clean
    full_normal = text if text.isascii() else unicodedata.normalize("NFKC", text).translate(_DROP_FORMAT)
    assert normalise(text) == full_normal
