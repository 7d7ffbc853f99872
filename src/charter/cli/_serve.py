"""``charter serve``: the REST API, the OpenAI-compatible endpoint and the web console (uvicorn).

With ``--demo-tokens`` a fresh token (valid 12 hours) is issued for every active principal and printed once,
for demos on a laptop; never use it on a shared machine.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Annotated

import typer

from charter.cli._app import app
from charter.cli._common import CharterOpt, console, err_console
from charter.threads import TORCH_ENV, worker_torch_threads


@app.command()
def serve(
    charter: CharterOpt = None,
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option("--workers", min=1, max=64, help="Worker processes.")] = 1,
    demo_tokens: Annotated[
        bool,
        typer.Option("--demo-tokens", help="Issue and print a 12-hour token for every active user (demos)."),
    ] = False,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn log level.")] = "info",
) -> None:
    """Serve the charter's workflow: REST API (/api, /openapi.json), OpenAI-compatible /v1, console (/)."""
    import uvicorn

    from charter.runtime import Runtime

    rt = Runtime.open(charter)
    path = str(rt.charter.path)
    try:
        if demo_tokens:
            from charter.identity import create_token

            console.print("[bold]Demo tokens[/] (shown once; valid 12 hours):", highlight=False)
            for pid, principal in sorted(rt.charter.principals.items()):
                if principal.active:
                    issued = create_token(
                        rt,
                        pid,
                        expires_in=timedelta(hours=12),
                        label="demo",
                        created_by="charter serve --demo-tokens",
                    )
                    roles = ", ".join(principal.roles) or "no role"
                    console.print(f"  {pid:<14} ({roles}): {issued.token}", highlight=False, soft_wrap=True)
    finally:
        rt.close()
    if host not in ("127.0.0.1", "localhost", "::1"):
        err_console.print(
            f"note: listening on {host}; put TLS in front and set CHARTER_SERVER_SECURE_COOKIES=1",
            highlight=False,
        )
    console.print(
        f"Console: http://{host}:{port}/   API schema: http://{host}:{port}/openapi.json", highlight=False
    )
    os.environ["CHARTER_FILE"] = path
    # N worker processes share the cores: each gets cores / N intra-op threads for batch embeddings,
    # instead of every worker starting one thread per core (oversubscription stalls OpenMP).
    os.environ.setdefault(TORCH_ENV, str(worker_torch_threads(workers)))  # charter.threads
    uvicorn.run(
        "charter.server:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        proxy_headers=False,
        server_header=False,
    )
