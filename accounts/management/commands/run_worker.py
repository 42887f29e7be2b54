"""The worker role: token refresh, quota polling and housekeeping. Safe to run in several copies."""

import logging
import time
from datetime import timedelta

import httpx
from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from accounts.models import Admission, ConcurrencySlot, RequestLog, SessionAffinity, UpstreamAccount
from proxy import quota_poll
from proxy.tokens import RefreshFailed, refresh_account

from ._base import BaseCommand

log = logging.getLogger("pooler.worker")


def refresh_expiring_tokens() -> int:
    """Refresh every token that expires within the margin; accounts waiting for a reset included."""
    soon = timezone.now() + timedelta(seconds=settings.POOLER_REFRESH_MARGIN_SECONDS)
    due = (
        UpstreamAccount.objects.filter(status__in=["active", "paused"], token_expires_at__lte=soon)
        .exclude(refresh_token="")
        .values_list("id", flat=True)
    )
    refreshed = 0
    for account_id in due:
        try:
            # refresh_account re-checks under the row lock: a copy that lost the race does nothing.
            before = UpstreamAccount.objects.get(pk=account_id).last_refresh_at
            account = refresh_account(account_id, actor="worker")
            refreshed += account.last_refresh_at != before
        except RefreshFailed as failure:
            log.warning("refresh of account %s failed: %s", account_id, failure.reason)
    return refreshed


def poll_quotas() -> int:
    polled = 0
    for account in quota_poll.claim_due_accounts():
        try:
            quota_poll.poll_quota(account)
            polled += 1
        except (httpx.HTTPError, ValueError) as exc:
            quota_poll.back_off(account, type(exc).__name__)
    return polled


def housekeeping() -> dict:
    now = timezone.now()
    return {
        "cooldowns": UpstreamAccount.objects.filter(cooldown_until__lte=now).update(
            cooldown_until=None, cooldown_reason=""
        ),
        "affinities": SessionAffinity.objects.filter(expires_at__lte=now).delete()[0],
        "slots": ConcurrencySlot.objects.filter(expires_at__lte=now).delete()[0],
        "admissions": Admission.objects.filter(at__lte=now - timedelta(minutes=5)).delete()[0],
        "request_logs": RequestLog.objects.filter(
            created_at__lte=now - timedelta(days=settings.POOLER_LOG_RETENTION_DAYS)
        ).delete()[0],
    }


class Command(BaseCommand):
    help = "Run the worker: refresh tokens before they expire, poll quotas, clear expired state, prune logs."

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="run every job once and exit")
        parser.add_argument("--interval", type=float, default=15.0, help="seconds between rounds")
        parser.add_argument("--no-quota", action="store_true", help="skip quota polling")

    def handle(self, *args, once, interval, no_quota, **options):
        while True:
            try:
                refreshed = refresh_expiring_tokens()
                polled = 0 if no_quota else poll_quotas()
                cleared = housekeeping()
                self.stdout.write(f"refreshed {refreshed} token(s), polled {polled} quota(s), cleared {cleared}")
            finally:
                close_old_connections()
            if once:
                return
            time.sleep(interval)
