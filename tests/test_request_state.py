"""The per-request state read agrees with the switches' own readers, and is never cached across requests:
turning the kill switch or restricted mode on is seen by the very next read (and by the next ask)."""

from __future__ import annotations

from pathlib import Path

import pytest

from charter.errors import Denied
from charter.gate import is_restricted, set_restricted
from charter.pipeline import ask, read_request_state
from charter.runtime import Runtime
from charter.tools import is_killed, set_kill_switch


def test_state_read_follows_the_switches(project: Path) -> None:
    rt = Runtime.open(project)
    try:
        s = read_request_state(rt)
        assert (s.killed, s.restricted) == (False, False) == (is_killed(rt), is_restricted(rt))
        set_restricted(rt, True, actor="omar", reason="drift")
        s = read_request_state(rt)
        assert (s.killed, s.restricted) == (False, True) == (is_killed(rt), is_restricted(rt))
        set_kill_switch(rt, "omar", True, reason="incident")
        s = read_request_state(rt)
        assert (s.killed, s.restricted) == (True, True) == (is_killed(rt), is_restricted(rt))
        with pytest.raises(Denied, match="kill switch"):
            ask(rt, rt.charter.principal("ana"), "How long does a refund take?", submit_for_review=False)
        set_kill_switch(rt, "omar", False, reason="resolved")
        set_restricted(rt, False, actor="omar", reason="fixed")
        s = read_request_state(rt)
        assert (s.killed, s.restricted) == (False, False)
        assert s.index_version == read_request_state(rt).index_version
    finally:
        rt.close()
