"""A project (copy of the billing example) whose charter has small test sources and a counting embedder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import tests.sources._embedder  # noqa: F401  registers "sources-test"
from charter.runtime import Runtime
from charter.sources import SyncSummary, sync_sources

DOCS_SOURCE: dict[str, Any] = {
    "id": "docs",
    "title": "Test documents",
    "connector": "folder",
    "location": "testdocs",
    "owner": "omar",
    "sensitivity": "internal",
    "permissions": {"model": "per-document"},
    "freshness": {"max_age": "7d"},
    "chunking": {"max_tokens": 64, "overlap": 8},
}


class Workspace:
    """A charter folder to write documents into, sync and inspect."""

    def __init__(self, charter: Path) -> None:
        self.charter = charter
        self.base = charter.parent
        self.docs = self.base / "testdocs"
        self.docs.mkdir(exist_ok=True)
        self._rt: Runtime | None = None

    def configure(self, sources: list[dict[str, Any]], **retrieval: Any) -> None:
        data = yaml.safe_load(self.charter.read_text(encoding="utf-8"))
        data["sources"] = sources
        data["retrieval"] = {**data.get("retrieval", {}), "embedder": "sources-test", **retrieval}
        self.charter.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        self.close()

    def write(self, rel: str, text: str | bytes) -> Path:
        p = self.docs / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            p.write_bytes(text)
        else:
            p.write_text(text, encoding="utf-8")
        return p

    @property
    def rt(self) -> Runtime:
        if self._rt is None:
            self._rt = Runtime.open(self.charter)
        return self._rt

    def sync(self, source_id: str | None = None, **kw: Any) -> dict[str, SyncSummary]:
        return {s.source_id: s for s in sync_sources(self.rt, source_id, **kw)}

    def close(self) -> None:
        if self._rt is not None:
            self._rt.close()
            self._rt = None


@pytest.fixture
def ws(project: Path) -> Iterator[Workspace]:
    w = Workspace(project)
    w.configure([DOCS_SOURCE])
    yield w
    w.close()


def md(body: str, acl: str | None = "[group:support]", title: str | None = None) -> str:
    """A Markdown document with front matter."""
    meta = []
    if title:
        meta.append(f"title: {title}")
    if acl is not None:
        meta.append(f"acl: {acl}")
    return ("---\n" + "\n".join(meta) + "\n---\n" if meta else "") + body
