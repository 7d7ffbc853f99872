"""The ``Model`` protocol, what goes in (:class:`GenerationRequest`) and out (:class:`Generation`), and the
provider registry (``@provider("name")``).

A provider is a factory ``(endpoint, *, base_dir) -> Model`` registered under a name that the charter's
``model.provider`` refers to. Built-in providers register themselves exactly like third-party ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

from charter.errors import ProviderError
from charter.plugins import Registry, origin_of
from charter.spec import ModelEndpoint

Audience = Literal["outbound", "internal"]
#: The audience values: a passage that may be quoted in the output the workflow produces (the outbound draft
#: of a ``draft`` workflow; everything in an ``answer`` workflow), and one for internal notes only (``draft``
#: workflows, sources outside ``review.outbound_sensitivity``).
OUTBOUND: Audience = "outbound"
INTERNAL: Audience = "internal"
UsageSource = Literal["reported", "estimated"]
CostSource = Literal["reported", "estimated", "reserved", "none"]


class ModelTimeout(ProviderError):
    """The model did not answer within its deadline (always retryable)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)


_T = TypeVar("_T")


def evolve(obj: _T, changes: dict[str, Any]) -> _T:
    """``dataclasses.replace`` for the frozen request/answer records, without re-running ``__init__`` (the
    gateway copies a record once per wrapper on every call; ``replace`` costs ~10 µs each)."""
    fields = type(obj).__dataclass_fields__  # type: ignore[attr-defined]
    unknown = [k for k in changes if k not in fields]
    if unknown:
        raise TypeError(f"{type(obj).__name__} has no field(s) {', '.join(unknown)}")
    new = object.__new__(type(obj))
    new.__dict__.update(obj.__dict__)
    new.__dict__.update(changes)
    return new


@dataclass(frozen=True)
class Passage:
    """One quoted source passage in a request: its citation id (``S1``…), text and where it comes from.

    ``audience`` is :data:`OUTBOUND` when the passage may be quoted in the output (``answer`` workflows:
    always; ``draft`` workflows: its source's sensitivity is in ``review.outbound_sensitivity``), else
    :data:`INTERNAL` (internal notes only).
    """

    id: str
    text: str
    title: str = ""
    heading: str = ""
    audience: Audience = "internal"
    source_id: str = ""
    chunk_id: str = ""
    url: str = ""


@dataclass(frozen=True)
class ToolOffer:
    """A tool the model may call in an ``agent`` run: its name, what it does (shown to the model) and its
    arguments' JSON schema (as JSON text, so requests stay hashable). Offering a tool grants nothing: every
    call the model makes is a *proposal* that the tools layer decides."""

    name: str
    description: str
    parameters: str = '{"type": "object", "properties": {}}'


