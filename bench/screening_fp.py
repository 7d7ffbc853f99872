"""Instruction screening on text that carries no instructions: how many sentences of real documentation
``charter.screening`` would exclude from the index (every one of them a false positive).

    python bench/screening_fp.py FOLDER [--examples 20] [--json out.json]

``FOLDER`` holds ``.txt`` / ``.md`` files (e.g. whole manual pages:
``python bench/data/build_manpages_corpus.py FOLDER --full-text 20000000``, then ``--full-text 11000000``
to add the next 11 MB — the 4,095 pages measured in ``docs/benchmarks.md``). Each file is screened as a sync
screens a document (``screen_text``); sentences are counted with the screener's own splitter. Reported:
files, sentences, flagged sentences and files, by reason, and by the first component of the file name
(``gcloud_…``, ``git-…``) so that one family of pages cannot hide the rest.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))


def family(name: str) -> str:
    for sep in ("_", "-", "."):
        name = name.split(sep)[0]
    return name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--examples", type=int, default=20, help="flagged sentences to print")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    from charter.screening import _sentences, screen_text

    files = sorted(p for p in args.folder.iterdir() if p.suffix in {".txt", ".md"} and p.is_file())
    if not files:
        raise SystemExit(f"{args.folder}: no .txt or .md files")
    t = time.perf_counter()
    sentences = flagged = 0
    flagged_files: list[str] = []
    reasons: collections.Counter[str] = collections.Counter()
    per_family: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])  # files, flagged files
    examples: list[dict[str, str]] = []
    for p in files:
        text = p.read_text(encoding="utf-8", errors="replace")
        sentences += sum(
            1 for line in text.splitlines() if line.strip() for s in _sentences(line) if s.strip()
        )
        result = screen_text(text)
        fam = per_family[family(p.name)]
        fam[0] += 1
        if result.flagged:
            fam[1] += 1
            flagged_files.append(p.name)
        flagged += len(result.flagged)
        for s in result.flagged:
            reasons.update(s.reasons)
            if len(examples) < args.examples:
                examples.append(
                    {"file": p.name, "reasons": ",".join(s.reasons), "sentence": s.text.strip()[:200]}
                )
    report = {
        "folder": str(args.folder),
        "files": len(files),
        "sentences": sentences,
        "flagged_sentences": flagged,
        "flagged_sentence_share": round(flagged / max(sentences, 1), 5),
        "flagged_files": len(flagged_files),
        "flagged_file_share": round(len(flagged_files) / len(files), 4),
        "reasons": dict(reasons.most_common()),
        "families": {
            f: {"files": n, "flagged_files": k}
            for f, (n, k) in sorted(per_family.items(), key=lambda kv: -kv[1][0])
            if n >= 10 or k
        },
        "seconds": round(time.perf_counter() - t, 1),
        "examples": examples,
    }
    print(
        f"{report['files']} files, {sentences} sentences: {flagged} flagged "
        f"({100 * report['flagged_sentence_share']:.2f} %) in {len(flagged_files)} files "
        f"({100 * report['flagged_file_share']:.1f} %); reasons {report['reasons']}"
    )
    big = {f: v for f, v in per_family.items() if v[0] >= 100}
    rest = [v for f, v in per_family.items() if f not in big]
    for f, (n, k) in big.items():
        print(f"  {f}: {k} of {n} files flagged")
    print(f"  every other family: {sum(k for _, k in rest)} of {sum(n for n, _ in rest)} files flagged")
    for e in examples:
        print(f"  {e['file']} [{e['reasons']}] {e['sentence']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
