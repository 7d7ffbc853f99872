"""Imports every package's table module so that the shared metadata is complete."""

import charter.identity._tables  # noqa: F401
import charter.models._tables  # noqa: F401
import charter.retrieval._tables  # noqa: F401
import charter.sources._tables  # noqa: F401
import charter.telemetry._audit_tables  # noqa: F401
import charter.store._core_tables  # noqa: F401
import charter.telemetry._trace_tables  # noqa: F401
import charter.telemetry._monitoring_tables  # noqa: F401
import charter.tools._tables  # noqa: F401
import charter.review._tables  # noqa: F401
import charter.evals._tables  # noqa: F401
