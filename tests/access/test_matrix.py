"""The generated permission matrix: every front end × every view of stored content × every demo principal ×
a canary planted in each access level of the billing example.

A canary shows in a view if and only if the principal may open the item (its owner, ``traces.read_all``
for traces, an eligible reviewer or the owner it escalated to for drafts) *and* may read the document the
canary comes from. The expectations come from :mod:`tests.access._world`'s oracle (plain YAML of the
example), never from ``charter.access``. Runs on SQLite and PostgreSQL (``db_url``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.access._world import LEVELS, Oracle, canary, index_documents, plant
from tests.conftest import run_cli
from tests.server.conftest import DEMO_USERS, Served, _build

pytestmark = pytest.mark.slow  # every front end end to end on the synced example

SUBMITTER = "ben"
ALL_LEVELS = list(LEVELS)
#: The CLI opens the charter per call (~1 s): it checks the items that together carry every canary and
#: every routing case (the item citing all levels; drafts routed to a lead, to an owner, to nobody).
CLI_ITEMS = ("all", "playbook", "finance-policies", "pricing-committee")


@pytest.fixture
def workflow_kind(request: pytest.FixtureRequest) -> str:
    """The example's ``workflow.kind`` (``draft`` as shipped; tests parametrize it indirectly)."""
    return str(getattr(request, "param", "draft"))


@pytest.fixture
def world(
    project: Path, db_url: str, workflow_kind: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, Any]]:
    """The example on ``db_url`` with the five documents indexed, one trace and draft per level plus one
    citing every level, all submitted by ben; the app with a token per demo user."""
    monkeypatch.setenv("CHARTER_DATABASE_URL", db_url)
    if workflow_kind != "draft":
        import yaml

        doc = yaml.safe_load(project.read_text(encoding="utf-8"))
        doc["workflow"]["kind"] = workflow_kind
        project.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    served = _build(project)  # adds the role-less guest user; Runtime.open migrates db_url
    rt: Any = served.rt
    oracle = Oracle.load(project)
    index_documents(rt, {(s, d): oracle.acl(s, d) for s, d in LEVELS.items()})
    items = {s: plant(rt, SUBMITTER, [s]) for s in ALL_LEVELS}
    items["all"] = plant(rt, SUBMITTER, ALL_LEVELS)
    yield {"served": served, "oracle": oracle, "items": items, "charter": project}
    rt.close()


def _sources(key: str) -> list[str]:
    return ALL_LEVELS if key == "all" else [key]


def _canaries_in(text: str) -> set[str]:
    return {s for s in ALL_LEVELS if canary(s) in text}


def _expected(oracle: Oracle, user: str, key: str, kind: str) -> set[str] | None:
    """Canaries the user must see in item ``key`` (None: the item must answer 'not found')."""
    sources = _sources(key)
    opens = (
        oracle.sees_trace(user, SUBMITTER)
        if kind == "trace"
        else oracle.sees_review(user, SUBMITTER, sources)
    )
    if not opens:
        return None
    return {s for s in sources if oracle.may_read(user, s)}


def _console(served: Served, user: str) -> Any:
    from tests.server.conftest import console_client

    return console_client(served.app, served.tokens[user])


def test_every_front_end_shows_a_canary_iff_the_principal_may_read_its_document(
    world: dict[str, Any],
) -> None:
    _matrix(world)


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize("workflow_kind", ["answer", "agent"], indirect=True)
def test_the_matrix_holds_for_every_workflow_kind(world: dict[str, Any], workflow_kind: str) -> None:
    """Who may see stored content does not depend on the kind: the same matrix, with the example's charter
    set to ``answer`` and to ``agent`` (SQLite; the draft kind runs on both backends above)."""
    assert world["served"].rt.spec.workflow.kind == workflow_kind
    _matrix(world)


