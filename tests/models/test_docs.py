"""The provider example in docs/models.md runs as written, and the docs name every CLI command."""

from __future__ import annotations

import re
from pathlib import Path

from charter.models import GenerationRequest, create_model, provider_names
from charter.spec._schema import ModelEndpoint

DOC = Path(__file__).resolve().parents[2] / "docs" / "models.md"


def test_the_provider_example_in_the_docs_works():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    example = next(b for b in blocks if '@provider("echo")' in b)
    exec(compile(example, str(DOC), "exec"), {})
    assert "echo" in provider_names()
    gen = create_model(ModelEndpoint(provider="echo", name="e1")).generate(GenerationRequest("hello?"))
    assert gen.text == "hello?" and gen.provider == "echo"


def test_docs_name_every_prompts_command():
    from charter.cli._prompts import prompts_app

    text = DOC.read_text()
    for command in prompts_app.registered_commands:
        assert f"charter prompts {command.name}" in text
