"""The runtime context shared by the CLI, the server and the tests: one charter, one store, one audit log.

``Runtime.open()`` loads and checks the charter, opens (and migrates) the store, and records a
``charter.changed`` audit event whenever the charter's fingerprint differs from the last one seen.
Everything else (authorizer, index, gateway, …) is created lazily from it, once, and reused.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import select

from charter.policy import Authorizer, load_checked_charter
from charter.spec import LoadedCharter
from charter.store import Sealer, Store, open_store, resolve_database_url, state, utcnow
from charter.threads import apply_process_policy

if TYPE_CHECKING:
    from charter.models import Gateway
    from charter.retrieval import Index
    from charter.spec import Charter
    from charter.telemetry import Masker, RuntimeMetrics, TraceStore
    from charter.telemetry.audit import AuditLog


class _Closeable(Protocol):
    def close(self) -> None: ...


@dataclass
class Services:
    """What a runtime builds once and reuses, each built lazily by the package that owns it (``masker_for``,
    ``trace_store_for``, ``metrics_for`` in :mod:`charter.telemetry`, ``gateway_for`` in
    :mod:`charter.pipeline`, ``Index.for_runtime``, the MCP upstream hub). One typed slot per service: a
    derived runtime (an eval with another model, a drill on a copy) gets its own :class:`Services` instead of
    changing the shared one."""

    sealer: tuple[tuple[str | None, Path], Sealer] | None = None  # (key env and folder it was loaded for, it)
    masking_salt: bytes | None = None
    masker: Masker | None = None
    trace_store: TraceStore | None = None
    metrics: RuntimeMetrics | None = None
    gateway: Gateway | None = None
    index: Index | None = None
    mcp_hub: _Closeable | None = (
        None  # charter.mcp's UpstreamHub (a higher layer: typed by what runtime needs)
    )


class Runtime:
    """Everything a request needs, built once per process."""

    def __init__(self, loaded: LoadedCharter, store: Store, *, key_dir: Path | None = None) -> None:
        self.charter = loaded
        self.store = store
        self.key_dir = key_dir or loaded.base_dir / ".charter" / "keys"
        self.services = Services()

    def derive(self) -> Runtime:
        """A runtime on the same charter, store and keys, sharing what is built already (masker, trace
        store, metrics, index) but with its own gateway slot: an eval that swaps the model sets the derived
        runtime's gateway, and the shared runtime's is never replaced under other requests."""
        derived = type(self)(self.charter, self.store, key_dir=self.key_dir)
        derived.services = replace(self.services, gateway=None, mcp_hub=None)
        return derived

    @classmethod
    def open(
        cls,
        charter_path: Path | str | None = None,
        *,
        database_url: str | None = None,
        record_changes: bool = True,
    ) -> Runtime:
        apply_process_policy()  # one BLAS thread per process (charter.threads), before any search
        loaded = load_checked_charter(charter_path)
        store = open_store(database_url or resolve_database_url(loaded.base_dir))
        rt = cls(loaded, store)
        if record_changes:
            rt.record_charter_change()
        return rt

    @property
    def spec(self) -> Charter:
        return self.charter.spec

    @cached_property
    def fingerprint(self) -> str:
        return self.charter.fingerprint()

    @cached_property
    def audit(self) -> AuditLog:
        from charter.telemetry.audit import AuditLog

        return AuditLog(
            self.store, key_dir=self.key_dir, checkpoint_every=self.spec.monitoring.audit.checkpoint_every
        )

    @cached_property
    def authorizer(self) -> Authorizer:
        return Authorizer.from_charter(self.charter)

    # ------------------------------------------------------------------------------------ state
    def get_state(self, key: str, default: Any = None) -> Any:
        with self.store.connect() as conn:
            row = conn.execute(select(state.c.value).where(state.c.key == key)).first()
        return default if row is None else row[0]

    def set_state(self, key: str, value: Any) -> None:
        with self.store.begin() as conn:
            updated = conn.execute(
                state.update().where(state.c.key == key).values(value=value, updated_at=utcnow())
            )
            if updated.rowcount == 0:
                conn.execute(state.insert().values(key=key, value=value, updated_at=utcnow()))

    def record_charter_change(self) -> None:
        """Audit a change of charter (and of users and roles) since the last time this store saw it."""
        previous = self.get_state("charter.fingerprint")
        if previous == self.fingerprint:
            return
        snapshot = {
            p.id: {"roles": sorted(p.roles), "groups": sorted(p.groups), "active": p.active}
            for p in self.charter.principals.values()
        }
        old_snapshot = self.get_state("identity.snapshot", {}) or {}
        changes = []
        for pid in sorted(set(snapshot) | set(old_snapshot)):
            if snapshot.get(pid) != old_snapshot.get(pid):
                changes.append(
                    {"principal": pid, "before": old_snapshot.get(pid), "after": snapshot.get(pid)}
                )
        self.audit.append(
            actor="system",
            action="charter.changed",
            resource=f"workflow:{self.spec.workflow.id}",
            outcome="recorded",
            details={"previous": previous, "current": self.fingerprint, "identity_changes": changes},
        )
        self.set_state("charter.fingerprint", self.fingerprint)
        self.set_state("identity.snapshot", snapshot)

    def close(self) -> None:
        hub = self.services.mcp_hub  # upstream MCP connections (charter.mcp)
        if hub is not None:
            hub.close()
        self.store.dispose()