@dataclass(frozen=True)
class ToolCall:
    """One call a model asked for: the provider's call id, the tool's name and the arguments as the model
    wrote them (JSON text; parsed and validated by the tools layer, never trusted)."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ToolResult:
    """What the system answered to one :class:`ToolCall`: the outcome as quoted data (a result, a refusal, a
    pending approval), and the citation id the final answer may cite it by."""

    call_id: str
    content: str
    citation: str = ""


@dataclass(frozen=True)
class Turn:
    """One earlier step of an ``agent`` run, replayed to the model: what it said and called, and the results."""

    text: str
    calls: tuple[ToolCall, ...] = ()
    results: tuple[ToolResult, ...] = ()


@dataclass(frozen=True)
class GenerationRequest:
    """Everything a model needs for one draft. ``system_prompt`` is the rendered active prompt version."""

    question: str
    context: tuple[Passage, ...] = ()
    system_prompt: str = ""
    max_output_tokens: int = 512
    temperature: float = 0.0
    tone: str = ""
    recipient_name: str = "there"  # who the output is addressed to (the tone's ``{recipient}``)
    sender_name: str = ""  # who sends it (the tone's ``{sender}``)
    prompt_name: str = ""
    prompt_version: str = ""
    request_id: str = ""
    principal: str = ""
    #: ``agent`` runs: the tools offered, the earlier steps and whether the model may answer without a call
    tools: tuple[ToolOffer, ...] = ()
    turns: tuple[Turn, ...] = ()
    tool_choice: Literal["auto", "none"] = "auto"

    def passage(self, citation_id: str) -> Passage | None:
        for p in self.context:
            if p.id == citation_id:
                return p
        return None


@dataclass(frozen=True)
class Generation:
    """A model's answer plus what the gateway recorded about producing it.

    Providers fill ``text``, ``model``, ``provider``, ``finish_reason`` and, when the backend reports usage,
    ``input_tokens``/``output_tokens`` with ``usage_source="reported"``. The wrappers fill in the rest:
    estimated usage (``usage_source="estimated"``), cost, latency, attempts, fallback.
    """

    text: str
    model: str
    provider: str
    input_tokens: int | None = None
    output_tokens: int | None = None
    usage_source: UsageSource = "estimated"
    finish_reason: str = "stop"
    latency_ms: float = 0.0
    citations: tuple[str, ...] = ()
    cost_usd: float = 0.0
    cost_source: CostSource = "none"
    attempts: int = 1
    fallback_used: bool = False
    fallback_reason: str | None = None
    errors: tuple[str, ...] = ()
    prompt_name: str = ""
    prompt_version: str = ""
    request_id: str = ""
    gateway_ms: float = 0.0
    reservation_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: the calls the model asked for through the provider's native tool calling (``openai``'s ``tool_calls``;
    #: the ``scripted`` provider's); other providers write ``<tool_call>`` markup in ``text`` instead
    tool_calls: tuple[ToolCall, ...] = ()

    def with_(self, **changes: Any) -> Generation:
        return evolve(self, changes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record (for traces and ``--json``)."""
        return {
            "text": self.text,
            "model": self.model,
            "provider": self.provider,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "usage_source": self.usage_source,
            "finish_reason": self.finish_reason,
            "latency_ms": round(self.latency_ms, 3),
            "gateway_ms": round(self.gateway_ms, 3),
            "citations": list(self.citations),
            "cost_usd": self.cost_usd,
            "cost_source": self.cost_source,
            "attempts": self.attempts,
            "fallback_used": self.fallback_used,
            "fallback_reason": self.fallback_reason,
            "errors": list(self.errors),
            "prompt_name": self.prompt_name,
            "prompt_version": self.prompt_version,
            "request_id": self.request_id,
            "tool_calls": [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in self.tool_calls],
        }


@runtime_checkable
class Model(Protocol):
    """Anything that turns a :class:`GenerationRequest` into a :class:`Generation`. Must be thread-safe.

    Raise :class:`charter.errors.ProviderError` (``retryable=True`` for timeouts, rate limits, 5xx and
    connection errors) when the backend fails; never return a partial answer as a success.
    """

    @property
    def name(self) -> str: ...

    @property
    def provider_name(self) -> str: ...

    def generate(self, request: GenerationRequest) -> Generation: ...


ProviderFactory = Callable[..., Model]
#: the model providers, by the name ``model.provider`` gives; entry-point group ``charter.providers``
providers: Registry[ProviderFactory] = Registry(
    "model provider", group="charter.providers", field="model.provider"
)


def provider(name: str) -> Callable[[ProviderFactory], ProviderFactory]:
    """Register a provider factory ``(endpoint: ModelEndpoint, *, base_dir: Path | None) -> Model``.

    ```python
    @provider("echo")
    def echo(endpoint, *, base_dir=None):
        return EchoModel(endpoint.name)
    ```

    A name another definition already holds is refused (:class:`charter.plugins.PluginError`).
    """

    def register(factory: ProviderFactory) -> ProviderFactory:
        providers.add(name, factory, origin=origin_of(factory))
        return factory

    return register


def provider_names() -> list[str]:
    """Names of every registered provider."""
    return providers.names()


def create_model(endpoint: ModelEndpoint, *, base_dir: Path | None = None) -> Model:
    """Build the model an endpoint of the charter describes, through the registry."""
    return providers.get(endpoint.provider)(endpoint, base_dir=base_dir)
