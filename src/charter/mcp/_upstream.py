"""Connections to upstream MCP servers: one live client per server, driven from synchronous code.

Charter's core is synchronous (a tool call runs in a worker thread); the MCP SDK is asynchronous. An
:class:`UpstreamHub` (one per runtime) runs an event loop in a daemon thread and keeps one connected
:class:`mcp.Client` per declared server, so a call pays one round trip, not a process start.

Invariants:

* every request to an upstream has a deadline (the server's ``timeout``); a call that misses it is
  cancelled and the connection is dropped (a stdio server is killed and restarted on the next call), so a
  hung upstream can never hold a worker or answer late into a later call;
* a listing is never served from a cache (``cache=None``): pinning compares what the server says *now*;
* credentials reach the upstream only as declared: stdio servers get the SDK's minimal default environment
  plus the variables the charter maps by name (``env``); HTTP servers get ``Authorization: Bearer`` from
  ``token_env``. A declared variable that is unset is an error naming it, never an empty value.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from charter.errors import CharterRuntimeError, UsageError

if TYPE_CHECKING:
    from mcp import Client

    from charter.runtime import Runtime
    from charter.spec._schema import McpServer

log = logging.getLogger("charter.mcp")
T = TypeVar("T")


class UpstreamError(CharterRuntimeError):
    """An upstream MCP server could not be reached, failed, or missed its deadline."""

    exit_code = 1


@dataclass(frozen=True)
class LiveTool:
    """A tool as the upstream lists it right now (data, never policy)."""

    name: str
    description: str
    input_schema: dict[str, Any]


@dataclass(frozen=True)
class CallOutcome:
    """What an upstream returned for one call, before masking and size limits."""

    text: str
    is_error: bool
    structured: Any = None


def _transport(spec: McpServer, base_dir: Path) -> Any:
    """The SDK transport for a declared server (stdio parameters or a streamable HTTP transport)."""
    from mcp.client.stdio import StdioServerParameters

    if spec.command is not None:
        env: dict[str, str] = {}
        for name, source in spec.env.items():
            value = os.environ.get(source)
            if value is None:
                raise UsageError(
                    f"MCP server {spec.id!r}: environment variable {source} (for {name}) is not set"
                )
            env[name] = value
        cwd = str((base_dir / spec.cwd).resolve()) if spec.cwd else None
        return StdioServerParameters(command=spec.command[0], args=list(spec.command[1:]), env=env, cwd=cwd)
    assert spec.url is not None
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    headers: dict[str, str] = {}
    if spec.token_env:
        token = os.environ.get(spec.token_env)
        if not token:
            raise UsageError(f"MCP server {spec.id!r}: environment variable {spec.token_env} is not set")
        headers["Authorization"] = f"Bearer {token}"
    return streamable_http_client(spec.url, http_client=create_mcp_http_client(headers=headers))


class _Connection:
    """One connected client, owned by a task on the hub's loop (the SDK's context must be entered and left
    in one task); other tasks use it until it is dropped."""

    def __init__(self, spec: McpServer, base_dir: Path) -> None:
        self.spec = spec
        self.base_dir = base_dir
        self.client: Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None

    async def get(self) -> Client:
        if self.client is not None and self._task is not None and not self._task.done():
            return self.client
        await self.drop()
        from mcp import Client

        transport = _transport(self.spec, self.base_dir)
        timeout = self.spec.connect_timeout.total_seconds()
        call_timeout = self.spec.timeout.total_seconds()
        ready: asyncio.Future[Client] = asyncio.get_running_loop().create_future()
        ready.add_done_callback(lambda f: None if f.cancelled() else f.exception())  # never "unretrieved"
        stop = asyncio.Event()

        async def hold() -> None:
            try:
                async with Client(transport, cache=None, read_timeout_seconds=call_timeout) as client:
                    self.client = client
                    if not ready.done():
                        ready.set_result(client)
                    await stop.wait()
            except BaseException as exc:  # reported to the waiting caller; the hub keeps running
                if not ready.done():
                    ready.set_exception(
                        exc if isinstance(exc, Exception) else UpstreamError("connection cancelled")
                    )
                if not isinstance(exc, Exception):
                    raise
            finally:
                self.client = None

        self._stop = stop
        self._task = asyncio.get_running_loop().create_task(hold(), name=f"mcp-upstream-{self.spec.id}")
        try:
            return await asyncio.wait_for(asyncio.shield(ready), timeout)
        except TimeoutError:
            await self.drop()
            raise UpstreamError(
                f"MCP server {self.spec.id!r} did not start or connect within {timeout:g}s"
            ) from None
        except UpstreamError:
            raise
        except Exception as exc:
            await self.drop()
            raise UpstreamError(
                f"MCP server {self.spec.id!r} could not be reached: {_describe(exc)}"
            ) from None

    async def drop(self) -> None:
        """Close the connection (kills a stdio server); the next call reconnects."""
        task, self._task = self._task, None
        if self._stop is not None:
            self._stop.set()
        self.client = None
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), 5)
            except BaseException:
                task.cancel()
                try:
                    await task
                except BaseException:
                    log.debug("upstream connection task ended with an error", exc_info=True)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        return _describe(exc.exceptions[0])
    return f"{type(exc).__name__}: {exc}"[:500]


class UpstreamHub:
    """The runtime's upstream connections (see the module docstring). Thread-safe."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._conns: dict[str, _Connection] = {}

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or not self._loop.is_running():
                loop = asyncio.new_event_loop()
                started = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(started.set)
                    loop.run_forever()

                self._thread = threading.Thread(target=run, name="charter-mcp-upstream", daemon=True)
                self._thread.start()
                started.wait(10)
                self._loop = loop
            return self._loop

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        loop = self._ensure_loop()
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result(
                timeout + 10
            )  # the coroutine enforces ``timeout`` itself; this is a backstop
        except TimeoutError:
            future.cancel()
            raise UpstreamError("the upstream call did not finish") from None

    def _conn(self, server_id: str) -> _Connection:
        try:
            spec = self.runtime.spec.mcp.server(server_id)
        except KeyError:
            raise UsageError(f"no MCP server {server_id!r} in the charter's mcp.servers") from None
        with self._lock:
            conn = self._conns.get(server_id)
            if conn is None:
                conn = self._conns[server_id] = _Connection(spec, self.runtime.charter.base_dir)
            return conn

    def list_tools(self, server_id: str) -> dict[str, LiveTool]:
        """The server's tools as listed now (every page), by name."""
        conn = self._conn(server_id)
        timeout = conn.spec.timeout.total_seconds()

        async def fetch() -> dict[str, LiveTool]:
            client = await conn.get()
            tools: dict[str, LiveTool] = {}
            cursor: str | None = None
            try:
                async with asyncio.timeout(timeout):
                    for _ in range(100):
                        page = await client.list_tools(cursor=cursor, cache_mode="bypass")
                        for t in page.tools:
                            tools[t.name] = LiveTool(
                                name=t.name,
                                description=t.description or "",
                                input_schema=dict(t.input_schema or {}),
                            )
                        cursor = page.next_cursor
                        if cursor is None:
                            break
            except TimeoutError:
                await conn.drop()
                raise UpstreamError(
                    f"MCP server {server_id!r} did not list its tools within {timeout:g}s"
                ) from None
            except UpstreamError:
                raise
            except Exception as exc:
                await conn.drop()
                raise UpstreamError(f"MCP server {server_id!r}: listing failed: {_describe(exc)}") from None
            return tools

        return self._run(fetch(), timeout + conn.spec.connect_timeout.total_seconds())

    def call_tool(self, server_id: str, tool: str, args: dict[str, Any]) -> CallOutcome:
        """Call ``tool`` with ``args``; cut off after the server's ``timeout`` (the connection is then
        dropped, so a late answer can never be read as the answer to a later call)."""
        conn = self._conn(server_id)
        timeout = conn.spec.timeout.total_seconds()

        async def call() -> CallOutcome:
            client = await conn.get()
            try:
                async with asyncio.timeout(timeout):
                    result = await client.call_tool(tool, args, read_timeout_seconds=timeout)
            except TimeoutError:
                await conn.drop()
                raise UpstreamError(
                    f"upstream tool {server_id}/{tool} did not answer within {timeout:g}s (cut off)"
                ) from None
            except Exception as exc:
                await conn.drop()
                raise UpstreamError(f"upstream tool {server_id}/{tool} failed: {_describe(exc)}") from None
            parts: list[str] = []
            for block in result.content:
                text = getattr(block, "text", None)
                if isinstance(text, str):
                    parts.append(text)
                else:
                    parts.append(f"[{getattr(block, 'type', 'content')} omitted]")
            return CallOutcome(
                text="\n".join(parts), is_error=bool(result.is_error), structured=result.structured_content
            )

        return self._run(call(), timeout + conn.spec.connect_timeout.total_seconds())

    def close(self) -> None:
        """Drop every connection and stop the loop."""
        loop = self._loop
        if loop is None or not loop.is_running():
            return

        async def drop_all() -> None:
            for conn in list(self._conns.values()):
                await conn.drop()

        try:
            asyncio.run_coroutine_threadsafe(drop_all(), loop).result(15)
        except Exception:
            log.debug("closing upstream connections failed", exc_info=True)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(5)
        self._loop = None


_hubs_lock = threading.Lock()


def hub_for(runtime: Runtime) -> UpstreamHub:
    """The runtime's hub (created on first use, cached on the runtime)."""
    with _hubs_lock:
        hub = getattr(runtime, "_charter_mcp_hub", None)
        if not isinstance(hub, UpstreamHub):
            hub = UpstreamHub(runtime)
            runtime._charter_mcp_hub = hub  # type: ignore[attr-defined]
        return hub
