"""Sources: connectors, sync (incremental, deletions, ACL-only updates), freshness."""

from charter.sources._document import Document, acl_hash

__all__ = ["Document", "acl_hash"]
