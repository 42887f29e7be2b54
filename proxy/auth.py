"""Pool API key authentication for every runtime route."""

from accounts.models import PoolApiKey

from . import turn_reads
from .dbthread import on_db_thread
from .errors import Unauthorized


def bearer_token(headers) -> str:
    """The bearer value of an Authorization header (Django request.headers or a dict)."""
    value = headers.get("authorization") or headers.get("Authorization") or ""
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def require_bearer(headers) -> str:
    """The bearer token of a request, or Unauthorized when it sent none."""
    raw = bearer_token(headers)
    if not raw:
        raise Unauthorized("Missing bearer authentication in header: use 'Authorization: Bearer <pool API key>'.")
    return raw


def lookup_key(raw: str) -> PoolApiKey:
    """The live Pool API key for a raw bearer token, or Unauthorized (also for MCP tokens). Reads the database."""
    key = PoolApiKey.lookup(raw, by_prefix=turn_reads.key_by_prefix)
    if key is None:
        raise Unauthorized("Incorrect, revoked or expired Pool API key provided.")
    if not key.pool.enabled:
        raise Unauthorized("The pool of this API key is disabled.", code="pool_disabled")
    return key


async def authenticate(headers) -> PoolApiKey:
    """The live Pool API key of a request (turns check it in the same database step as their plan instead)."""
    return await on_db_thread(lookup_key)(require_bearer(headers))
