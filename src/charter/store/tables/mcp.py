"""The ``mcp_pins`` table: what the charter's owner approved of each upstream MCP tool.

One row per (server, upstream tool). ``pin_hash`` is the SHA-256 of the canonical JSON of the tool's name,
description and input schema as approved (``charter tools approve-upstream``); ``description`` and
``input_schema`` are kept so that arguments are validated against the *approved* schema, never the live one.
``status`` is ``pinned`` or ``drifted`` (the live definition no longer hashes to ``pin_hash``: the tool is
disabled until it is approved again); ``live_hash`` is the last live hash seen.
"""

from sqlalchemy import JSON, Column, String, Table, Text

from charter.store._types import UTCDateTime, metadata

mcp_pins = Table(
    "mcp_pins",
    metadata,
    Column("server", String(100), primary_key=True),
    Column("tool", String(200), primary_key=True),
    Column("pin_hash", String(64), nullable=False),
    Column("description", Text, nullable=False),
    Column("input_schema", JSON, nullable=False),
    Column("status", String(20), nullable=False),
    Column("live_hash", String(64), nullable=True),
    Column("pinned_by", String(200), nullable=False),
    Column("pinned_at", UTCDateTime, nullable=False),
    Column("checked_at", UTCDateTime, nullable=True),
)
