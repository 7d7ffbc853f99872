"""Connections to upstream MCP servers: one live client per server, driven from synchronous code.

Charter's core is synchronous (a tool call runs in a worker thread); the MCP SDK is asynchronous. An
:class:`UpstreamHub` (one per runtime) runs an event loop in a daemon thread and keeps one connected
:class:`mcp.Client` per declared server, so a call pays one round trip, not a process start.

Invariants:

* every request to an upstream has a deadline (the server's ``timeout``); a call that misses it is
  cancelled and the connection is dropped (a stdio server is killed and restarted on the next call), so a
  hung upstream can never hold a worker or answer late into a later call;
* a listing is never served from a cache (``cache=None``): pinning compares what the server says *now*;
* the hub knows when an earlier comparison may be out of date: every server has a **change generation**,
  bumped when the upstream says its tool list changed (``notifications/tools/list_changed`` on 2025-era
  connections, a ``subscriptions/listen`` event on 2026-07-28 ones) and whenever the connection is
  dropped or ends (notifications may have been missed). A comparison is *fresh* only while the generation
  is the one it started under and it is younger than the server's ``pin_recheck``
  (:func:`charter.tools._mcp_pins.checked_pin` decides what that means for a call);
* credentials reach the upstream only as declared: stdio servers get the SDK's minimal default environment
  plus the variables the charter maps by name (``env``); HTTP servers get ``Authorization: Bearer`` from
  ``token_env``. A declared variable that is unset is an error naming it, never an empty value.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from charter.errors import CharterRuntimeError, UsageError

if TYPE_CHECKING:
    from mcp import Client

    from charter.runtime import Runtime
    from charter.spec import McpServer

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

    def __init__(self, spec: McpServer, base_dir: Path, on_change: Callable[[str], None]) -> None:
        self.spec = spec
        self.base_dir = base_dir
        self.client: Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None
        #: called on the hub's loop with ``"notification"`` (the upstream's tool list changed) or
        #: ``"disconnected"`` (changes may have been missed)
        self.on_change = on_change

    async def _on_message(self, message: Any) -> None:
        """The session's message handler: a 2025-era ``notifications/tools/list_changed``."""
        if getattr(message, "method", None) == "notifications/tools/list_changed":
            self.on_change("notification")
        await asyncio.sleep(0)

    async def _follow(self, client: Client) -> None:
        """On a 2026-07-28 connection, changes arrive on a ``subscriptions/listen`` stream; when the stream
        ends or cannot be opened, nothing more is heard (the re-check interval still applies)."""
        try:
            async with client.listen(tools_list_changed=True) as sub:
                async for _event in sub:
                    self.on_change("notification")
        except asyncio.CancelledError:
            raise
        except Exception:
            log.debug("MCP server %s: tools/list_changed stream ended", self.spec.id, exc_info=True)
        self.on_change("disconnected")

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
                async with Client(
                    transport,
                    cache=None,
                    read_timeout_seconds=call_timeout,
                    message_handler=self._on_message,
                ) as client:
                    follow: asyncio.Task[None] | None = None
                    if _listens(client):
                        follow = asyncio.get_running_loop().create_task(self._follow(client))
                    self.client = client
                    if not ready.done():
                        ready.set_result(client)
                    try:
                        await stop.wait()
                    finally:
                        if follow is not None:
                            follow.cancel()
                            await asyncio.gather(follow, return_exceptions=True)
            except BaseException as exc:  # reported to the waiting caller; the hub keeps running
                if not ready.done():
                    ready.set_exception(
                        exc if isinstance(exc, Exception) else UpstreamError("connection cancelled")
                    )
                if not isinstance(exc, Exception):
                    raise
            finally:
                self.client = None
                self.on_change("disconnected")

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
        if task is not None:
            self.on_change("disconnected")
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), 5)
            except BaseException:
                task.cancel()
                try:
                    await task
                except BaseException:
                    log.debug("upstream connection task ended with an error", exc_info=True)


def _listens(client: Client) -> bool:
    """Whether the server offers a tools/list_changed stream (2026-07-28 and ``tools.listChanged``)."""
    from mcp_types.version import MODERN_PROTOCOL_VERSIONS

    try:
        tools = client.server_capabilities.tools
        return client.protocol_version in MODERN_PROTOCOL_VERSIONS and bool(tools and tools.list_changed)
    except Exception:
        return False


