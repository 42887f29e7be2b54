"""/mcp as an ASGI app beside Django: an MCP-token gate in front of the SDK's streamable HTTP transport.

Daphne runs no ASGI lifespan, so the SDK's session manager is started once, lazily, by the first request.
"""

import asyncio
import json
import logging

from django.conf import settings
from django.utils import timezone
from mcp.server.transport_security import TransportSecuritySettings

from accounts.models import McpToken
from accounts.operators import Scope, current_scope
from proxy import metrics
from proxy.auth import bearer_token
from proxy.dbthread import on_db_thread
from proxy.errors import PayloadTooLarge, PoolerError, Unauthorized

from .server import server
from .tokens import live_token

log = logging.getLogger("pooler.mcp")
# How long a request waits for the session manager's first start before it is told 503.
_START_TIMEOUT = 10

# Requests are authenticated by bearer token, so the Host/Origin checks of the SDK add nothing here.
_transport = server.streamable_http_app(
    streamable_http_path="/mcp",
    stateless_http=True,
    json_response=True,
    # The gate below enforces the pooler's own cap (413 in the OpenAI shape); the SDK's smaller default must not.
    max_request_body_size=settings.POOLER_MAX_BODY_BYTES + 1,
    transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
)


def _authorized(raw: str) -> Scope | None:
    """The pools the token's operator may see, or None for a token that is not live."""
    token = live_token(raw)
    if token is None:
        return None
    now = timezone.now()
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
        McpToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return Scope.of(token.user)


async def _refuse(send, error: PoolerError) -> None:
    """An answer from the gate itself, in the same OpenAI error shape as the rest of the pooler."""
    headers = [(name.lower().encode(), value.encode()) for name, value in error.response_headers().items()]
    await send(
        {
            "type": "http.response.start",
            "status": error.status,
            "headers": [(b"content-type", b"application/json"), *headers],
        }
    )
    await send({"type": "http.response.body", "body": json.dumps(error.body()).encode()})


_DENIED = Unauthorized(
    "Missing or invalid MCP token: use 'Authorization: Bearer <MCP token>' "
    "(create one with `python manage.py create_mcp_token`).",
    code="invalid_mcp_token",
    headers={"WWW-Authenticate": 'Bearer realm="codex-pooler-mcp"'},
)
_UNAVAILABLE = PoolerError(
    "The MCP server could not start; see the pooler's log.",
    status=503,
    type="server_error",
    code="mcp_unavailable",
    retry_after=30,
)


class _TooLarge(Exception):
    pass


async def _read_body(receive, declared: str, limit: int) -> tuple[bytes, list]:
    """The whole request body (and its messages, to replay), refused past `limit` bytes before it is all read."""
    if declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    messages, body = [], b""
    while True:
        message = await receive()
        messages.append(message)
        body += message.get("body", b"")
        if len(body) > limit:
            raise _TooLarge
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
    def __init__(self, session_manager=None):
        self._session_manager = session_manager
        self._started: asyncio.Event | None = None
        self._runner: asyncio.Task | None = None  # held, so the running manager's task is never collected
        self._running = False

    async def _start(self) -> bool:
        """Whether the session manager runs. The first request starts it, and it never restarts (the SDK runs
        one only once): after a failed start every request hears 503 at once instead of waiting forever."""
        if self._started is None:
            self._started = asyncio.Event()
            self._runner = asyncio.create_task(self._run_session_manager(self._started))
        try:
            await asyncio.wait_for(asyncio.shield(self._started.wait()), _START_TIMEOUT)
        except TimeoutError:
            log.error("the MCP session manager did not start within %s s", _START_TIMEOUT)
        return self._running

    async def _run_session_manager(self, started: asyncio.Event) -> None:
        try:
            async with (self._session_manager or server.session_manager).run():
                self._running = True
                started.set()
                await asyncio.Event().wait()  # for the life of the process
        except Exception:
            log.exception("the MCP session manager stopped")
        finally:
            self._running = False
            started.set()

    async def __call__(self, scope, receive, send):
        headers = {k.decode("latin1").lower(): v.decode("latin1") for k, v in scope.get("headers", [])}
        pools = await on_db_thread(_authorized)(bearer_token(headers))
        if pools is None:
            return await _refuse(send, _DENIED)
        # Read by every tool of this request (queries.py), down to the database threads (contextvars follow).
        current_scope.set(pools)
        limit = settings.POOLER_MAX_BODY_BYTES
        try:
            body, messages = await _read_body(receive, headers.get("content-length", ""), limit)
        except _TooLarge:
            return await _refuse(send, PayloadTooLarge(f"Request body is larger than the limit of {limit} bytes."))
        if not await self._start():
            return await _refuse(send, _UNAVAILABLE)
        _count_calls(body)
        receive = _replaying(messages, receive)
        if scope["path"] != "/mcp":
            scope = {**scope, "path": "/mcp", "raw_path": b"/mcp"}
        await _transport(scope, receive, send)


mcp_app = McpApp()
