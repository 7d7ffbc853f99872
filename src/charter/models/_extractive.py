"""The ``extractive`` provider: the embedded default drafter. Deterministic, no weights, cannot hallucinate.

How a draft is composed:

1. Every passage is split into sentences (markdown headings dropped, list items and table rows marked as
   items, see :func:`passage_sentences`). A sentence is a *candidate* only if it is quotable (a statement, a
   procedure step, a list item) and does not address an AI (:func:`charter.screening.screen_sentence`, the
   one instruction rule: screened sentences are never quoted and are reported with their reasons).
2. Candidates are scored by meaning and words (see :meth:`ExtractiveModel.candidates`: dense similarity
   to the question, IDF-weighted lexical coverage, heading coverage, position, retrieval rank, qualifiers,
   procedure steps), picked by maximal marginal relevance, and completed: a qualifying follow-up, the
   result of an example, the list a sentence leads into, the steps before a step (:meth:`ExtractiveModel.
   _pick`). Abstention comes from the best dense similarity (``ABSTAIN_BELOW``). docs/models.md has the
   weights and why.
3. Picked sentences are printed in document order.
4. The output quotes only passages with ``audience == OUTBOUND``; ``INTERNAL`` passages (``draft``
   workflows: sources not cleared for the outbound draft) become "Agent notes". Each sentence ends with its
   passage's citation, e.g. ``[S2]``.
5. The draft is wrapped in the charter's tone template (``review.tone``): the text before ``...`` (or
   ``{body}``) is the greeting, the text after it the sign-off; ``{recipient}`` and ``{sender}`` are
   filled. ``answer`` workflows have no tone.
6. When no outbound sentence is relevant enough, the draft is the fixed :data:`NO_ANSWER_TEXT` (no
   citations) and ``finish_reason`` is ``"no_answer"``.
"""

from __future__ import annotations

import functools
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charter.models._render import clean_text, estimate_tokens, parse_citations, strip_citation_markers
from charter.models._text import Overlap, is_statement, sentences_with_structure
from charter.models._types import INTERNAL, OUTBOUND, Generation, GenerationRequest, Passage, evolve, provider
from charter.screening import screen_sentence
from charter.spec import ModelEndpoint

NO_ANSWER_TEXT = "I cannot answer this from the knowledge base. Please escalate this question to a colleague."
AGENT_NOTES_HEADER = "Agent notes (internal, not to be sent):"

MIN_SCORE = 0.2
MAX_OUTBOUND_SENTENCES = 4
MAX_AGENT_SENTENCES = 3
# Weights of a sentence's relevance (see module docstring) and the selection parameters. ABSTAIN_BELOW is the
# calibrated retrieval-score threshold: the best passage sentence's cosine similarity to the question below
# which no passage answers it (calibration: docs/models.md, bench/answer_quality.py).
W_DENSE, W_LEXICAL, W_HEADING, W_LEAD, W_RANK = 0.6, 0.25, 0.08, 0.03, 0.04
ABSTAIN_BELOW = 0.35
RELATIVE_CUTOFF = 0.7  # a sentence must score at least this share of the best one
MMR_LAMBDA = 0.7
DUPLICATE_COSINE = 0.92
W_QUALIFIER = 0.04
W_STEP = 0.1  # procedure steps, for "how do I ..." questions
_HOW_TO = re.compile(
    r"^(how (do|can|should) (i|we|you|they)|how to|where (do|can) (i|we)|what do i do)\b", re.I
)
_BOILERPLATE = re.compile(r"^(this|the following) (article|page|guide|section|document)\b", re.IGNORECASE)
_STEP = re.compile(
    r"^(click|tap|go to|open|select|choose|enter|type|sign in|log in|confirm|download|add|remove|pick|press|"
    r"check|find|scroll|under|in settings|copy|paste|upload|save)\b",
    re.IGNORECASE,
)


#: ``agent`` answers quote at most this many tool results (the latest ones)
MAX_RESULTS_QUOTED = 3


def _is_step(sentence: str) -> bool:
    """A short procedure step ("Click **Replace card**."): quotable although shorter than a statement."""
    words = sentence.split()
    return 2 <= len(words) <= 30 and bool(_STEP.match(sentence)) and sentence.rstrip()[-1:] in ".!"


#: How a quotable sentence sits in its passage: a list item or table row (a *fragment* when it is no
#: statement on its own: "The order number, if …"), the line that introduces a list ("If your card is in
#: another currency:"), or running text. Fragments and introductions are quoted only with their list.
ITEM, FRAGMENT, INTRO, TEXT = "item", "fragment", "intro", "text"
LIST_ONLY = frozenset({FRAGMENT, INTRO})
MAX_LIST_ITEMS = 4

