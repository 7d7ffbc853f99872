"""Build the PostgreSQL-documentation fusion benchmark corpus (BEIR layout) from Debian's HTML docs.

    python bench/data/build_pgdocs_corpus.py OUT_DIR [--html /usr/share/doc/postgresql-doc-15/html]

One document per HTML page (``doc_id`` = the file name, e.g. ``monitoring-stats.html``): the page title and
the text of its content (navigation header and footer dropped). The book index, the table-of-contents pages
without prose and the release notes are left out (they list every term, or repeat the rest of the book).
``--budget-chars`` keeps every judged page and fills the rest of a character budget with other pages in a
fixed pseudo-random order (embedding the whole book takes about an hour on a loaded 2-core machine).
The questions and their judgments are ``bench/data/pgdocs_questions.json``, written and judged by hand
against these pages; they are copied to ``queries.jsonl`` and ``qrels/test.tsv``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
from pathlib import Path

from _beir import write_beir  # bench/data/_beir.py (this script's folder is on sys.path)
from lxml import html as lhtml

HERE = Path(__file__).resolve().parent
DEFAULT_HTML = Path("/usr/share/doc/postgresql-doc-15/html")
SKIP = re.compile(r"^(bookindex|release-.*|index|biblio)\.html$")


def page_text(path: Path) -> tuple[str, str]:
    tree = lhtml.parse(str(path))
    root = tree.getroot()
    for bad in root.xpath("//div[@class='navheader'] | //div[@class='navfooter'] | //div[@class='toc']"):
        bad.getparent().remove(bad)
    title = " ".join((root.findtext(".//title") or "").split())
    body = root.find("body")
    text = " ".join((body.text_content() if body is not None else "").split())
    return title, text


def build(out: Path, html_dir: Path, budget: int | None) -> None:
    docs = []
    for path in sorted(html_dir.glob("*.html")):
        if SKIP.match(path.name):
            continue
        title, text = page_text(path)
        if len(text) < 200:
            continue
        docs.append({"_id": path.name, "title": title, "text": text})
    spec = json.loads((HERE / "pgdocs_questions.json").read_text(encoding="utf-8"))
    if budget is not None:  # the judged pages, then other pages in a fixed pseudo-random order
        judged = {p for q in spec["questions"] for p in q["relevant"]}
        ordered = [d for d in docs if d["_id"] in judged] + sorted(
            (d for d in docs if d["_id"] not in judged),
            key=lambda d: hashlib.sha256(d["_id"].encode()).digest(),
        )
        kept, used = [], 0
        for d in ordered:
            if d["_id"] in judged or used + len(d["text"]) <= budget:
                kept.append(d)
                used += len(d["text"])
        docs = sorted(kept, key=lambda d: d["_id"])
    write_beir(out, docs, spec["questions"])
    print(f"{len(docs)} pages, {len(spec['questions'])} questions -> {out}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--html", type=Path, default=DEFAULT_HTML)
    ap.add_argument(
        "--budget-chars",
        type=int,
        default=None,
        help="keep every judged page and other pages (fixed pseudo-random order) up to this many characters",
    )
    a = ap.parse_args()
    build(a.out, a.html, a.budget_chars)
