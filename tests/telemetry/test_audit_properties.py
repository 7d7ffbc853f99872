"""Property tests: random events always verify and read back intact; any one-character edit is caught."""

from __future__ import annotations

import json
import shutil
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charter.store import open_store
from charter.telemetry._audit_canon import FIELD_LIMITS
from charter.telemetry.audit import AuditEvent, AuditLog

# Any Unicode text SQLite and UTF-8 can hold (no lone surrogates, which are not text).
text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4),
    max_leaves=15,
)


def field(name: str) -> st.SearchStrategy[str]:
    return st.text(
        st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
        min_size=1,
        max_size=min(FIELD_LIMITS[name], 40),
    )


events = st.builds(
    AuditEvent,
    actor=field("actor"),
    action=field("action"),
    resource=field("resource"),
    outcome=field("outcome"),
    details=st.dictionaries(text, json_values, max_size=5),
)

COLUMNS = ["ts", "actor", "action", "resource", "outcome", "details", "prev_hash", "hash"]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated empty database, copied for every example (migrating each time would dominate)."""
    db = tmp_path_factory.mktemp("audit-template") / "template.db"
    open_store(f"sqlite:///{db}").dispose()
    return db


def _fresh(template: Path, tmp: str, every: int) -> tuple[AuditLog, Path]:
    db = Path(tmp) / "a.db"
    shutil.copyfile(template, db)
    store = open_store(f"sqlite:///{db}", migrate=False)
    return AuditLog(store, key_dir=Path(tmp) / "keys", checkpoint_every=every), db


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    batches=st.lists(st.lists(events, min_size=1, max_size=6), min_size=1, max_size=6),
    every=st.integers(min_value=1, max_value=7),
)
def test_random_events_verify_and_round_trip(
    template: Path, batches: list[list[AuditEvent]], every: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        log, _ = _fresh(template, tmp, every)
        appended: list[AuditEvent] = []
        for i, batch in enumerate(batches):
            if i % 2:
                log.append_many(batch)
            else:
                for ev in batch:
                    log.append(
                        actor=ev.actor,
                        action=ev.action,
                        resource=ev.resource,
                        outcome=ev.outcome,
                        details=ev.details,
                    )
            appended += batch
        result = log.verify()
        assert result.ok, result.reason
        assert result.entries_verified == len(appended)
        assert result.checkpoints_verified == len(log.checkpoints()) > 0 or len(appended) < every
        back = log.tail(len(appended))
        assert [(e.actor, e.action, e.resource, e.outcome) for e in back] == [
            (e.actor, e.action, e.resource, e.outcome) for e in appended
        ]
        # Details come back equal to their JSON round trip (tuples become lists, -0.0 stays -0.0).
        assert [e.details for e in back] == [json.loads(json.dumps(e.details)) for e in appended]
        log.store.dispose()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(evs=st.lists(events, min_size=2, max_size=8), data=st.data())
def test_any_single_character_edit_is_detected(
    template: Path, evs: list[AuditEvent], data: st.DataObject
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        log, db = _fresh(template, tmp, 1000)
        log.append_many(evs)
        log.store.dispose()
        seq = data.draw(st.integers(min_value=1, max_value=len(evs)), label="seq")
        column = data.draw(st.sampled_from(COLUMNS), label="column")
        conn = sqlite3.connect(db)
        value: Any = conn.execute(f"SELECT {column} FROM audit_log WHERE seq = ?", (seq,)).fetchone()[0]
        pos = data.draw(st.integers(min_value=0, max_value=len(value) - 1), label="pos")
        new_char = data.draw(st.characters(blacklist_categories=("Cs",)).filter(lambda c: c != value[pos]))
        edited = value[:pos] + new_char + value[pos + 1 :]
        conn.execute(f"UPDATE audit_log SET {column} = ? WHERE seq = ?", (edited, seq))
        conn.commit()
        conn.close()
        result = log.verify()
        assert not result.ok
        assert result.first_bad_seq == seq, (column, result.reason)
        log.store.dispose()
