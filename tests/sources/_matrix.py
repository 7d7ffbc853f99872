"""The permission matrix: every principal of the users file against every canary document.

A canary is a document holding a unique word; the oracle says a principal may see it iff the principal's
tokens (``public``, ``user:<id>``, ``group:<g>``) share one with the ACL the *test* gave the canary — an
independent restatement of the rule, never the code under test. Visibility is what the real search returns.
"""

from __future__ import annotations

from collections.abc import Mapping

from charter.retrieval import Index
from charter.runtime import Runtime


def visible(rt: Runtime, index: Index, user: str, word: str, source: str) -> set[str]:
    tokens = rt.charter.principal(user).acl_tokens
    return {h.doc_id for h in index.search(tokens, word, k=20, sources={source}, mode="bm25")}


def principal_tokens(rt: Runtime, user: str) -> set[str]:
    p = rt.charter.principal(user)
    return {"public", f"user:{p.id}", *(f"group:{g}" for g in p.groups)}


def check_matrix(rt: Runtime, index: Index, source: str, canaries: Mapping[str, tuple[str, set[str]]]) -> int:
    """``canaries``: doc_id -> (unique word, ACL tokens the test assigned). Returns the cells checked."""
    cells = 0
    for user in sorted(rt.charter.principals):
        mine = principal_tokens(rt, user)
        for doc_id, (word, acl) in canaries.items():
            expected = bool(mine & acl)
            seen = doc_id in visible(rt, index, user, word, source)
            assert seen == expected, f"{user} {'should' if expected else 'must not'} see {doc_id} (ACL {acl})"
            cells += 1
    return cells
