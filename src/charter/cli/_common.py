"""Shared CLI plumbing: the options every command takes, output in Rich or JSON, and the runtime."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from charter.errors import AuthenticationError

if TYPE_CHECKING:  # imported when used: `charter --help` and remote asks stay fast
    from charter.runtime import Runtime
    from charter.spec import Principal

console = Console()
err_console = Console(stderr=True)

CharterOpt = Annotated[
    Path | None,
    typer.Option(
        "--charter", "-c", envvar="CHARTER_FILE", help="Charter file or its folder (default: ./charter.yaml)."
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print exactly one JSON document on stdout.")]
AsOpt = Annotated[
    str,
    typer.Option(
        "--as",
        help="Act as this user. An operator convenience on the local machine only; "
        "the server always authenticates with a token.",
    ),
]


def emit(data: Any, as_json: bool, render: Callable[[Any], None] | None = None) -> None:
    """Print ``data`` as one JSON document (``--json``) or through ``render`` for people."""
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n")
        sys.stdout.flush()
    elif render is not None:
        render(data)
    else:
        console.print(data)


def open_runtime(charter: Path | None) -> Runtime:
    from charter.runtime import Runtime

    return Runtime.open(charter)


def acting_principal(rt: Runtime, user: str) -> Principal:
    """The principal for ``--as``: must exist and be active, else a usage error (audited)."""
    principal = rt.charter.principal(user)
    if not principal.active:
        rt.audit.append(
            actor=user,
            action="auth.refused",
            resource="cli",
            outcome="denied",
            details={"reason": "inactive user"},
        )
        raise AuthenticationError(f"user {user!r} is not active")
    return principal
