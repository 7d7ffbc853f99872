"""A fast, deterministic embedder that counts what it embeds, registered as ``sources-test``.

Importing this module registers it; a charter selects it with ``retrieval.embedder: sources-test``.
``SOURCES_TEST_EMBED_DELAY`` (seconds per call) slows it down so a test can kill a sync mid-way.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from typing import ClassVar

import numpy as np

from charter.retrieval import embedder

DIM = 32


@embedder("sources-test")
class CountingEmbedder:
    """Hashing-trick bag of words; ``CountingEmbedder.texts`` counts every text ever embedded."""

    name = "sources-test@1"
    dim = DIM
    texts: ClassVar[int] = 0
    calls: ClassVar[int] = 0

    def embed(self, texts: list[str]) -> np.ndarray:
        CountingEmbedder.calls += 1
        time.sleep(float(os.environ.get("SOURCES_TEST_EMBED_DELAY", "0")))
        CountingEmbedder.texts += len(texts)
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "little")
                out[i, h % DIM] += 1.0 if (h >> 16) & 1 else -1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        return (out / norms).astype(np.float32)
