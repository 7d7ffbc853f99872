"""What telemetry uses of a runtime: :class:`charter.context.RuntimeContext` plus the service slots telemetry
builds and keeps on it (:class:`charter.runtime.Services`), and the whole audit log (verification)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from charter.context import RuntimeContext

if TYPE_CHECKING:
    from charter.telemetry._metrics import RuntimeMetrics
    from charter.telemetry.audit import AuditLog
    from charter.telemetry.masking import Masker
    from charter.telemetry.traces import TraceStore


class TelemetryServices(Protocol):
    """The slots of :class:`charter.runtime.Services` that telemetry fills (each built once, lazily)."""

    masking_salt: bytes | None
    masker: Masker | None
    trace_store: TraceStore | None
    metrics: RuntimeMetrics | None


class TelemetryRuntime(RuntimeContext, Protocol):
    """A runtime as telemetry sees it (a :class:`charter.runtime.Runtime`)."""

    @property
    def services(self) -> TelemetryServices: ...

    @property
    def audit(self) -> AuditLog: ...
