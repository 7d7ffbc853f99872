"""The approval-condition mini-language: strict parsing, Cedar translation, Python evaluation."""

from __future__ import annotations

from decimal import Decimal

import cedarpy
import pytest

from charter.errors import UsageError
from charter.policy import parse_condition


@pytest.mark.parametrize(
    ("text", "cedar"),
    [
        ("amount <= 100", '(context.args["amount"].lessThanOrEqual(decimal("100.0000")))'),
        ("amount > 99.5", '(context.args["amount"].greaterThan(decimal("99.5000")))'),
        ("currency == 'EUR'", '((context.args["currency"] like "*" && context.args["currency"] == "EUR"))'),
        ("amount>=-3", '(context.args["amount"].greaterThanOrEqual(decimal("-3.0000")))'),
    ],
)
def test_translation(text: str, cedar: str) -> None:
    assert parse_condition(text).to_cedar() == cedar


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "amount",
        "amount >",
        "amount > ",
        "> 100",
        "amount => 100",
        "amount = 100",
        "amount > 1e3",
        "amount > 100.12345",
        "amount > abc",
        'amount > "100"',
        "Amount > 100",
        "args.amount > 100",
        "amount > 100 and",
        "amount > 100 or or x < 1",
        "amount > 100 amount < 5",
        "(amount > 100)",
        "amount > 100; drop",
        "currency < 'EUR'",
        "x == 'it''s'",
        "x == 'a\\b'",
        "len(x) > 1",
        "amount > 100 && x < 1",
        "amount > 100 || true",
        "true",
        "amount > 9999999999999999999",
        "and > 1",
        "x == 'unterminated",
    ],
)
def test_rejects_everything_else(text: str) -> None:
    with pytest.raises(UsageError):
        parse_condition(text)


def test_and_binds_tighter_than_or() -> None:
    cond = parse_condition("amount > 1000 or amount > 10 and currency == 'EUR'")
    assert len(cond.clauses) == 2
    assert cond.evaluate({"amount": 2000, "currency": "USD"})
    assert cond.evaluate({"amount": 50, "currency": "EUR"})
    assert not cond.evaluate({"amount": 50, "currency": "USD"})


@pytest.mark.parametrize(
    "args",
    [
        {"amount": 50, "currency": "EUR"},
        {"amount": 5, "currency": "EUR"},
        {"amount": 5000, "currency": "USD"},
        {"amount": 100, "currency": "GBP"},
    ],
)
def test_cedar_and_python_agree(args: dict[str, object]) -> None:
    cond = parse_condition("amount > 1000 or amount > 10 and currency != 'USD'")
    policy = f"permit (principal, action, resource) when {{ {cond.to_cedar()} }};"
    ctx = {
        "args": {
            "amount": {"__extn": {"fn": "decimal", "arg": f"{Decimal(str(args['amount'])):.4f}"}},
            "currency": args["currency"],
        }
    }
    result = cedarpy.is_authorized(
        {"principal": 'U::"a"', "action": 'A::"b"', "resource": 'R::"c"', "context": ctx}, policy, []
    )
    assert result.allowed is cond.evaluate(args)


def test_python_evaluation_refuses_bad_args() -> None:
    cond = parse_condition("amount <= 100")
    for bad in ({}, {"amount": "50"}, {"amount": float("nan")}, {"amount": True}, {"amount": None}):
        with pytest.raises(UsageError):
            cond.evaluate(bad)
