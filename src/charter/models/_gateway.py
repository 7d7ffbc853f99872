"""The gateway the pipeline calls: the charter's model (and fallback) wrapped with metering, timeout,
budget reservation and retries, plus the active approved prompt.

```python
gateway = build_gateway(runtime)
request = gateway.build_request(question, passages, recipient_name="Sam", sender_name="Ana")
generation = gateway.generate(request, request_id=rid, principal=principal)
```
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from charter.errors import BudgetExceeded, Denied, UsageError
from charter.models._budget import BudgetLedger
from charter.models._prompts import ActivePrompt, AuditFn, PromptRegistry
from charter.models._render import render_prompt
from charter.models._types import (
    INTERNAL,
    OUTBOUND,
    Audience,
    Generation,
    GenerationRequest,
    Model,
    Passage,
    create_model,
    evolve,
)
from charter.models._wrappers import Budgeted, Fallback, Limited, Metered, Retrying, Timed
from charter.spec import LoadedCharter, ModelEndpoint, Principal

if TYPE_CHECKING:
    from charter.context import RuntimeContext

STALE_RESERVATION_AGE = timedelta(hours=1)
#: ``build_request(prompt=SYSTEM)``: the prompt the charter binds to the ``system`` purpose.
SYSTEM = "\x00system"


def audience_for(sensitivity: str, charter: LoadedCharter) -> Audience:
    """Who a passage of a source of this sensitivity may be shown to. ``answer`` workflows: always
    :data:`OUTBOUND` (the asker sees what they may read). ``draft`` workflows: :data:`OUTBOUND` when the
    sensitivity is in ``review.outbound_sensitivity``, else :data:`INTERNAL` (internal notes only)."""
    spec = charter.spec
    if spec.output_to_asker or sensitivity in spec.review.outbound_sensitivity:
        return OUTBOUND
    return INTERNAL


def wrap_endpoint(
    model: Model,
    endpoint: ModelEndpoint,
    ledger: BudgetLedger,
    *,
    base_delay: float = 0.5,
    max_delay: float = 8.0,
    sleep: Callable[[float], None] = time.sleep,
) -> Model:
    """One endpoint's chain: ``Limited(Retrying(Budgeted(Timed(Metered(model)))))``."""
    metered = Metered(model, endpoint.prices)
    timed = Timed(metered, endpoint.timeout.total_seconds())
    budgeted = Budgeted(timed, ledger, endpoint.prices)
    retrying = Retrying(budgeted, endpoint.retries, base_delay=base_delay, max_delay=max_delay, sleep=sleep)
    return Limited(retrying, max_output_tokens=endpoint.max_output_tokens, temperature=endpoint.temperature)


