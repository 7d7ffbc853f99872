"""The ``openai`` provider: any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, llama.cpp server,
Ollama, ...) through the official ``openai`` SDK.

The base URL is ``model.endpoint``; the API key comes from the environment variable named by
``model.api_key_env`` (never from the charter). Without ``api_key_env`` a placeholder key is sent, which
is what local servers expect. The SDK's own retries are off: the gateway retries, once, in one place.

Errors are classified: timeouts, connection errors, 408, 409, 429 and 5xx are retryable; other 4xx
(authentication, permission, validation, not found) are not.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from charter.errors import ProviderError, UsageError
from charter.models._render import parse_citations, render_messages
from charter.models._types import Generation, GenerationRequest, ModelTimeout, ToolCall, provider
from charter.spec import ModelEndpoint

PLACEHOLDER_KEY = "not-needed"
_RETRYABLE_STATUS = {408, 409, 429}


def api_key_from_env(env_name: str | None) -> str:
    """The API key held by environment variable ``env_name`` (a clear error naming it when unset)."""
    if not env_name:
        return PLACEHOLDER_KEY
    value = os.environ.get(env_name)
    if not value:
        raise UsageError(
            f"the model's API key is read from the environment variable {env_name}, which is not set; "
            f"export {env_name}=... (the key never goes in the charter)",
            field="model.api_key_env",
        )
    return value


def classify_openai_error(exc: Exception) -> ProviderError:
    """Map an ``openai`` SDK exception to a :class:`ProviderError` with ``retryable`` set correctly."""
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return ModelTimeout(f"model request timed out: {exc}")
    if isinstance(exc, openai.APIConnectionError):
        return ProviderError(f"cannot reach the model endpoint: {exc}", retryable=True)
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        retryable = status in _RETRYABLE_STATUS or status >= 500
        return ProviderError(f"model endpoint answered HTTP {status}: {exc.message}", retryable=retryable)
    if isinstance(exc, openai.APIError):
        return ProviderError(f"model endpoint error: {exc}", retryable=False)
    return ProviderError(f"model call failed: {type(exc).__name__}: {exc}", retryable=False)


class OpenAIModel:
    """Chat completions against an OpenAI-compatible endpoint. Thread-safe (one SDK client, shared)."""

    provider_name = "openai"

    def __init__(self, name: str, *, base_url: str | None, api_key: str, timeout: float = 30.0) -> None:
        self.name = name
        self.base_url = base_url
        self._api_key = api_key
        self.timeout = timeout
        self._client: Any = None
        self._lock = threading.Lock()

    def _get_client(self) -> Any:
        with self._lock:
            if self._client is None:
                from openai import OpenAI

                self._client = OpenAI(
                    base_url=self.base_url, api_key=self._api_key, timeout=self.timeout, max_retries=0
                )
            return self._client

    def generate(self, request: GenerationRequest) -> Generation:
        import openai

        client = self._get_client()
        extra: dict[str, Any] = {}
        if request.tools:  # an agent step: the tools as function definitions, the model decides
            extra["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": json.loads(t.parameters),
                    },
                }
                for t in request.tools
            ]
            extra["tool_choice"] = request.tool_choice
        try:
            resp = client.chat.completions.create(
                model=self.name,
                messages=render_messages(request.system_prompt, request, native_tools=bool(request.tools)),
                max_tokens=request.max_output_tokens,
                temperature=request.temperature,
                **extra,
            )
        except openai.OpenAIError as exc:
            raise classify_openai_error(exc) from exc
        if not resp.choices:
            raise ProviderError("model endpoint returned no choices", retryable=True)
        choice = resp.choices[0]
        text = (choice.message.content or "").strip() if choice.message else ""
        calls = tuple(
            ToolCall(
                id=str(getattr(c, "id", "") or f"call_{i}"),
                name=str(c.function.name or ""),
                arguments=str(c.function.arguments or "{}"),
            )
            for i, c in enumerate((choice.message.tool_calls or []) if choice.message else [], 1)
            if getattr(c, "function", None) is not None
        )
        usage = getattr(resp, "usage", None)
        prompt_tokens = getattr(usage, "prompt_tokens", None) if usage else None
        completion_tokens = getattr(usage, "completion_tokens", None) if usage else None
        reported = isinstance(prompt_tokens, int) and isinstance(completion_tokens, int)
        return Generation(
            text=text,
            model=getattr(resp, "model", None) or self.name,
            provider=self.provider_name,
            finish_reason=choice.finish_reason or "stop",
            input_tokens=prompt_tokens if reported else None,
            output_tokens=completion_tokens if reported else None,
            usage_source="reported" if reported else "estimated",
            citations=parse_citations(text),
            tool_calls=calls,
        )


@provider("openai")
def _openai(endpoint: ModelEndpoint, *, base_dir: Path | None = None) -> OpenAIModel:
    return OpenAIModel(
        endpoint.name,
        base_url=endpoint.endpoint,
        api_key=api_key_from_env(endpoint.api_key_env),
        timeout=endpoint.timeout.total_seconds(),
    )
