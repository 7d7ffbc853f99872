"""Models: the ``Model`` protocol, providers (``extractive``, ``openai``, ``local``, ``scripted``), the
gateway wrappers (metering, timeout, budget reservation, retries, fallback), and versioned, approved prompts.

The pipeline calls :func:`build_gateway` once and then :meth:`Gateway.build_request` and
:meth:`Gateway.generate` per request.
"""

from charter.models import _extractive, _local, _openai, _scripted  # noqa: F401 - register built-in providers
from charter.models._budget import (
    BudgetLedger,
    Reservation,
    month_key,
    nano_to_usd,
    token_cost_nano,
    usd_to_nano,
)
from charter.models._extractive import (
    AGENT_NOTES_HEADER,
    NO_ANSWER_TEXT,
    SENTENCE_VECTORS,
    DraftParts,
    ExtractiveModel,
    split_draft,
    tone_parts,
)
from charter.models._gateway import Gateway, audience_for, build_gateway, wrap_endpoint
from charter.models._local import LocalModel, smollm2_path
from charter.models._openai import OpenAIModel, classify_openai_error
from charter.models._prompts import ActivePrompt, PromptRegistry, PromptVersionStatus
from charter.models._render import (
    changes_non_ascii,
    clean_text,
    escape_delimiters,
    estimate_request_tokens,
    estimate_tokens,
    parse_citations,
    render_messages,
    render_prompt,
    strip_citation_markers,
)
from charter.models._scripted import ScriptedModel, ScriptedReply
from charter.models._text import looks_like_instruction, split_sentences
from charter.models._types import (
    INTERNAL,
    OUTBOUND,
    Audience,
    Generation,
    GenerationRequest,
    Model,
    ModelTimeout,
    Passage,
    ToolCall,
    ToolOffer,
    ToolResult,
    Turn,
    create_model,
    evolve,
    provider,
    provider_names,
)
from charter.models._wrappers import (
    Budgeted,
    Fallback,
    GenerationFailed,
    Limited,
    Metered,
    ModelWrapper,
    Retrying,
    Timed,
    estimate_max_cost_nano,
)

__all__ = [
    "AGENT_NOTES_HEADER",
    "INTERNAL",
    "NO_ANSWER_TEXT",
    "OUTBOUND",
    "SENTENCE_VECTORS",
    "ActivePrompt",
    "Audience",
    "BudgetLedger",
    "Budgeted",
    "DraftParts",
    "ExtractiveModel",
    "Fallback",
    "Gateway",
    "Generation",
    "GenerationFailed",
    "GenerationRequest",
    "Limited",
    "LocalModel",
    "Metered",
    "Model",
    "ModelTimeout",
    "ModelWrapper",
    "OpenAIModel",
    "Passage",
    "PromptRegistry",
    "PromptVersionStatus",
    "Reservation",
    "Retrying",
    "ScriptedModel",
    "ScriptedReply",
    "Timed",
    "ToolCall",
    "ToolOffer",
    "ToolResult",
    "Turn",
    "audience_for",
    "build_gateway",
    "changes_non_ascii",
    "classify_openai_error",
    "clean_text",
    "create_model",
    "escape_delimiters",
    "estimate_max_cost_nano",
    "estimate_request_tokens",
    "estimate_tokens",
    "evolve",
    "looks_like_instruction",
    "month_key",
    "nano_to_usd",
    "parse_citations",
    "provider",
    "provider_names",
    "render_messages",
    "render_prompt",
    "smollm2_path",
    "split_draft",
    "split_sentences",
    "strip_citation_markers",
    "token_cost_nano",
    "tone_parts",
    "usd_to_nano",
    "wrap_endpoint",
]
