"""Instruction screening: is a sentence of a passage *content about the domain*, or *text addressed to the
assistant* (the model, or the reader acting as an agent) — a prompt-injection attempt?

Every place that quotes, notes or scores passage text asks this module (one place for the rule): the
extractive drafter never quotes or notes a screened sentence, groundedness never counts one as support,
the check stage blocks any draft (of any provider) that repeats one, and sync flags documents that carry
them to the source owner (quarantine, or index without those sentences; see :func:`screen_document`).

Method (why rules and not a trained classifier): an injected sentence is recognised by *who it addresses*
and *what it asks for*, and both have small closed vocabularies — an AI addressee ("the assistant",
"the model", "AI agents reading this"), an answering context ("when answering", "in your reply"), and
directives no reader-facing help text gives (override or forget instructions, reveal the prompt or
restricted text, call a tool, treat something as pre-approved, include an image or link in the answer,
fill in what "you know", role-play). Legitimate help-centre imperatives ("Click Settings → Exports",
"Include your order number when you contact us") address a reader *acting in the product*, and none
of these patterns fires on them. Rules are deterministic, auditable (each hit has a named reason),
cheap (~20 µs a sentence, cached), and need no training data that would overlap our evaluation set. An
embedding-similarity detector was measured against them on the same labelled set (``bench/
answer_quality.py``, docs/benchmarks.md): on short sentences the nearest attack and the nearest benign
template are too close for a margin that keeps help-centre false positives at zero.

The rules run on a *normalised* view that defeats the structural tells: NFKC, invisible/format
characters dropped, look-alike letters (Cyrillic/Greek, leetspeak) folded, spaced-out letters
(``i g n o r e``) joined; base64/hex runs are decoded and the decoded text screened too. Mixed-script
words (a Cyrillic letter inside a Latin word) and Unicode tag characters are reasons on their own: no
honest help text contains them.

Invariant: :func:`screen_sentence` is a pure function of its text (cached); ``instruction`` is ``True``
iff ``reasons`` is non-empty.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import functools
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

# ------------------------------------------------------------------------------------------ normalising
_CONFUSABLES = str.maketrans(
    {
        "а": "a",
        "е": "e",
        "о": "o",
        "р": "p",
        "с": "c",
        "у": "y",
        "х": "x",
        "і": "i",
        "ј": "j",
        "ѕ": "s",
        "ԁ": "d",
        "ɡ": "g",
        "ο": "o",
        "ν": "v",
        "ι": "i",
        "α": "a",
        "κ": "k",
        "τ": "t",
        "ρ": "p",
        "ε": "e",
        "к": "k",
        "м": "m",
        "н": "h",
        "т": "t",
        "в": "b",
        "г": "r",
        "ԛ": "q",
        "ѡ": "w",
    }
)
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"})
_LATIN = re.compile(r"[a-zA-Z]")
_FOREIGN_LETTER = re.compile(r"[\u0370-\u03ff\u0400-\u04ff\u0500-\u052f]")
_WORDISH = re.compile(r"\S+")
_B64_RUN = re.compile(r"(?<![A-Za-z0-9+/=_-])[A-Za-z0-9+/_-]{20,}={0,2}(?![A-Za-z0-9+/=_-])")
_HEX_RUN = re.compile(r"(?<![0-9A-Fa-f])(?:[0-9A-Fa-f]{2}[ :]?){12,}(?![0-9A-Fa-f])")


def _visible(text: str) -> tuple[str, bool]:
    """NFKC text without format characters; whether Unicode *tag* characters (smuggling) were present."""
    if text.isascii():  # no format characters, NFKC is the identity
        return text, False
    tags = any(0xE0000 <= ord(ch) <= 0xE007F for ch in text)
    text = unicodedata.normalize("NFKC", text)
    return "".join(ch for ch in text if unicodedata.category(ch) != "Cf"), tags


def _mixed_script(text: str) -> bool:
    """A word mixing Latin letters with Cyrillic or Greek look-alikes (``ignоre`` with a Cyrillic о)."""
    return any(_LATIN.search(w) and _FOREIGN_LETTER.search(w) for w in _WORDISH.findall(text))


_SPACED_RUN = re.compile(r"\b[a-z](?:[ .\-*][a-z]\b){2,}")


def _words(text: str, *, leet: bool) -> list[str]:
    """Lower-case words after folding look-alikes; runs of ≥3 single letters are joined (``i g n o r e``)."""
    norm = text.lower().translate(_CONFUSABLES)
    if leet:
        norm = norm.translate(_LEET)
    # letters spaced out one separator apart form a word; a wider gap separates words ("a t t e n t i o n   a i")
    norm = _SPACED_RUN.sub(lambda m: re.sub(r"[ .\-*]", "", m.group(0)), norm.replace("_", " "))
    raw = re.findall(r"[a-z]+", norm)
    words: list[str] = []
    run: list[str] = []
    for w in [*raw, ""]:
        if len(w) == 1:
            run.append(w)
            continue
        words.extend(["".join(run)] if len(run) >= 3 else run)
        run = []
        if w:
            words.append(w)
    return words


def _spaced(text: str) -> bool:
    return bool(re.search(r"(?:\b[A-Za-z]\b[\s.\-_*]{1,3}){5,}\b[A-Za-z]\b", text))


def _readable(data: bytes) -> str | None:
    try:
        s = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if len(s) < 8:
        return None
    letters = sum(ch.isalpha() or ch == " " for ch in s)
    return s if letters / len(s) >= 0.8 and " " in s.strip() else None


def decoded_views(text: str) -> list[str]:
    """Readable text hidden in base64 or hex runs of ``text`` (tokens, hashes and ids decode to noise and
    are dropped)."""
    out: list[str] = []
    for m in _B64_RUN.finditer(text):
        run = m.group(0).replace("-", "+").replace("_", "/")
        try:
            data = base64.b64decode(run + "=" * (-len(run) % 4), validate=True)
        except (binascii.Error, ValueError):
            continue
        s = _readable(data)
        if s:
            out.append(s)
    for m in _HEX_RUN.finditer(text):
        try:
            data = bytes.fromhex(re.sub(r"[ :]", "", m.group(0)))
        except ValueError:
            continue
        s = _readable(data)
        if s:
            out.append(s)
    return out


def _hidden_views(text: str) -> list[str]:
    """Decoded runs (base64, hex, binary, Morse, escapes, tag characters, via ``bastioncorpus.decode``), and
    for text that reads like no English at all, its rot13 and reversed forms."""
    views = decoded_views(text)
    try:
        from bastioncorpus.decode import variants
    except ImportError:  # pragma: no cover - a dependency; the base64/hex decoders above still run
        pass
    else:
        views += [d.text for d in variants(text)]
    words = re.findall(r"[a-z]+", text.lower())
    if len(words) >= 4 and sum(w in _COMMON for w in words) / len(words) < 0.1:
        views += [codecs.decode(text, "rot13"), text[::-1]]
    return views


# ------------------------------------------------------------------------------------------ the rules
_LEETISH = re.compile(r"[a-z][0-9@$]|[0-9@$][a-z]", re.IGNORECASE)
_COMMON = frozenset(
    [
        "the",
        "a",
        "an",
        "and",
        "or",
        "to",
        "of",
        "in",
        "on",
        "for",
        "is",
        "are",
        "be",
        "you",
        "your",
        "we",
        "our",
        "it",
        "this",
        "that",
        "with",
        "at",
        "by",
        "from",
        "as",
    ]
)
_AI = (
    r"(?:ai|a i|assistant|assistants|model|models|chatbot|chatbots|bot|bots|llm|llms|gpt|chatgpt|claude|"
    r"copilot|language model|ai agent|ai agents|agent reading this|autonomous agent)"
)
_ANSWERING = (
    r"(?:answer|answers|answering|respond|responding|response|responses|reply|replies|replying|output|outputs|"
    r"completion|completions)"
)
_RULE_TEXT: tuple[tuple[str, str], ...] = (
    # override / forget what the system said
    (
        "override",
        r"\b(ignore|ignoring|disregard|forget|override|bypass)\b(\s+\w+){0,5}\s+"
        r"(instruction|instructions|prompt|prompts|rule|rules|guideline|guidelines|directive|directives|"
        r"guardrail|guardrails|context|restriction|restrictions|safeguards?|filters?|everything above|"
        r"the above|all above|the user)\b",
    ),
    (
        "override",
        r"\b(disregard|forget|ignore)\s+(everything|all|anything)\b(\s+\w+){0,2}\s+(above|before|said|told)\b",
    ),
    (
        "override",
        r"\b(new|updated|revised|real|actual|secret|hidden)\s+(instruction|instructions|directive|directives|orders)\b",
    ),
    (
        "override",
        r"\b(system|developer|hidden|original|initial)\s+(prompt|message|instruction|instructions|update|override)\b",
    ),
    (
        "override",
        r"\b(developer mode|jailbreak|jailbroken|dan mode|god mode|no restrictions|without restrictions|unrestricted|unfiltered|uncensored|without limits|no limits)\b",
    ),
    ("override", r"\bfrom now on\b(\s+\w+){0,3}\s+(you|the|must|always)\b"),
    (
        "override",
        r"\byour\s+(rules|instructions|guidelines|restrictions|policies)\s+(have|has)\s+(changed|been (updated|lifted|removed|changed))\b",
    ),
    (
        "override",
        r"\b(safety|security|content)\s+(protocols?|filters?|checks?|rules?|guidelines?|measures?)\s+"
        r"(are\s+|is\s+|have been\s+)?(disabled|off|lifted|removed|suspended|do not apply|don t apply|no longer apply)\b",
    ),
    (
        "override",
        r"\b(skip|disable|bypass|ignore|turn off)\s+(all\s+)?(the\s+)?(safety|security)\s+(checks?|rules?|filters?|measures?|confirmations?|protocols?)\b",
    ),
    (
        "override",
        r"\b(ignoriere|vergiss|ignora|dimentica|ignorez|oubliez|olvida)\b(\s+\w+){0,5}\s+"
        r"(anweisungen|richtlinien|istruzioni|instructions|instrucciones|regeln|regole|regles|reglas|alles|tutto|tout|todo)\b",
    ),
    # addressed to an AI
    (
        "addressed_to_ai",
        rf"\b(the|this|any|an|all|every|our|your)\s+{_AI}\s+(may|must|should|shall|will|can|cannot|is allowed|"
        r"is permitted|is authorised|is authorized|needs to|has to|ought to|is to|are to|always|never)\b",
    ),
    ("addressed_to_ai", rf"\b{_AI}\s+(must|should|shall|needs? to|has to|is instructed|are instructed)\b"),
    (
        "addressed_to_ai",
        rf"\b(note|message|instruction|instructions|reminder)s?\s+(for|to)\s+(the\s+|any\s+|all\s+)?{_AI}\b",
    ),
    ("addressed_to_ai", rf"\b(if|when|while)\s+you\s+are\s+(an?\s+)?{_AI}\b"),
    ("addressed_to_ai", rf"\b(dear|attention|hey|hello|important for the|for the)\s+{_AI}\b"),
    (
        "addressed_to_ai",
        r"\b(as an ai|as a language model|as an assistant|come assistente|als assistent|en tant qu assistant|como asistente)\b",
    ),
    (
        "addressed_to_ai",
        rf"\b{_AI}\s+(reading|processing|parsing|summari[sz]ing|integrating|indexing)\s+(this|these)\b",
    ),
    ("addressed_to_ai", r"\b(for|to)\s+(ai|llm)\s+(coding\s+)?(agents?|assistants?|models?)\b"),
    # role play
    (
        "role_play",
        rf"\b(you are|you re|youre)\s+(now\s+)?(an?\s+|the\s+)?(unrestricted|new|different|evil)?\s*{_AI}\b",
    ),
    ("role_play", r"\b(you are|you re|youre|du bist|ahora estas|tu es)\s+(now|jetzt|maintenant)\b"),
    ("role_play", r"\b(you now|ab jetzt hast du|ab sofort)\b"),
    (
        "role_play",
        rf"\b(act|behave|operate)\s+as\s+(if\s+you\s+were\s+)?(an?\s+|the\s+)?(unrestricted|different|evil|jailbroken|"
        rf"admin|administrator|root|developer|system|superuser|dan|{_AI})\b",
    ),
    (
        "role_play",
        r"\bpretend\s+(that\s+)?(you|the assistant|the ai)\s+(are|is|have|has|were)\s+(no|not|an?\s+(unrestricted|different|evil|admin|developer))\b",
    ),
    ("role_play", r"\b(roleplay|role play)\s+as\b"),
    ("role_play", r"\bpretend\s+(that\s+)?(you are|you re|youre|to be)\b"),
    # directives about the answer
    ("answer_directive", r"\b(when|while|before|after)\s+(answering|responding|generating|summari[sz]ing)\b"),
    ("answer_directive", r"\b(when|while|before|after)\s+you\s+(answer|respond|generate|summari[sz]e)\b"),
    (
        "answer_directive",
        r"\b(when|while|after|before|if)\s+you\s+(read|process|see|parse|handle|summari[sz]e|index)\s+(this|these|the following)\b",
    ),
    (
        "answer_directive",
        rf"\b(in|to|into|at the (end|start|top|bottom) of)\s+(your|every|each|any|all)\s+({_ANSWERING}|summary|summaries|report|reports)\b",
    ),
    (
        "answer_directive",
        r"\b(every|each|all|any)\s+(future\s+)?(answer|response|reply|summary|report|output)s?\s+(you|that you)\s+(give|write|generate|produce|send)\b",
    ),
    (
        "answer_directive",
        r"\b(every|all)\s+future\s+(replies|reply|tasks|answers|responses|turns|reports|conversations|sessions)\b",
    ),
    (
        "answer_directive",
        r"\b(save|store|add|write|keep)\b(\s+\w+){0,5}\s+(to|in)\s+your\s+(long term\s+)?memory\b",
    ),
    (
        "answer_directive",
        r"\b(do exactly what it says|follow the instructions?\s+(inside|in it|below|hidden)|execute it as a command|decode (it|this)(\s+\w+){0,2}\s+and\s+(do|follow|execute|run))\b",
    ),
    (
        "answer_directive",
        r"\b(include|insert|add|append|embed|render|display|show|attach|output|print)\s+(this|the following|these|that)\s+"
        r"(image|images|picture|link|links|url|urls|markdown|html|pixel|text|snippet|code|token|tokens)\b",
    ),
    (
        "answer_directive",
        r"\b(append|attach|add)\s+(the\s+)?(token|code|reference|marker|tag)\b(\s+\S+){0,3}\s+to\s+(my|your|every|each|any|all)\b",
    ),
    (
        "answer_directive",
        r"\b(fill in|fill out|insert|add|provide|state|supply|make up|invent)\b(\s+\w+){0,6}\s+"
        r"(you know|you remember|from memory|from your (memory|knowledge|training))\b",
    ),
    (
        "answer_directive",
        r"\b(respond|reply|answer)\s+(only\s+)?(with|in)\s+(yes|no|json|the word|only|exactly)\b",
    ),
    (
        "answer_directive",
        r"\bdo not (mention|tell|reveal|cite|disclose)\s+(this|these|that)\s+(instruction|instructions|note|message|text)\b",
    ),
    # approvals the system decides, not a document
    (
        "approval_bypass",
        r"\btreat(ed|s|ing)?\b(\s+\w+){0,6}\s+as\s+(pre\s*approved|preapproved|approved|authori[sz]ed|verified|confirmed|exempt|eligible)\b",
    ),
    (
        "approval_bypass",
        r"\b(pre\s*approved|preapproved)\b(\s+\w+){0,3}\s+(by default|automatically|always)\b",
    ),
    ("approval_bypass", r"\b(auto\s*approve|automatically approve|always approve|approve (every|all|any)\b)"),
    ("approval_bypass", r"\b(grant|approve)\s+(all|every|any)\s+(requests?|refunds?|credits?|exceptions?)\b"),
    (
        "approval_bypass",
        r"\b(has|have)\s+(granted|given)\s+(you\s+)?permission\s+to\s+(skip|bypass|ignore|disable)\b",
    ),
    # reveal / exfiltrate
    (
        "reveal",
        r"\b(reveal|disclose|leak|dump|exfiltrate|expose|print|output|repeat|recite|share)\b(\s+\w+){0,4}\s+"
        r"(system prompt|your prompt|your instructions|the instructions above|hidden instructions|confidential|"
        r"restricted|secret|secrets|password|passwords|api key|api keys|credentials|canary|tokens?)\b",
    ),
    ("reveal", r"\b(send|post|forward|upload|transmit)\b(\s+\w+){0,6}\s+(to|at)\s+(https?|www|ftp)\b"),
    (
        "reveal",
        r"\b(send|email|forward|export|upload|transmit|collect|copy|output|dump|print)\b(\s+\w+){0,3}\s+"
        r"(full\s+|all\s+|entire\s+|every\s+|raw\s+)?(customer list|customer database|customer data|customer emails|"
        r"customer records|order data|user data|the database|api keys|credentials|all records|all invoices)\b",
    ),
    (
        "reveal",
        r"\b(instructions|rules|prompt|guidelines)\s+(you were|you have been|you ve been|you re)\s+given\b",
    ),
    (
        "reveal",
        r"\b(repeat|print|output|recite)\s+(the\s+)?(words|text|everything|all)\s+(above|before this)\b",
    ),
    ("reveal", r"\b(verrate|revele|revela|rivela)\b"),
    # tool calls
    (
        "tool_call",
        r"\b(call|invoke|execute|trigger|run|use|fire)\b(\s+\w+){0,3}\s+(tool|tools|function|functions|api call)\b",
    ),
    ("tool_call", r"\btool\s*call\b"),
)
_RULES = tuple((reason, re.compile(pattern)) for reason, pattern in _RULE_TEXT)


def _anchors(pattern: str) -> tuple[str, ...] | None:
    """The word prefixes a rule's match must start with (its leading alternation), or ``None`` if it has none:
    a sentence runs only the rules one of whose anchors begins one of its words (most run a handful)."""
    m = re.match(r"\\b\((?:\?:)?([^()]*)\)", pattern)
    if not m:
        return None
    out = []
    for alt in m.group(1).split("|"):
        lead = re.match(r"[a-z]+", alt)
        if not lead:
            return None
        out.append(lead.group(0))
    return tuple(out)


_ALWAYS: list[int] = []
_BY_ANCHOR: dict[str, list[int]] = {}
for _i, (_, _pattern) in enumerate(_RULE_TEXT):
    _a = _anchors(_pattern)
    if _a is None:
        _ALWAYS.append(_i)
    else:
        for _prefix in set(_a):
            _BY_ANCHOR.setdefault(_prefix, []).append(_i)
_MAX_ANCHOR = max(map(len, _BY_ANCHOR))


@lru_cache(maxsize=16384)
def _word_rules(word: str) -> frozenset[int]:
    found: set[int] = set()
    for k in range(1, min(len(word), _MAX_ANCHOR) + 1):
        found.update(_BY_ANCHOR.get(word[:k], ()))
    return frozenset(found)


def _candidate_rules(words: list[str]) -> list[int]:
    found = set(_ALWAYS)
    for w in set(words):
        found |= _word_rules(w)
    return sorted(found)


# rules on the visible lower-case text itself (punctuation and underscores matter)
_RAW_RULES = tuple(
    (reason, re.compile(pattern, re.MULTILINE))
    for reason, pattern in (
        ("tool_call", r"\b(use|call|invoke|run|execute|trigger)\s+(the\s+)?`?[a-z]+_[a-z_]+`?"),
        ("tool_call", r"<\s*/?\s*tool_call\s*>"),
        ("override", r"(^|[\n#>]\s*)(system|assistant|developer)\s*:"),
        ("override", r"#{2,}\s*(end|begin|start)\b"),
        ("addressed_to_ai", r"\((assistant|ai|system|model)\)"),
        (
            "override",
            r"\b(modo desarrollador|sin restricciones|keine regeln|uneingeschr[aä]nkt|systemanweisungen|"
            r"instructions syst[eè]me|instrucciones del sistema|istruzioni di sistema|neue anweisungen|"
            r"nota di sistema|nota del sistema|note syst[eè]me|systemhinweis|sicherheitsrichtlinien|"
            r"linee guida di sicurezza|r[eè]gles de s[eé]curit[eé]|reglas de seguridad)",
        ),
    )
)
_SQUASHED = (
    "ignorepreviousinstructions",
    "ignoreallpreviousinstructions",
    "ignorepriorinstructions",
    "ignoreyourinstructions",
    "ignoreallinstructions",
    "ignoretheabove",
    "disregardpreviousinstructions",
    "disregardtheabove",
    "forgetpreviousinstructions",
    "forgetyourinstructions",
    "previousinstructions",
    "priorinstructions",
    "systemprompt",
    "developermode",
    "jailbreak",
    "newinstructions",
    "revealthesystem",
    "revealyourprompt",
)


@dataclass(frozen=True)
class Screened:
    """The verdict on one sentence. ``reasons`` are rule names (``override``, ``addressed_to_ai``,
    ``role_play``, ``answer_directive``, ``approval_bypass``, ``reveal``, ``tool_call``) and structural tells
    (``invisible_tags``, ``homoglyphs``, ``spaced_letters``, ``encoded_payload``)."""

    text: str
    reasons: tuple[str, ...] = ()

    @property
    def instruction(self) -> bool:
        return bool(self.reasons)


def _rule_reasons(text: str) -> list[str]:
    lowered = text.lower().translate(_CONFUSABLES)
    reasons: list[str] = [r for r, p in _RAW_RULES if p.search(lowered)]
    for leet in (False, True):
        words = _words(text, leet=leet)
        joined = " ".join(words)
        for i in _candidate_rules(words):
            reason, pattern = _RULES[i]
            if reason not in reasons and pattern.search(joined):
                reasons.append(reason)
        squashed = "".join(words)
        if not reasons and any(s in squashed for s in _SQUASHED):
            reasons.append("override")
        if reasons or not _LEETISH.search(text):
            break
    return reasons


@lru_cache(maxsize=65536)
def screen_sentence(text: str) -> Screened:
    """Classify one sentence (see module docstring). Pure and cached."""
    visible, tags = _visible(text)
    reasons = _rule_reasons(visible)
    if tags:
        reasons.append("invisible_tags")
    if _mixed_script(visible):
        reasons.append("homoglyphs")
    if _spaced(visible) and reasons:
        reasons.append("spaced_letters")
    if "encoded_payload" not in reasons:
        for view in _hidden_views(visible):
            if _rule_reasons(view):
                reasons.append("encoded_payload")
                break
    return Screened(text, tuple(dict.fromkeys(reasons)))


def is_instruction(text: str) -> bool:
    """Whether ``text`` addresses an AI rather than informing a reader (:func:`screen_sentence`)."""
    return screen_sentence(text).instruction


# ------------------------------------------------------------------------------------------ documents
@dataclass
class DocumentScreen:
    """The screened sentences of one text: each with its reasons, and the text without them."""

    flagged: list[Screened] = field(default_factory=list)
    cleaned: str = ""

    @property
    def reasons(self) -> list[str]:
        return sorted({r for s in self.flagged for r in s.reasons})

    def as_dict(self) -> list[dict[str, object]]:
        return [{"sentence": s.text[:300], "reasons": list(s.reasons)} for s in self.flagged]


# a sentence ends at . ! ? (closing quotes and invisible format characters may follow: a smuggled tag run
# right after the full stop must not glue the next, honest sentence to the screened one)
_SENT_END = re.compile(r"(?<=[.!?])([\"'”’)\u200b-\u200f\u2060-\u2064\ufeff\U000e0000-\U000e007f]*)\s+")


def _sentences(line: str) -> list[str]:
    """``line`` split into sentences; closing quotes and format characters stay with their sentence."""
    parts = _SENT_END.split(line)
    out = [parts[0]]
    for closer, piece in zip(parts[1::2], parts[2::2], strict=True):
        out[-1] += closer
        out.append(piece)
    return out


def screen_text(text: str) -> DocumentScreen:
    """Screen every sentence of a document's text (markdown or plain). ``cleaned`` is the text with each
    instruction sentence removed in place — lines, headings and the other sentences are kept as they are,
    so chunking, citations and quoting work on the cleaned text exactly as on the original.

    Pure, so cached by text (retrieved passages repeat across requests; every request checks them)."""
    flagged, cleaned = _screen_text(text)
    return DocumentScreen(flagged=list(flagged), cleaned=cleaned)


@functools.lru_cache(maxsize=4096)
def _screen_text(text: str) -> tuple[tuple[Screened, ...], str]:
    result = DocumentScreen()
    out_lines: list[str] = []
    for line in text.splitlines(keepends=True):
        if not line.strip():
            out_lines.append(line)
            continue
        pieces = _sentences(line.rstrip("\n"))
        bad = [p for p in pieces if p.strip() and screen_sentence(_strip_markup(p)).instruction]
        if not bad:
            out_lines.append(line)
            continue
        for p in bad:
            result.flagged.append(screen_sentence(_strip_markup(p)))
        kept = " ".join(p for p in pieces if p not in bad).rstrip()
        if kept.strip(" \t>-*#|"):
            out_lines.append(kept + ("\n" if line.endswith("\n") else ""))
    return tuple(result.flagged), "".join(out_lines)


def _strip_markup(piece: str) -> str:
    return re.sub(r"^\s*(?:[-*+•>]|\d+[.)]|#+)\s*", "", piece).strip()


def instruction_sentences(texts: Iterable[str]) -> list[Screened]:
    """The instruction sentences among ``texts`` (already split)."""
    return [s for s in (screen_sentence(t) for t in texts) if s.instruction]


# ------------------------------------------------------------------------------------------ sync
SCREENING_STATES = ("excluded", "quarantined", "approved")


def _flagged_state(source: Any, doc: Any, row: Any) -> str:
    """A flagged document's state: ``approved`` when its owner approved this content, else what the
    source's ``screening`` setting says."""
    approved = row is not None and row.state == "approved" and row.content_hash == doc.content_hash
    mode = getattr(source, "screening", "exclude")
    return "approved" if approved else ("quarantined" if mode == "quarantine" else "excluded")


