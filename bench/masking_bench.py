"""Masking benchmark: recall per value kind × surrounding context on generated compositions, side by side with
Presidio's default analyzer on the same texts, and the false-positive rate on the billing example.

Compositions come from ``tests/telemetry/_masking_values.py`` (the generator the property tests use; fixed
seed): filler sentences holding 1–4 values — cards of every brand and grouping (separators ``space - . / _``,
runs of spaces, no-break spaces), phones in E.164 / international / national form for 15 regions, e-mails,
IBANs for 12 countries (grouped, compact, lower-case), API keys, bearer tokens, JWTs, private keys and canary
tokens — each surrounded according to a context: ``plain``, ``punctuation``, ``brackets_quotes``,
``line_breaks``, ``markdown`` or ``unicode`` (full-width characters, zero-width and bidi controls inside,
any punctuation around). A value is **recalled** when every letter and digit of it lies inside a masked span
(Charter: ``PatternMasker.findings``; Presidio: any entity its default analyzer reports).

False positives: every non-empty line of the example's source documents, the eval questions and the demo data
(``examples/billing-support``) is masked; a finding is a false positive unless an independent check confirms
it (an e-mail address, a canary token the README lists). Invoice numbers, dates, amounts and plan names found
in those lines are counted separately: none may be masked.

    python bench/masking_bench.py [--compositions 10000] [--seed 24] [--presidio-limit N] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests" / "telemetry"), str(ROOT)]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _masking_values import CONTEXTS, GENERATORS, compose, presidio_builtin_analyzer  # noqa: E402

EXAMPLE = ROOT / "examples" / "billing-support"
READABLE = {
    "invoice number": re.compile(r"\bINV-\d{4}-\d{3,5}\b"),
    "date": re.compile(
        r"\b\d{4}-\d{2}-\d{2}\b|\b\d{1,2} (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)\w* \d{4}\b"
    ),
    "amount": re.compile(r"(?:[$€£]\s?\d[\d,]*(?:\.\d{2})?|\b\d[\d,]*\.\d{2}\s?(?:USD|EUR|GBP)\b)"),
    "plan name": re.compile(r"\b(?:Starter|Team|Business|Enterprise|Pro)\b(?: plan)?"),
}


def _spans_cover(spans: list[tuple[int, int]], text: str, start: int, end: int) -> bool:
    return all(any(s <= i < e for s, e in spans) for i in range(start, end) if text[i].isalnum())


def _value_positions(text: str, values: tuple[tuple[str, str], ...]) -> list[tuple[str, int, int]]:
    out, pos = [], 0
    for kind, value in values:
        i = text.find(value, pos)
        assert i >= 0, (value, text)
        out.append((kind, i, i + len(value)))
        pos = i + len(value)
    return out


def recall(n: int, seed: int, presidio_limit: int | None) -> dict[str, Any]:
    from charter.telemetry.masking import PatternMasker

    masker = PatternMasker(b"bench", cache_size=0)
    rng = random.Random(seed)
    cells = [(k, c) for k in sorted(GENERATORS) for c in CONTEXTS]
    comps = []
    for i in range(n):  # the first value cycles through every kind × context; 0–3 random others join it
        kind, context = cells[i % len(cells)]
        kinds = [kind, *(rng.choice(sorted(GENERATORS)) for _ in range(rng.randint(0, 3)))]
        rng.shuffle(kinds)
        comps.append(compose(rng, kinds=kinds, context=context))
    hit: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    t0 = time.perf_counter()
    found = [[(s, e) for s, e, _ in masker.findings(c.text)] for c in comps]
    charter_s = time.perf_counter() - t0
    presidio = presidio_builtin_analyzer(default=True)
    p_limit = n if presidio_limit is None else min(n, presidio_limit)
    p_hit: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    t0 = time.perf_counter()
    p_found = [[(r.start, r.end) for r in presidio.analyze(c.text, language="en")] for c in comps[:p_limit]]
    presidio_s = time.perf_counter() - t0
    values = 0
    for i, c in enumerate(comps):
        for kind, s, e in _value_positions(c.text, c.values):
            values += 1
            cell = hit[(kind, c.context)]
            cell[1] += 1
            cell[0] += _spans_cover(found[i], c.text, s, e)
            if i < p_limit:
                pc = p_hit[(kind, c.context)]
                pc[1] += 1
                pc[0] += _spans_cover(p_found[i], c.text, s, e)
    table = {
        kind: {
            ctx: {
                "charter": round(hit[(kind, ctx)][0] / hit[(kind, ctx)][1], 4)
                if hit[(kind, ctx)][1]
                else None,
                "presidio": round(p_hit[(kind, ctx)][0] / p_hit[(kind, ctx)][1], 4)
                if p_hit[(kind, ctx)][1]
                else None,
                "values": hit[(kind, ctx)][1],
            }
            for ctx in CONTEXTS
        }
        for kind in sorted(GENERATORS)
    }
    per_kind = {
        kind: {
            "charter": round(
                sum(hit[(kind, c)][0] for c in CONTEXTS) / max(1, sum(hit[(kind, c)][1] for c in CONTEXTS)), 4
            ),
            "presidio": round(
                sum(p_hit[(kind, c)][0] for c in CONTEXTS)
                / max(1, sum(p_hit[(kind, c)][1] for c in CONTEXTS)),
                4,
            ),
        }
        for kind in sorted(GENERATORS)
    }
    return {
        "compositions": n,
        "values": values,
        "presidio_compositions": p_limit,
        "per_kind": per_kind,
        "kind_x_context": table,
        "charter_ms_per_text": round(1000 * charter_s / n, 3),
        "presidio_ms_per_text": round(1000 * presidio_s / max(1, p_limit), 3),
        "misses": [
            c.text
            for i, c in enumerate(comps)
            if any(not _spans_cover(found[i], c.text, s, e) for _, s, e in _value_positions(c.text, c.values))
        ][:10],
    }


def example_lines() -> dict[str, list[str]]:
    import yaml

    docs = [
        line
        for p in sorted((EXAMPLE / "sources").rglob("*"))
        if p.is_file() and p.suffix in (".md", ".txt", ".html", ".yaml", ".json")
        for line in p.read_text(errors="replace").splitlines()
        if line.strip()
    ]
    cases = yaml.safe_load((EXAMPLE / "evals" / "billing.yaml").read_text())
    questions = [c["question"] for c in cases.get("cases", []) if isinstance(c, dict) and c.get("question")]
    data = [
        line
        for p in sorted((EXAMPLE / "data").glob("*.json"))
        for line in p.read_text().splitlines()
        if line.strip()
    ]
    return {"documents": docs, "questions": questions, "data": data}


_EMAIL_ORACLE = re.compile(r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$", re.I)


def false_positives() -> dict[str, Any]:
    from charter.telemetry.masking import PatternMasker

    masker = PatternMasker(b"bench", cache_size=0)
    canaries = set(
        re.findall(r"`(CANARY-[A-Z]+-[0-9a-f]+)`", (EXAMPLE / "sources" / "README.md").read_text())
    )
    out: dict[str, Any] = {}
    for corpus, lines in example_lines().items():
        fps, true, readable_seen, readable_masked = [], 0, 0, []
        for line in lines:
            spans = masker.findings(line)
            for s, e, kind in spans:
                value = line[s:e]
                if (kind == "EMAIL" and _EMAIL_ORACLE.match(value)) or (
                    kind == "CANARY" and value in canaries
                ):
                    true += 1
                else:
                    fps.append((kind, value, line.strip()[:120]))
            for what, rx in READABLE.items():
                for m in rx.finditer(line):
                    readable_seen += 1
                    if any(s < m.end() and m.start() < e for s, e, _ in spans):
                        readable_masked.append((what, m.group(0)))
        out[corpus] = {
            "lines": len(lines),
            "findings_confirmed": true,
            "false_positives": len(fps),
            "fp_rate_per_line": round(len(fps) / max(1, len(lines)), 5),
            "fp_examples": fps[:10],
            "readable_tokens": readable_seen,
            "readable_masked": readable_masked[:10],
        }
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--compositions", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=24)
    ap.add_argument("--presidio-limit", type=int, default=None, help="run Presidio on the first N texts only")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "load": os.getloadavg()},
        "recall": recall(args.compositions, args.seed, args.presidio_limit),
        "false_positives": false_positives(),
    }
    text = json.dumps(result, indent=2, default=str)
    if args.json:
        args.json.write_text(text)
    print(text)
    bad = [k for k, v in result["recall"]["per_kind"].items() if v["charter"] < 1.0]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
