"""The charter file: schema, loading with file:line errors, cross-reference checks and fingerprint."""

from charter.spec._fingerprint import canonical_json, fingerprint, section_hash
from charter.spec._load import LoadedCharter, Principal, find_charter, load_charter
from charter.spec._schema import (
    SENSITIVITY_ORDER,
    Charter,
    RoleScopeView,
    Source,
    Tool,
    UsersFile,
    WorkflowKind,
)
from charter.spec._types import parse_duration

__all__ = [
    "SENSITIVITY_ORDER",
    "Charter",
    "LoadedCharter",
    "Principal",
    "RoleScopeView",
    "Source",
    "Tool",
    "UsersFile",
    "WorkflowKind",
    "canonical_json",
    "find_charter",
    "fingerprint",
    "load_charter",
    "parse_duration",
    "section_hash",
]