QUALIFIERS = re.compile(
    r"\b(pro[- ]rata|prorated|pro-rated|up to|except|excluding|unless|only if|only for|only when|provided that|"
    r"does not apply|doesn't apply|(?:not|aren't|isn't) \w+able|at most|at least|"
    r"no more than|capped|maximum|minimum|instead|however|but not)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class _Candidate:
    passage: Passage
    rank: int  # passage order in the request (retrieval rank)
    position: int  # sentence order within the passage
    text: str
    score: float
    matched: frozenset[str]
    dense: float = 0.0
    vector: Any = None
    place: str = TEXT


# ------------------------------------------------------------------------------------------ sentence vectors
class SentenceVectors:
    """Embeddings of passage sentences, cached in memory by text (passages repeat across requests) and,
    when bound to an index, persisted in its embedding cache.

    The embedder is the runtime's (bound by the pipeline with :meth:`bind`), so question and sentence
    vectors come from the same model; unbound, the built-in MiniLM is loaded on first use."""

    def __init__(self, capacity: int = 50_000) -> None:
        self.capacity = capacity
        self._embedder: Any = None
        self._query: Callable[[str], Any] | None = None
        self._index: Any = None
        self._cache: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._lock = threading.Lock()

    def bind(self, embedder: Any, query: Callable[[str], Any] | None = None, index: Any = None) -> None:
        """Use ``embedder`` for sentences and ``query`` (the index's cached query embedding, so the question
        is embedded once per request, by retrieval) for questions. With ``index``, sentences missing from
        memory are read from the index's persistent embedding cache (``retrieval_embeddings``, keyed by
        model and text hash) and only the ones never seen are embedded and written back: each sentence is
        embedded once, whichever process sees it first."""
        self._embedder, self._query, self._index = embedder, query, index

    def _embed_missing(self, texts: list[str]) -> Any:
        import numpy as np

        index = self._index
        if index is None:
            return np.asarray(self.embedder.embed(texts), dtype=np.float32)
        _hashes, vecs, new_rows = index._vectors_for(texts)
        if new_rows:
            with index.store.begin() as conn:
                index._cache_vectors(conn, new_rows)
        return vecs

    def query(self, question: str) -> Any:
        if self._query is not None and self._embedder is not None:
            return self._query(question)
        return self([question])[0]

    @property
    def embedder(self) -> Any:
        if self._embedder is None:
            from charter.retrieval import get_embedder

            self._embedder = get_embedder("minilm")
        return self._embedder

    def __call__(self, texts: list[str]) -> Any:
        import numpy as np

        emb = self.embedder
        out = np.zeros((len(texts), emb.dim), dtype=np.float32)
        missing: dict[str, list[int]] = {}
        with self._lock:
            for i, t in enumerate(texts):
                v = self._cache.get((emb.name, t))
                if v is None:
                    missing.setdefault(t, []).append(i)
                else:
                    out[i] = v
        if missing:
            keys = list(missing)
            vecs = self._embed_missing(keys)
            with self._lock:
                for t, v in zip(keys, vecs, strict=True):
                    self._cache[(emb.name, t)] = v
                    for i in missing[t]:
                        out[i] = v
                while len(self._cache) > self.capacity:
                    self._cache.popitem(last=False)
        return out


SENTENCE_VECTORS = SentenceVectors()  # the default of an extractive model built outside a runtime


def use_sentence_vectors(model: Any, vectors: SentenceVectors) -> int:
    """Give every extractive model in a gateway's chain (``inner`` and ``fallback`` links) ``vectors``;
    returns how many. A runtime binds its own, so that one runtime closing (a gate drill's copy, a derived
    evaluation runtime) never leaves another's drafter bound to a closed index."""
    found, todo, seen = 0, [model], set()
    while todo:
        m = todo.pop()
        if m is None or id(m) in seen:
            continue
        seen.add(id(m))
        if isinstance(m, ExtractiveModel):
            m.vectors = vectors
            found += 1
        todo += [getattr(m, "inner", None), getattr(m, "fallback", None)]
    return found


@functools.lru_cache(maxsize=8192)
def passage_sentences(text: str) -> tuple[tuple[int, str, bool, str, tuple[str, ...], str], ...]:
    """The sentences of a passage the drafter considers, in order: ``(position, heading, lead, sentence,
    screening reasons, place)`` — ``lead`` is true for the first sentence under a heading; a sentence with
    reasons is an instruction (screened out, never quoted); ``place`` is :data:`ITEM`, :data:`INTRO` or
    :data:`TEXT`. Only quotable sentences (statements, procedure steps, list items, and the line that
    introduces a list — quoted only together with its list —, not boilerplate) and screened ones are
    returned; pure, so cached by text (passages repeat across requests). One definition, used by
    :meth:`ExtractiveModel.candidates` at answer time and by :func:`prefetch_sentence_vectors` at sync time."""
    out: list[tuple[int, str, bool, str, tuple[str, ...], str]] = []
    last_heading = None
    structure = sentences_with_structure(text)
    for pos, (heading, sentence, item) in enumerate(structure):
        lead = heading != last_heading
        last_heading = heading
        sentence = strip_citation_markers(clean_text(sentence))
        verdict = screen_sentence(sentence)
        introduces = (
            not item
            and sentence.rstrip().endswith(":")
            and pos + 1 < len(structure)
            and structure[pos + 1][2]
            and len(sentence.split()) >= 2
        )
        alone = is_statement(sentence) or _is_step(sentence)
        place = (ITEM if alone else FRAGMENT) if item else INTRO if introduces else TEXT
        if verdict.instruction:
            out.append((pos, heading, lead, sentence, tuple(verdict.reasons), place))
        elif (alone or introduces or (item and len(sentence.split()) >= 3)) and not _BOILERPLATE.match(
            sentence
        ):
            out.append((pos, heading, lead, sentence, (), place))
    return tuple(out)


def prefetch_sentence_vectors(index: Any, texts: list[str]) -> int:
    """Embed the quotable sentences of chunk ``texts`` into ``index``'s persistent embedding cache (the
    sync hook for the extractive drafter), so that answering never waits for a sentence embedding of an
    indexed passage. Returns how many new vectors were embedded."""
    keys = sorted(
        {
            sentence_key(h, s)
            for text in texts
            for _p, h, _l, s, reasons, _place in passage_sentences(text)
            if not reasons
        }
    )
    if not keys:
        return 0
    _hashes, _vecs, rows = index._vectors_for(keys)
    if rows:
        with index.store.begin() as conn:
            index._cache_vectors(conn, rows)
    return len(rows)


def sentence_key(heading: str, sentence: str) -> str:
    """The text a passage sentence is embedded as: the sentence alone, so its vector does not depend on
    where a chunk boundary fell (headings count through lexical heading coverage instead)."""
    return sentence


def tone_parts(tone: str, *, recipient: str, sender: str) -> tuple[str, str]:
    """The greeting and sign-off of a tone template, placeholders filled (``{recipient}``: who the
    draft is addressed to; ``{sender}``: who sends it)."""
    template = " ".join(tone.split())
    for marker in ("{body}", "..."):
        if marker in template:
            greeting, _, signoff = template.partition(marker)
            break
    else:
        greeting, signoff = template, ""
    to, by = recipient or "there", sender or "the team"
    fill = {"{recipient}": to, "{sender}": by}
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
        max_outbound_sentences: int = MAX_OUTBOUND_SENTENCES,
        max_agent_sentences: int = MAX_AGENT_SENTENCES,
        abstain_below: float = ABSTAIN_BELOW,
        vectors: SentenceVectors | None = None,
    ) -> None:
        self.name = name
        self.abstain_below = abstain_below
        self.vectors = vectors or SENTENCE_VECTORS
        self.min_score = min_score
        self.max_outbound = max_outbound_sentences
        self.max_agent = max_agent_sentences

    @staticmethod
    def prefetch(index: Any, texts: list[str]) -> int:
        """The sync hook: embed the quotable sentences of chunk ``texts`` into ``index``'s embedding cache
        (:func:`prefetch_sentence_vectors`); returns how many new vectors were embedded."""
        return prefetch_sentence_vectors(index, texts)

    def candidates(
        self, request: GenerationRequest
    ) -> tuple[list[_Candidate], Overlap, list[dict[str, Any]], float]:
        """Every quotable sentence of the request's passages with its relevance, best first; the screened
        (instruction) sentences with their reasons; and the best dense similarity (the abstention score)."""
        import numpy as np

        raw: list[tuple[int, int, Passage, str, bool, str]] = []
        places: list[str] = []
        screened: list[dict[str, Any]] = []
        for rank, passage in enumerate(request.context):
            for pos, heading, lead, sentence, reasons, place in passage_sentences(passage.text):
                if reasons:
                    screened.append(
                        {"passage": passage.id, "sentence": sentence[:300], "reasons": list(reasons)}
                    )
                else:
                    raw.append((rank, pos, passage, heading, lead, sentence))
                    places.append(place)
        overlap = Overlap(request.question, [s for *_, s in raw])
        if not raw or screen_sentence(request.question).instruction:  # a question that instructs: no answer
            return [], overlap, screened, 0.0
        sentence_vectors = self.vectors([sentence_key(h, s) for _, _, _, h, _, s in raw])
        dense = sentence_vectors @ np.asarray(self.vectors.query(request.question), dtype=np.float32)
        out: list[_Candidate] = []
        n = max(len(request.context), 1)
        how_to = bool(_HOW_TO.match(request.question.strip()))
        for (rank, pos, passage, heading, lead, sentence), d, vec, place in zip(
            raw, dense, sentence_vectors, places, strict=True
        ):
            matched = overlap.matched(sentence)
            score = (
                W_DENSE * float(d)
                + W_LEXICAL * overlap.weight(matched)
                + W_HEADING * overlap.coverage(f"{passage.title} {passage.heading} {heading}")
                + (W_LEAD if lead else 0.0)
                + W_RANK * (1 - rank / n)
                + (W_QUALIFIER if QUALIFIERS.search(sentence) else 0.0)
                + (W_STEP if how_to and _is_step(sentence) else 0.0)
            )
            out.append(_Candidate(passage, rank, pos, sentence, score, matched, float(d), vec, place))
        out.sort(key=lambda c: (-c.score, c.rank, c.position))
        best = float(np.max(dense)) if len(dense) else 0.0
        return out, overlap, screened, best

    def _pick(
        self,
        cands: list[_Candidate],
        audience: str,
        limit: int,
        budget: int,
        seen: set[str],
    ) -> tuple[list[_Candidate], int]:
        """Maximal marginal relevance over the candidates of one audience, then each picked sentence's
        qualifying follow-up ("... pro rata", "except ...") from the same passage."""
        pool = [c for c in cands if c.passage.audience == audience and c.place not in LIST_ONLY]
        if not pool:
            return [], budget
        top = pool[0].score
        pool = [c for c in pool if c.score >= max(self.min_score, RELATIVE_CUTOFF * top)]
        picked: list[_Candidate] = []

        def take(c: _Candidate) -> bool:
            nonlocal budget
            key = " ".join(c.text.lower().split())
            cost = estimate_tokens(_cite(c.text, c.passage.id)) + 1
            if key in seen or cost > budget:
                return False
            seen.add(key)
            budget -= cost
            picked.append(c)
            return True

        while pool and len(picked) < limit:

            def mmr(c: _Candidate) -> float:
                sim = max((float(c.vector @ p.vector) for p in picked), default=0.0)
                return MMR_LAMBDA * c.score - (1 - MMR_LAMBDA) * sim

            best = max(pool, key=lambda c: (mmr(c), -c.rank, -c.position))
            pool.remove(best)
            if any(float(best.vector @ p.vector) >= DUPLICATE_COSINE for p in picked):
                continue
            take(best)
        by_place = {(c.passage.id, c.position): c for c in cands if c.passage.audience == audience}
        for c in list(picked):
            if self._follow_list(c, by_place, picked, take):
                continue
            # the sentence that completes a picked one: its qualifier ("... pro rata", "except ..."), the
            # worked result of an example, or the next steps of a procedure
            follow = 4 if _is_step(c.text) else 1
            for offset in range(1, follow + 1):
                nxt = by_place.get((c.passage.id, c.position + offset))
                if nxt is None or nxt in picked:
                    break
                if _is_step(c.text) and not _is_step(nxt.text):
                    break
                if not (
                    _is_step(c.text)
                    or c.text.lower().startswith(("example", "for example"))
                    or (QUALIFIERS.search(nxt.text) and (nxt.dense >= self.abstain_below or nxt.matched))
                ):
                    break
                take(nxt)
        picked.sort(key=lambda c: (c.rank, c.position))
        return picked, budget

    @staticmethod
    def _follow_list(
        c: _Candidate,
        by_place: dict[tuple[str, int], _Candidate],
        picked: list[_Candidate],
        take: Callable[[_Candidate], bool],
    ) -> bool:
        """A picked sentence directly followed by a list (or by the line introducing one) is completed by
        the list's first items: "If the export stopped …" → "Go to Settings → Data → Exports.",
        "Click Resume."; "If your file is larger than 2 GB:" → "Split it into parts …". At most :data:`MAX_LIST_ITEMS` items, within the token
        budget. Returns whether a list followed.

        A picked list item preceded by procedure steps brings those steps too: "Update the display name …"
        is no answer without "Go to Settings → Profile → Details" before it."""
        back = c.position - 1
        steps: list[_Candidate] = []
        while c.place in (ITEM, FRAGMENT) and len(steps) < MAX_LIST_ITEMS:
            prev = by_place.get((c.passage.id, back))
            if prev is None or prev.place not in (ITEM, FRAGMENT) or not _is_step(prev.text):
                break
            steps.append(prev)
            back -= 1
        for step in reversed(steps):
            if step not in picked and not take(step):
                break
        pos = c.position + 1
        nxt = by_place.get((c.passage.id, pos))
        chain: list[_Candidate] = []
        if nxt is not None and nxt.place == INTRO and c.place != INTRO:
            chain.append(nxt)
            pos += 1
            nxt = by_place.get((c.passage.id, pos))
        if nxt is None or nxt.place not in (ITEM, FRAGMENT):
            return False
        while nxt is not None and nxt.place in (ITEM, FRAGMENT) and len(chain) < MAX_LIST_ITEMS + 1:
            chain.append(nxt)
            pos += 1
            nxt = by_place.get((c.passage.id, pos))
        for follower in chain:
            if follower not in picked and not take(follower):
                break
        return True

    def generate(self, request: GenerationRequest) -> Generation:
        if request.tools:  # an agent step: call the next tool the task needs, else answer (models._planner)
            return self._agent_step(request)
        return self._draft(request)

    def _agent_step(self, request: GenerationRequest) -> Generation:
        from charter.models._planner import plan, readable_result

        calls = plan(request)
        if calls:
            return Generation(
                text="",
                model=self.name,
                provider=self.provider_name,
                finish_reason="tool_calls",
                usage_source="estimated",
                tool_calls=tuple(calls),
            )
        results = [
            f"{readable_result(r.content)} [{r.citation}]"
            for t in request.turns
            for r in t.results
            if r.citation and not r.content.startswith("waiting for approval")
        ][-MAX_RESULTS_QUOTED:]
        drafted = self._draft(evolve(request, {"tools": (), "turns": ()}))
        body = [] if drafted.finish_reason == "no_answer" else [drafted.text]
        if not results and not body:
            return drafted
        text = "\n\n".join([" ".join(results), *body] if results else body)
        return drafted.with_(text=text, finish_reason="stop", citations=parse_citations(text))

    def _draft(self, request: GenerationRequest) -> Generation:
        cands, _overlap, screened, best = self.candidates(request)
        greeting, signoff = tone_parts(
            request.tone, recipient=request.recipient_name, sender=request.sender_name
        )
        budget = request.max_output_tokens - estimate_tokens(
            f"{greeting}\n\n\n\n{signoff}\n\n{AGENT_NOTES_HEADER}"
        )
        seen: set[str] = set()
        relevant = best >= self.abstain_below
        outbound, budget = (
            self._pick(cands, OUTBOUND, self.max_outbound, budget, seen) if relevant else ([], budget)
        )
        agent, _ = self._pick(cands, INTERNAL, self.max_agent, budget, seen) if relevant else ([], budget)
        sentences: list[dict[str, Any]] = []
        if outbound:
            body = " ".join(_cite(c.text, c.passage.id) for c in outbound)
            parts = [p for p in (greeting, body, signoff) if p]
            finish = "stop"
        else:
            parts = [NO_ANSWER_TEXT]
            finish = "no_answer"
        for c in outbound + agent:
            sentences.append(
                {
                    "text": _cite(c.text, c.passage.id),
                    "citation": c.passage.id,
                    "audience": c.passage.audience,
                    "score": round(c.score, 4),
                    "dense": round(c.dense, 4),
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
                "screened": screened,
                "relevance": round(best, 4),
                "greeting": greeting if outbound else "",
                "signoff": signoff if outbound else "",
            },
        )


@dataclass(frozen=True)
class DraftParts:
    """An output split into its outbound part and its internal notes (works on any provider's text)."""

    outbound: str
    agent_notes: list[str]


def split_draft(text: str) -> DraftParts:
    """Separate the outbound text from the internal notes (the part after a line starting ``Agent notes``)."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.strip().lower().startswith("agent notes"):
            notes = [ln.strip().lstrip("-*• ").strip() for ln in lines[i + 1 :] if ln.strip()]
            return DraftParts("\n".join(lines[:i]).strip(), notes)
    return DraftParts(text.strip(), [])


@provider("extractive")
def _extractive(endpoint: ModelEndpoint, *, base_dir: Path | None = None) -> ExtractiveModel:
    return ExtractiveModel(endpoint.name)
