"""Recorded MiniLM vectors of the suite's fixed texts: the embedding memo starts from them.

Every run of the suite embeds the same few thousand texts with the real model — the billing example's chunks
and sentences (synced for the shared template), the evaluation corpus, the injection corpora — about 140 s
of CPU on this machine, a third of it before the first test that needs the example can start. MiniLM is
deterministic per text, so those vectors are recorded once, in ``tests/data/minilm-vectors.npz``, with the
texts they belong to and the SHA-256 of the model weights that made them, and the shared memo
(``tests/conftest.py``) is filled from the file when a run starts. What a test sees is still what the real
model returns for its text: a text that is not in the file (an edited example, a new fixture, any
Hypothesis-generated text) is embedded for real, and a file made by other weights is not used at all.
``tests/test_embedding_seed.py`` re-embeds a random sample of the recorded texts with the real model on every
run and fails when the installed weights are not the ones recorded, naming the command that rewrites it.

``scripts/test --record-vectors`` rewrites the file: that run starts from an empty memo, and at its end the
texts embedded outside a Hypothesis example (fixtures and plain tests: fixed texts, worth keeping) are written
with their vectors.
"""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
import zlib
from contextlib import closing
from functools import cache
from pathlib import Path

import numpy as np

SEED = Path(__file__).resolve().parent / "data" / "minilm-vectors.npz"
REFRESH = "scripts/test --record-vectors"


@cache
def model_digest() -> str:
    """SHA-256 of the installed MiniLM weights (``model.safetensors``)."""
    from charter.retrieval._embedding import minilm_model_dir

    digest = hashlib.sha256()
    with open(Path(minilm_model_dir()) / "model.safetensors", "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read(path: Path = SEED) -> tuple[str, list[str], np.ndarray]:
    """``(model digest, texts, vectors)`` of a recorded file (``vectors[i]`` is ``texts[i]``'s, float32)."""
    with np.load(path, allow_pickle=False) as data:
        model = str(data["model"])
        texts = json.loads(zlib.decompress(data["texts"].tobytes()).decode("utf-8", "surrogatepass"))
        vectors = np.asarray(data["vectors"], dtype=np.float32)
    if not isinstance(texts, list) or len(texts) != len(vectors):
        raise ValueError(f"{path}: {len(texts)} texts for {len(vectors)} vectors")
    return model, texts, vectors


def write(texts: list[str], vectors: np.ndarray, path: Path = SEED) -> None:
    order = sorted(range(len(texts)), key=lambda i: texts[i])  # a stable file for the same texts
    packed = zlib.compress(json.dumps([texts[i] for i in order]).encode("utf-8", "surrogatepass"), 9)
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        model=np.array(model_digest()),
        texts=np.frombuffer(packed, dtype=np.uint8),
        vectors=np.asarray(vectors, dtype=np.float32)[order],
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())


def usable() -> tuple[list[str], np.ndarray] | None:
    """The recorded texts and vectors when the file exists and the installed weights made them, else None."""
    if not SEED.is_file():
        return None
    model, texts, vectors = read()
    return (texts, vectors) if model == model_digest() else None


def record_from(memo: Path, path: Path = SEED) -> int:
    """Write ``path`` from a run's memo: the vectors of the texts marked worth keeping. Returns their number."""
    with closing(sqlite3.connect(memo, timeout=120)) as conn:
        rows = conn.execute(
            "SELECT texts.text, memo.vec FROM texts JOIN memo ON memo.key = texts.key WHERE texts.keep = 1"
        ).fetchall()
    if not rows:
        return 0
    write([t for t, _ in rows], np.stack([np.frombuffer(v, dtype=np.float32) for _, v in rows]), path)
    return len(rows)
