"""Repeating failures from production: categories with counts, trend, masked example and owner; near-duplicate
question clusters; `charter evals add-from-production` turns a cluster into eval cases."""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_trends import fast_store, make_trace, review

from charter.runtime import Runtime
from charter.store import utcnow
from charter.telemetry import record_feedback
from charter.telemetry._clusters import build_failures, cluster_questions, normalise

EMAILS = ["zoe.k@example-mail.com", "li.wei@example.org", "sam@quillo-customer.co.uk", "ana.b@example.net"]
REFUND_Q = [
    "Why was I charged twice for invoice {n}? My email is {e}",
    "why was I charged twice for invoice #{n} - email {e}",
    "Why was I charged twice on invoice {n}? email: {e}",
]
UNRELATED = [
    "Can you write me a poem about tax law?",
    "What is the weather in Lisbon tomorrow?",
    "Please translate my contract into French.",
]


@pytest.fixture
def seeded(project: Path) -> Any:
    rt = Runtime.open(project)
    store = fast_store(rt)
    rng = random.Random(5)
    now = utcnow()
    truth: dict[str, Any] = {"now": now, "double": [], "cats": {}}
    for i in range(12):  # a repeating question: escalated (no sources) in the second half more often
        at = now - timedelta(days=rng.uniform(0.1, 6.9) if i >= 4 else rng.uniform(8, 13))
        q = REFUND_Q[i % 3].format(n=1000 + i, e=EMAILS[i % 4])
        t = make_trace(rt, at, status="needs_human", escalation="no_sources", question=q)
        store.write(t)
        truth["double"].append(t.request_id)
    for i, q in enumerate(UNRELATED):  # out of scope, each different
        store.write(
            make_trace(
                rt, now - timedelta(days=1 + i), status="needs_human", escalation="out_of_scope", question=q
            )
        )
    rejected = make_trace(rt, now - timedelta(days=2), question="What does the Pro plan cost per seat?")
    store.write(rejected)
    review(rt, rejected.request_id, "reject", "inaccurate")
    down = make_trace(rt, now - timedelta(days=3), question="Is the refund policy still 30 days?")
    store.write(down)
    record_feedback(rt, down.request_id, rt.charter.principal("lena"), rating="down", reasons=["outdated"])
    refused = make_trace(rt, now - timedelta(days=1), question="Refund invoice 77 now", refused_tools=2)
    store.write(refused)
    store.write(make_trace(rt, now - timedelta(days=1), question="fine question"))  # not a failure
    truth["rt"] = rt
    yield truth
    rt.close()


def test_categories_have_counts_trend_masked_example_and_owner(seeded: dict[str, Any]) -> None:
    rt = seeded["rt"]
    f = build_failures(rt, since=timedelta(days=14), now=seeded["now"])
    cats = {c["category"]: c for c in f["categories"]}
    assert set(cats) == {
        "escalation:no_sources",
        "escalation:out_of_scope",
        "review_rejected:inaccurate",
        "negative_feedback:outdated",
        "tool_refused",
    }
    ns = cats["escalation:no_sources"]
    assert ns["count"] == 12 and (ns["first_half"], ns["second_half"]) == (4, 8) and ns["trend"] == "rising"
    assert ns["owner"] == {"duty": "sources", "principal": "omar"}
    assert cats["escalation:out_of_scope"]["owner"] == {"duty": "scope", "principal": "lena"}
    assert cats["negative_feedback:outdated"]["owner"]["duty"] == "sources"
    assert cats["review_rejected:inaccurate"]["count"] == 1 and cats["tool_refused"]["count"] == 1
    # the example is the stored, masked question: no e-mail address survives
    assert ns["example"] and "charged twice" in ns["example"]
    assert not any(e in ns["example"] for e in EMAILS) and "<EMAIL" in ns["example"]


