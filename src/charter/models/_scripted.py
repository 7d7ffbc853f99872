"""The ``scripted`` provider: replays queued replies (or raises queued exceptions, or sleeps to simulate a
slow backend) and records every request it received. For tests and evals; never reaches a network.

```python
model = ScriptedModel("test")
model.enqueue("Leave requests take 5 days [S1].", ProviderError("503", retryable=True))
```
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charter.errors import ProviderError
from charter.models._render import parse_citations
from charter.models._types import Generation, GenerationRequest, ToolCall, provider
from charter.spec import ModelEndpoint


@dataclass(frozen=True)
class ScriptedReply:
    """One scripted answer. ``input_tokens``/``output_tokens`` given → usage is *reported*; ``delay`` seconds
    of sleep first (to simulate a slow or hung backend)."""

    text: str = ""
    input_tokens: int | None = None
    output_tokens: int | None = None
    delay: float = 0.0
    finish_reason: str = "stop"
    #: native tool calls, as ``openai`` returns them: ``(name, arguments)`` with arguments a dict or JSON text
    tool_calls: tuple[tuple[str, Any], ...] = ()


Scripted = ScriptedReply | BaseException | str


class ScriptedModel:
    """Replays :meth:`enqueue`-d items in order; when the queue is empty, replays ``default`` (if given) or
    fails with a non-retryable :class:`ProviderError`. Thread-safe; ``requests`` and ``calls`` record use."""

    provider_name = "scripted"

    def __init__(self, name: str = "scripted", *, default: Scripted | None = None) -> None:
        self.name = name
        self.default = default
        self._queue: deque[Scripted] = deque()
        self._lock = threading.Lock()
        self.requests: list[GenerationRequest] = []

    @property
    def calls(self) -> int:
        with self._lock:
            return len(self.requests)

    def enqueue(self, *items: Scripted) -> ScriptedModel:
        with self._lock:
            self._queue.extend(items)
        return self

    def generate(self, request: GenerationRequest) -> Generation:
        with self._lock:
            self.requests.append(request)
            item = self._queue.popleft() if self._queue else self.default
        if item is None:
            raise ProviderError(f"scripted model {self.name!r} has nothing queued", retryable=False)
        if isinstance(item, BaseException):
            raise item
        reply = ScriptedReply(text=item) if isinstance(item, str) else item
        if reply.delay:
            time.sleep(reply.delay)
        reported = reply.input_tokens is not None and reply.output_tokens is not None
        return Generation(
            text=reply.text,
            model=self.name,
            provider=self.provider_name,
            finish_reason=reply.finish_reason,
            input_tokens=reply.input_tokens if reported else None,
            output_tokens=reply.output_tokens if reported else None,
            usage_source="reported" if reported else "estimated",
            citations=parse_citations(reply.text),
            tool_calls=tuple(
                ToolCall(
                    id=f"call_{i}",
                    name=name,
                    arguments=args if isinstance(args, str) else json.dumps(args),
                )
                for i, (name, args) in enumerate(reply.tool_calls, 1)
            ),
        )


@provider("scripted")
def _scripted(endpoint: ModelEndpoint, *, base_dir: Path | None = None) -> ScriptedModel:
    return ScriptedModel(endpoint.name)
