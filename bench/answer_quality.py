"""Answer quality of the extractive drafter, before / after issue #16, side by side in one run.

    .venv/bin/python bench/answer_quality.py CHARTER_DIR [--before 530f986] [--json out.json]

``CHARTER_DIR`` is a synced copy of examples/billing-support with the active prompt approved (what the test
fixture ``synced_project`` builds). For every case of the charter's eval sets, retrieval runs **once** as the
case's user; both drafters then draft from the identical passages and go through the same check stage
(``charter.pipeline.check``), so the difference is the drafter alone. Scored like ``charter eval``'s
generation scorer: pass (expectation met and every ``must_include`` found), fact coverage, refusal accuracy.
Drafter latency is timed warm (second call on the same request: sentence vectors cached, as in steady
state) and excludes retrieval.

"Before" is the drafter module at git revision ``--before`` (default: the base of issue #16), loaded from
``git show`` under another module name; the provider registry is restored afterwards.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))  # this tree, not an installed copy

REPO = Path(__file__).resolve().parent.parent


def _old_drafter(rev: str) -> Any:
    from charter.models import _types

    src = subprocess.run(
        ["git", "show", f"{rev}:src/charter/models/_extractive.py"], cwd=REPO, check=True, capture_output=True
    ).stdout
    with tempfile.NamedTemporaryFile("wb", suffix=".py", delete=False) as f:
        f.write(src)
    spec = importlib.util.spec_from_file_location("charter_bench_old_extractive", f.name)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    # the old module registers "extractive" again: let it, then put the current registrations back
    with _types.providers.restoring():
        _types.providers.remove("extractive")
        spec.loader.exec_module(mod)
    return mod.ExtractiveModel()


def _pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, -(-len(ordered) * q // 100) - 1))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("charter_dir", type=Path)
    ap.add_argument("--before", default="530f986")
    ap.add_argument("--json", type=Path)
    ap.add_argument(
        "--pad",
        type=int,
        default=0,
        help="first pad a temporary copy's index with public filler chunks up to this many (e.g. 100000)",
    )
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "retrieval" / "msmarco")
    args = ap.parse_args(argv)
    if args.pad:
        import shutil

        tmp = Path(tempfile.mkdtemp(prefix="answer-quality-"))
        shutil.copytree(args.charter_dir, tmp / "project")
        args.charter_dir = tmp / "project"

    from charter import pipeline
    from charter.evals._cases import load_eval_sets
    from charter.evals._scorers import meets_expectation
    from charter.models import ExtractiveModel
    from charter.runtime import Runtime
    from charter.telemetry.traces import Trace

    rt = Runtime.open(args.charter_dir / "charter.yaml")
    if args.pad:
        sys.path.insert(0, str(REPO / "bench"))
        from ask_bench import pad_index  # type: ignore[import-not-found]

        corpus = [json.loads(x) for x in (args.data / "corpus.jsonl").read_text().split("\n") if x.strip()]
        print(f"index padded to {pad_index(rt, args.pad, corpus):,} chunks", flush=True)
    cases = load_eval_sets([rt.charter.base_dir / e for e in rt.spec.evals.sets])
    gw = pipeline.gateway_for(rt)
    drafters = {"before": _old_drafter(args.before), "after": ExtractiveModel()}
    prepared = []
    for c in cases:
        p = rt.charter.principal(c.user)
        tr = Trace(
            workflow=rt.spec.workflow.id,
            principal_id=p.id,
            question=c.question,
            charter_fingerprint=rt.fingerprint,
        )
        try:
            state = pipeline.read_request_state(rt)
            q = pipeline.admit(rt, p, c.question, tr, state)
            hits, _ = pipeline.retrieve(rt, p, q, tr, state)
            prepared.append((c, p, q, hits))
        except Exception:
            prepared.append((c, p, None, []))
    results: dict[str, Any] = {}
    for name, model in drafters.items():
        passed, facts, refusals, lat = 0, [], [], []
        for c, p, q, hits in prepared:
            if q is None:
                observed, text = "refuse", ""
            else:
                passages, audience = pipeline._passages(rt, hits)
                req = gw.build_request(
                    q,
                    [pipeline._passage(cid, h, audience[cid]) for cid, h in passages.items()],
                    sender_name=p.name,
                )
                model.generate(req)
                t0 = time.perf_counter()
                gen = model.generate(req)
                lat.append((time.perf_counter() - t0) * 1000)
                tr = Trace(
                    workflow=rt.spec.workflow.id,
                    principal_id=p.id,
                    question=c.question,
                    charter_fingerprint=rt.fingerprint,
                )
                g, s = pipeline._tone(rt, req.recipient_name, req.sender_name)
                res = pipeline.check(rt, p, q, gen.text, passages, audience, tr, template=(g, s))
                observed = {"answered": "answer", "needs_human": "escalate"}.get(res.status, "refuse")
                text = f"{res.draft}\n{res.agent_notes}"
            ok = meets_expectation(c.expect, observed)
            if c.expect != "any":
                refusals.append(ok)
            found = [pt for pt in c.must_include if pt.found_in(text)] if observed == "answer" else []
            if c.must_include and observed == "answer":
                facts.append(len(found) / len(c.must_include))
            passed += ok and len(found) == len(c.must_include) if observed == "answer" else ok
        results[name] = {
            "pass_rate": passed / len(prepared),
            "fact_coverage": sum(facts) / max(1, len(facts)),
            "refusal_accuracy": sum(refusals) / max(1, len(refusals)),
            "drafter_p50_ms": _pct(lat, 50),
            "drafter_p95_ms": _pct(lat, 95),
        }
    rt.close()
    print("| metric | before | after |\n|---|---|---|")
    for k in results["after"]:
        print(f"| {k} | {results['before'][k]:.3f} | {results['after'][k]:.3f} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    raise SystemExit(main())
