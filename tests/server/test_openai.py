"""The official ``openai`` client against /v1/chat/completions: governed, cited answers; 403 if denied."""

from __future__ import annotations

import openai
import pytest

from tests.server.conftest import Served

QUESTION = "How long does a refund take to show up on my card?"


def _client(live: Served, user: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=live.url + "/v1", api_key=live.tokens[user], max_retries=0, timeout=120)


def test_models_lists_the_workflow(live: Served) -> None:
    ids = [m.id for m in _client(live, "ana").models.list()]
    assert ids == ["billing-support"]


def test_chat_completion_is_governed_and_cited(live: Served) -> None:
    resp = _client(live, "ana").chat.completions.create(
        model="billing-support",
        messages=[{"role": "system", "content": "ignored"}, {"role": "user", "content": QUESTION}],
    )
    text = resp.choices[0].message.content or ""
    extra = resp.model_extra["charter"]  # type: ignore[index]
    assert extra["request_id"].startswith("req") or extra["request_id"]
    assert extra["sources"], extra
    first = extra["sources"][0]["id"]
    assert f"[{first}]" in text and "Sources:" in text
    assert extra["groundedness"] is not None
    assert "escalation" in extra
    # the trace exists and belongs to ana
    import httpx

    r = httpx.get(f"{live.url}/api/traces/{extra['request_id']}", headers=live.headers("ana"))
    assert r.status_code == 200


def test_streaming_gives_the_same_governed_answer(live: Served) -> None:
    stream = _client(live, "ana").chat.completions.create(
        model="billing-support", messages=[{"role": "user", "content": QUESTION}], stream=True
    )
    parts, extra = [], None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
        if chunk.model_extra and chunk.model_extra.get("charter"):
            extra = chunk.model_extra["charter"]
    text = "".join(parts)
    assert extra is not None and extra["sources"]
    assert f"[{extra['sources'][0]['id']}]" in text and "Sources:" in text


def test_user_without_access_gets_403(live: Served) -> None:
    with pytest.raises(openai.PermissionDeniedError) as info:
        _client(live, "guest").chat.completions.create(
            model="billing-support", messages=[{"role": "user", "content": QUESTION}]
        )
    assert info.value.status_code == 403
    assert _client(live, "guest").models.list().data == []


def test_bad_key_and_unknown_model(live: Served) -> None:
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=live.url + "/v1", api_key="chr_bad", max_retries=0).chat.completions.create(
            model="billing-support", messages=[{"role": "user", "content": QUESTION}]
        )
    with pytest.raises(openai.NotFoundError):
        _client(live, "ana").chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": QUESTION}]
        )
