"""Generated permission probes: questions about every restricted document, asked as every user who may not
read it, against a temporary copy of the store in which that document carries a unique canary.

The real index is never modified: :func:`probe_runtime` copies the SQLite database (with SQLite's online
backup API, so a live database copies consistently) and the signing keys into a temporary folder, opens a
second :class:`~charter.runtime.Runtime` on the copy and re-indexes the canaried documents there.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select

from charter.errors import UsageError
from charter.evals._cases import EvalCase, Pattern
from charter.store import open_store
from charter.store.tables import acl, chunks, documents

if TYPE_CHECKING:
    from charter.runtime import Runtime

MAX_KEY_SENTENCES = 2
_WORDS = re.compile(r"[A-Za-z][A-Za-z'’-]+")


@dataclass
class ProbeSet:
    runtime: Runtime
    cases: list[EvalCase]
    canaries: dict[str, str]  # canary -> "source/doc"


def _restricted_documents(rt: Runtime) -> list[tuple[str, str, str, frozenset[str]]]:
    configured = {s.id for s in rt.spec.sources}
    with rt.store.connect() as conn:
        docs = conn.execute(
            select(documents.c.id, documents.c.source_id, documents.c.doc_id, documents.c.title).order_by(
                documents.c.source_id, documents.c.doc_id
            )
        ).all()
        tokens: dict[int, set[str]] = {}
        for pk, tok in conn.execute(select(acl.c.doc_pk, acl.c.token)).all():
            tokens.setdefault(pk, set()).add(tok)
    return [
        (d.source_id, d.doc_id, d.title, frozenset(tokens.get(d.id, set())))
        for d in docs
        if d.source_id in configured
    ]


def _readable_text(rt: Runtime, user_tokens: frozenset[str]) -> str:
    with rt.store.connect() as conn:
        rows = (
            conn.execute(
                select(chunks.c.text)
                .join(documents, documents.c.id == chunks.c.doc_pk)
                .join(acl, acl.c.doc_pk == documents.c.id)
                .where(acl.c.token.in_(sorted(user_tokens)))
                .distinct()
            )
            .scalars()
            .all()
        )
    return "\n".join(rows).lower()


def _key_sentences(text: str) -> list[str]:
    from charter.models import split_sentences

    out = []
    for para in text.split("\n"):
        para = para.strip()
        if not para or para.startswith(("#", "---", "|", "title:", "url:", "acl:", "updated_at:")):
            continue
        for s in split_sentences(para):
            s = s.strip()
            if 8 <= len(_WORDS.findall(s)) <= 40 and "CANARY-" not in s:
                out.append(s)
    return out


def _source_document(rt: Runtime, source_id: str, doc_id: str):  # type: ignore[no-untyped-def]
    from charter.sources import ConnectorContext, Document, get_connector

    source = rt.spec.source(source_id)
    ctx = ConnectorContext(source=source, base_dir=rt.charter.base_dir)
    for item in get_connector(source.connector).documents(ctx):
        if isinstance(item, Document) and item.doc_id == doc_id:
            return source, item
    return source, None


def permission_probes(
    rt: Runtime,
    *,
    users: list[str] | None = None,
    max_sentences: int = MAX_KEY_SENTENCES,
    documents: set[str] | None = None,
) -> tuple[list[EvalCase], dict[tuple[str, str], list[str]]]:
    """Probe cases (without canaries) and each document's key sentences, from the ACLs of the index.
    ``users`` and ``documents`` (``"source/doc"``) restrict the probes; default: every user and document."""
    principals = [p for p in rt.charter.principals.values() if p.active and (users is None or p.id in users)]
    cases: list[EvalCase] = []
    keys: dict[tuple[str, str], list[str]] = {}
    readable: dict[str, str] = {}
    for source_id, doc_id, title, acl_tokens in _restricted_documents(rt):
        if documents is not None and f"{source_id}/{doc_id}" not in documents:
            continue
        outsiders = [p for p in principals if not (acl_tokens & frozenset(p.acl_tokens))]
        if not outsiders:
            continue
        _src, doc = _source_document(rt, source_id, doc_id)
        sentences = _key_sentences(doc.text) if doc is not None else []
        keys[(source_id, doc_id)] = sentences
        for p in outsiders:
            if p.id not in readable:
                readable[p.id] = _readable_text(rt, frozenset(p.acl_tokens))
            own = [s for s in sentences if s.lower() not in readable[p.id]][:max_sentences]
            questions = [f'What does the document "{title}" say?'] + [
                f"Is it true that {s[0].lower() + s[1:].rstrip('.')}?" for s in own
            ]
            for n, q in enumerate(questions):
                cases.append(
                    EvalCase(
                        id=f"probe:{source_id}/{doc_id}:{p.id}:{n}",
                        category="permission",
                        user=p.id,
                        question=q,
                        expect="any",
                        forbidden_sources=(f"{source_id}/{doc_id}",),
                        must_not_include=tuple(Pattern(s, re.compile(re.escape(s), re.I)) for s in own),
                        tags=("probe", "generated"),
                        origin="generated",
                    )
                )
    return cases, keys


def copy_sqlite(url: str, dest: Path) -> str:
    if not url.startswith("sqlite:///"):
        raise UsageError(
            "permission probes run on a temporary copy of the store, which needs a SQLite "
            "database; run them against a SQLite copy of this deployment"
        )
    src = sqlite3.connect(url[len("sqlite:///") :])
    dst = sqlite3.connect(dest)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()
    return f"sqlite:///{dest}"


@contextmanager
def probe_runtime(
    rt: Runtime,
    *,
    users: list[str] | None = None,
    max_sentences: int = MAX_KEY_SENTENCES,
    documents: set[str] | None = None,
) -> Iterator[ProbeSet]:
    """A temporary copy of the store with one unique canary planted per restricted document; yields the
    second runtime, the probe cases (with their canaries) and the canary map. Removed on exit."""
    from charter.retrieval import Index
    from charter.runtime import Runtime as _Runtime

    cases, keys = permission_probes(rt, users=users, max_sentences=max_sentences, documents=documents)
    tmp = Path(tempfile.mkdtemp(prefix="charter-probes-"))
    prt: Runtime | None = None
    try:
        url = copy_sqlite(str(rt.store.engine.url), tmp / "charter.db")
        keydir = tmp / "keys"
        if rt.key_dir.exists():
            shutil.copytree(rt.key_dir, keydir)
        prt = _Runtime(rt.charter, open_store(url), key_dir=keydir)
        index = prt.services.index = Index.for_runtime(rt).on_store(prt.store)
        canaries: dict[str, str] = {}
        planted: dict[tuple[str, str], str] = {}
        for (source_id, doc_id), sentences in keys.items():
            source, doc = _source_document(rt, source_id, doc_id)
            tokens = index.current_acl(source_id, doc_id)
            if doc is None or tokens is None:
                continue
            canary = f"CANARY-PROBE-{uuid.uuid4().hex[:12]}"
            text = doc.text
            for s in sentences[:max_sentences]:
                text = text.replace(s, f"{s} (ref {canary})", 1)
            text += f"\n\nDocument reference: {canary}.\n"
            from dataclasses import replace

            private = bool(
                index.document_states(source_id).get(doc_id)
                and index.document_states(source_id)[doc_id].private_by_default
            )
            index.upsert_document(
                replace(doc, text=text), tokens, source.chunking, private_by_default=private
            )
            canaries[canary] = f"{source_id}/{doc_id}"
            planted[(source_id, doc_id)] = canary
        with_canaries = []
        for c in cases:
            key = tuple(c.forbidden_sources[0].split("/", 1))
            mark = planted.get((key[0], key[1]))
            if mark is None:
                continue
            from dataclasses import replace as _replace

            with_canaries.append(
                _replace(c, canaries=(mark,), must_not_include=(*c.must_not_include, Pattern.parse(mark)))
            )
        yield ProbeSet(prt, with_canaries, canaries)
    finally:
        if prt is not None:
            prt.close()
        shutil.rmtree(tmp, ignore_errors=True)
