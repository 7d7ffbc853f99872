"""A world for access tests: documents at every access level of the billing example, each with a unique
canary planted in stored items (traces and drafts) that cite it.

The oracle here is independent of ``charter.access``: it reads the ACLs from the documents' front matter
and the charter's permission models, and the principals' tokens from ``users.yaml`` and the role
permissions from ``charter.yaml``, with plain YAML.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

#: One document per access level: public, support group, finance group, pricing committee, owner-only.
LEVELS: dict[str, str] = {
    "help-center": "refund-timing.md",
    "playbook": "refund-handling-procedure.md",
    "finance-policies": "refund-exceptions-policy.md",
    "pricing-committee": "price-change-2027.md",
    "ops-notes": "support-offsite-notes.md",  # no ACL in the file: private to the source owner (fail closed)
}


#: A second support lead (four-eyes on edits needs two).
LEO = (
    "  - {id: leo, name: Leo Brandt, email: leo@quillo.example, groups: [support, support-leads], "
    "roles: [lead]}\n"
)


def add_user(charter: Path, line: str) -> None:
    """Add a user line to the example's users.yaml (before the service accounts), before a runtime opens."""
    users = charter.parent / "users.yaml"
    text = users.read_text(encoding="utf-8")
    if line not in text:
        users.write_text(text.replace("\nservice_accounts:", line + "\nservice_accounts:"), encoding="utf-8")


def canary(source_id: str) -> str:
    """A token no masker or canary detector touches, unique to the level."""
    return "quokka" + hashlib.sha256(source_id.encode()).hexdigest()[:10]


@dataclass(frozen=True)
class Oracle:
    charter: dict[str, Any]
    users: dict[str, Any]
    base: Path

    @classmethod
    def load(cls, charter_path: Path) -> Oracle:
        charter = yaml.safe_load(charter_path.read_text(encoding="utf-8"))
        users = yaml.safe_load((charter_path.parent / "users.yaml").read_text(encoding="utf-8"))
        return cls(charter, users, charter_path.parent)

    def source(self, source_id: str) -> dict[str, Any]:
        return next(s for s in self.charter["sources"] if s["id"] == source_id)

    def acl(self, source_id: str, doc_id: str) -> frozenset[str]:
        src = self.source(source_id)
        model = src["permissions"]["model"]
        if model == "public":
            return frozenset({"public"})
        if model == "groups":
            return frozenset(f"group:{g}" for g in src["permissions"]["groups"])
        text = (self.base / src["location"] / doc_id).read_text(encoding="utf-8")
        front = yaml.safe_load(text.split("---")[1]) if text.startswith("---") else {}
        acl = (front or {}).get("acl")
        return frozenset(acl) if acl else frozenset({f"user:{src['owner']}"})

    def people(self) -> dict[str, dict[str, Any]]:
        return {p["id"]: p for p in [*self.users["users"], *self.users.get("service_accounts", [])]}

    def tokens(self, user: str) -> frozenset[str]:
        p = self.people()[user]
        return frozenset({"public", f"user:{user}", *(f"group:{g}" for g in p.get("groups", []))})

    def may_read(self, user: str, source_id: str) -> bool:
        return bool(self.tokens(user) & self.acl(source_id, LEVELS[source_id]))

    def permissions(self, user: str) -> set[str]:
        roles = self.people()[user].get("roles", [])
        return {perm for r in roles for perm in self.charter["roles"][r]["permissions"]}

    def sees_trace(self, user: str, owner: str) -> bool:
        return user == owner or "traces.read_all" in self.permissions(user)

    def sees_review(self, user: str, submitter: str, sources: list[str]) -> bool:
        """Submitter; else a reviewer-role holder who may read every source; else, when none may, the owner
        of a restricting source who may read them all."""
        if user == submitter:
            return True
        reads_all = {u for u in self.people() if all(self.may_read(u, s) for s in sources)}
        role = self.charter["review"]["reviewer_role"]
        leads = {u for u, p in self.people().items() if role in p.get("roles", []) and u != submitter}
        if leads & reads_all:
            return user in leads & reads_all
        members = leads | {u for u, p in self.people().items() if role in p.get("roles", [])}
        blocking = [s for s in sources if not members or any(not self.may_read(m, s) for m in members)]
        for s in blocking:
            owner = self.source(s).get("owner")
            if owner and owner != submitter and owner in reads_all:
                return user == owner
        return False


