"""Sources: connectors, sync (incremental, deletions, ACL-only updates), freshness.

Public API:

* :class:`Document` and :func:`acl_hash` — what connectors produce and the index consumes.
* :class:`Connector` protocol, the :func:`connector` registering decorator, :func:`get_connector`,
  :func:`connector_names`, :class:`ConnectorContext`, :class:`Failed` (a document that could not be read)
  and :class:`SourceUnavailable` (the whole source could not be read); for incremental connectors
  :class:`Unchanged`, :class:`Deleted`, :class:`Moved`, and :class:`AclEntry` (``acls(ctx)`` for
  ``--acl-only``). Built-ins: ``folder``, ``jsonl``, ``sql``, ``git``, ``web``.
* :func:`parse_acl` (raises :class:`AclParseError`), :func:`is_valid_token`, :func:`effective_acl` /
  :class:`EffectiveAcl` — ACL tokens (``public``, ``group:<id>``, ``user:<id>``) and the fail-closed rule
  of the ``per-document`` model.
* :func:`sync_sources` (and :class:`Syncer`, :class:`SyncProgress`, :class:`SyncSummary`) — the sync.
* :func:`source_statuses`, :func:`source_documents_listing`, :func:`source_freshness`,
  :func:`freshness` / :class:`Freshness`, :func:`acl_freshness`, :func:`approval_status`, :func:`approve_source` (recorded in the database),
  :func:`source_config_hash`,
  :func:`last_successful_syncs` — the registry as operators (and the launch gate) see it.
* :func:`screened_documents` and the ``source_screening`` table — documents instruction screening flagged at
  sync (excluded sentences, quarantine and its approvals; written and read by :mod:`charter.screening`,
  re-exported here).
"""

from charter.documents import Document, acl_hash
from charter.screening import screened_documents
from charter.sources._acl import AclParseError, EffectiveAcl, effective_acl, parse_acl
from charter.sources._connector import (
    AclEntry,
    Connector,
    ConnectorContext,
    Deleted,
    Failed,
    Moved,
    SourceUnavailable,
    Unchanged,
    connector,
    connector_names,
    get_connector,
)
from charter.sources._status import (
    Freshness,
    acl_freshness,
    approval_status,
    approve_source,
    freshness,
    last_successful_syncs,
    source_documents_listing,
    source_freshness,
    source_statuses,
)
from charter.sources._sync import Syncer, SyncProgress, SyncSummary, source_config_hash, sync_sources
from charter.spec import is_valid_token
from charter.store.tables import source_screening

__all__ = [
    "AclEntry",
    "AclParseError",
    "Connector",
    "ConnectorContext",
    "Deleted",
    "Document",
    "EffectiveAcl",
    "Failed",
    "Freshness",
    "Moved",
    "SourceUnavailable",
    "SyncProgress",
    "SyncSummary",
    "Syncer",
    "Unchanged",
    "acl_freshness",
    "acl_hash",
    "approval_status",
    "approve_source",
    "connector",
    "connector_names",
    "effective_acl",
    "freshness",
    "get_connector",
    "is_valid_token",
    "last_successful_syncs",
    "parse_acl",
    "screened_documents",
    "source_config_hash",
    "source_documents_listing",
    "source_freshness",
    "source_screening",
    "source_statuses",
    "sync_sources",
]
