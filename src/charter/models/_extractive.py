"""The ``extractive`` provider: the embedded default drafter. Deterministic, no weights, cannot hallucinate.

How a draft is composed:

1. Every passage is split into sentences (markdown headings dropped, tables turned into lines).
2. A sentence is a *candidate* only if it is a statement (not a question, heading or fragment) and does not
   address an AI (:func:`looks_like_instruction`: "ignore previous instructions", "call issue_refund", ...,
   also hidden by invisible characters, look-alike letters or spaced-out letters).
3. Candidates are scored by IDF-weighted coverage of the question's terms: ``0.6 × sentence + 0.25 ×
   its section heading + 0.15 × passage title/heading`` (+0.05 for the first sentence of a section); those
   with no term of their own in common with the question, or scoring below ``min_score``, are dropped.
   Sentences are then picked greedily by score plus the share of the question they cover that the
   sentences already picked do not (so a draft answers several parts of a question rather than repeating
   one), and printed in document order.
4. The customer draft quotes only passages with ``audience == "customer"``; passages for the agent become
   "Agent notes". Each sentence ends with its passage's citation, e.g. ``[S2]``.
5. The draft is wrapped in the charter's tone template (``review.tone``): the text before ``...`` (or
   ``{body}``) is the greeting, the text after it the sign-off; ``{customer}`` and ``{agent}`` are filled.
6. When no customer sentence is relevant enough, the draft is the fixed :data:`NO_ANSWER_TEXT` (no
   citations) and ``finish_reason`` is ``"no_answer"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charter.models._render import clean_text, estimate_tokens, parse_citations, strip_citation_markers
from charter.models._text import Overlap, is_statement, looks_like_instruction, sentences_with_headings
from charter.models._types import Generation, GenerationRequest, Passage, provider
from charter.spec._schema import ModelEndpoint

NO_ANSWER_TEXT = (
    "I cannot answer this from the knowledge base. Please escalate this question to a support lead."
)
AGENT_NOTES_HEADER = "Agent notes (internal, do not send to the customer):"

MIN_SCORE = 0.2
MAX_CUSTOMER_SENTENCES = 4
MAX_AGENT_SENTENCES = 3


@dataclass(frozen=True)
class _Candidate:
    passage: Passage
    rank: int  # passage order in the request (retrieval rank)
    position: int  # sentence order within the passage
    text: str
    score: float
    matched: frozenset[str]


def tone_parts(tone: str, *, customer: str, agent: str) -> tuple[str, str]:
    """The greeting and sign-off of a tone template, placeholders filled."""
    template = " ".join(tone.split())
    for marker in ("{body}", "..."):
        if marker in template:
            greeting, _, signoff = template.partition(marker)
            break
    else:
        greeting, signoff = template, ""
    fill = {"{customer}": customer or "there", "{agent}": agent or "the support team"}
    for key, value in fill.items():
        greeting = greeting.replace(key, value)
        signoff = signoff.replace(key, value)
    return greeting.strip(), signoff.strip()


def _cite(sentence: str, citation: str) -> str:
    s = sentence.rstrip()
    if s[-1] not in ".!":
        s += "."
    return f"{s[:-1]} [{citation}]{s[-1]}"


class ExtractiveModel:
    """Composes drafts from the request's own passages; see the module docstring."""

    provider_name = "extractive"
    runs_inline = True  # bounded in-process work, no I/O: the gateway's deadline is checked on return

    def __init__(
        self,
        name: str = "extractive-v1",
        *,
        min_score: float = MIN_SCORE,
        max_customer_sentences: int = MAX_CUSTOMER_SENTENCES,
        max_agent_sentences: int = MAX_AGENT_SENTENCES,
    ) -> None:
        self.name = name
        self.min_score = min_score
        self.max_customer = max_customer_sentences
        self.max_agent = max_agent_sentences

    def candidates(self, request: GenerationRequest) -> tuple[list[_Candidate], Overlap]:
        """Every quotable sentence of the request's passages with its relevance score, best first."""
        raw: list[tuple[int, int, Passage, str, str]] = []
        for rank, passage in enumerate(request.context):
            last_heading = None
            for pos, (heading, sentence) in enumerate(sentences_with_headings(passage.text)):
                lead = heading != last_heading
                last_heading = heading
                sentence = strip_citation_markers(clean_text(sentence))
                if is_statement(sentence) and not looks_like_instruction(sentence):
                    raw.append((rank, pos, passage, heading if not lead else "\0" + heading, sentence))
        overlap = Overlap(request.question, [s for *_, s in raw])
        out: list[_Candidate] = []
        for rank, pos, passage, heading, sentence in raw:
            matched = overlap.matched(sentence)
            if not matched:
                continue
            lead = heading.startswith("\0")
            score = (
                0.6 * overlap.weight(matched)
                + 0.25 * overlap.coverage(heading.lstrip("\0"))
                + 0.15 * overlap.coverage(f"{passage.title} {passage.heading}")
                + (0.05 if lead else 0.0)
            )
            if score >= self.min_score:
                out.append(_Candidate(passage, rank, pos, sentence, score, matched))
        out.sort(key=lambda c: (-c.score, c.rank, c.position))
        return out, overlap

    def _pick(
        self,
        cands: list[_Candidate],
        overlap: Overlap,
        audience: str,
        limit: int,
        budget: int,
        seen: set[str],
    ) -> tuple[list[_Candidate], int]:
        pool = [c for c in cands if c.passage.audience == audience]
        picked: list[_Candidate] = []
        covered: set[str] = set()
        while pool and len(picked) < limit:
            best = max(
                pool,
                key=lambda c: (c.score + 0.5 * overlap.weight(c.matched - covered), -c.rank, -c.position),
            )
            pool.remove(best)
            key = " ".join(best.text.lower().split())
            cost = estimate_tokens(_cite(best.text, best.passage.id)) + 1
            if key in seen or cost > budget:
                continue
            seen.add(key)
            budget -= cost
            covered |= best.matched
            picked.append(best)
        picked.sort(key=lambda c: (c.rank, c.position))
        return picked, budget

    def generate(self, request: GenerationRequest) -> Generation:
        cands, overlap = self.candidates(request)
        greeting, signoff = tone_parts(request.tone, customer=request.customer_name, agent=request.agent_name)
        budget = request.max_output_tokens - estimate_tokens(
            f"{greeting}\n\n\n\n{signoff}\n\n{AGENT_NOTES_HEADER}"
        )
        seen: set[str] = set()
        customer, budget = self._pick(cands, overlap, "customer", self.max_customer, budget, seen)
        agent, _ = self._pick(cands, overlap, "agent", self.max_agent, budget, seen)
        sentences: list[dict[str, Any]] = []
        if customer:
            body = " ".join(_cite(c.text, c.passage.id) for c in customer)
            parts = [p for p in (greeting, body, signoff) if p]
            finish = "stop"
        else:
            parts = [NO_ANSWER_TEXT]
            finish = "no_answer"
        for c in customer + agent:
            sentences.append(
                {
                    "text": _cite(c.text, c.passage.id),
                    "citation": c.passage.id,
                    "audience": c.passage.audience,
                    "score": round(c.score, 4),
                }
            )
        if agent:
            parts.append(
                AGENT_NOTES_HEADER + "\n" + "\n".join(f"- {_cite(c.text, c.passage.id)}" for c in agent)
            )
        text = "\n\n".join(parts)
        return Generation(
            text=text,
            model=self.name,
            provider=self.provider_name,
            finish_reason=finish,
            citations=parse_citations(text),
            usage_source="estimated",
            extra={
                "sentences": sentences,
                "greeting": greeting if customer else "",
                "signoff": signoff if customer else "",
            },
        )


@dataclass(frozen=True)
class DraftParts:
    """A draft split into its customer part and its agent notes (works on any provider's text)."""

    customer: str
    agent_notes: list[str]


def split_draft(text: str) -> DraftParts:
    """Separate the customer draft from the agent notes (the part after a line starting ``Agent notes``)."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.strip().lower().startswith("agent notes"):
            notes = [ln.strip().lstrip("-*• ").strip() for ln in lines[i + 1 :] if ln.strip()]
            return DraftParts("\n".join(lines[:i]).strip(), notes)
    return DraftParts(text.strip(), [])


@provider("extractive")
def _extractive(endpoint: ModelEndpoint, *, base_dir: Path | None = None) -> ExtractiveModel:
    return ExtractiveModel(endpoint.name)
