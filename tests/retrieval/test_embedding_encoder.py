"""The built-in MiniLM encoder (the BERT forward pass of ``charter.retrieval._bert`` + the model's
tokenizer.json, mean pooling, L2 normalisation) gives the vectors sentence-transformers gives for the same
folder: the independent oracle is sentence-transformers itself (which runs transformers' ``BertModel``), on the example documents, on texts longer than the 256-token limit, and on
generated text with any characters (Hypothesis), one by one and in mixed-length batches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from charter.errors import CharterRuntimeError
from charter.retrieval import MiniLMEmbedder
from charter.retrieval._embedding import SentenceEncoder, minilm_model_dir
from tests.conftest import EXAMPLE

pytestmark = [pytest.mark.real_embedding, pytest.mark.slow]  # loads the model twice, two ways


@pytest.fixture(scope="module")
def oracle():  # type: ignore[no-untyped-def]
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(minilm_model_dir(), device="cpu", local_files_only=True)
    model.max_seq_length = MiniLMEmbedder.max_seq_length

    def encode(texts: list[str]) -> np.ndarray:
        return np.asarray(
            model.encode(texts, batch_size=len(texts), convert_to_numpy=True, normalize_embeddings=True)
        )

    return encode


@pytest.fixture(scope="module")
def encoder() -> SentenceEncoder:
    return SentenceEncoder(minilm_model_dir(), max_seq_length=MiniLMEmbedder.max_seq_length)


def example_texts() -> list[str]:
    texts = []
    for path in sorted((EXAMPLE / "sources").rglob("*.md"))[::4]:  # every fourth document, 4 paragraphs
        body = path.read_text(encoding="utf-8")
        texts += [p for p in body.split("\n\n") if p.strip()][:4]
    return texts


def test_same_vectors_as_sentence_transformers_on_the_example(oracle, encoder) -> None:  # type: ignore[no-untyped-def]
    """Every sampled example text, in the batches the embedder makes of them (sorted by length, ``batch_size``
    each: little padding), plus one text alone, a query-sized batch and a mixed batch padded to the 256-token
    limit. (One batch of all 69 texts, the long one included, padded every text to 256 tokens: twice the
    tokens of the embedder's batches for the same comparison of each text, and 40% of this test's CPU.)"""
    texts = example_texts()
    assert len(texts) > 40
    long_text = " ".join(texts)  # far beyond 256 tokens: truncated the same way
    by_length = sorted([*texts, long_text], key=len)
    size = MiniLMEmbedder().batch_size
    embedder_batches = [by_length[i : i + size] for i in range(0, len(by_length), size)]
    mixed = [by_length[0], long_text, by_length[len(by_length) // 2]]  # padded to the limit, out of order
    for batch in [texts[:1], texts[:8], mixed, *embedder_batches]:  # texts[:8]: one over 256 tokens
        got, want = encoder.encode(batch), oracle(batch)
        assert got.shape == want.shape == (len(batch), 384)
        assert np.abs(got - want).max() < 1e-5
    assert sum(len(b) for b in embedder_batches) == len(texts) + 1
    assert np.allclose(np.linalg.norm(encoder.encode(texts[:5]), axis=1), 1.0, atol=1e-6)


@settings(max_examples=40)
@given(
    st.lists(
        st.text(st.characters(codec="utf-8"), min_size=0, max_size=300).map(lambda t: f"Invoice {t} due"),
        min_size=1,
        max_size=6,
    )
)
def test_same_vectors_on_any_text(oracle, encoder, texts: list[str]) -> None:  # type: ignore[no-untyped-def]
    assert np.abs(encoder.encode(texts) - oracle(texts)).max() < 1e-5


@pytest.mark.parametrize(
    "text", ["", "   ", "\n\t", "\u200b\u202e\ufeff", "x" * 100_000, "\U0001f642" * 50, "a\u0301" * 300]
)
def test_same_vectors_on_edge_texts(oracle, encoder, text: str) -> None:  # type: ignore[no-untyped-def]
    got = encoder.encode([text])
    assert np.abs(got - oracle([text])).max() < 1e-5
    assert abs(float(np.linalg.norm(got)) - 1.0) < 1e-5


def test_the_embedder_returns_input_order_through_the_encoder() -> None:
    texts = ["a short one", "a much longer text about refunds to a card " * 5, "mid length text here"]
    together = MiniLMEmbedder().embed(texts)
    alone = np.vstack([MiniLMEmbedder().embed([t]) for t in texts])
    assert np.abs(together - alone).max() < 1e-5


def _configs_copy(tmp_path: Path) -> Path:
    """The model folder with its configuration files copied (to be edited) and its 90 MB of weights linked
    (read only by these tests)."""
    import shutil

    src = Path(minilm_model_dir())
    copy = tmp_path / "model"
    shutil.copytree(src, copy, ignore=shutil.ignore_patterns("model.safetensors"))
    (copy / "model.safetensors").symlink_to(src / "model.safetensors")
    return copy


def test_a_folder_with_other_pooling_is_refused(tmp_path: Path) -> None:
    copy = _configs_copy(tmp_path)
    config = json.loads((copy / "1_Pooling" / "config.json").read_text())
    config["pooling_mode_cls_token"] = True
    (copy / "1_Pooling" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CharterRuntimeError, match="mean pooling only"):
        SentenceEncoder(str(copy))
    (copy / "modules.json").unlink()
    with pytest.raises(CharterRuntimeError, match="not a sentence-transformers model folder"):
        SentenceEncoder(str(copy))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("hidden_act", "relu"),
        ("position_embedding_type", "relative_key"),
        ("is_decoder", True),
        ("model_type", "roberta"),
    ],
)
def test_a_model_that_is_not_a_plain_bert_encoder_is_refused(tmp_path: Path, key: str, value: object) -> None:
    """The forward pass (``charter.retrieval._bert``) implements one architecture; any other is refused, never
    computed differently."""
    copy = _configs_copy(tmp_path)
    config = json.loads((copy / "config.json").read_text())
    config[key] = value
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(CharterRuntimeError, match="only a plain BERT encoder"):
        SentenceEncoder(str(copy))


def test_weights_without_a_bert_encoder_are_refused(tmp_path: Path) -> None:
    import shutil

    from safetensors.torch import load_file, save_file

    copy = tmp_path / "model"
    shutil.copytree(minilm_model_dir(), copy)
    weights = load_file(str(copy / "model.safetensors"))
    save_file({k: v for k, v in weights.items() if "layer.5." not in k}, str(copy / "model.safetensors"))
    with pytest.raises(CharterRuntimeError, match="lacks"):
        SentenceEncoder(str(copy))
    save_file({"other.weight": weights["pooler.dense.weight"]}, str(copy / "model.safetensors"))
    with pytest.raises(CharterRuntimeError, match="no BERT embeddings"):
        SentenceEncoder(str(copy))
