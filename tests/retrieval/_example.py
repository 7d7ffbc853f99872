"""Index the billing example's documents through the Index API (the sync command is not under test here)."""

from __future__ import annotations

from pathlib import Path

import yaml

from charter.retrieval import Index
from charter.sources import Document
from charter.spec import load_charter
from charter.spec._schema import Chunking

# folder -> (source id, owner, public?) as in examples/billing-support/charter.yaml; broken-acl is indexed as
# a per-document source owned by lena to exercise fail-closed handling.
FOLDERS = {
    "help-center": ("help-center", "omar", True),
    "playbook": ("playbook", "lena", False),
    "finance": ("finance-policies", "farid", False),
    "restricted": ("pricing-committee", "omar", False),
    "broken-acl": ("playbook", "lena", False),
}


def read_doc(path: Path, source_id: str, doc_id: str) -> Document:
    raw = path.read_text(encoding="utf-8")
    meta: dict[str, object] = {}
    body = raw
    acl: frozenset[str] | None = None
    error: str | None = None
    if raw.startswith("---"):
        _, front, body = raw.split("---", 2)
        try:
            meta = yaml.safe_load(front) or {}
        except yaml.YAMLError as exc:
            error = f"front matter: {exc}"
            meta = {}
    value = meta.get("acl")
    if isinstance(value, list) and value and all(isinstance(t, str) for t in value):
        acl = frozenset(value)
    elif error is None:
        error = "no acl"
    return Document(
        source_id=source_id,
        doc_id=doc_id,
        title=str(meta.get("title") or path.stem),
        text=body,
        format="markdown",
        url=meta.get("url") if isinstance(meta.get("url"), str) else None,
        acl=acl,
        acl_error=error,
    )


def effective_acl(doc: Document, owner: str, public: bool) -> tuple[frozenset[str], bool]:
    if public:
        return frozenset({"public"}), False
    if doc.acl is None:
        return frozenset({f"user:{owner}"}), True
    return doc.acl, False


def index_example(index: Index, charter_path: Path) -> dict[str, tuple[frozenset[str], str]]:
    """Index every example document; returns chunk-independent truth: doc key -> (ACL tokens, full text)."""
    base = charter_path.parent / "sources"
    truth: dict[str, tuple[frozenset[str], str]] = {}
    chunking = Chunking(max_tokens=200, overlap=30)
    for folder, (source_id, owner, public) in FOLDERS.items():
        for path in sorted((base / folder).glob("*.md")):
            doc_id = f"{folder}/{path.name}" if folder == "broken-acl" else path.name
            doc = read_doc(path, source_id, doc_id)
            tokens, private = effective_acl(doc, owner, public)
            index.upsert_document(doc, tokens, chunking, private_by_default=private)
            truth[f"{source_id}/{doc_id}"] = (tokens, doc.text)
    return truth


def all_principals(charter_path: Path):  # type: ignore[no-untyped-def]
    return list(load_charter(charter_path).principals.values())
