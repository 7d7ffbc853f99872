"""Gateway wrappers: each wraps any :class:`Model` and adds exactly one concern (wrap, never fork).

The gateway composes them per endpoint, innermost first::

    Fallback(
        Limited(Retrying(Budgeted(Timed(Metered(primary))))),
        Limited(Retrying(Budgeted(Timed(Metered(fallback))))),
    )

so every attempt is metered, bounded in time and paid for from the budget before it runs.
"""

from __future__ import annotations

import concurrent.futures
import random
import threading
import time
from collections.abc import Callable

from charter.errors import ProviderError, UsageError
from charter.models._budget import BudgetLedger, nano_to_usd, token_cost_nano
from charter.models._render import estimate_request_tokens, estimate_tokens
from charter.models._types import Generation, GenerationRequest, Model, ModelTimeout, evolve
from charter.spec import Prices


class ModelWrapper:
    """Base class: delegates everything to ``inner``."""

    def __init__(self, inner: Model) -> None:
        self.inner = inner

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def provider_name(self) -> str:
        return self.inner.provider_name

    @property
    def runs_inline(self) -> bool:
        """See :class:`Timed`: true when the provider underneath declares ``runs_inline = True``."""
        return bool(getattr(self.inner, "runs_inline", False))

    def generate(self, request: GenerationRequest) -> Generation:
        return self.inner.generate(request)


class GenerationFailed(ProviderError):
    """Every attempt on one model failed. ``attempts`` and ``errors`` say what happened."""

    def __init__(
        self, message: str, *, retryable: bool, attempts: int, errors: list[str], timed_out: bool = False
    ) -> None:
        super().__init__(message, retryable=retryable)
        self.attempts = attempts
        self.errors = list(errors)
        self.timed_out = timed_out


def estimate_max_cost_nano(request: GenerationRequest, prices: Prices) -> int:
    """The most a call can cost: estimated input tokens + ``max_output_tokens``, at ``prices``."""
    return token_cost_nano(estimate_request_tokens(request), prices.input_per_1k) + token_cost_nano(
        request.max_output_tokens, prices.output_per_1k
    )


def cost_nano(input_tokens: int, output_tokens: int, prices: Prices) -> int:
    return token_cost_nano(input_tokens, prices.input_per_1k) + token_cost_nano(
        output_tokens, prices.output_per_1k
    )


class Limited(ModelWrapper):
    """Applies an endpoint's own settings to every request it gets: ``max_output_tokens`` is capped at the
    endpoint's, and its ``temperature`` is used (so a fallback runs with its settings, not the primary's)."""

    def __init__(self, inner: Model, *, max_output_tokens: int, temperature: float) -> None:
        super().__init__(inner)
        self.max_output_tokens = max_output_tokens
        self.temperature = temperature

    def generate(self, request: GenerationRequest) -> Generation:
        return self.inner.generate(
            evolve(
                request,
                {
                    "max_output_tokens": min(request.max_output_tokens, self.max_output_tokens),
                    "temperature": self.temperature,
                },
            )
        )


class Metered(ModelWrapper):
    """Latency, tokens (reported by the backend first, else estimated with :func:`estimate_tokens`) and cost
    at the charter's prices; ``usage_source`` and ``cost_source`` say which."""

    def __init__(self, inner: Model, prices: Prices) -> None:
        super().__init__(inner)
        self.prices = prices

    def generate(self, request: GenerationRequest) -> Generation:
        started = time.perf_counter()
        gen = self.inner.generate(request)
        latency = (time.perf_counter() - started) * 1000
        if gen.usage_source == "reported" and gen.input_tokens is not None and gen.output_tokens is not None:
            tokens_in, tokens_out, source = gen.input_tokens, gen.output_tokens, "reported"
        else:
            tokens_in, tokens_out, source = (
                estimate_request_tokens(request),
                estimate_tokens(gen.text),
                "estimated",
            )
        cost = cost_nano(tokens_in, tokens_out, self.prices)
        return gen.with_(
            input_tokens=tokens_in,
            output_tokens=tokens_out,
            usage_source=source,
            latency_ms=latency,
            cost_usd=nano_to_usd(cost),
            cost_source=source if cost else "none",
        )


class Timed(ModelWrapper):
    """Enforces a deadline even when the backend ignores its own timeout: the call runs in a daemon worker
    thread; when the deadline passes, :class:`ModelTimeout` is raised and the worker is abandoned.

    A provider that does bounded in-process work and never waits on I/O (the extractive drafter) declares
    ``runs_inline = True``: its call runs on the caller's thread (a thread handoff would cost more than the
    call) and an answer that arrives after the deadline is discarded as a :class:`ModelTimeout` all the
    same, so retries, fallback and budget charging behave identically."""

    def __init__(self, inner: Model, timeout_s: float) -> None:
        super().__init__(inner)
        self.timeout_s = timeout_s
        self._inline = self.runs_inline

    def generate(self, request: GenerationRequest) -> Generation:
        if self._inline:
            started = time.perf_counter()
            answer = self.inner.generate(request)
            if time.perf_counter() - started > self.timeout_s:
                raise ModelTimeout(f"model {self.name!r} did not answer within {self.timeout_s:g}s")
            return answer
        future = _timeout_pool().submit(self.inner.generate, request)
        try:
            result: Generation = future.result(timeout=self.timeout_s)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise ModelTimeout(f"model {self.name!r} did not answer within {self.timeout_s:g}s") from None
        return result


