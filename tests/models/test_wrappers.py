"""Gateway wrappers: timeout and fallback, retries on retryable errors only, metering."""

from __future__ import annotations

import threading
import time

import pytest

from charter.errors import ProviderError, UsageError
from charter.models import (
    Generation,
    GenerationFailed,
    Metered,
    ModelTimeout,
    Passage,
    Retrying,
    ScriptedModel,
    ScriptedReply,
    Timed,
    build_gateway,
    estimate_max_cost_nano,
    estimate_request_tokens,
    estimate_tokens,
    nano_to_usd,
)
from charter.models import GenerationRequest as Req
from charter.spec._schema import Prices

from .conftest import PRICES, edit_charter

PASSAGES = [
    Passage("S1", "Invoices are emailed to billing contacts on the renewal date.", audience="outbound")
]


def test_a_timeout_triggers_the_fallback_and_is_recorded(scripted_project, open_runtime):
    rt = open_runtime(edit_charter(scripted_project, {"model": {"timeout": "200ms", "retries": 1}}))
    primary = ScriptedModel("primary", default=ScriptedReply("too late [S1].", delay=3.0))
    backup = ScriptedModel("backup", default="Invoices are emailed on the renewal date [S1].")
    gw = build_gateway(rt, primary=primary, fallback=backup, retry_base_delay=0)
    request = gw.build_request("When do I get my invoice?", PASSAGES)
    started = time.perf_counter()
    gen = gw.generate(request, request_id="t1", principal="ana")
    elapsed = time.perf_counter() - started

    assert elapsed < 2.0  # two 200 ms attempts, not two 3 s sleeps
    assert gen.fallback_used is True
    assert gen.model == "backup" and gen.provider == "scripted"
    assert "did not answer within 0.2s" in (gen.fallback_reason or "")
    assert gen.attempts == 3 and primary.calls == 2 and backup.calls == 1
    assert len(gen.errors) == 2 and all("ModelTimeout" in e for e in gen.errors)
    assert gen.prompt_version == "v2" and gen.request_id == "t1"
    record = gen.to_dict()
    assert record["fallback_used"] and record["fallback_reason"] and record["attempts"] == 3
    # each timed-out attempt is charged its full estimate; the fallback its actual (estimated) usage
    estimate = estimate_max_cost_nano(request, Prices(**PRICES))
    assert gw.ledger.request_cost("t1") == pytest.approx(nano_to_usd(2 * estimate) + gen.cost_usd)


def test_timed_enforces_the_deadline_even_if_the_provider_ignores_it():
    slow = ScriptedModel("slow", default=ScriptedReply("x", delay=2.0))
    with pytest.raises(ModelTimeout):
        started = time.perf_counter()
        Timed(slow, 0.1).generate(Req("q"))
    assert time.perf_counter() - started < 1.0


class _InlineScripted(ScriptedModel):
    """A scripted provider that declares bounded in-process work (like the extractive drafter)."""

    runs_inline = True

    def generate(self, request: Req) -> Generation:
        self.thread = threading.get_ident()
        return super().generate(request)


def test_an_inline_provider_runs_on_the_callers_thread_and_still_times_out():
    fast = _InlineScripted("fast", default="ok")
    assert Timed(Metered(fast, Prices()), 1.0).generate(Req("q")).text == "ok"
    assert fast.thread == threading.get_ident()  # no worker-thread handoff
    late = _InlineScripted("late", default=ScriptedReply("too late", delay=0.3))
    with pytest.raises(ModelTimeout, match=r"within 0\.1s"):
        Timed(Metered(late, Prices()), 0.1).generate(Req("q"))
    threaded = ScriptedModel("threaded", default="ok")
    assert not Timed(threaded, 1.0).runs_inline and Timed(fast, 1.0).runs_inline


