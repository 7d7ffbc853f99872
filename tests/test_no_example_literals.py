"""Nothing in ``src/`` assumes the billing example (issue 17): the examples' vocabulary — their company, their
tools, their documents' words — appears only in ``examples/``.

What is allowed stays listed here with the reason, so a new occurrence fails and has to be argued for."""

from __future__ import annotations

import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "charter"

#: Words that belong to one example workflow (billing support, the order desk), not to the product.
EXAMPLE_WORDS = re.compile(
    r"billing|invoice|quillo|refund|chargeback|customer|\{agent\}|issue_refund|lookup_invoice|send_reply|"
    r"order[-_ ]desk|ORD-\d",
    re.IGNORECASE,
)

#: (file relative to src/charter, the words it may contain, why)
ALLOWED: list[tuple[str, set[str], str]] = [
    # migrations are history: a column had this name once, and downgrades must restore it
    ("store/migrations/versions/0012_access.py", {"customer"}, "the column's name at revision 0012"),
    ("store/migrations/versions/0019_subject.py", {"customer"}, "the rename of that column"),
    # attack vocabulary: what an injected sentence asks for, in any commerce workflow
    ("screening.py", {"customer", "refund", "invoice"}, "exfiltration and approval-bypass patterns"),
    # generic nouns a vague job description is made of ("help customers with their questions")
    ("gate/_checks.py", {"customer"}, "the vague-job vocabulary"),
]


def _source_files() -> list[Path]:
    return [
        p
        for p in sorted(SRC.rglob("*"))
        if p.is_file()
        and p.suffix in {".py", ".html", ".js", ".css", ".yaml", ".md", ".cedar", ".txt"}
        and "examples" not in p.relative_to(SRC).parts
        and "__pycache__" not in p.parts
    ]


def test_no_example_literal_in_src() -> None:
    allowed = {f: words for f, words, _ in ALLOWED}
    found = []
    for path in _source_files():
        rel = path.relative_to(SRC).as_posix()
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for m in EXAMPLE_WORDS.finditer(line):
                word = m.group(0).lower()
                if not any(word.startswith(w) for w in allowed.get(rel, set())):
                    found.append(f"src/charter/{rel}:{n}: {m.group(0)!r} in {line.strip()[:100]}")
    assert not found, "example vocabulary in src/ (move it to examples/ or make it general):\n" + "\n".join(
        found
    )


def test_the_allowed_list_is_still_needed() -> None:
    for rel, words, why in ALLOWED:
        text = (SRC / rel).read_text(encoding="utf-8").lower()
        for w in words:
            assert w in text, f"{rel} no longer contains {w!r} ({why}): remove it from ALLOWED"


def test_the_check_sees_the_words() -> None:
    """The check must be able to fail: the examples themselves are full of these words."""
    billing = SRC.parent.parent / "examples" / "billing-support"
    hits = sum(len(EXAMPLE_WORDS.findall(p.read_text(encoding="utf-8"))) for p in billing.rglob("*.yaml"))
    assert hits > 20
