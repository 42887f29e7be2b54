"""Pool API key authentication for every runtime route."""

from django.utils import timezone

from accounts.models import PoolApiKey

from .dbthread import on_db_thread
from .errors import Unauthorized


def bearer_token(headers) -> str:
    """The bearer value of an Authorization header (Django request.headers or a dict)."""
    value = headers.get("authorization") or headers.get("Authorization") or ""
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _lookup_key(raw: str) -> PoolApiKey | None:
    return PoolApiKey.lookup(raw, PoolApiKey.objects.select_related("pool"))


async def authenticate(headers) -> PoolApiKey:
    """The live Pool API key of the request, or Unauthorized (also for MCP tokens)."""
    raw = bearer_token(headers)
    if not raw:
        raise Unauthorized("Missing bearer authentication in header: use 'Authorization: Bearer <pool API key>'.")
    key = await on_db_thread(_lookup_key)(raw)
    if key is None:
        raise Unauthorized("Incorrect, revoked or expired Pool API key provided.")
    if not key.pool.enabled:
        raise Unauthorized("The pool of this API key is disabled.", code="pool_disabled")
    key.seen_at = timezone.now()
    return key
