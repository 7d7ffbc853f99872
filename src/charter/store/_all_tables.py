"""Imports every package's table module so that the shared metadata is complete."""

import charter.evals._tables
import charter.identity._tables
import charter.mcp._tables
import charter.models._tables
import charter.retrieval._tables
import charter.review._tables
import charter.sources._tables
import charter.store._core_tables
import charter.telemetry._audit_tables
import charter.telemetry._monitoring_tables
import charter.telemetry._trace_tables
import charter.tools._tables  # noqa: F401
