"""``review.grounding``: ``required`` (the default) escalates an answer that does not rest on cited, retrieved
passages; ``optional`` lets the model's own, uncited sentences through — a governed model gateway — while every
other check still holds and a citation must still be backed by what it cites.

Two projects: the internal-knowledge example (an ``answer`` workflow) without sources, which needs no sync, and
the synced billing example (sources, citations) with its grounding switched."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charter import _answer_checks as checks
from charter.models import PromptRegistry, ScriptedModel, build_gateway
from charter.pipeline import NO_ANSWER, OUT_OF_SCOPE, WITHHELD, ask, traces_for
from charter.review import decide_draft
from charter.runtime import Runtime
from tests.conftest import REPO

GENERAL = "How should I structure a short status update for my manager?"
OWN_WORDS = "Start with the outcome, then list blockers and next steps. Keep it under five sentences."
REFUNDS = "How long do card refunds take?"
# uncited sentences added to a grounded draft by a reviewer: each is unsupported when every sentence counts
EXTRA = " Thanks for your patience with us. We value every customer. Write back any time you like."


def _no_source_project(dest: Path, grounding: str) -> Path:
    shutil.copytree(
        REPO / "examples" / "internal-knowledge",
        dest,
        ignore=shutil.ignore_patterns(".charter", "__pycache__"),
    )
    charter = dest / "charter.yaml"
    doc = yaml.safe_load(charter.read_text())
    doc["sources"] = []
    doc["review"]["grounding"] = grounding
    charter.write_text(yaml.safe_dump(doc, sort_keys=False))
    rt = Runtime.open(charter)
    try:
        prompt = rt.spec.workflow.prompts.system or "answer"
        PromptRegistry(rt.charter, rt.store, audit=lambda **e: rt.audit.append(**e)).approve(
            prompt, rt.spec.prompt(prompt).active, principal=rt.charter.principal("priya")
        )
    finally:
        rt.close()
    return charter


@pytest.fixture(scope="module")
def gateway_charter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _no_source_project(tmp_path_factory.mktemp("g") / "optional", "optional")


@pytest.fixture(scope="module")
def strict_charter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _no_source_project(tmp_path_factory.mktemp("g") / "required", "required")


@pytest.fixture
def gateway(gateway_charter: Path) -> Iterator[Runtime]:
    rt = Runtime.open(gateway_charter)
    yield rt
    rt.close()


def _ask(rt: Runtime, reply: str, question: str = GENERAL, user: str = "eli") -> Any:
    model = ScriptedModel("scripted").enqueue(reply)
    rt.services.gateway = build_gateway(rt, primary=model)
    return ask(rt, rt.charter.principal(user), question, submit_for_review=False)


def test_optional_grounding_returns_the_models_own_answer(gateway: Runtime) -> None:
    result = _ask(gateway, OWN_WORDS)
    assert result.status == "answered" and result.escalation is None
    assert result.draft == OWN_WORDS and result.citations == [] and result.groundedness is None
    trace = traces_for(gateway).get(result.request_id)
    assert trace is not None and trace["checks"]["uncited_sentences"] == 2


def test_required_grounding_escalates_the_same_answer(strict_charter: Path) -> None:
    rt = Runtime.open(strict_charter)
    try:
        result = _ask(rt, OWN_WORDS)
    finally:
        rt.close()
    assert result.status == "needs_human" and result.escalation["reason"] == "no_sources"
    assert result.draft == NO_ANSWER


def test_optional_grounding_keeps_every_other_check(gateway: Runtime) -> None:
    # a citation to nothing retrieved is removed and counted
    cited = _ask(gateway, "Lead with the outcome [S3].")
    assert cited.status == "answered" and cited.removed_citations == 1 and "[S3]" not in cited.draft
    # a canary withholds everything
    canary = _ask(gateway, "The reference is CANARY-PRICE-4be2c8.")
    assert canary.escalation["reason"] == "canary_in_output" and canary.draft == WITHHELD
    # personal data the model made up is not sent
    pii = _ask(gateway, "Write to jane.doe@example.com and call +44 20 7946 0958 for the details.")
    assert pii.status == "needs_human" and pii.escalation["reason"] == "pii_in_output"
    # the charter's out-of-scope topics still route to a human
    out = _ask(gateway, "Bands are wide.", question="What is the salary range for level E3 engineers?")
    assert out.escalation["reason"] == "out_of_scope" and out.draft == OUT_OF_SCOPE
    # an empty answer is not an answer
    empty = _ask(gateway, "   ")
    assert empty.status == "needs_human" and empty.escalation["reason"] == "no_sources"


def _grounding_findings(rt: Runtime) -> list[Any]:
    from charter.gate import run_gate

    result = run_gate(rt, only=["scope"], drills=False)
    return [f for c in result.checks for f in c.findings if "grounding" in f.message]


def test_the_launch_gate_reports_optional_grounding(gateway: Runtime, strict_charter: Path) -> None:
    found = _grounding_findings(gateway)
    assert [f.status for f in found] == ["warn"] and found[0].fix and "required" in found[0].fix
    strict = Runtime.open(strict_charter)
    try:
        assert [f.status for f in _grounding_findings(strict)] == ["pass"]
    finally:
        strict.close()


_WORD = st.sampled_from(
    [
        "the",
        "team",
        "ships",
        "reports",
        "weekly",
        "and",
        "every",
        "update",
        "lists",
        "blockers",
        "owners",
        "dates",
        "risks",
    ]
)
_SENTENCE = st.builds(
    lambda words, end: " ".join(words).capitalize() + end,
    st.lists(_WORD, min_size=3, max_size=9),
    st.sampled_from([".", "!", "?", "…", ".)", '."']),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sentences=st.lists(_SENTENCE, min_size=1, max_size=4), marks=st.lists(st.integers(1, 999), max_size=3))
def test_any_uncited_prose_is_answered_under_optional_grounding(
    gateway: Runtime, sentences: list[str], marks: list[int]
) -> None:
    """By construction: prose without valid citations (bogus ``[Sn]`` markers anywhere between its words) is
    answered with every word kept and no citation left; the oracle is the input's own words."""
    text = " ".join(sentences)
    for i, n in enumerate(marks):
        gaps = [m.end() for m in re.finditer(r"\s", text)] or [len(text)]
        cut = gaps[(i * 7) % len(gaps)]
        text = f"{text[:cut]}[S{n}] {text[cut:]}"
    result = _ask(gateway, text)
    assert result.status == "answered", result.escalation
    assert not checks.CITATION.search(result.draft) and result.removed_citations == len(marks)
    expected = set(re.findall(r"[a-z]+", re.sub(r"\[S\d+\]", "", text).lower()))
    assert expected == set(re.findall(r"[a-z]+", result.draft.lower()))