def _warn(summary: Any, source: Any, doc: Any, result: DocumentScreen, state: str) -> None:
    """The sync summary's warning for a flagged document (at most 200 per sync)."""
    what = {
        "excluded": "were excluded from the index",
        "quarantined": "keep the document out of the index (quarantined) until the owner approves it "
        f"(charter sources approve {source.id} {doc.doc_id})",
        "approved": "were excluded from the index (the document was approved by its owner)",
    }[state]
    if len(summary.warnings) < 200:
        summary.warnings.append(
            {
                "doc_id": doc.doc_id,
                "reason": f"{len(result.flagged)} instruction sentence(s) addressed to an assistant "
                f"({', '.join(result.reasons)}) {what}; the owner ({source.owner}) should review the document",
            }
        )


def _record_flag(
    rt: Any, source: Any, doc: Any, result: DocumentScreen, row: Any, state: str, actor: str
) -> None:
    """Store a new or changed flag (``source_screening``) and audit it (``sources.screened``)."""
    from charter.store import utcnow
    from charter.store.tables import source_screening as t

    approved = state == "approved"
    values = {
        "source_id": source.id,
        "doc_id": doc.doc_id,
        "title": doc.title,
        "content_hash": doc.content_hash,
        "state": state,
        "reasons": result.reasons,
        "sentences": result.as_dict()[:20],
        "flagged_at": utcnow(),
        "approved_by": row.approved_by if approved and row is not None else None,
        "approved_at": row.approved_at if approved and row is not None else None,
    }
    with rt.store.begin() as conn:
        conn.execute(t.delete().where(t.c.source_id == source.id, t.c.doc_id == doc.doc_id))
        conn.execute(t.insert().values(**values))
    rt.audit.append(
        actor=actor,
        action="sources.screened",
        resource=f"source:{source.id}",
        outcome="quarantined" if state == "quarantined" else "flagged",
        details={
            "doc_id": doc.doc_id,
            "owner": source.owner,
            "state": state,
            "content_hash": doc.content_hash,
            "sentences": result.as_dict()[:20],
        },
    )


