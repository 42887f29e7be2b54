"""Polling an account's quota windows from the backend's wham/usage endpoint (worker and admin)."""

from datetime import timedelta

import httpx
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from .models import UpstreamAccount
from .quota import from_usage_payload


def usage_url(account: UpstreamAccount) -> str:
    # The Codex base is …/backend-api/codex; usage lives beside it at …/backend-api/wham/usage.
    base = account.upstream_base_url
    return base.removesuffix("/codex") + "/wham/usage"


def poll_quota(account: UpstreamAccount) -> dict:
    """Fetch and store the account's quota snapshot; raises httpx.HTTPError or ValueError on failure."""
    response = httpx.get(
        usage_url(account),
        timeout=20,
        headers={"authorization": f"Bearer {account.access_token}", "chatgpt-account-id": account.chatgpt_account_id},
    )
    response.raise_for_status()
    payload = response.json()
    if not isinstance(payload, dict):
        raise ValueError("wham/usage answered something other than a JSON object")
    now = timezone.now()
    fields = from_usage_payload(payload, now)
    if isinstance(payload.get("plan_type"), str):
        fields["plan_type"] = payload["plan_type"]
    fields.update(quota_observed_at=now, next_quota_poll_at=now + timedelta(seconds=settings.POOLER_QUOTA_POLL_SECONDS))
    UpstreamAccount.objects.filter(pk=account.pk).update(**fields)
    return fields


def claim_due_accounts(limit: int = 20) -> list[UpstreamAccount]:
    """Accounts due for a poll, claimed by pushing their next poll out (other workers skip locked rows)."""
    now = timezone.now()
    with transaction.atomic():
        due = list(
            UpstreamAccount.objects.select_for_update(skip_locked=True)
            .filter(status__in=["active", "paused"])
            .exclude(next_quota_poll_at__gt=now)
            .order_by("next_quota_poll_at")[:limit]
        )
        claim_until = now + timedelta(seconds=settings.POOLER_QUOTA_POLL_SECONDS)
        UpstreamAccount.objects.filter(pk__in=[a.pk for a in due]).update(next_quota_poll_at=claim_until)
    return due


def back_off(account: UpstreamAccount, error: str) -> None:
    """A failed poll waits four intervals (at most an hour) before the next try."""
    now = timezone.now()
    delay = min(settings.POOLER_QUOTA_POLL_SECONDS * 4, 3600)
    UpstreamAccount.objects.filter(pk=account.pk).update(
        next_quota_poll_at=now + timedelta(seconds=delay),
        last_error=f"quota poll failed: {error}"[:300],
        last_error_at=now,
    )
