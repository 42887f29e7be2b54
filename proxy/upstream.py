"""Talking to the Codex backend: one shared pooled httpx client, header rewriting, error classes."""

import json
import time
from dataclasses import dataclass
from functools import lru_cache
from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpcore
import httpx
from django.conf import settings

from accounts.models import UpstreamAccount

from .asyncio_backend import AsyncioBackend
from .routing import sticky_key

# Never forwarded upstream: the client's credentials, hop-by-hop headers, and what httpx sets itself.
_DROP_REQUEST_HEADERS = {
    "authorization",
    "cookie",
    "host",
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "chatgpt-account-id",
    "accept-encoding",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-real-ip",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "sec-websocket-protocol",
    "x-request-id",
}
# Never passed back to the client.
_DROP_RESPONSE_HEADERS = {
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "set-cookie",
    "server",
    "date",
    "x-request-id",
    "alt-svc",
    "strict-transport-security",
}
# The serving account's windows and credits: the client is shown the pool's instead (see pool_quota.py).
_ACCOUNT_QUOTA_HEADERS = ("x-codex-primary-", "x-codex-secondary-", "x-codex-credits-")

_client: httpx.AsyncClient | None = None
_pools: "_PoolsBySession | None" = None  # the client's transport
_CLOSED = httpx.ByteStream(b"")


def client() -> httpx.AsyncClient:
    """The process-wide client: pooled keep-alive connections to the backend."""
    global _client, _pools
    if _client is None:
        _pools = _PoolsBySession(settings.POOLER_UPSTREAM_POOLS)
        _client = httpx.AsyncClient(
            timeout=_timeout(),
            # No cookie the backend sets (its CDN's, say) is kept: it would go with every account's next turns.
            cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
            transport=_pools,
            follow_redirects=False,
        )
    return _client


def _timeout() -> httpx.Timeout:
    return httpx.Timeout(settings.POOLER_READ_TIMEOUT, connect=settings.POOLER_CONNECT_TIMEOUT)


async def send_turn(method: str, url: str, headers: dict, content) -> httpx.Response:
    """A turn's request, straight to the client's pooled transport (the response streams).

    A turn needs none of the client's own layers, which cost a turn about a tenth of the pooler's CPU: no
    redirects, no auth flow, no cookies (none is kept: above), no defaults to merge into headers made whole by
    upstream_headers(). The connection pools, timeouts and network backend are the client's.
    """
    request = httpx.Request(method, _url(url), headers=headers, content=content, extensions=_extensions())
    client()  # made on first use, with its pools
    response = await _pools.handle_async_request(request)
    response.request = request
    return response


@lru_cache(maxsize=256)  # a few base URLs and paths: parsed once
def _url(url: str) -> httpx.URL:
    return httpx.URL(url)


@lru_cache(maxsize=1)
def _extensions() -> dict:
    return {"timeout": _timeout().as_dict()}


class _PoolsBySession(httpx.AsyncBaseTransport):
    """Requests go to one of several connection pools by a hash of their session (else their account): each
    pool stays small, and a session's next turn finds the connection its last one left idle.

    httpcore 1.0.9's pool checks each of its connections on every request and every response end (a syscall
    for each idle one), and closes every idle connection while it holds more than its keep-alive limit in all
    (encode/httpcore#1000): one pool for every stream of the process either opened a new connection for most
    turns once there were more concurrent streams than the limit (a TLS handshake to the real backend each),
    or, with a limit raised to match, made every request slower.
    """

    def __init__(self, count: int):
        ssl_context = httpx.create_ssl_context()  # loads the CA bundle: once, shared by the pools
        self._pools = [_transport(ssl_context) for _ in range(max(count, 1))]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        key = sticky_key(request.headers, {}) or request.headers.get("chatgpt-account-id", "")
        return await self._pools[hash(key) % len(self._pools)].handle_async_request(request)

    async def aclose(self) -> None:
        for pool in self._pools:
            await pool.aclose()


