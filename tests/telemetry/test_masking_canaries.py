"""One canary definition (``charter.canaries``): the built-in ``*CANARY*`` pattern of any prefix plus the
charter's ``monitoring.canaries``, used by the check stage (answer and notes), masking (traces) and the eval
scorers (canaries in the index) — a custom pattern is caught in all of them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from sqlalchemy import select, update

from charter import _answer_checks as checks
from charter.canaries import DEFAULT, Canaries, canaries_for
from charter.errors import UsageError
from charter.runtime import Runtime
from charter.telemetry import Trace, trace_store_for

CUSTOM = r"\bQX-[0-9]{6}\b"


@pytest.mark.parametrize(
    "token", ["CANARY-FIN-7d3a91", "ACME-CANARY-2f9c11", "CANARY-PROBE-0a1b2c3d4e5f", "quillo_CANARY_x1"]
)
def test_builtin_pattern_covers_any_prefix(token: str) -> None:
    for text in (f"see {token}.", f"({token})", f'"{token}",', f"**{token}**", f"ref:{token}\n"):
        assert DEFAULT.find(text) == [token], text


def test_ordinary_words_are_not_canaries() -> None:
    assert DEFAULT.find("the canary in the coal mine; CANARY alone; canary-yellow paint") == []


def test_bad_patterns_are_refused_with_a_reason() -> None:
    with pytest.raises(UsageError, match="empty string"):
        Canaries([r"x*"])
    with pytest.raises(UsageError, match="not a valid regular expression"):
        Canaries([r"(unclosed"])


def _with_custom(project: Path) -> Runtime:
    data = yaml.safe_load(project.read_text())
    data.setdefault("monitoring", {})["canaries"] = [CUSTOM]
    project.write_text(yaml.safe_dump(data, sort_keys=False))
    return Runtime.open(project)


def test_a_bad_charter_pattern_fails_at_load(project: Path) -> None:
    data = yaml.safe_load(project.read_text())
    data.setdefault("monitoring", {})["canaries"] = ["(unclosed"]
    project.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(Exception, match="canary pattern"):
        Runtime.open(project)


def test_custom_canary_in_answer_notes_and_traces(project: Path) -> None:
    rt = _with_custom(project)
    try:
        found = canaries_for(rt.spec)
        assert found.patterns[1:] == (CUSTOM,)
        answer = "Your refund is on its way (internal QX-123456)."
        notes = "Agent note: policy ACME-CANARY-2f9c11 applies."
        # the check stage's scan, with the charter's canaries (what pipeline.check calls)
        assert checks.find_canaries(answer, canaries=found) == ["QX-123456"]
        assert checks.find_canaries(notes, canaries=found) == ["ACME-CANARY-2f9c11"]
        assert checks.find_canaries(answer) == []  # the built-in set alone does not know QX-…
        store = trace_store_for(rt)
        t = Trace(
            workflow=rt.spec.workflow.id, principal_id="ana", question="q", answer=answer, agent_notes=notes
        )
        store.write(t)
        shown = str(store.get(t.request_id))
        assert "QX-123456" not in shown and "ACME-CANARY-2f9c11" not in shown and "<CANARY_" in shown
    finally:
        rt.close()


def test_custom_canary_in_the_index_is_scored_as_a_leak_source(synced_project: Path) -> None:
    from charter.evals._scorers import _index_canaries
    from charter.store.tables import chunks, documents

    rt = _with_custom(synced_project)
    try:
        with rt.store.begin() as conn:
            row = conn.execute(
                select(chunks.c.id, documents.c.source_id, documents.c.doc_id)
                .join(documents, chunks.c.doc_pk == documents.c.id)
                .where(documents.c.source_id == "finance-policies")
                .limit(1)
            ).first()
            assert row is not None
            conn.execute(
                update(chunks).where(chunks.c.id == row.id).values(text=chunks.c.text + " QX-654321")
            )
        index = _index_canaries(rt)
        assert index["QX-654321"] == f"{row.source_id}/{row.doc_id}"
        assert "CANARY-FIN-7d3a91" in index  # the built-in pattern still applies
    finally:
        rt.close()
