"""The order-desk example (an ``agent`` workflow), synced once per session, plus helpers to script the model."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from charter.models import ScriptedModel, build_gateway
from charter.runtime import Runtime

ORDER_DESK = Path(__file__).resolve().parents[2] / "src" / "charter" / "examples" / "order-desk"


@pytest.fixture(scope="session")
def _order_desk_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from charter.models import PromptRegistry
    from charter.sources import sync_sources

    dest = tmp_path_factory.mktemp("order-desk") / "project"
    shutil.copytree(ORDER_DESK, dest, ignore=shutil.ignore_patterns(".charter", "__pycache__"))
    rt = Runtime.open(dest / "charter.yaml")
    try:
        sync_sources(rt)
        registry = PromptRegistry(rt.charter, rt.store, audit=lambda **e: rt.audit.append(**e))
        for prompt in rt.spec.prompts:
            registry.approve(prompt.name, prompt.active, principal=rt.charter.principal("ines"))
    finally:
        rt.close()
    return dest


@pytest.fixture
def order_desk(_order_desk_template: Path, tmp_path: Path) -> Path:
    """A private copy of the synced order-desk example; returns the charter path."""
    dest = tmp_path / "order-desk"
    shutil.copytree(_order_desk_template, dest)
    for key in (dest / ".charter" / "keys").glob("*"):
        key.chmod(0o600)
    return dest / "charter.yaml"


@pytest.fixture
def rt(order_desk: Path) -> Iterator[Runtime]:
    runtime = Runtime.open(order_desk)
    yield runtime
    runtime.close()


def script(rt: Runtime, *replies: object) -> ScriptedModel:
    """Replace the runtime's model with a scripted one replaying ``replies`` (prices, limits from the charter)."""
    model = ScriptedModel("scripted").enqueue(*replies)  # type: ignore[arg-type]
    rt.services.gateway = build_gateway(rt, primary=model)
    return model
