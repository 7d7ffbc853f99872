"""Build an entity-centric fusion benchmark corpus (BEIR layout) from the manual pages installed on this
machine: one short abstract per command, like an encyclopedia's abstract of an entity.

    python bench/data/build_manpages_corpus.py OUT_DIR [--max-docs 5000] [--man-dir /usr/share/man]

One document per page of sections 1 and 8 (``doc_id`` = the page's file name without ``.gz``, e.g.
``tac.1``): the NAME line, then the first paragraphs of DESCRIPTION, cut to 800 characters — rendered by
``man`` itself (``MANWIDTH`` wide, no hyphenation or justification). Pages that only redirect to another
(``.so``), symlinks, pages without a NAME or DESCRIPTION and pages whose abstract repeats another's are left
out. When there are more pages than ``--max-docs`` a deterministic subset is kept (pages in the order of
their name's SHA-256; every judged page is always in it), so two machines with the same pages build the same
corpus.

The questions (``bench/data/manpages_questions.json``) were written by hand *without naming the command* —
as questions over an encyclopedia of entities — and judged against these abstracts. The corpus is not
committed (it is whatever Debian's packages on the machine install); the script refuses to build when a
judged page is missing.

``--keyword-queries`` writes the same questions without function words ("put lines text random order"), the
way people type into a search box. ``--full-text CHARS`` writes whole rendered pages instead (``DOC_ID.txt``, same order), for a ``folder``
source: the real-text store of ``bench/hnsw_recall.py`` at 100k chunks and ``bench/screening_fp.py``.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _beir import keywords, write_beir  # bench/data/_beir.py (this script's folder is on sys.path)

HERE = Path(__file__).resolve().parent
SECTIONS = ("man1", "man8")
ABSTRACT_CHARS = 800
HEADING = re.compile(r"^[A-Z][A-Z0-9 ,/&()-]*$")


def pages(man_dir: Path) -> list[Path]:
    out = []
    for sec in SECTIONS:
        d = man_dir / sec
        if not d.is_dir():
            continue
        for p in sorted(d.iterdir()):
            if p.is_symlink() or not p.is_file():
                continue
            out.append(p)
    return out


def doc_id(page: Path) -> str:
    return page.name.removesuffix(".gz")


def _hash_order(page: Path) -> bytes:
    """The deterministic page order of both outputs (the same on any machine with the same pages)."""
    return hashlib.sha256(doc_id(page).encode()).digest()


def _redirect_or_unreadable(page: Path) -> bool:
    """A page that only points at another (``.so``), or whose source cannot be read."""
    opener = gzip.open if page.suffix == ".gz" else open
    try:
        with opener(page, "rb") as f:
            head = f.read(256).lstrip()
    except (OSError, EOFError):
        return True
    return not head or head.startswith(b".so ")


def render(page: Path) -> str:
    env = {**os.environ, "MANWIDTH": "2000", "MAN_KEEP_FORMATTING": "", "LC_ALL": "C.UTF-8"}
    r = subprocess.run(
        ["man", "--nh", "--nj", "-l", str(page)],
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    )
    return r.stdout.decode("utf-8", errors="replace")


def sections(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line and not line[0].isspace() and HEADING.match(line.strip()):
            current = line.strip()
            out.setdefault(current, [])
        elif current is not None:
            out[current].append(line.strip())
    return out


def abstract(page: Path) -> str | None:
    if _redirect_or_unreadable(page):
        return None
    secs = sections(render(page))
    name = " ".join(x for x in secs.get("NAME", []) if x).strip()
    desc_lines = secs.get("DESCRIPTION", [])
    if not name or not desc_lines:
        return None
    paragraphs, cur = [], []
    for line in desc_lines:
        if line:
            cur.append(line)
        elif cur:
            paragraphs.append(" ".join(cur))
            cur = []
    if cur:
        paragraphs.append(" ".join(cur))
    text = name.rstrip(".") + ". " + " ".join(paragraphs)
    text = re.sub(r"\s+", " ", text).strip()
    if len(text) > ABSTRACT_CHARS:
        text = text[:ABSTRACT_CHARS].rsplit(" ", 1)[0]
    return text if len(text) >= 60 else None


def build(out: Path, max_docs: int, man_dir: Path, keyword_queries: bool = False) -> None:
    spec = json.loads((HERE / "manpages_questions.json").read_text(encoding="utf-8"))
    if keyword_queries:
        spec["questions"] = [{**q, "text": keywords(q["text"])} for q in spec["questions"]]
    judged = {d for q in spec["questions"] for d in q["relevant"]}
    every = pages(man_dir)
    by_id = {doc_id(p): p for p in every}
    if missing := judged - set(by_id):
        raise SystemExit(f"judged manual pages not installed here: {sorted(missing)}")
    order = [by_id[d] for d in sorted(judged)] + sorted(
        (p for p in every if doc_id(p) not in judged), key=_hash_order
    )
    docs: dict[str, str] = {}
    seen_text: set[str] = set()
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        start = 0
        while len(docs) < max_docs and start < len(order):
            batch = order[start : start + 256]
            start += len(batch)
            for page, text in zip(batch, pool.map(abstract, batch), strict=True):
                did = doc_id(page)
                if text is None:
                    if did in judged:
                        raise SystemExit(f"judged page {did} has no NAME/DESCRIPTION abstract")
                    continue
                if text in seen_text and did not in judged:
                    continue
                seen_text.add(text)
                if len(docs) < max_docs or did in judged:
                    docs[did] = text
            print(f"\r{len(docs)} abstracts from {start} pages", end="", flush=True)
    print()
    write_beir(out, ({"_id": d, "title": "", "text": t} for d, t in sorted(docs.items())), spec["questions"])
    print(f"{len(docs)} pages, {len(spec['questions'])} questions -> {out}")


def full_text(out: Path, budget_chars: int, man_dir: Path) -> None:
    """Whole rendered pages as ``DOC_ID.txt`` files (a folder a ``folder`` source can sync), in the same
    deterministic order, until ``budget_chars`` characters are written; pages already in ``out`` are kept and
    count towards nothing, so a second call with a larger budget adds the next pages."""
    out.mkdir(parents=True, exist_ok=True)
    order = sorted(pages(man_dir), key=_hash_order)
    todo = [p for p in order if not (out / f"{doc_id(p)}.txt").exists()]
    written = n = 0
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        for start in range(0, len(todo), 64):
            batch = [p for p in todo[start : start + 64] if not _redirect_or_unreadable(p)]
            for page, text in zip(batch, pool.map(render, batch), strict=True):
                text = re.sub(r"[ \t]+\n", "\n", text).strip()
                if len(text) < 200:
                    continue
                (out / f"{doc_id(page)}.txt").write_text(text, encoding="utf-8")
                written += len(text)
                n += 1
            print(f"\r{n} pages, {written / 1e6:.1f} MB", end="", flush=True)
            if written >= budget_chars:
                break
    print()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--max-docs", type=int, default=5000)
    ap.add_argument("--man-dir", type=Path, default=Path("/usr/share/man"))
    ap.add_argument(
        "--keyword-queries",
        action="store_true",
        help="write the questions without function words, as keyword queries (same judgements)",
    )
    ap.add_argument(
        "--full-text",
        type=int,
        metavar="CHARS",
        help="instead of the abstracts corpus: write whole pages as .txt files into OUT until CHARS characters",
    )
    a = ap.parse_args()
    if a.full_text:
        full_text(a.out, a.full_text, a.man_dir)
    else:
        build(a.out, a.max_docs, a.man_dir, a.keyword_queries)
