"""The charter's fingerprint: a stable hash that evidence (eval runs, gate reports) is bound to."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from charter.spec._load import LoadedCharter


def canonical_json(value: object) -> str:
    """Sorted keys, no whitespace, UTF-8: the one serialisation hashes are taken over."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def file_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def referenced_files(loaded: LoadedCharter) -> list[str]:
    """Files whose content is part of the fingerprint (paths relative to the charter)."""
    spec = loaded.spec
    files = [spec.identity.users_file, *spec.policies, *spec.evals.sets]
    for p in spec.prompts:
        files += [v.file for v in p.versions]
    return sorted(set(files))


def fingerprint(loaded: LoadedCharter) -> str:
    """SHA-256 over the canonical charter plus the content of every referenced file.

    Formatting, comments and key order in the YAML do not change it; any change in meaning does.
    """
    doc = {
        "charter": loaded.spec.model_dump(mode="json"),
        "files": {
            rel: file_sha256(loaded.resolve(rel).read_bytes()) if loaded.resolve(rel).is_file() else None
            for rel in referenced_files(loaded)
        },
    }
    return "sha256:" + hashlib.sha256(canonical_json(doc).encode()).hexdigest()


def section_hash(value: object) -> str:
    """Hash of one section (e.g. a source's configuration without its approval record)."""
    return "sha256:" + hashlib.sha256(canonical_json(value).encode()).hexdigest()[:16]
