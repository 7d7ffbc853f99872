"""Masking by construction: generated values of every kind inside generated sentences, with any punctuation,
brackets, quotes, line breaks, markdown or Unicode look-alikes around them, several per sentence.

Two opinions on each text: the values we planted (their kind is known) and independent oracles — a Luhn
check written apart from the masker, ``phonenumbers``, and Presidio's own built-in recognizers (credit card,
e-mail, IBAN, phone). Whatever either finds must be masked: no planted value survives in the masked text, and
every character of an oracle finding lies inside a span the masker replaces.

Generated cases: ``test_every_value_in_any_context_is_masked`` 1,500 sentences (1–4 values each, ~3,750
values); ``test_each_kind_in_each_context`` 9 kinds × 6 contexts × 40 = 2,160 sentences;
``test_oracle_findings_are_covered`` 600 sentences through Presidio and phonenumbers — 4,260 in all.
"""

from __future__ import annotations

import random

import pytest
from _masking_values import (
    CONTEXTS,
    GENERATORS,
    ORACLE_ENTITIES,
    compose,
    core,
    luhn_valid,
    normalised,
    phonenumbers_spans,
    presidio_builtin_analyzer,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charter.canaries import Canaries
from charter.telemetry.masking import PatternMasker

MASKER = PatternMasker(b"property-salt")


def _settings(n: int) -> settings:
    return settings(max_examples=n, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _assert_masked(text: str, values: tuple[tuple[str, str], ...], masker: PatternMasker = MASKER) -> None:
    out = masker.mask(text)
    seen = normalised(out)
    for kind, value in values:
        assert core(kind, value) not in seen, f"{kind} {value!r} survived in {out!r} (from {text!r})"
        if kind == "card":
            assert luhn_valid(value)  # the generator's own oracle: it really is a card number


@_settings(1500)
@given(st.randoms(use_true_random=False))
def test_every_value_in_any_context_is_masked(r: random.Random) -> None:
    c = compose(r)
    _assert_masked(c.text, c.values)


@pytest.mark.parametrize("kind", sorted(GENERATORS))
@pytest.mark.parametrize("context", CONTEXTS)
@_settings(40)
@given(r=st.randoms(use_true_random=False))
def test_each_kind_in_each_context(kind: str, context: str, r: random.Random) -> None:
    c = compose(r, kinds=[kind, r.choice(sorted(GENERATORS))], context=context)
    _assert_masked(c.text, c.values)


@pytest.fixture(scope="module")
def presidio():  # type: ignore[no-untyped-def]
    return presidio_builtin_analyzer()


def _covered(spans: list[tuple[int, int, str]], text: str, start: int, end: int) -> bool:
    while start < end and not text[start].isalnum():
        start += 1
    while end > start and not text[end - 1].isalnum():
        end -= 1
    return all(any(s <= i < e for s, e, _ in spans) for i in range(start, end))


@_settings(600)
@given(r=st.randoms(use_true_random=False))
def test_oracle_findings_are_covered(presidio, r: random.Random) -> None:  # type: ignore[no-untyped-def]
    c = compose(r, context=r.choice([x for x in CONTEXTS if x != "unicode"]))
    spans = MASKER.findings(c.text)
    found = [
        (f.entity_type, f.start, f.end)
        for f in presidio.analyze(c.text, language="en", entities=ORACLE_ENTITIES)
        if f.score >= 0.3
    ]
    found += [("PHONE_NUMBER", s, e) for s, e in phonenumbers_spans(c.text)]
    for entity, s, e in found:
        assert _covered(spans, c.text, s, e), f"oracle {entity} {c.text[s:e]!r} not masked in {c.text!r}"
    _assert_masked(c.text, c.values)


# ------------------------------------------------------------------------------ the bypasses of issue #15
@pytest.mark.parametrize(
    "text, raw",
    [
        ("card 4111 1111 1111 1111, thanks", "4111 1111 1111 1111"),
        ("card 4111.1111.1111.1111 please", "4111.1111.1111.1111"),
        ("card 4111/1111/1111/1111 please", "4111/1111/1111/1111"),
        ("card 4111_1111_1111_1111 please", "4111_1111_1111_1111"),
        ("card 4111  1111  1111  1111 please", "4111  1111  1111  1111"),
        ("card 4111 1111 1111 1111 exp 12/26", "4111 1111 1111 1111"),
        ("mail mask＠example.com now", "example.com"),
        ("mail a@exa\u200bmple.com now", "exa\u200bmple"),
        ("iban de89 3704 0044 0532 0130 00, ok", "3704 0044 0532"),
        ("iban be68539007547034 this", "be68539007547034"),
        ("ref ACME-CANARY-2f9c11 here", "ACME-CANARY-2f9c11"),
        ("key _sk-proj-Zq8vT3kLmN4pR7sW2xY5aB9cD1eF6gH0_", "Zq8vT3kLmN4pR7sW2xY5aB9cD1eF6gH0"),
        ("call +1 415 555 0100, thanks", "415 555 0100"),
        ("call: \u202e4155550100\u202c now", "4155550100"),
    ],
)
def test_bypass_forms_are_masked(text: str, raw: str) -> None:
    out = MASKER.mask(text)
    assert raw not in out and normalised(raw) not in normalised(out), out


def test_custom_canary_pattern_is_masked() -> None:
    custom = PatternMasker(b"s", canaries=Canaries([r"\bQX-[0-9]{6}\b"]))
    assert "QX-123456" not in custom.mask("internal QX-123456, see")
    assert "QX-123456" in MASKER.mask("internal QX-123456, see")  # only where the charter says so


def test_ordinary_billing_text_stays_readable() -> None:
    text = (
        "Invoice INV-2026-0042 of 2026-11-25 for 120.50 EUR (plan Team, 12 seats), due 25/12/2026; "
        "refunds take 5-10 business days; order 12345; amount 1,234.56 USD; 1.234,56 EUR; v1.2.3 at 10:30."
    )
    assert MASKER.mask(text) == text