def screen_pending(
    rt: Any, source: Any, pending: list[tuple[Any, Any]], summary: Any, *, actor: str = "system"
) -> tuple[list[tuple[Any, Any]], list[str]]:
    """The sync hook: screen a batch of read documents before they are indexed. Returns the documents to
    index and the ids of the documents kept out of the index (quarantined).

    A document whose text carries instruction sentences is flagged to the source owner: a row in
    ``source_screening`` (listed by ``charter sources show``, the operator report and the console's Sources
    page), a warning in the sync summary and, when it is newly flagged (or its content or state changed),
    an audit event ``sources.screened`` with each sentence and its reasons. What happens to it depends on
    the source's ``screening`` setting:

    * ``exclude`` (default) — indexed with the instruction sentences removed (the cleaned text, so they can
      never be retrieved, quoted or noted); state ``excluded``.
    * ``quarantine`` — not indexed at all (state ``quarantined``; the caller deletes any earlier version from
      the index) until the source owner approves it (:func:`approve_screened`). The approval is bound to the
      content hash of the text as read: a changed document is quarantined again. An approved document is
      indexed like an excluded one (its instruction sentences still removed).

    Documents without instructions pass unchanged (same object, same content hash, so an unchanged document
    stays unchanged) and lose any earlier flag."""
    from dataclasses import replace

    from sqlalchemy import select

    from charter.store.tables import source_screening as t

    ids = [doc.doc_id for doc, _ in pending]
    with rt.store.connect() as conn:
        rows = {
            r.doc_id: r
            for r in conn.execute(select(t).where(t.c.source_id == source.id, t.c.doc_id.in_(ids)))
        }
    out: list[tuple[Any, Any]] = []
    quarantined: list[str] = []
    cleared: list[str] = []
    for doc, read_at in pending:
        result = screen_text(doc.text) if not doc.pages else _screen_pages(doc)
        if not result.flagged:
            out.append((doc, read_at))
            if doc.doc_id in rows:
                cleared.append(doc.doc_id)
            continue
        row = rows.get(doc.doc_id)
        state = _flagged_state(source, doc, row)
        _warn(summary, source, doc, result, state)
        if row is None or row.content_hash != doc.content_hash or row.state != state:
            _record_flag(rt, source, doc, result, row, state, actor)
        if state == "quarantined":
            quarantined.append(doc.doc_id)
        elif doc.pages:
            pages = tuple(screen_text(p).cleaned for p in doc.pages)
            out.append((replace(doc, text="\n".join(pages), pages=pages), read_at))
        else:
            out.append((replace(doc, text=result.cleaned), read_at))
    if cleared:
        with rt.store.begin() as conn:
            conn.execute(t.delete().where(t.c.source_id == source.id, t.c.doc_id.in_(cleared)))
    return out, quarantined


