"""The charter file: schema, loading with file:line errors, cross-reference checks and fingerprint."""

from charter.spec._fingerprint import canonical_json, fingerprint, section_hash
from charter.spec._load import LoadedCharter, Principal, find_charter, load_charter
from charter.spec._reference import render_reference
from charter.spec._schema import (
    SENSITIVITY_ORDER,
    Charter,
    Chunking,
    EmbeddingService,
    Escalation,
    Fusion,
    GitOptions,
    McpServer,
    ModelEndpoint,
    Prices,
    Prompt,
    PromptVersion,
    RoleScopeView,
    Source,
    SqlOptions,
    Tool,
    UsersFile,
    WebOptions,
    WorkflowKind,
)
from charter.spec._types import is_valid_token, parse_duration
from charter.spec._yaml import LocatedYAML, load_yaml_file

__all__ = [
    "SENSITIVITY_ORDER",
    "Charter",
    "Chunking",
    "EmbeddingService",
    "Escalation",
    "Fusion",
    "GitOptions",
    "LoadedCharter",
    "LocatedYAML",
    "McpServer",
    "ModelEndpoint",
    "Prices",
    "Principal",
    "Prompt",
    "PromptVersion",
    "RoleScopeView",
    "Source",
    "SqlOptions",
    "Tool",
    "UsersFile",
    "WebOptions",
    "WorkflowKind",
    "canonical_json",
    "find_charter",
    "fingerprint",
    "is_valid_token",
    "load_charter",
    "load_yaml_file",
    "parse_duration",
    "render_reference",
    "section_hash",
]