class Gateway:
    """What the pipeline calls to generate: model chain + prompts + budget ledger + audit."""

    def __init__(
        self,
        model: Model,
        *,
        charter: LoadedCharter,
        prompts: PromptRegistry,
        ledger: BudgetLedger,
        audit: AuditFn | None = None,
    ) -> None:
        self.model = model
        self.charter = charter
        self.prompts = prompts
        self.ledger = ledger
        self._audit = audit

    @property
    def model_name(self) -> str:
        """``provider:name`` of the primary model."""
        return f"{self.model.provider_name}:{self.model.name}"

    def active_prompt(self, name: str | None = None) -> ActivePrompt:
        """The active version of prompt ``name`` (default: the one bound to ``workflow.prompts.system``)."""
        name = name or self.charter.spec.system_prompt
        if name is None:
            raise UsageError("the charter has no prompt; add one under 'prompts'")
        return self.prompts.active(name)

    def build_request(
        self,
        question: str,
        passages: Sequence[Passage],
        *,
        prompt: str | None = SYSTEM,
        recipient_name: str = "there",
        sender_name: str = "",
    ) -> GenerationRequest:
        """A request with the active approved prompt rendered (``{tone}`` from ``review.tone``) and the
        charter's output limit and temperature. ``prompt`` is a prompt name; by default the prompt bound to
        the ``system`` purpose (``workflow.prompts.system``, see :attr:`Charter.system_prompt`); ``None``
        sends no system prompt. ``answer`` workflows carry no tone (the output is not a letter)."""
        spec = self.charter.spec
        system, version, prompt_name = "", "", ""
        name = spec.system_prompt if prompt is SYSTEM else prompt
        tone = "" if spec.output_to_asker else spec.review.tone
        if name is not None and spec.prompts:
            active = self.prompts.active(name)
            system = render_prompt(active.text, tone=tone)
            version, prompt_name = active.version, active.name
        ids = [p.id for p in passages]
        if len(set(ids)) != len(ids):
            raise UsageError("passage citation ids must be unique")
        return GenerationRequest(
            question=question,
            context=tuple(passages),
            system_prompt=system,
            max_output_tokens=spec.model.max_output_tokens,
            temperature=spec.model.temperature,
            tone=tone,
            recipient_name=recipient_name,
            sender_name=sender_name,
            prompt_name=prompt_name,
            prompt_version=version,
        )

    def generate(
        self, request: GenerationRequest, *, request_id: str, principal: Principal | str
    ) -> Generation:
        """Run the request through the wrapped model chain.

        Raises :class:`BudgetExceeded` (audited; the model was not called) or
        :class:`charter.errors.ProviderError` when the model and its fallback failed.
        """
        pid = principal if isinstance(principal, str) else principal.id
        req = evolve(request, {"request_id": request_id, "principal": pid})
        started = time.perf_counter()
        try:
            gen = self.model.generate(req)
        except BudgetExceeded as exc:
            if self._audit is not None:
                self._audit(
                    actor=pid,
                    action="model.budget_refused",
                    resource=f"workflow:{self.charter.spec.workflow.id}",
                    outcome="denied",
                    details={
                        "request_id": request_id,
                        "model": self.model_name,
                        "reason": str(exc),
                        "rules": exc.reasons,
                    },
                )
            raise
        return gen.with_(
            gateway_ms=(time.perf_counter() - started) * 1000,
            prompt_name=req.prompt_name,
            prompt_version=req.prompt_version,
            request_id=request_id,
        )


def build_gateway(
    rt: RuntimeContext,
    *,
    primary: Model | None = None,
    fallback: Model | None = None,
    retry_base_delay: float = 0.5,
    retry_max_delay: float = 8.0,
    sleep: Callable[[float], None] = time.sleep,
    check_prompts: bool = True,
) -> Gateway:
    """The gateway for ``rt``'s charter. ``primary``/``fallback`` replace the providers the charter names
    (tests pass scripted models); their prices, timeouts and retries still come from the charter.

    Refuses (:class:`Denied`) when an active prompt version is not approved, unless ``check_prompts=False``.
    """
    charter = rt.charter
    spec = charter.spec

    def audit(**event: Any) -> None:
        rt.audit.append(**event)

    prompts = PromptRegistry(charter, rt.store, audit=audit)
    if check_prompts:
        problems = prompts.check()
        if problems:
            raise Denied("the workflow cannot run: " + "; ".join(problems), reasons=["prompts.approval"])
    ledger = BudgetLedger(
        rt.store,
        workflow_id=spec.workflow.id,
        per_task_usd=spec.budgets.per_task_usd,
        monthly_usd=spec.budgets.monthly_usd,
    )
    # Reservations a crashed process left behind would block the budget forever: charge them in full.
    longest = max([spec.model.timeout] + ([spec.model.fallback.timeout] if spec.model.fallback else []))
    ledger.expire_stale(max(STALE_RESERVATION_AGE, longest * 10))
    main_model = primary or create_model(spec.model, base_dir=charter.base_dir)
    chain = wrap_endpoint(
        main_model, spec.model, ledger, base_delay=retry_base_delay, max_delay=retry_max_delay, sleep=sleep
    )
    if spec.model.fallback is not None or fallback is not None:
        fb_endpoint = spec.model.fallback or spec.model
        fb_model = fallback or create_model(fb_endpoint, base_dir=charter.base_dir)
        chain = Fallback(
            chain,
            wrap_endpoint(
                fb_model,
                fb_endpoint,
                ledger,
                base_delay=retry_base_delay,
                max_delay=retry_max_delay,
                sleep=sleep,
            ),
        )
    return Gateway(chain, charter=charter, prompts=prompts, ledger=ledger, audit=audit)
