"""/mcp as an ASGI app beside Django: an MCP-token gate in front of the SDK's streamable HTTP transport.

Daphne runs no ASGI lifespan, so the SDK's session manager is started once, lazily, by the first request.
"""

import asyncio
import json

from django.utils import timezone
from mcp.server.transport_security import TransportSecuritySettings

from accounts.models import McpToken
from proxy import metrics
from proxy.auth import bearer_token
from proxy.dbthread import on_db_thread

from .server import server

# Requests are authenticated by bearer token, so the Host/Origin checks of the SDK add nothing here.
_transport = server.streamable_http_app(
    streamable_http_path="/mcp",
    stateless_http=True,
    json_response=True,
    transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
)


def _authorized(raw: str) -> bool:
    token = McpToken.lookup(raw)
    if token is None:
        return False
    now = timezone.now()
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
        McpToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return True


async def _deny(send) -> None:
    body = json.dumps(
        {
            "error": {
                "message": "Missing or invalid MCP token: use 'Authorization: Bearer <MCP token>' "
                "(create one with `python manage.py create_mcp_token`).",
                "type": "invalid_request_error",
                "code": "invalid_mcp_token",
                "param": None,
            }
        }
    )
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", b"application/json"),
                (b"www-authenticate", b'Bearer realm="codex-pooler-mcp"'),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body.encode()})


async def _read_body(receive) -> tuple[bytes, list]:
    messages, body = [], b""
    while True:
        message = await receive()
        messages.append(message)
        body += message.get("body", b"")
        if message["type"] != "http.request" or not message.get("more_body"):
            return body, messages


def _count_calls(body: bytes) -> None:
    """Count JSON-RPC methods (and tool names): which clients list and call what, no arguments kept."""
    try:
        payload = json.loads(body or b"null")
    except ValueError:
        return
    for call in payload if isinstance(payload, list) else [payload]:
        if isinstance(call, dict) and isinstance(call.get("method"), str):
            tool = (call.get("params") or {}).get("name", "") if call["method"] == "tools/call" else ""
            metrics.MCP_CALLS.labels(call["method"][:40], str(tool)[:40]).inc()


def _replaying(messages: list, receive):
    async def replay():
        return messages.pop(0) if messages else await receive()

    return replay


class McpApp:
    def __init__(self):
        self._ready: asyncio.Event | None = None
        self._runner: asyncio.Task | None = None

    async def _start(self) -> None:
        if self._ready is None:
            self._ready = asyncio.Event()
            self._runner = asyncio.create_task(self._run_session_manager())
        await self._ready.wait()

    async def _run_session_manager(self) -> None:
        async with server.session_manager.run():
            self._ready.set()
            await asyncio.Event().wait()  # for the life of the process

    async def __call__(self, scope, receive, send):
        headers = {k.decode("latin1").lower(): v.decode("latin1") for k, v in scope.get("headers", [])}
        if not await on_db_thread(_authorized)(bearer_token(headers)):
            return await _deny(send)
        await self._start()
        body, messages = await _read_body(receive)
        _count_calls(body)
        receive = _replaying(messages, receive)
        if scope["path"] != "/mcp":
            scope = {**scope, "path": "/mcp", "raw_path": b"/mcp"}
        await _transport(scope, receive, send)


mcp_app = McpApp()
