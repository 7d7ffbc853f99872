"""OpenAI-compatible endpoint: ``POST /v1/chat/completions`` and ``GET /v1/models``.

The model name selects the workflow (the charter's ``workflow.id``), the API key is a Charter token, the
last user message is the question. The answer is the governed draft with numbered citations (listed after
the text) and an extra ``charter`` object with sources, groundedness, escalation and the request id.
Streaming (``stream: true``) sends the *checked* draft as server-sent events: the whole pipeline, checks
included, runs first, so no unchecked text ever leaves the server.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from charter.access import safe_url
from charter.errors import NotFound, UsageError
from charter.server._api import current_principal
from charter.server._app import state_of
from charter.server._auth import require
from charter.server._schemas import ERRORS
from charter.spec import Principal

router = APIRouter(prefix="/v1", tags=["openai"], responses=ERRORS)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(BaseModel):
    """The fields Charter reads; other OpenAI parameters are accepted and ignored (the charter decides)."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(max_length=200)
    messages: list[ChatMessage] = Field(min_length=1, max_length=200)
    stream: bool = False


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ChoiceMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int
    message: ChoiceMessage
    finish_reason: str


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    charter: dict[str, Any]


def _text_of(content: str | list[dict[str, Any]] | None) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(
        str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text"
    )


def _question(body: ChatRequest) -> str:
    for m in reversed(body.messages):
        if m.role == "user":
            text = _text_of(m.content)
            if text.strip():
                return text
            break
    raise UsageError("the request needs a non-empty user message (the last one is the question)")


def _answer_text(result: dict[str, Any]) -> str:
    text = str(result["draft"])
    cites = result.get("citations") or []
    if cites:
        lines = ["", "", "Sources:"]
        for c in cites:
            where = f" — {c['heading']}" if c.get("heading") else ""
            link = safe_url(c.get("url"))
            url = f" <{link}>" if link else ""
            lines.append(f"[{c['id']}] {c['title']}{where}{url}")
        text += "\n".join(lines)
    return text


@router.get("/models", response_model=ModelList)
def models(request: Request, principal: Annotated[Principal, Depends(current_principal)]) -> ModelList:
    """The workflows this key may use (one per server: the charter's workflow)."""
    rt = state_of(request).rt
    wf = rt.spec.workflow.id
    allowed = rt.authorizer.authorize(principal, "ask", f"workflow:{wf}").allowed
    return ModelList(data=[ModelCard(id=wf, created=0, owned_by="charter")] if allowed else [])


@router.post(
    "/chat/completions",
    response_model=ChatCompletion,
    responses={200: {"content": {"text/event-stream": {}}}},
)
def chat_completions(
    request: Request, body: ChatRequest, principal: Annotated[Principal, Depends(current_principal)]
) -> Any:
    """Ask the workflow named by ``model``; the answer is the governed, cited draft."""
    from charter.agents import respond as ask

    rt = state_of(request).rt
    wf = rt.spec.workflow.id
    if body.model != wf:
        raise NotFound(f"no model {body.model!r}; this server serves the workflow {wf!r}")
    require(rt, principal, "ask")
    question = _question(body)
    result = ask(rt, principal, question).as_dict()
    created = int(time.time())
    cid = "chatcmpl-" + result["request_id"]
    text = _answer_text(result)
    extra = {
        "request_id": result["request_id"],
        "status": result["status"],
        "sources": [{**c, "url": safe_url(c.get("url"))} for c in result["citations"]],
        "groundedness": result["groundedness"],
        "escalation": result["escalation"],
        "agent_notes": result["agent_notes"],
        "review_id": result["review_id"],
        "prompt_version": result["prompt_version"],
        "warnings": result["warnings"],
    }
    finish = "stop"
    usage = Usage(
        prompt_tokens=result["input_tokens"],
        completion_tokens=result["output_tokens"],
        total_tokens=result["input_tokens"] + result["output_tokens"],
    )
    if not body.stream:
        return ChatCompletion(
            id=cid,
            created=created,
            model=wf,
            usage=usage,
            charter=extra,
            choices=[Choice(index=0, message=ChoiceMessage(content=text), finish_reason=finish)],
        )
    return StreamingResponse(
        _stream(cid, created, wf, text, extra, usage),
        media_type="text/event-stream",
        headers={"cache-control": "no-store", "x-accel-buffering": "no"},
    )


def _stream(
    cid: str, created: int, model: str, text: str, extra: dict[str, Any], usage: Usage
) -> Iterator[str]:
    def chunk(delta: dict[str, Any], finish: str | None = None, **more: Any) -> str:
        doc = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **more,
        }
        return f"data: {json.dumps(doc, ensure_ascii=False)}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    pieces = text.split(" ")
    for i in range(0, len(pieces), 8):
        part = " ".join(pieces[i : i + 8])
        yield chunk({"content": part + (" " if i + 8 < len(pieces) else "")})
    yield chunk({}, "stop", charter=extra, usage=usage.model_dump())
    yield "data: [DONE]\n\n"
