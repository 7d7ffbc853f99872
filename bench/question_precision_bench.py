"""Question precision (``retrieval.question_precision``): how long embedding one question takes in float32,
bfloat16 and int8, and how close the reduced vectors are to float32's — side by side, in one run.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/question_precision_bench.py CORPUS_DIR [CORPUS_DIR ...]
        [--repeat 2] [--busy] [--json out.json]

Each ``CORPUS_DIR`` is in BEIR layout; only its ``queries.jsonl`` is read (the fusion corpora of
``bench/fusion_bench.py``, or MS MARCO in ``../shared/data/retrieval/msmarco``). Every question is embedded
alone, as a search does (``MiniLMEmbedder.embed`` for float32, ``embed_query(texts, precision)`` otherwise,
one torch thread), ``--repeat`` times per precision, the precisions interleaved question by question so a
change of background load falls on all alike. Reported: p50 / p95 / mean ms, the ratio to float32's p50,
and the cosine of each question's reduced vector to its float32 vector (worst, 1st percentile, median).
``--busy`` keeps one core busy with a separate spinning process. Quality on retrieval is
``bench/fusion_bench.py --question-precision``'s job.

Then the floor (``--no-floor`` skips it): the model's 24 matrix products alone, in each precision, for a
one-token and a median-length question (torch's kernels, one thread, the same prepared weights the
encoder uses) — what no faster code around them can remove. Reported per pass: ms, the arithmetic rate
(GFLOP/s) and the rate the weights were read at (GB/s). With a handful of rows per product, each product
reads its whole weight matrix for little arithmetic, so the pass is bound by how fast one core streams the
weights (docs/benchmarks.md, *The question encoder's floor*).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))

import numpy as np  # noqa: E402
from _common import pct, spinners  # noqa: E402

from charter.retrieval import MiniLMEmbedder  # noqa: E402
from charter.retrieval._bert import _float32  # noqa: E402
from charter.threads import apply_process_policy  # noqa: E402

PRECISIONS = ["float32", "bfloat16", "int8"]


def questions(dirs: list[Path]) -> list[str]:
    out: list[str] = []
    for d in dirs:
        with (d / "queries.jsonl").open(encoding="utf-8") as f:
            out += [json.loads(line)["text"] for line in f if line.strip()]
    if not out:
        raise SystemExit("no questions found (each CORPUS_DIR needs a queries.jsonl)")
    return out


def measure(texts: list[str], repeat: int) -> dict[str, object]:
    apply_process_policy()
    emb = MiniLMEmbedder()
    used = {p: emb.query_precision(p) for p in PRECISIONS}  # runs each precision's check once
    embed = {
        p: (lambda t: emb.embed([t])) if p == "float32" else (lambda t, p=p: emb.embed_query([t], p))
        for p in PRECISIONS
    }
    exact = emb.embed(texts)
    for t in texts[:20]:  # warm-up: caches, the first calls' allocations
        for p in PRECISIONS:
            embed[p](t)
    ms: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    vectors: dict[str, list[np.ndarray]] = {p: [] for p in PRECISIONS}
    for r in range(repeat):
        for t in texts:
            for p in PRECISIONS:
                t0 = time.perf_counter()
                v = embed[p](t)
                ms[p].append((time.perf_counter() - t0) * 1000)
                if r == 0:
                    vectors[p].append(v[0])
    base = pct(ms["float32"], 0.5)
    rows: dict[str, object] = {}
    for p in PRECISIONS:
        cos = np.sum(np.vstack(vectors[p]) * exact, axis=1)
        rows[p] = {
            "used": used[p],
            "p50_ms": round(pct(ms[p], 0.5), 2),
            "p95_ms": round(pct(ms[p], 0.95), 2),
            "mean_ms": round(float(np.mean(ms[p])), 2),
            "p50_vs_float32": round(pct(ms[p], 0.5) / base, 3),
            "cosine_worst": round(float(cos.min()), 5),
            "cosine_p1": round(float(np.percentile(cos, 1)), 5),
            "cosine_median": round(float(np.median(cos)), 5),
        }
    return rows


def _products_ms(
    linear: Callable[[Any, tuple[Any, ...]], Any],
    specs: list[tuple[Any, ...]],
    inputs: list[Any],
    repeat: int,
) -> float:
    """p50 ms of one pass of ``linear`` over every (input, weights) pair."""
    for _ in range(20):
        for x, s in zip(inputs, specs, strict=True):
            linear(x, s)
    ms = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for x, s in zip(inputs, specs, strict=True):
            linear(x, s)
        ms.append((time.perf_counter() - t0) * 1000)
    return pct(ms, 0.5)


def floor(texts: list[str], repeat: int = 200) -> dict[str, Any]:
    """The encoder's matrix products alone, per precision, for a one-word question and one of the median
    length (see the module docstring)."""
    import torch

    apply_process_policy()
    model = MiniLMEmbedder()._load()
    enc = model.model
    lengths = sorted(len(model.tokenizer.encode(t).ids) for t in texts)
    median = lengths[len(lengths) // 2]
    macs_per_token = sum(
        int(s[0].numel()) for layer in enc.prepared for s in (layer.qkv, layer.out, layer.up, layer.down)
    )
    rows: list[dict[str, Any]] = []
    for precision in PRECISIONS:
        # the encoder's own prepared weights and products (charter.retrieval._bert)
        if precision == "float32":
            layers, linear = enc.prepared, _float32
        else:
            reduced = enc.quantized(precision)
            layers, linear = reduced.layers, reduced._linear
        specs = [s for layer in layers for s in (layer.qkv, layer.out, layer.up, layer.down)]
        width = {"float32": 4, "bfloat16": 2, "int8": 1}[precision]
        # bfloat16 weights are kept (out, in); the others (in, out)
        inputs_of = [int(s[0].shape[1] if precision == "bfloat16" else s[0].shape[0]) for s in specs]
        for tokens in (3, median):  # [CLS] word [SEP], and the median question
            ms = _products_ms(linear, specs, [torch.randn(tokens, n) for n in inputs_of], repeat)
            rows.append(
                {
                    "precision": precision,
                    "tokens": tokens,
                    "p50_ms": round(ms, 2),
                    "gflops": round(2 * macs_per_token * tokens / ms / 1e6, 1),
                    "weights_mb": round(macs_per_token * width / 1e6, 1),
                    "gb_per_s": round(macs_per_token * width / ms / 1e6, 1),
                }
            )
    return {"median_tokens": median, "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpora", nargs="+", type=Path)
    ap.add_argument("--repeat", type=int, default=2, help="passes over the questions per precision")
    ap.add_argument("--busy", action="store_true", help="keep one core busy (a spinning process) throughout")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--no-floor", action="store_true", help="skip the matrix products alone")
    a = ap.parse_args()
    texts = questions(a.corpora)
    started = datetime.now(UTC)
    load_before = os.getloadavg()
    with spinners(1) if a.busy else nullcontext():
        rows = measure(texts, a.repeat)
        products = None if a.no_floor else floor(texts)
    load_after = os.getloadavg()
    report = {
        "started": started.isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "background": "1 core busy" if a.busy else "none added",
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in load_after],
        "questions": len(texts),
        "repeat": a.repeat,
        "precisions": rows,
        "floor": products,
    }
    print(
        f"### Question precision — {started:%Y-%m-%d %H:%M} UTC, {report['machine']}, "
        f"background: {report['background']}\n\nload average (1/5/15) before {load_before[0]:.2f} / "
        f"{load_before[1]:.2f} / {load_before[2]:.2f}, after {load_after[0]:.2f} / {load_after[1]:.2f} / "
        f"{load_after[2]:.2f}; {len(texts)} questions × {a.repeat}, one at a time, one torch thread\n"
    )
    print(
        "| precision | used | p50 / p95 / mean ms | p50 ÷ float32 | cosine to float32: worst / p1 / median |"
    )
    print("|---|---|---|---|---|")
    for p, r in rows.items():
        assert isinstance(r, dict)
        print(
            f"| {p} | {r['used']} | {r['p50_ms']} / {r['p95_ms']} / {r['mean_ms']} | {r['p50_vs_float32']} "
            f"| {r['cosine_worst']} / {r['cosine_p1']} / {r['cosine_median']} |"
        )
    if products is not None:
        print(
            f"\nThe matrix products alone (the floor; median question {products['median_tokens']} tokens):\n\n"
            "| precision | tokens | p50 ms | GFLOP/s | weights MB | weights read at GB/s |\n|---|---|---|---|---|---|"
        )
        for r in products["rows"]:
            print(
                f"| {r['precision']} | {r['tokens']} | {r['p50_ms']} | {r['gflops']} | {r['weights_mb']} "
                f"| {r['gb_per_s']} |"
            )
    if a.json:
        a.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