def _matrix(world: dict[str, Any]) -> None:
    from fastapi.testclient import TestClient

    served: Served = world["served"]
    oracle: Oracle = world["oracle"]
    items: dict[str, tuple[str, str]] = world["items"]
    charter = str(world["charter"])
    api = TestClient(served.app, raise_server_exceptions=False)  # type: ignore[arg-type]
    failures: list[str] = []
    users = [u for u in DEMO_USERS if u != "guest"]  # the guest has no role: refused everywhere (below)

    def check(front: str, view: str, user: str, key: str, kind: str, status: int, body: str) -> None:
        want = _expected(oracle, user, key, kind)
        got = _canaries_in(body) if status == 200 else None
        if want is None:
            if status == 200 and got:
                failures.append(f"{front} {view} {key} as {user}: must be hidden, shows {sorted(got)}")
            elif status != 404 and status != 200:
                failures.append(f"{front} {view} {key} as {user}: status {status}, expected 404")
            elif status == 200:
                failures.append(f"{front} {view} {key} as {user}: opened an item that is not theirs")
        elif status != 200:
            failures.append(f"{front} {view} {key} as {user}: status {status}, expected 200")
        elif got != want:
            failures.append(
                f"{front} {view} {key} as {user}: shows {sorted(got or ())}, expected {sorted(want)}"
            )
        if status == 200 and want is not None:  # a redacted part leaves no title, heading or link behind
            hidden = set(_sources(key)) - want
            if hidden and "[redacted: " not in body:
                failures.append(f"{front} {view} {key} as {user}: no redaction marker for {sorted(hidden)}")

    for user in users:
        console = _console(served, user)
        for key, (request_id, review_id) in items.items():
            for kind, rest, page, cli_args in (
                (
                    "trace",
                    f"/api/traces/{request_id}",
                    f"/traces/{request_id}",
                    ("traces", "show", request_id),
                ),
                (
                    "review",
                    f"/api/reviews/{review_id}",
                    f"/review/{review_id}",
                    ("review", "show", review_id),
                ),
            ):
                r = api.get(rest, headers=served.headers(user))
                status = 404 if r.status_code == 403 and kind == "review" else r.status_code
                if r.status_code == 403:  # no review/trace capability at all: hidden, and that is fine
                    status = 404
                check("REST", rest, user, key, kind, status, r.text)
                r = console.get(page)
                status = 404 if r.status_code == 403 else r.status_code
                check("console", page, user, key, kind, status, r.text)
                if key not in CLI_ITEMS or (kind == "trace" and key != "all"):
                    continue
                out = run_cli(*cli_args, "--as", user, "--json", "--charter", charter)
                code = 200 if out.exit_code == 0 else 404
                if out.exit_code != 0:
                    assert re.search(r"no (trace|review item)|may not", out.stderr + out.stdout), out.stderr
                check("CLI", " ".join(cli_args[:2]), user, key, kind, code, out.stdout)
        # lists: the review queue (REST, console, CLI) shows each visible draft as the principal may read it
        r = api.get("/api/reviews", headers=served.headers(user))
        listed = r.json()["items"] if r.status_code == 200 else []
        for key, (_, review_id) in items.items():
            row = next((i for i in listed if i["id"] == review_id), None)
            want = _expected(oracle, user, key, "review")
            if want is None and row is not None:
                failures.append(f"REST /api/reviews as {user}: lists {key}")
            if row is not None and _canaries_in(str(row)) != want:
                failures.append(f"REST /api/reviews as {user}: {key} shows {sorted(_canaries_in(str(row)))}")
        page = console.get("/review?status=all")
        if page.status_code == 200:
            visible = {k for k, (_, rid) in items.items() if _expected(oracle, user, k, "review") is not None}
            allowed = (
                set().union(*[_expected(oracle, user, k, "review") or set() for k in visible])
                if visible
                else set()
            )
            if not _canaries_in(page.text) <= allowed:
                failures.append(
                    f"console /review as {user}: shows {sorted(_canaries_in(page.text) - allowed)}"
                )
        out = run_cli("review", "list", "--as", user, "--json", "--charter", charter)
        if out.exit_code == 0:
            for row in out.json():  # type: ignore[union-attr]
                key = next(k for k, (_, rid) in items.items() if rid == row["id"])
                if _canaries_in(str(row)) != _expected(oracle, user, key, "review"):
                    failures.append(
                        f"CLI review list as {user}: {key} shows {sorted(_canaries_in(str(row)))}"
                    )
    for key, (request_id, review_id) in items.items():  # the guest: refused, never a canary
        for path in (f"/api/traces/{request_id}", f"/api/reviews/{review_id}"):
            r = api.get(path, headers=served.headers("guest"))
            if r.status_code == 200 or _canaries_in(r.text):
                failures.append(f"guest {path}: {r.status_code}")
    assert not failures, "\n".join(failures)


def test_unknown_and_foreign_ids_get_the_same_answer(world: dict[str, Any]) -> None:
    """Probing ids: a draft that is not yours and one that does not exist answer alike, on every front end."""
    from fastapi.testclient import TestClient

    served: Served = world["served"]
    charter = str(world["charter"])
    _, review_id = world["items"]["finance-policies"]
    request_id, _ = world["items"]["help-center"]
    api = TestClient(served.app, raise_server_exceptions=False)  # type: ignore[arg-type]
    missing_review = "rev_" + "0" * 24
    a = api.get(f"/api/reviews/{review_id}", headers=served.headers("ana"))
    b = api.get(f"/api/reviews/{missing_review}", headers=served.headers("ana"))
    assert a.status_code == b.status_code == 404
    assert a.json()["error"]["message"].replace(review_id, "X") == b.json()["error"]["message"].replace(
        missing_review, "X"
    )
    a1 = run_cli("review", "show", review_id, "--as", "casey", "--charter", charter)
    b1 = run_cli("review", "show", missing_review, "--as", "casey", "--charter", charter)
    assert a1.exit_code == b1.exit_code != 0
    assert a1.stderr.replace(review_id, "X") == b1.stderr.replace(missing_review, "X")
    t1 = run_cli("traces", "show", request_id, "--as", "casey", "--charter", charter)
    t2 = run_cli("traces", "show", "req_" + "0" * 20, "--as", "casey", "--charter", charter)
    assert t1.exit_code == t2.exit_code != 0
    assert t1.stderr.replace(request_id, "X") == t2.stderr.replace("req_" + "0" * 20, "X")
