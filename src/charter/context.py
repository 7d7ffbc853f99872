"""What the packages below :mod:`charter.runtime` use of a runtime, as structural types.

:class:`charter.runtime.Runtime` is the composition root: it sits above the packages it puts together
(telemetry, sources, models, access, …), so they must not import it. A function in one of them that takes
"the runtime" is annotated with :class:`RuntimeContext` — the part of ``Runtime`` it may use — and is
handed the same ``Runtime`` object; strict mypy checks at every call site that ``Runtime`` still provides
it. A package that keeps its own services on the runtime extends the protocol with the slots it owns
(``charter.telemetry``: masker, trace store, metrics; ``charter.store.sealer_for``: the sealer).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from charter.policy import Authorizer
from charter.spec import Charter, LoadedCharter
from charter.store import Store


class AuditAppend(Protocol):
    """What most packages do with the audit log (:class:`charter.telemetry.audit.AuditLog`): append."""

    def append(
        self,
        *,
        actor: str,
        action: str,
        resource: str,
        outcome: str,
        details: Mapping[str, Any] | None = None,
    ) -> Any: ...


class RuntimeContext(Protocol):
    """One charter, one store, one audit log, one authorizer, and the ``state`` table's key-value reads:
    what a :class:`charter.runtime.Runtime` offers the packages below it."""

    @property
    def charter(self) -> LoadedCharter: ...

    @property
    def store(self) -> Store: ...

    @property
    def key_dir(self) -> Path: ...

    @property
    def spec(self) -> Charter: ...

    @property
    def fingerprint(self) -> str: ...

    @property
    def audit(self) -> AuditAppend: ...

    @property
    def authorizer(self) -> Authorizer: ...

    def get_state(self, key: str, default: Any = None) -> Any: ...

    def set_state(self, key: str, value: Any) -> None: ...


__all__ = ["AuditAppend", "RuntimeContext"]