def index_documents(rt: Any, acls: dict[tuple[str, str], frozenset[str]]) -> None:
    """Store documents with these ACLs in the index tables, as a sync would (no chunks: nothing to search)."""
    from sqlalchemy import delete, insert, select

    from charter.store import utcnow
    from charter.store.tables import acl, documents

    now = utcnow()
    with rt.store.begin() as conn:
        for (source_id, doc_id), tokens in acls.items():
            pk = conn.execute(
                select(documents.c.id).where(documents.c.source_id == source_id, documents.c.doc_id == doc_id)
            ).scalar()
            if pk is None:
                pk = conn.execute(
                    insert(documents)
                    .values(
                        source_id=source_id,
                        doc_id=doc_id,
                        title=f"{doc_id} title",
                        url=None,
                        format="markdown",
                        chunking="200/30",
                        content_hash="0" * 64,
                        acl_hash="0" * 64,
                        private_by_default=False,
                        chunk_count=0,
                        content_seen_at=now,
                        acl_seen_at=now,
                        synced_at=now,
                    )
                    .returning(documents.c.id)
                ).scalar_one()
            conn.execute(delete(acl).where(acl.c.doc_pk == pk))
            if tokens:
                conn.execute(insert(acl), [{"doc_pk": pk, "token": t} for t in sorted(tokens)])


def citation(i: int, source_id: str) -> dict[str, Any]:
    doc = LEVELS[source_id]
    c = canary(source_id)
    return {
        "id": f"S{i}",
        "chunk_id": f"{source_id}/{doc}#0",
        "source_id": source_id,
        "doc_id": doc,
        "title": f"Title of {c}",
        "heading": f"Heading of {c}",
        "url": f"https://wiki.example/{c}",
        "page": None,
        "audience": "internal",
    }


def texts(sources: list[str]) -> tuple[str, str]:
    """(draft, agent notes): a sentence per cited level carrying its canary, plus an uncited sentence."""
    draft = " ".join(f"The rule {canary(s)} applies here [S{i}]." for i, s in enumerate(sources, 1))
    notes = "\n".join(f"Internal: {canary(s)} is the reference [S{i}]." for i, s in enumerate(sources, 1))
    return draft, notes


def plant(rt: Any, submitter: str, sources: list[str]) -> tuple[str, str]:
    """A stored trace and a draft in review by ``submitter``, citing one document of each of ``sources``.
    Returns (request id, review id)."""
    from charter.pipeline import traces_for
    from charter.review import submit_draft
    from charter.telemetry.traces import Trace

    cites = [citation(i, s) for i, s in enumerate(sources, 1)]
    draft, notes = texts(sources)
    trace = Trace(
        workflow=rt.spec.workflow.id,
        principal_id=submitter,
        question="What applies to this refund?",
        status="needs_human",
        answer=draft,
        agent_notes=notes,
        citations=cites,
        retrieved=[
            {
                "chunk_id": c["chunk_id"],
                "source": c["source_id"],
                "doc_id": c["doc_id"],
                "rank": i,
                "score": 0.5,
            }
            for i, c in enumerate(cites, 1)
        ],
    )
    with trace.span("retrieve") as span:
        span["chunks"] = [{"chunk_id": c["chunk_id"], "rank": i} for i, c in enumerate(cites, 1)]
    store = traces_for(rt)
    store.write(trace)
    store.flush()
    item = submit_draft(
        rt,
        request_id=trace.request_id,
        principal=submitter,
        question="What applies to this refund?",
        draft=draft,
        citations=cites,
        agent_notes=notes,
        groundedness=0.9,
    )
    return trace.request_id, item.id
