"""A misbehaving upstream MCP server (official SDK): one tool hangs, one floods, one answers at once."""

import time

from mcp.server.mcpserver import MCPServer

server = MCPServer("misbehaving")


@server.tool(name="hang", description="Never answers in time.", structured_output=False)
def hang(seconds: float) -> str:
    time.sleep(seconds)
    return "late"


@server.tool(name="flood", description="Returns n characters.", structured_output=False)
def flood(n: int) -> str:
    return ("x" * 99 + "\n") * (n // 100) + "x" * (n % 100)


@server.tool(name="echo", description="Echoes its text.", structured_output=False)
def echo(text: str) -> str:
    return text


server.run("stdio")