@dataclass
class _Checked:
    """The last comparison of a server's live listing with the pins: the generation and monotonic time it
    started at, and the pins it left (tool → pin, ``None`` for a tool never pinned)."""

    generation: int
    started: float
    pins: dict[str, Any]


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        return _describe(exc.exceptions[0])
    return f"{type(exc).__name__}: {exc}"[:500]


class UpstreamHub:
    """The runtime's upstream connections (see the module docstring). Thread-safe."""

    def __init__(self, rt: Runtime) -> None:
        self.runtime = rt
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._conns: dict[str, _Connection] = {}
        self._generation: dict[str, int] = {}
        self._checked: dict[str, _Checked] = {}
        self._check_locks: dict[str, threading.Lock] = {}
        self._closing = False
        self._rechecking: set[str] = set()  # servers with a background comparison running
        self._recheck_again: set[str] = set()  # … and a change announced while it ran

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
                conn = self._conns[server_id] = _Connection(
                    spec, self.runtime.charter.base_dir, lambda why: self.changed(server_id, why)
                )
            return conn

    # -------------------------------------------------------------------------------- change tracking
    def changed(self, server_id: str, why: str = "invalidated") -> None:
        """Make every earlier comparison of ``server_id`` stale. On a ``"notification"`` the listing is
        also compared again at once in the background (so a changed tool is disabled, and its owner told,
        without waiting for a call): one comparison at a time per server, and a burst of announcements
        while it runs leads to one more, never to one thread per announcement."""
        with self._lock:
            self._generation[server_id] = self._generation.get(server_id, 0) + 1
            self._checked.pop(server_id, None)
            if why != "notification" or self._closing:
                return
            if server_id in self._rechecking:  # a burst of notifications: one more comparison, not one each
                self._recheck_again.add(server_id)
                return
            self._rechecking.add(server_id)
        log.info("MCP server %s says its tool list changed; comparing with the pins", server_id)
        threading.Thread(
            target=self._recheck, args=(server_id,), name=f"mcp-recheck-{server_id}", daemon=True
        ).start()

    def _recheck(self, server_id: str) -> None:
        from charter.tools._mcp_pins import recheck_server

        while True:
            try:
                recheck_server(self.runtime, server_id)
            except Exception:
                log.warning(
                    "MCP server %s: re-checking the pins after a change failed", server_id, exc_info=True
                )
            with self._lock:
                if server_id in self._recheck_again and not self._closing:
                    self._recheck_again.discard(server_id)
                    continue
                self._recheck_again.discard(server_id)
                self._rechecking.discard(server_id)
                return

    def fresh_pins(self, server_id: str) -> dict[str, Any] | None:
        """The pins the last comparison left, if it is still fresh (see the module docstring), else None."""
        interval = self.runtime.spec.mcp.server(server_id).pin_recheck.total_seconds()
        with self._lock:
            checked = self._checked.get(server_id)
            if (
                checked is None
                or checked.generation != self._generation.get(server_id, 0)
                or time.monotonic() - checked.started >= interval
            ):
                return None
            return checked.pins

    def check_lock(self, server_id: str) -> threading.Lock:
        """Held while one comparison of ``server_id`` runs, so concurrent calls list the tools once."""
        with self._lock:
            return self._check_locks.setdefault(server_id, threading.Lock())

    def check_started(self, server_id: str) -> tuple[int, float]:
        """The generation and time a comparison starts under (pass them to :meth:`checked`)."""
        with self._lock:
            return self._generation.get(server_id, 0), time.monotonic()

    def checked(self, server_id: str, started: tuple[int, float], pins: dict[str, Any]) -> None:
        """Record a finished comparison; ignored if a change was signalled since it started."""
        with self._lock:
            if self._generation.get(server_id, 0) == started[0]:
                self._checked[server_id] = _Checked(started[0], started[1], dict(pins))

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
        with self._lock:
            self._closing = True
            self._checked.clear()
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


def hub_for(rt: Runtime) -> UpstreamHub:
    """The runtime's hub (created on first use, cached on the runtime)."""
    with _hubs_lock:
        hub = rt.services.mcp_hub
        if not isinstance(hub, UpstreamHub):
            hub = UpstreamHub(rt)
            rt.services.mcp_hub = hub
        return hub
