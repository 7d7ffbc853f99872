"""Agent workflows (``workflow.kind: agent``): a task carried out with tools over several model steps, under
the same rules as every other request — see :mod:`charter.agents._loop` and docs/agents.md.

```python
from charter.agents import run_task, resume_ready

result = run_task(rt, principal, "Close ticket T-1001: the requester confirmed the fix")
result.run_status          # "completed", "waiting" (an approval), "stopped" (a limit) or "failed"
resume_ready(rt)           # after approvals are decided: continue every run that can go on
```
"""

from charter.agents._loop import (
    RUN_STATES,
    AgentRun,
    get_run,
    list_runs,
    respond,
    resume_ready,
    resume_run,
    run_task,
    shown_run,
    visible_run,
    visible_runs,
)

__all__ = [
    "RUN_STATES",
    "AgentRun",
    "get_run",
    "list_runs",
    "respond",
    "resume_ready",
    "resume_run",
    "run_task",
    "shown_run",
    "visible_run",
    "visible_runs",
]