def test_a_late_inline_answer_goes_to_the_fallback_like_any_timeout(scripted_project, open_runtime):
    rt = open_runtime(edit_charter(scripted_project, {"model": {"timeout": "100ms", "retries": 0}}))
    primary = _InlineScripted("primary", default=ScriptedReply("too late [S1].", delay=0.3))
    backup = ScriptedModel("backup", default="Invoices are emailed on the renewal date [S1].")
    gw = build_gateway(rt, primary=primary, fallback=backup, retry_base_delay=0)
    gen = gw.generate(gw.build_request("When?", PASSAGES), request_id="late1", principal="ana")
    assert gen.fallback_used and gen.model == "backup"
    assert "did not answer within 0.1s" in (gen.fallback_reason or "")
    estimate = estimate_max_cost_nano(gw.build_request("When?", PASSAGES), Prices(**PRICES))
    assert gw.ledger.request_cost("late1") == pytest.approx(nano_to_usd(estimate) + gen.cost_usd)


def test_evolve_copies_a_record_with_changes_and_rejects_unknown_fields():
    gen = Generation(text="a", model="m", provider="p")
    changed = gen.with_(attempts=3, errors=("x",))
    assert (changed.attempts, changed.errors, changed.text) == (3, ("x",), "a")
    assert (gen.attempts, gen.errors) == (1, ())  # the original is untouched
    with pytest.raises(TypeError, match="no field"):
        gen.with_(atempts=3)


def test_a_non_retryable_error_is_not_retried(scripted_project, open_runtime):
    rt = open_runtime(edit_charter(scripted_project, {"model": {"fallback": None, "retries": 3}}))
    primary = ScriptedModel("primary")
    primary.enqueue(ProviderError("HTTP 401: invalid API key", retryable=False), "never reached [S1].")
    sleeps: list[float] = []
    gw = build_gateway(rt, primary=primary, sleep=sleeps.append)
    with pytest.raises(GenerationFailed, match="not retryable") as info:
        gw.generate(gw.build_request("q?", PASSAGES), request_id="n1", principal="ana")
    assert primary.calls == 1
    assert info.value.attempts == 1 and sleeps == []
    assert gw.ledger.request_cost("n1") == 0  # released


def test_a_non_retryable_error_goes_to_the_fallback_once(scripted_project, open_runtime):
    rt = open_runtime(edit_charter(scripted_project, {"model": {"retries": 3}}))
    primary = ScriptedModel("primary").enqueue(ProviderError("HTTP 400", retryable=False))
    backup = ScriptedModel("backup", default="Fine [S1].")
    gw = build_gateway(rt, primary=primary, fallback=backup, retry_base_delay=0)
    gen = gw.generate(gw.build_request("q?", PASSAGES), request_id="n2", principal="ana")
    assert primary.calls == 1 and backup.calls == 1
    assert gen.fallback_used and "HTTP 400" in (gen.fallback_reason or "")


def test_retryable_errors_are_retried_with_bounded_attempts_and_growing_backoff(
    scripted_project, open_runtime
):
    rt = open_runtime(edit_charter(scripted_project, {"model": {"fallback": None, "retries": 2}}))
    primary = ScriptedModel("primary")
    primary.enqueue(
        ProviderError("HTTP 503", retryable=True),
        ProviderError("HTTP 429", retryable=True),
        "Recovered [S1].",
    )
    sleeps: list[float] = []
    gw = build_gateway(rt, primary=primary, sleep=sleeps.append, retry_base_delay=0.5, retry_max_delay=8)
    gen = gw.generate(gw.build_request("q?", PASSAGES), request_id="r1", principal="ana")
    assert gen.text == "Recovered [S1]." and gen.attempts == 3 and primary.calls == 3
    assert len(sleeps) == 2
    assert 0.25 <= sleeps[0] <= 0.5 and 0.5 <= sleeps[1] <= 1.0  # exponential, jittered

    primary.enqueue(*(ProviderError("HTTP 503", retryable=True) for _ in range(10)))
    with pytest.raises(GenerationFailed, match="gave up after 3 attempts"):
        gw.generate(gw.build_request("q?", PASSAGES), request_id="r2", principal="ana")
    assert primary.calls == 6  # bounded: 1 + retries


def test_backoff_is_capped():
    r = Retrying(ScriptedModel(), 10, base_delay=1.0, max_delay=4.0)
    assert all(r.backoff(n) <= 4.0 for n in range(10))
    assert r.backoff(9) >= 2.0