def _transport(ssl_context) -> httpx.AsyncHTTPTransport:
    """httpx's transport over a connection pool on the asyncio network backend (see asyncio_backend.py)."""
    limits = httpx.Limits(
        max_connections=None,
        max_keepalive_connections=settings.POOLER_UPSTREAM_KEEPALIVE_CONNECTIONS,
        keepalive_expiry=60,
    )
    transport = httpx.AsyncHTTPTransport(verify=ssl_context, limits=limits)
    # httpx takes no network backend of its own: its pool is replaced by the same pool built with one.
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=ssl_context,
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=AsyncioBackend(),
    )
    return transport


def upstream_headers(client_headers, account: UpstreamAccount, *, content_type: str | None = None) -> dict:
    """The client's Codex headers with the account's credentials in place of the client's key."""
    headers = {
        name.lower(): value for name, value in client_headers.items() if name.lower() not in _DROP_REQUEST_HEADERS
    }
    headers["authorization"] = f"Bearer {account.access_token}"
    headers["chatgpt-account-id"] = account.chatgpt_account_id
    headers["accept-encoding"] = "identity"
    if content_type:
        headers["content-type"] = content_type
    return headers


def client_headers(upstream: httpx.Headers, quota: dict[str, str] | None = None) -> dict:
    """The upstream response headers a client may see, with `quota` (the pool's x-codex-* headers, see
    pool_quota.py) in place of the serving account's quota and credits headers."""
    headers = {
        name: value
        for name, value in upstream.items()
        if name.lower() not in _DROP_RESPONSE_HEADERS and not name.lower().startswith(_ACCOUNT_QUOTA_HEADERS)
    }
    return headers | (quota or {})


@dataclass
class UpstreamFailure(Exception):
    """The upstream refused or failed a turn before its first byte."""

    kind: str  # connect, timeout, status, closed; chain (a websocket chain the pooler cannot rebuild)
    status: int = 0
    code: str = ""
    message: str = ""
    retry_after: float | None = None  # seconds until the account may serve again
    body: bytes = b""
    headers: dict | None = None

    @property
    def usage_limit(self) -> bool:
        return self.code == "usage_limit_reached"

    @property
    def client_fault(self) -> bool:
        """4xx other than auth and rate limits: the client's request is wrong; no failover."""
        return 400 <= self.status < 500 and self.status not in (401, 403, 408, 429)

    def summary(self) -> str:
        return f"{self.kind} {self.status or ''} {self.code}".strip()


def failure_from_response(status: int, headers: httpx.Headers | dict, body: bytes) -> UpstreamFailure:
    """Classify an error answer of the backend (HTTP status or websocket error frame)."""
    code, message, retry_after = "", "", None
    try:
        payload = json.loads(body or b"{}")
        error = payload.get("error") if isinstance(payload, dict) else None
        if isinstance(error, dict):
            code = str(error.get("code") or error.get("type") or "")
            message = str(error.get("message") or "")[:300]
            if error.get("resets_in_seconds") is not None:
                retry_after = float(error["resets_in_seconds"])
            elif error.get("resets_at") is not None:
                retry_after = float(error["resets_at"]) - time.time()
        elif isinstance(error, str):
            code = error
    except (ValueError, TypeError):
        pass
    header_retry = (headers or {}).get("retry-after")
    if retry_after is None and header_retry:
        try:
            retry_after = float(header_retry)
        except ValueError:
            retry_after = None
    return UpstreamFailure("status", status, code, message, retry_after, body, dict(headers or {}))


async def close(response: httpx.Response) -> None:
    """Close an upstream answer and let go of its stream. An httpx response and its stream refer to each
    other: left so, a turn's objects wait for the cyclic garbage collector, whose full passes pause every
    stream of the process (see pooler/asgi.py)."""
    await response.aclose()
    response.stream = _CLOSED
