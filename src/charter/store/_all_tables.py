"""Imports every package's table module so that the shared metadata is complete."""

import charter.identity._tables  # noqa: F401
import charter.telemetry._audit_tables  # noqa: F401
import charter.store._core_tables  # noqa: F401
