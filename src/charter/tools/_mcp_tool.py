"""An upstream MCP tool as a charter tool: same proposal path, pinned schema, masked and size-limited results.

:class:`UpstreamRegisteredTool` is what :class:`~charter.tools.ToolRegistry` holds for a ``tools[]`` entry
with ``upstream``. ``charter.tools.propose``/``execute`` treat it like a Python tool (tool list, Cedar,
kill switch, preconditions, rate limit, approval bound to the argument hash, exactly-once execution), and
ask it two more things:

* :meth:`validate` — the arguments must be a JSON object valid under the **pinned** input schema (and name
  no property the schema does not declare) before anything is stored or sent;
* :meth:`unavailable` — the tool must be pinned and not drifted; right before execution the pin is
  compared with the live listing unless a comparison is still fresh (:func:`charter.tools._mcp_pins.checked_pin`:
  younger than the server's ``pin_recheck``, no ``tools/list_changed`` or reconnect since), so a changed
  upstream is disabled before a call leaves Charter — at once when it says so, else within ``pin_recheck``.

The result reaches the action record (and from there a model, a trace or an MCP client) only after it was
cut to the server's ``max_result_chars`` and masked by the runtime's masker (fail closed).
"""

from __future__ import annotations

import json
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from charter.errors import UsageError
from charter.tools._registry import RegisteredTool, StrictArgs, ToolContext, ToolDefinition, canonical_args

if TYPE_CHECKING:
    from charter.runtime import Runtime
    from charter.spec import Tool

_validators: dict[str, Any] = {}
_validators_lock = threading.Lock()
_memo = threading.local()
_REUSE_S = 1.0


def _validator(pin_hash: str, schema: dict[str, Any]) -> Any:
    from jsonschema import Draft202012Validator

    with _validators_lock:
        v = _validators.get(pin_hash)
        if v is None:
            cls = Draft202012Validator
            try:
                from jsonschema.validators import validator_for

                cls = validator_for(schema, default=Draft202012Validator)
                cls.check_schema(schema)
            except Exception as exc:
                raise UsageError(f"the pinned input schema is not a valid JSON Schema: {exc}") from None
            v = _validators[pin_hash] = cls(schema)
        return v


#: (pin hash, canonical arguments) already found valid: a proposal validates its arguments and the call that
#: follows checks them again under the pin it runs with — the same pin and the same text need no second pass
_valid: OrderedDict[tuple[str, str], None] = OrderedDict()
_VALID_MAX = 4096


def check_args(
    tool_name: str, schema: dict[str, Any], pin_hash: str, args: dict[str, Any], canonical: str | None = None
) -> None:
    """Raise :class:`UsageError` unless ``args`` is valid under ``schema`` and names only declared properties.

    ``canonical`` (``canonical_args(args)``, when the caller has it) lets a result be remembered: arguments
    found valid under a pin are valid under that pin again (the pin hash covers the schema)."""
    key = (pin_hash, canonical) if canonical is not None else None
    if key is not None:
        with _validators_lock:
            if key in _valid:
                _valid.move_to_end(key)
                return
    errors = sorted(_validator(pin_hash, schema).iter_errors(args), key=lambda e: list(e.path))
    props = schema.get("properties")
    unknown = sorted(set(args) - set(props)) if isinstance(props, dict) else []
    parts = [f"{'.'.join(str(p) for p in e.path) or '(arguments)'}: {e.message[:200]}" for e in errors[:5]]
    parts += [f"{u}: not a property of the pinned schema" for u in unknown]
    if parts:
        raise UsageError(f"invalid arguments for tool {tool_name!r}: " + "; ".join(parts))
    if key is not None:
        with _validators_lock:
            _valid[key] = None
            while len(_valid) > _VALID_MAX:
                _valid.popitem(last=False)


def _no_direct_call(**_: Any) -> Any:  # pragma: no cover - the definition's fn is never called
    raise UsageError("upstream tools are called through the registry, not directly")