def test_near_duplicates_form_one_cluster_unrelated_questions_do_not(seeded: dict[str, Any]) -> None:
    f = build_failures(seeded["rt"], since=timedelta(days=14), now=seeded["now"])
    assert len(f["clusters"]) == 1  # clusters of one are not "repeating"
    c = f["clusters"][0]
    assert sorted(c["requests"]) == sorted(seeded["double"]) and c["count"] == 12
    assert c["main_category"] == "escalation:no_sources" and c["owner"]["principal"] == "omar"
    assert c["id"].startswith("cl_") and c["trend"] == "rising"
    again = build_failures(seeded["rt"], since=timedelta(days=14), now=seeded["now"])
    assert again["clusters"][0]["id"] == c["id"]  # stable ids: the command can find it again


def test_normal_form_ignores_placeholders_numbers_and_case() -> None:
    a = normalise("Why was I charged twice for invoice 1001? <EMAIL_ab12cd34ef>")
    b = normalise("why was I CHARGED twice for invoice 2002? <EMAIL_99ffee0011>")
    assert a == b and "<email>" in a and "#" in a


def test_optional_embeddings_cluster_by_meaning() -> None:
    """With an embedding function (the index's model in production), paraphrases cluster; here a tiny
    bag-of-concepts embedding stands in, the model itself is tested in retrieval."""
    concepts = {"refund": ("refund", "money back"), "charge": ("charged", "billed")}

    def embed(texts: list[str]) -> list[list[float]]:
        out = []
        for t in texts:
            v = [1.0 if any(w in t for w in words) else 0.0 for words in concepts.values()]
            n = sum(x * x for x in v) ** 0.5 or 1.0
            out.append([x / n for x in v])
        return out

    now = utcnow()
    items = [
        ("r1", now, "I want a refund", ["escalation:no_sources"]),
        ("r2", now, "Can I get my money back?", ["escalation:no_sources"]),
        ("r3", now, "Why was I billed twice?", ["review_rejected:inaccurate"]),
    ]
    lexical = cluster_questions(items)
    semantic = cluster_questions(items, embed=embed)
    assert len(lexical) == 3 and sorted(c["count"] for c in semantic) == [1, 2]


def test_add_from_production_writes_valid_eval_cases(seeded: dict[str, Any], cli: Any, project: Path) -> None:
    rt = seeded["rt"]
    cluster = build_failures(rt, since=timedelta(days=14), now=seeded["now"])["clusters"][0]
    out = project.parent / "evals" / "production.yaml"
    r = cli(
        "evals",
        "add-from-production",
        cluster["id"],
        "--to",
        str(out),
        "--as",
        "omar",
        "--ask-as",
        "ana",
        "--since",
        "14d",
        "--charter",
        str(project),
        "--json",
    )
    assert r.exit_code == 0, r.stderr
    added = r.json()["added"]  # type: ignore[index]
    doc = yaml.safe_load(out.read_text())
    cases = doc["cases"]
    assert [c["id"] for c in cases] == added and 1 <= len(cases) <= 3  # three phrasings, numbers aside
    for c in cases:
        assert c["as"] == "ana" and c["category"] == "edge" and c["expect"] == "answer"
        assert "production" in c["tags"] and cluster["id"] in c["tags"]
        assert not any(e in c["question"] for e in EMAILS)
    from charter.evals import load_eval_set

    assert len(load_eval_set(out)) == len(cases)
    # running it again adds nothing; the audit log records who added what
    again = cli(
        "evals",
        "add-from-production",
        cluster["id"],
        "--to",
        str(out),
        "--as",
        "omar",
        "--ask-as",
        "ana",
        "--since",
        "14d",
        "--charter",
        str(project),
        "--json",
    )
    assert again.exit_code == 0 and again.json()["added"] == []  # type: ignore[index]
    assert [e.actor for e in rt.audit.tail(5, action="evals.add_from_production")] == ["omar", "omar"]
    # an agent without reports.read may not; an unknown cluster says what to do
    denied = cli(
        "evals",
        "add-from-production",
        cluster["id"],
        "--to",
        str(out),
        "--as",
        "ana",
        "--charter",
        str(project),
    )
    assert denied.exit_code != 0
    missing = cli(
        "evals",
        "add-from-production",
        "cl_nothere",
        "--to",
        str(out),
        "--as",
        "omar",
        "--charter",
        str(project),
    )
    assert missing.exit_code != 0 and "charter report" in missing.stderr