_POOL: concurrent.futures.ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _timeout_pool() -> concurrent.futures.ThreadPoolExecutor:
    """One shared pool of worker threads for deadlines (starting a thread per call cost milliseconds).
    A call abandoned at its deadline keeps its worker until the backend returns; 64 workers bound that."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = concurrent.futures.ThreadPoolExecutor(max_workers=64, thread_name_prefix="model")
        return _POOL


class Budgeted(ModelWrapper):
    """Reserves the estimated maximum cost before the call and settles the actual cost after it (released on
    failure, charged in full on timeout). Raises :class:`charter.errors.BudgetExceeded` without calling."""

    def __init__(self, inner: Model, ledger: BudgetLedger, prices: Prices) -> None:
        super().__init__(inner)
        self.ledger = ledger
        self.prices = prices

    def generate(self, request: GenerationRequest) -> Generation:
        if not request.request_id:
            raise UsageError("a budgeted model call needs a request_id")
        reservation = self.ledger.reserve(
            request_id=request.request_id,
            principal=request.principal or "unknown",
            model=f"{self.provider_name}:{self.name}",
            estimated_nano=(
                estimate_max_cost_nano(request, self.prices)
                if self.prices.input_per_1k or self.prices.output_per_1k
                else 0  # a free model: nothing to estimate
            ),
        )
        try:
            gen = self.inner.generate(request)
        except ModelTimeout:
            self.ledger.charge_estimate(reservation)
            raise
        except BaseException:
            self.ledger.release(reservation)
            raise
        actual = cost_nano(gen.input_tokens or 0, gen.output_tokens or 0, self.prices)
        self.ledger.settle(reservation, actual)
        return gen.with_(reservation_id=reservation.id)


class Retrying(ModelWrapper):
    """Up to ``1 + retries`` attempts on *retryable* :class:`ProviderError` only, with exponential backoff
    and jitter (``delay = min(max_delay, base × 2^n)``, sleeping a random time in ``[delay/2, delay]``)."""

    def __init__(
        self,
        inner: Model,
        retries: int,
        *,
        base_delay: float = 0.5,
        max_delay: float = 8.0,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(inner)
        self.retries = retries
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.sleep = sleep
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography

    def backoff(self, attempt: int) -> float:
        delay = min(self.max_delay, self.base_delay * 2.0**attempt)
        return float(delay / 2 + self.rng.uniform(0, delay / 2))

    def generate(self, request: GenerationRequest) -> Generation:
        errors: list[str] = []
        timed_out = False
        for attempt in range(self.retries + 1):
            try:
                gen = self.inner.generate(request)
            except ProviderError as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                timed_out = timed_out or isinstance(exc, ModelTimeout)
                if not exc.retryable or attempt == self.retries:
                    why = "not retryable" if not exc.retryable else f"gave up after {attempt + 1} attempts"
                    raise GenerationFailed(
                        f"model {self.name!r} failed ({why}): {exc}",
                        retryable=exc.retryable,
                        attempts=attempt + 1,
                        errors=errors,
                        timed_out=timed_out,
                    ) from exc
                self.sleep(self.backoff(attempt))
                continue
            return gen.with_(attempts=attempt + 1, errors=tuple(errors))
        raise AssertionError("unreachable")  # pragma: no cover


class Fallback(ModelWrapper):
    """Calls ``fallback`` when ``inner`` fails with a :class:`ProviderError` (including timeouts); the result
    records ``fallback_used``, the reason, and the attempts on both."""

    def __init__(self, inner: Model, fallback: Model) -> None:
        super().__init__(inner)
        self.fallback = fallback

    def generate(self, request: GenerationRequest) -> Generation:
        try:
            return self.inner.generate(request)
        except ProviderError as primary_exc:
            first_attempts = getattr(primary_exc, "attempts", 1)
            first_errors = getattr(primary_exc, "errors", [str(primary_exc)])
            try:
                gen = self.fallback.generate(request)
            except ProviderError as exc:
                attempts = first_attempts + getattr(exc, "attempts", 1)
                errors = first_errors + getattr(exc, "errors", [str(exc)])
                raise GenerationFailed(
                    f"model {self.name!r} failed and so did fallback {self.fallback.name!r}: {exc}",
                    retryable=False,
                    attempts=attempts,
                    errors=errors,
                    timed_out=bool(getattr(exc, "timed_out", False)),
                ) from exc
            return gen.with_(
                fallback_used=True,
                fallback_reason=str(primary_exc),
                attempts=first_attempts + gen.attempts,
                errors=tuple(first_errors) + gen.errors,
            )
