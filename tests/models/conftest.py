"""Fixtures for the model gateway: a copy of the billing example with a priced, scripted model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from charter.models import PromptRegistry
from charter.runtime import Runtime

PRICES = {"input_per_1k": 1.0, "output_per_1k": 2.0}  # 1e6 and 2e6 nano-dollars per token: exact sums


def deep_merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def edit_charter(charter_path: Path, changes: dict[str, Any]) -> Path:
    """Apply ``changes`` (deep-merged; ``None`` deletes a key) to a charter file."""
    data = yaml.safe_load(charter_path.read_text())
    data = deep_merge(data, changes)
    for section, value in list(changes.items()):
        if isinstance(value, dict):
            for k, v in value.items():
                if v is None:
                    data[section].pop(k, None)
    charter_path.write_text(yaml.safe_dump(data, sort_keys=False))
    return charter_path


def scripted_model_section(
    *, fallback: bool = True, timeout: str = "5s", retries: int = 2, max_output_tokens: int = 100
) -> dict[str, Any]:
    section: dict[str, Any] = {
        "provider": "scripted",
        "name": "primary",
        "prices": PRICES,
        "timeout": timeout,
        "retries": retries,
        "max_output_tokens": max_output_tokens,
        "fallback": {
            "provider": "scripted",
            "name": "backup",
            "prices": PRICES,
            "timeout": "5s",
            "retries": 0,
            "max_output_tokens": max_output_tokens,
        }
        if fallback
        else None,
    }
    return section


def approve_active_prompt(rt: Runtime) -> None:
    registry = PromptRegistry(rt.charter, rt.store, audit=lambda **e: rt.audit.append(**e))
    for p in rt.spec.prompts:
        registry.approve(p.name, registry.active_version(p.name), principal=rt.charter.principal("lena"))


@pytest.fixture
def scripted_project(project: Path) -> Path:
    """The example with a scripted, priced primary and fallback model and a roomy budget."""
    return edit_charter(
        project, {"model": scripted_model_section(), "budgets": {"per_task_usd": 5.0, "monthly_usd": 1000.0}}
    )


@pytest.fixture
def open_runtime() -> Iterator[Any]:
    """``open_runtime(path, approve=True)``: a Runtime (closed after the test), active prompt approved."""
    opened: list[Runtime] = []

    def _open(path: Path, *, approve: bool = True, database_url: str | None = None) -> Runtime:
        rt = Runtime.open(path, database_url=database_url)
        opened.append(rt)
        if approve:
            approve_active_prompt(rt)
        return rt

    yield _open
    for rt in opened:
        rt.close()
