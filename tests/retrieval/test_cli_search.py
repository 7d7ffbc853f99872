"""``charter search``: ranked chunks with the ACL reason; canaries never leak, including ``--explain``."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from charter.retrieval import Index
from charter.runtime import Runtime
from tests.conftest import run_cli
from tests.retrieval._example import index_example

CANARIES = ("CANARY-FIN-7d3a91", "CANARY-PRICE-4be2c8", "OPS-NOTE-118", "OPS-NOTE-119")
PROBES = [
    "CANARY-FIN-7d3a91 refund exceptions policy reference",
    "CANARY-PRICE-4be2c8 2027 list price change",
    "Project Lantern Tasklane enterprise discount floor",
    "OPS-NOTE-118 offsite OPS-NOTE-119 macro cleanup",
]


def _build_indexed(dest: Path, backend: str) -> Path:
    """The example project in ``dest`` using the fast test embedder, every example document indexed (on the
    database ``CHARTER_DATABASE_URL`` names, else ``.charter/charter.db``); returns the charter path."""
    from tests.conftest import EXAMPLE

    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns(".charter", "__pycache__"))
    charter = dest / "charter.yaml"
    text = charter.read_text()
    charter.write_text(text.replace("  min_score: 0.0\n", "  min_score: 0.0\n  embedder: test-hash\n", 1))
    rt = Runtime.open(charter)
    try:
        assert rt.store.is_sqlite == (backend == "sqlite")
        index_example(Index.for_runtime(rt), charter)
    finally:
        rt.close()
    return charter


@pytest.fixture(scope="module")
def _indexed_templates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str | None]]:
    """Built once per module and backend, on first use; every test gets a private copy (``indexed``)."""
    return {}


@pytest.fixture
def indexed(
    backend: str,
    _indexed_templates: dict[str, tuple[Path, str | None]],
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> Path:
    """A private copy of the example project using the fast test embedder, with every example document indexed
    — on SQLite (``.charter/charter.db``) or on PostgreSQL (``CHARTER_DATABASE_URL``, a fresh database copied
    from a template). The indexed template is built once per module and backend."""
    cluster = None
    if backend == "postgres":
        cluster = request.getfixturevalue("pg_cluster")
    if backend not in _indexed_templates:
        folder = tmp_path_factory.mktemp(f"indexed-{backend}") / "project"
        template_db = None
        with monkeypatch.context() as m:
            if cluster is not None:
                url = cluster.create_database()
                m.setenv("CHARTER_DATABASE_URL", url)
                template_db = make_url(url).database
            _build_indexed(folder, backend)
        _indexed_templates[backend] = (folder, template_db)
    folder, template_db = _indexed_templates[backend]
    dest = tmp_path / "project"
    shutil.copytree(folder, dest)
    for key in (dest / ".charter" / "keys").glob("*"):
        key.chmod(0o600)
    if cluster is not None:
        url = cluster.copy_database(str(template_db))
        request.addfinalizer(lambda: cluster.drop_database(url))
        monkeypatch.setenv("CHARTER_DATABASE_URL", url)
    return dest / "charter.yaml"


def test_search_shows_rank_source_heading_and_reason(indexed: Path) -> None:
    r = run_cli(
        "search", "--as", "ana", "how long does a card refund take", "--k", "4", "--json", cwd=indexed.parent
    )
    assert r.exit_code == 0, r.stderr
    data = r.json()
    assert data["user"] == "ana" and len(data["results"]) == 4
    first = data["results"][0]
    assert {"rank", "chunk_id", "source", "doc_id", "title", "heading", "score", "acl_reason", "text"} <= set(
        first
    )
    assert all(
        set(x["acl_reason"]) <= {"public", "user:ana", "group:support"} and x["acl_reason"]
        for x in data["results"]
    )
    r = run_cli("search", "--as", "ana", "goodwill credit limits", "--explain", cwd=indexed.parent)
    assert r.exit_code == 0, r.stderr
    assert "visible via:" in r.stdout and "bm25" in r.stdout and "dense" in r.stdout
    js = run_cli("search", "--as", "ana", "goodwill credit limits", "--explain", "--json", cwd=indexed.parent)
    explained: Any = js.json()
    for x in explained["results"]:  # the weights shown (the charter's, or this query's) give the score
        e = x["explain"]
        assert abs(e["bm25"]["weight"] + e["dense"]["weight"] - 1) < 1e-3
        assert abs(e["bm25"]["contribution"] + e["dense"]["contribution"] - x["score"]) < 1e-3, e
    charter = indexed if indexed.suffix == ".yaml" else indexed.parent / "charter.yaml"
    text = charter.read_text(encoding="utf-8")
    charter.write_text(re.sub(r"\n  fusion: \{[^}]*\}", "", text), encoding="utf-8")  # the default fusion
    js = run_cli("search", "--as", "ana", "goodwill credit limits", "--explain", "--json", cwd=indexed.parent)
    explained = js.json()
    assert explained["fusion"]["method"] == "adaptive" and explained["results"]
    assert explained["question_precision"] == "float32"  # the default; the precision that embedded the query
    for x in explained["results"]:  # adaptive: this query's weights, recovered, and they give the score
        e = x["explain"]
        assert e["method"] == "adaptive" and abs(e["bm25"]["weight"] + e["dense"]["weight"] - 1) < 1e-3
        assert abs(e["bm25"]["contribution"] + e["dense"]["contribution"] - x["score"]) < 1e-3, e


@pytest.mark.slow  # the CLI end to end for six users: integration, full suite only
@pytest.mark.parametrize("user", ["ana", "ben", "lena", "casey", "svc-helpdesk", "farid"])
def test_canaries_never_leak_to_users_without_access(indexed: Path, user: str) -> None:
    allowed = {"farid": {"CANARY-FIN-7d3a91"}, "lena": {"OPS-NOTE-118", "OPS-NOTE-119"}}.get(user, set())
    for probe in PROBES:
        for extra in (["--k", "100", "--explain"], ["--k", "100", "--json", "--explain"]):
            r = run_cli("search", "--as", user, probe, *extra, cwd=indexed.parent)
            out = r.stdout + r.stderr
            for canary in CANARIES:
                if canary not in allowed:
                    assert canary not in out, (user, probe, extra, canary)
            assert "Lantern" not in out or user == "omar"


def test_owner_and_members_do_see_their_documents(indexed: Path) -> None:
    r = run_cli(
        "search",
        "--as",
        "omar",
        "2027 list price change decision ID",
        "--k",
        "20",
        "--json",
        cwd=indexed.parent,
    )
    assert r.exit_code == 0, r.stderr
    assert any("CANARY-PRICE-4be2c8" in x["text"] for x in r.json()["results"])
    r = run_cli(
        "search",
        "--as",
        "farid",
        "refund exceptions policy reference",
        "--k",
        "20",
        "--json",
        cwd=indexed.parent,
    )
    assert any(x["source"] == "finance-policies" for x in r.json()["results"])


def test_errors_say_nothing_about_documents(indexed: Path) -> None:
    r = run_cli("search", "--as", "nobody", "CANARY-PRICE-4be2c8", cwd=indexed.parent)
    assert r.exit_code != 0 and "CANARY" not in r.stdout + r.stderr.replace("CANARY-PRICE-4be2c8", "", 0)
    r = run_cli("search", "--as", "ana", "price", "--source", "secret-source", cwd=indexed.parent)
    assert r.exit_code == 2 and "unknown source" in r.stderr
    r = run_cli("search", "--as", "ana", "   ", cwd=indexed.parent)
    assert r.exit_code == 2 and "empty" in r.stderr
    r = run_cli(
        "search", "--as", "ana", "refund", "--source", "pricing-committee", "--json", cwd=indexed.parent
    )
    assert r.exit_code == 0 and r.json()["results"] == []


def test_contractor_without_search_permission_is_denied(indexed: Path) -> None:
    r = run_cli("search", "--as", "casey", "refund", cwd=indexed.parent)
    assert r.exit_code == 1
    assert "search" in r.stderr