@dataclass(frozen=True)
class UpstreamRegisteredTool(RegisteredTool):
    """A charter tool whose implementation is a tool of an upstream MCP server (see the module docstring)."""

    runtime_ref: Any = field(default=None, compare=False, repr=False)

    @property
    def server(self) -> str:
        assert self.spec.upstream is not None
        return self.spec.upstream.server

    @property
    def upstream_tool(self) -> str:
        assert self.spec.upstream is not None
        return self.spec.upstream.tool

    @property
    def origin(self) -> str | None:
        return f"mcp:{self.server}/{self.upstream_tool}"

    def _runtime(self) -> Runtime:
        rt = self.runtime_ref() if self.runtime_ref is not None else None
        if rt is None:
            raise UsageError(f"tool {self.name!r}: upstream tools need the runtime that loaded them")
        return rt  # type: ignore[no-any-return]

    def _pin(self, *, reuse: bool = False) -> Any:
        """The stored pin: the one the last fresh comparison with the live listing left (see
        :meth:`unavailable`), else read from the store. ``reuse``: the pin this thread read for this tool
        within the last :data:`_REUSE_S` seconds — one decision (propose, or execute) reads it once."""
        from charter.tools._mcp_pins import get_pin
        from charter.tools._mcp_upstream import hub_for

        fresh = hub_for(self._runtime()).fresh_pins(self.server)
        if fresh is not None and self.upstream_tool in fresh:
            return fresh[self.upstream_tool]
        key = (id(self), self.server, self.upstream_tool)
        now = time.monotonic()
        memo = getattr(_memo, "pin", None)
        if reuse and memo is not None and memo[0] == key and now - memo[1] < _REUSE_S:
            return memo[2]
        pin = get_pin(self._runtime(), self.server, self.upstream_tool)
        _memo.pin = (key, now, pin)
        return pin

    def _remember(self, pin: Any) -> None:
        _memo.pin = ((id(self), self.server, self.upstream_tool), time.monotonic(), pin)

    def validate(self, args: Any) -> dict[str, Any]:
        text = canonical_args(args)
        data: dict[str, Any] = json.loads(text)
        pin = self._pin()
        if pin is not None:  # no pin: the call is refused by ``unavailable`` (after Cedar, audited)
            check_args(self.name, pin.input_schema, pin.pin_hash, data, text)
        return data

    def json_schema(self) -> dict[str, Any]:
        pin = self._pin()
        return dict(pin.input_schema) if pin is not None else {"type": "object"}

    def shown_description(self) -> str:
        """What a model or MCP client is told the tool does: the charter's words, else the pinned upstream
        description (data the owner approved; the live one is never shown)."""
        if self.spec.description:
            return self.spec.description
        pin = self._pin()
        return f"[upstream {self.server}/{self.upstream_tool}] {pin.description if pin else ''}".strip()

    def unavailable(self, *, live: bool = False) -> str | None:
        from charter.tools._mcp_pins import checked_pin

        rt = self._runtime()
        fix = f"`charter tools approve-upstream {self.server} {self.upstream_tool}`"
        if live:  # right before a call leaves: the pin as compared with the live listing (fresh enough)
            pin = checked_pin(rt, self.server, self.upstream_tool)
            self._remember(pin)
        else:
            pin = self._pin(reuse=True)  # read by ``validate`` in the same proposal
        if pin is None:
            return f"upstream tool {self.server}/{self.upstream_tool} is not pinned yet; its owner runs {fix}"
        if not pin.enabled:
            return (
                f"upstream tool {self.server}/{self.upstream_tool} changed since it was approved and is "
                f"disabled; its owner reviews the change and runs {fix}"
            )
        return None

    def call(self, args: dict[str, Any], context: ToolContext) -> Any:
        from charter.telemetry import mask_text
        from charter.tools._mcp_upstream import UpstreamError, hub_for

        rt = self._runtime()
        pin = self._pin(reuse=True)  # the pin the live check just compared (execute), else read now
        if pin is None or not pin.enabled:  # never call a drifted or unpinned tool
            raise UsageError(self.unavailable() or "upstream tool is disabled")
        text = canonical_args(args)
        data = json.loads(text)
        check_args(self.name, pin.input_schema, pin.pin_hash, data, text)
        limit = rt.spec.mcp.server(self.server).max_result_chars
        outcome = hub_for(rt).call_tool(self.server, self.upstream_tool, data)
        text = outcome.text
        truncated = len(text) > limit
        # cut with a margin first (masking megabytes is slow), mask, then cut to the limit: an entity cut in
        # half by the first cut is still inside the margin when the masker sees it
        masked = mask_text(rt, text[: limit + 256]) or ""
        if len(masked) > limit:
            masked = masked[:limit]
        if outcome.is_error:
            raise UpstreamError(
                f"upstream tool {self.server}/{self.upstream_tool} reported an error: {masked}"
            )
        return {
            "upstream": f"{self.server}/{self.upstream_tool}",
            "content": masked,
            "truncated": truncated,
            "chars": len(text),
        }


def upstream_tool(spec: Tool, rt: Runtime | None) -> UpstreamRegisteredTool:
    """The registry entry for an upstream ``tools[]`` entry."""
    definition = ToolDefinition(name=spec.name, fn=_no_direct_call, args_model=StrictArgs, context_param=None)
    ref = weakref.ref(rt) if rt is not None else None
    return UpstreamRegisteredTool(spec=spec, definition=definition, runtime_ref=ref)