def test_reported_usage_is_used_when_given_and_estimated_otherwise(scripted_project, open_runtime):
    rt = open_runtime(edit_charter(scripted_project, {"model": {"fallback": None}}))
    primary = ScriptedModel("primary")
    primary.enqueue(
        ScriptedReply("Reported [S1].", input_tokens=120, output_tokens=7), "Estimated reply [S1]."
    )
    gw = build_gateway(rt, primary=primary)
    request = gw.build_request("When do I get my invoice?", PASSAGES)

    reported = gw.generate(request, request_id="u1", principal="ana")
    assert (reported.usage_source, reported.input_tokens, reported.output_tokens) == ("reported", 120, 7)
    assert reported.cost_source == "reported"
    assert reported.cost_usd == pytest.approx(120 * 0.001 + 7 * 0.002)

    estimated = gw.generate(request, request_id="u2", principal="ana")
    assert estimated.usage_source == "estimated" and estimated.cost_source == "estimated"
    assert estimated.input_tokens == estimate_request_tokens(request)
    assert estimated.output_tokens == estimate_tokens("Estimated reply [S1].")
    assert estimated.cost_usd == pytest.approx(
        estimated.input_tokens * 0.001 + estimated.output_tokens * 0.002
    )
    assert estimated.latency_ms >= 0 and estimated.gateway_ms >= estimated.latency_ms


def test_metered_without_prices_costs_nothing():
    gen = Metered(ScriptedModel(default="hello"), Prices()).generate(Req("q"))
    assert gen.cost_usd == 0 and gen.cost_source == "none" and gen.usage_source == "estimated"


def test_missing_api_key_variable_is_a_clear_usage_error(scripted_project, open_runtime, monkeypatch):
    monkeypatch.delenv("CHARTER_TEST_MISSING_KEY", raising=False)
    path = edit_charter(
        scripted_project,
        {
            "model": {
                "provider": "openai",
                "name": "gpt-x",
                "endpoint": "http://127.0.0.1:9/v1",
                "api_key_env": "CHARTER_TEST_MISSING_KEY",
                "fallback": None,
            }
        },
    )
    rt = open_runtime(path)
    with pytest.raises(UsageError, match="CHARTER_TEST_MISSING_KEY"):
        build_gateway(rt)


def test_openai_connection_errors_are_retryable(scripted_project, open_runtime, monkeypatch):
    monkeypatch.setenv("CHARTER_TEST_KEY", "sk-test")
    path = edit_charter(
        scripted_project,
        {
            "model": {
                "provider": "openai",
                "name": "gpt-x",
                "endpoint": "http://127.0.0.1:9/v1",
                "timeout": "2s",
                "api_key_env": "CHARTER_TEST_KEY",
                "fallback": None,
                "retries": 1,
            }
        },
    )
    rt = open_runtime(path)
    sleeps: list[float] = []
    gw = build_gateway(rt, sleep=sleeps.append)
    with pytest.raises(GenerationFailed, match="gave up after 2 attempts"):
        gw.generate(gw.build_request("q?", PASSAGES), request_id="c1", principal="ana")
    assert len(sleeps) == 1


def test_the_fallback_runs_with_its_own_output_limit_and_temperature(scripted_project, open_runtime):
    path = edit_charter(
        scripted_project,
        {
            "model": {
                "retries": 0,
                "temperature": 0.0,
                "fallback": {
                    "provider": "scripted",
                    "name": "backup",
                    "prices": PRICES,
                    "max_output_tokens": 16,
                    "temperature": 0.7,
                },
            }
        },
    )
    rt = open_runtime(path)
    primary = ScriptedModel("primary").enqueue(ProviderError("HTTP 500", retryable=True))
    backup = ScriptedModel("backup", default="ok [S1].")
    gw = build_gateway(rt, primary=primary, fallback=backup, retry_base_delay=0)
    gen = gw.generate(gw.build_request("q?", PASSAGES), request_id="f1", principal="ana")
    assert gen.fallback_used
    assert primary.requests[0].max_output_tokens == 100 and primary.requests[0].temperature == 0.0
    assert backup.requests[0].max_output_tokens == 16 and backup.requests[0].temperature == 0.7
