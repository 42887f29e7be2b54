"""Access-token refresh: single-flight per account across processes, surviving refresh-token rotation."""

import logging
from datetime import timedelta

import httpx
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.utils import timezone
from prometheus_client import Counter

from . import audit, jwt_claims
from .models import AccountStatus, UpstreamAccount

# Counted where refreshes happen: in the web processes (a turn's token about to expire) and the worker.
TOKEN_REFRESHES = Counter("pooler_token_refreshes", "Access token refreshes", ["result"])

log = logging.getLogger("pooler.tokens")

# Refresh errors that mean the refresh token is dead: the operator must log the account in again.
_DEAD_GRANT = {"invalid_grant", "refresh_token_reused", "refresh_token_expired", "refresh_token_invalidated"}
_REFRESH_LOCK_ID = 0x636F646578  # one pool-wide advisory lock: exchanges never burst in parallel


class RefreshFailed(Exception):
    def __init__(self, reason: str, dead: bool):
        super().__init__(reason)
        self.reason, self.dead = reason, dead


def _serialize_exchanges() -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_REFRESH_LOCK_ID])


def _exchange(refresh_token: str) -> dict:
    response = httpx.post(
        f"{settings.POOLER_AUTH_BASE_URL.rstrip('/')}/oauth/token",
        json={
            "client_id": settings.POOLER_OAUTH_CLIENT_ID,
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "scope": "openid profile email",
        },
        timeout=30,
    )
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if response.status_code == 200:
        # A proxy or outage page can answer 200 too: without an access token the old tokens stay.
        if not isinstance(payload, dict) or not payload.get("access_token") or not _all_strings(payload):
            raise RefreshFailed("malformed token reply", dead=False)
        return payload
    error = payload.get("error") if isinstance(payload, dict) else None
    code = error.get("code") or error.get("type") if isinstance(error, dict) else error
    code = str(code or f"http_{response.status_code}")
    raise RefreshFailed(code, dead=code in _DEAD_GRANT or response.status_code in (400, 401))


def _all_strings(tokens: dict) -> bool:
    return all(isinstance(tokens.get(name, ""), str) for name in ("access_token", "refresh_token", "id_token"))


def refresh_account(
    account_id: int, *, seen_access_token: str | None = None, actor: str = "pooler", force: bool = False
) -> UpstreamAccount:
    """Refresh an account's tokens unless another process already did; returns the fresh row."""
    return try_refresh(account_id, seen_access_token=seen_access_token, actor=actor, force=force)[0]


def try_refresh(
    account_id: int, *, seen_access_token: str | None = None, actor: str = "pooler", force: bool = False
) -> tuple[UpstreamAccount, bool]:
    """Like refresh_account, and also says whether this call exchanged the tokens (False: another process
    already had, or the account needs a new login).

    The row lock is held across the whole exchange and the new refresh token is stored in the same
    transaction that spent the old one, so two refreshes of one account can never race (a reused
    refresh token kills the account upstream).
    """
    try:
        with transaction.atomic():
            account = UpstreamAccount.objects.select_for_update().get(pk=account_id)
            now = timezone.now()
            already_fresh = (seen_access_token is not None and account.access_token != seen_access_token) or (
                not force and seen_access_token is None and not account.token_needs_refresh(now)
            )
            if already_fresh or account.status == AccountStatus.REAUTH_REQUIRED:
                return account, False
            if not account.refresh_token:
                raise RefreshFailed("no_refresh_token", dead=True)
            _serialize_exchanges()
            try:
                tokens = _exchange(account.refresh_token)
            except httpx.HTTPError as exc:
                raise RefreshFailed(f"auth server unreachable: {type(exc).__name__}", dead=False) from None
            account.access_token = tokens["access_token"]
            account.refresh_token = tokens.get("refresh_token") or account.refresh_token
            account.id_token = tokens.get("id_token") or account.id_token
            try:
                account.token_expires_at = jwt_claims.expiry(account.access_token)
            except ValueError:
                account.token_expires_at = None
            if not account.token_expires_at and isinstance(tokens.get("expires_in"), int):
                account.token_expires_at = now + timedelta(seconds=tokens["expires_in"])
            account.last_refresh_at = now
            account.save(
                update_fields=[
                    "access_token",
                    "refresh_token",
                    "id_token",
                    "token_expires_at",
                    "last_refresh_at",
                    "updated_at",
                ]
            )
            TOKEN_REFRESHES.labels("ok").inc()
            log.info("refreshed token of account %s", account.label)
            return account, True
    except RefreshFailed as failure:
        TOKEN_REFRESHES.labels("dead" if failure.dead else "failed").inc()
        if failure.dead:
            _mark_reauth_required(account_id, failure.reason, actor)
        raise
    finally:
        close_old_connections()


def _mark_reauth_required(account_id: int, reason: str, actor: str) -> None:
    account = UpstreamAccount.objects.get(pk=account_id)
    before = audit.snapshot(account)
    account.status = AccountStatus.REAUTH_REQUIRED
    account.last_error = f"token refresh failed: {reason}"
    account.last_error_at = timezone.now()
    account.save(update_fields=["status", "last_error", "last_error_at", "updated_at"])
    audit.record(actor, "reauth_required", account, before, audit.snapshot(account))
    log.warning("account %s needs a new login: refresh failed with %s", account.label, reason)


# Refreshes wait on a row lock and the network: keep them off the shared ORM thread.
refresh_account_async = sync_to_async(refresh_account, thread_sensitive=False)