def forget_screened(rt: Any, source_id: str, keep: Iterable[str] | None = None) -> None:
    """Drop the screening rows of ``source_id``'s documents that are no longer at the source (all of
    them when ``keep`` is ``None``: the source left the charter)."""
    from sqlalchemy import select

    from charter.store.tables import source_screening as t

    with rt.store.begin() as conn:
        if keep is None:
            conn.execute(t.delete().where(t.c.source_id == source_id))
            return
        kept = set(keep)
        gone = [
            d
            for d in conn.execute(select(t.c.doc_id).where(t.c.source_id == source_id)).scalars()
            if d not in kept
        ]
        if gone:
            conn.execute(t.delete().where(t.c.source_id == source_id, t.c.doc_id.in_(gone)))


def screened_documents(rt: Any, source_id: str | None = None) -> list[dict[str, Any]]:
    """The flagged documents (of one source, or all), newest first: ``source``, ``doc_id``, ``title``,
    ``state`` (``excluded`` | ``quarantined`` | ``approved``), ``reasons``, ``sentences``, ``content_hash``,
    ``flagged_at``, ``approved_by``, ``approved_at``. Sentences are the screened text itself: show them
    only to the source's owner (they come from its documents)."""
    from sqlalchemy import select

    from charter.store.tables import source_screening as t

    query = select(t).order_by(t.c.flagged_at.desc(), t.c.source_id, t.c.doc_id)
    if source_id is not None:
        query = query.where(t.c.source_id == source_id)
    with rt.store.connect() as conn:
        rows = conn.execute(query).all()
    return [
        {
            "source": r.source_id,
            "doc_id": r.doc_id,
            "title": r.title,
            "state": r.state,
            "reasons": list(r.reasons or []),
            "sentences": list(r.sentences or []),
            "content_hash": r.content_hash,
            "flagged_at": r.flagged_at.isoformat() if r.flagged_at else None,
            "approved_by": r.approved_by,
            "approved_at": r.approved_at.isoformat() if r.approved_at else None,
        }
        for r in rows
    ]


