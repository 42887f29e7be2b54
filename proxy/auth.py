"""Pool API key authentication for every runtime route."""

from django.utils import timezone

from accounts import secrets
from accounts.models import PoolApiKey

from . import turn_reads
from .dbthread import on_db_thread
from .errors import Forbidden, Unauthorized


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
    return _live(PoolApiKey.find(raw, by_prefix=turn_reads.key_by_prefix))


async def lookup_key_on_loop(raw: str) -> PoolApiKey:
    """lookup_key with its read on the event loop (loop_db.py)."""
    row = None
    if raw.startswith(PoolApiKey.SECRET_KIND + "_"):
        row = await turn_reads.key_by_prefix_on_loop(secrets.prefix_of(raw))
    return _live(PoolApiKey.find(raw, by_prefix=lambda _prefix: row))


def _live(key: PoolApiKey | None) -> PoolApiKey:
    if key is None:
        raise Unauthorized("Incorrect, revoked or expired Pool API key provided.")
    check_usable(key)
    if not key.pool.enabled:
        raise Unauthorized("The pool of this API key is disabled.", code="pool_disabled")
    return key


def check_usable(key: PoolApiKey) -> None:
    """Refuse a key that is known but may not be used now, saying why (its holder has the whole secret)."""
    reason = key.refusal(timezone.now())
    if reason == "expired":
        raise Unauthorized(
            f"This Pool API key expired at {key.expires_at.isoformat()}; ask the operator for a new one.",
            code="key_expired",
        )
    if reason == "paused":
        # 403: the key is valid, its operator has paused it; clients do not retry a 403.
        raise Forbidden("This Pool API key is paused by its operator; it works again once resumed.", code="key_paused")
    if reason is not None:
        raise Unauthorized("Incorrect, revoked or expired Pool API key provided.")


def check_address(key: PoolApiKey, address: str | None) -> None:
    """Refuse a request from outside the key's allowed networks (403: a retry from there cannot succeed)."""
    if not key.allows_address(address):
        raise Forbidden(
            f"This Pool API key may not be used from {address or 'an unknown address'}: it is limited to some "
            "networks; ask its operator.",
            code="ip_not_allowed",
        )


async def authenticate(headers) -> PoolApiKey:
    """The live Pool API key of a request (turns check it in the same database step as their plan instead)."""
    return await on_db_thread(lookup_key)(require_bearer(headers))