# ----------------------------------------------------------------------------------- with sources (billing)
def _first_cited(draft: str) -> str:
    return next(x for x in checks.split_sentences(draft) if checks.CITATION.search(x))


def _grounded_draft(charter: Path) -> str:
    """The extractive model's answer (every sentence cited and supported) to a refund question."""
    rt = Runtime.open(charter)
    try:
        result = ask(rt, rt.charter.principal("ana"), REFUNDS, submit_for_review=False)
    finally:
        rt.close()
    assert result.status == "answered" and result.citations, result.escalation
    return result.draft


@pytest.mark.parametrize("grounding", ["required", "optional"])
def test_an_uncited_sentence_next_to_cited_ones(synced_project: Path, grounding: str) -> None:
    grounded = _grounded_draft(synced_project)
    doc = yaml.safe_load(synced_project.read_text())
    doc["review"]["grounding"] = grounding
    synced_project.write_text(yaml.safe_dump(doc, sort_keys=False))
    rt = Runtime.open(synced_project)
    try:
        result = _ask(rt, grounded + " We hope this helps with your planning.", REFUNDS, "ana")
        # a citation must still be backed by what it cites, whatever the grounding
        wrong = _ask(
            rt, "Quillo refunds three times the amount and sends a gift basket [S1].", REFUNDS, "ana"
        )
        # a reviewer's edit is judged by the same rule (review.check_edit)
        rt.services.gateway = build_gateway(rt, primary=ScriptedModel("scripted").enqueue(grounded))
        queued = ask(rt, rt.charter.principal("ana"), REFUNDS)
        assert queued.review_id is not None
        edited = decide_draft(rt, queued.review_id, "lena", "edit", text=_first_cited(grounded) + EXTRA)
    finally:
        rt.close()
    assert wrong.status == "needs_human" and wrong.escalation["reason"] == "low_groundedness"
    flags = (edited.edit_checks or {}).get("flags")
    if grounding == "required":
        assert result.escalation and result.escalation["reason"] == "low_groundedness"
        assert flags == ["low_groundedness"]
    else:
        assert flags == []
        assert result.status == "answered", result.escalation
        assert "We hope this helps" in result.draft and result.citations
        assert result.groundedness is not None and result.groundedness >= 0.6


@pytest.mark.parametrize(("fixture", "ungrounded"), [("gateway_charter", False), ("strict_charter", True)])
def test_the_eval_scorer_judges_an_uncited_answer_by_the_charters_grounding(
    request: pytest.FixtureRequest, fixture: str, ungrounded: bool
) -> None:
    """An answer case answered in the model's own words fails as ``ungrounded`` only when grounding is
    required (the strict charter's result is taken from the gateway's run: it would escalate there)."""
    from charter.evals import CaseOutput, EvalCase, ScoreContext, get_scorers

    rt = Runtime.open(request.getfixturevalue("gateway_charter"))
    try:
        answered = _ask(rt, OWN_WORDS)
    finally:
        rt.close()
    case = EvalCase(id="c1", category="answerable", user="eli", question=GENERAL)
    out = CaseOutput(case=case, repeat=0, status="answered", result=answered.as_dict())
    rt = Runtime.open(request.getfixturevalue(fixture))
    try:
        scorer = get_scorers(["generation"])["generation"]
        (score,) = scorer.score([out], ScoreContext(rt))
    finally:
        rt.close()
    assert ("ungrounded" in {kind for kind, _ in score.failures}) is ungrounded


@settings(max_examples=200, deadline=None)
@given(
    sentences=st.lists(_SENTENCE, min_size=1, max_size=4),
    picks=st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 999)), max_size=4),
)
def test_a_removed_citation_leaves_the_text_as_if_it_was_never_there(
    sentences: list[str], picks: list[tuple[int, int]]
) -> None:
    """By construction: `` [Sn]`` inserted at the end of any word (before a space or punctuation) and then
    removed as invalid gives back exactly the original text (no ``year .``)."""
    original = " ".join(sentences)
    ends = sorted({m.end() for m in re.finditer(r"[a-z]+", original)})
    inserted: dict[int, list[int]] = {}
    for at, n in picks:
        inserted.setdefault(ends[at % len(ends)], []).append(n)
    text = "".join(
        original[i] + "".join(f" [S{n}]" for n in inserted.get(i + 1, [])) for i in range(len(original))
    )
    result = checks.validate_citations(text, allowed=set())
    assert result.text == original and len(result.removed) == len(picks)