def approve_screened(
    rt: Any, source: Any, doc_id: str, *, actor: str, content_hash: str | None = None
) -> str:
    """Record the source owner's approval of a quarantined document; returns the approved content hash.

    The approval is bound to the content hash recorded when the document was quarantined (and, when
    ``content_hash`` is given, it must match it: the owner approves what they reviewed). The caller checks
    that ``actor`` may approve (the source owner or the charter's sources owner) and runs a sync of the
    source so the document is indexed. Audited as ``sources.screening_approved``."""
    from sqlalchemy import select

    from charter.errors import Conflict, NotFound
    from charter.store import utcnow
    from charter.store.tables import source_screening as t

    with rt.store.begin() as conn:
        row = conn.execute(select(t).where(t.c.source_id == source.id, t.c.doc_id == doc_id)).first()
        if row is None or row.state != "quarantined":
            state = "not flagged" if row is None else row.state
            raise NotFound(
                f"document {doc_id!r} of source {source.id!r} is not quarantined ({state}); "
                f"`charter sources show {source.id}` lists the flagged documents"
            )
        if content_hash is not None and not row.content_hash.startswith(content_hash):
            raise Conflict(
                f"document {doc_id!r} changed since you reviewed it (content hash {row.content_hash[:12]}, "
                f"not {content_hash[:12]}); review it again"
            )
        conn.execute(
            t.update()
            .where(t.c.source_id == source.id, t.c.doc_id == doc_id)
            .values(state="approved", approved_by=actor, approved_at=utcnow())
        )
    rt.audit.append(
        actor=actor,
        action="sources.screening_approved",
        resource=f"source:{source.id}",
        outcome="success",
        details={"doc_id": doc_id, "content_hash": row.content_hash, "reasons": list(row.reasons or [])},
    )
    return str(row.content_hash)


def _screen_pages(doc: Any) -> DocumentScreen:
    result = DocumentScreen()
    for page in doc.pages:
        result.flagged += screen_text(page).flagged
    return result
