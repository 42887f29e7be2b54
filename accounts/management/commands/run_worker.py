"""The worker role: token refresh, quota polling and housekeeping. Safe to run in several copies."""

import logging
import random
import time
from datetime import timedelta

import httpx
from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from accounts import quota_poll
from accounts.models import Admission, ConcurrencySlot, RequestLog, SessionAffinity, UpstreamAccount
from accounts.tokens import RefreshFailed, try_refresh

from ._base import BaseCommand, CommandError

log = logging.getLogger("pooler.worker")


def _spread(account_id: int, margin: float) -> timedelta:
    """A fixed per-account share of the margin, so accounts imported together are not refreshed in one burst."""
    return timedelta(seconds=margin * ((account_id * 0.6180339887) % 1.0))


def refresh_expiring_tokens() -> int:
    """Refresh the tokens that expire soon (accounts waiting for a reset included), spread over the margin."""
    now = timezone.now()
    margin = settings.POOLER_REFRESH_MARGIN_SECONDS
    candidates = (
        UpstreamAccount.objects.filter(
            status__in=["active", "paused"], token_expires_at__lte=now + timedelta(seconds=2 * margin)
        )
        .exclude(refresh_token="")
        .values_list("id", "access_token", "token_expires_at")
    )
    due = [
        (pk, token)
        for pk, token, expires in candidates
        if expires <= now + timedelta(seconds=margin) + _spread(pk, margin)
    ]
    # Copies of the worker walk the accounts in different orders instead of queueing behind one row lock.
    random.shuffle(due)
    refreshed = 0
    for account_id, seen_token in due:
        try:
            # Under the row lock: if another copy already replaced the token we saw, nothing is exchanged.
            refreshed += try_refresh(account_id, seen_access_token=seen_token, actor="worker")[1]
        except RefreshFailed as failure:
            log.warning("refresh of account %s failed: %s", account_id, failure.reason)
        except Exception:
            log.exception("refresh of account %s failed", account_id)
    return refreshed


def poll_quotas() -> int:
    polled = 0
    for account in quota_poll.claim_due_accounts():
        try:
            quota_poll.poll_quota(account)
            polled += 1
        except (httpx.HTTPError, ValueError) as exc:
            quota_poll.back_off(account, type(exc).__name__)
        except Exception as exc:
            log.exception("quota poll of account %s failed", account.pk)
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
        parser.add_argument("--rounds", type=int, default=0, help="run this many rounds and exit (0: forever)")
        parser.add_argument("--interval", type=float, default=15.0, help="seconds between rounds")
        parser.add_argument("--no-quota", action="store_true", help="skip quota polling")

    def handle(self, *args, once, rounds, interval, no_quota, **options):
        rounds = 1 if once else rounds
        done = 0
        while True:
            failed = False
            try:
                refreshed = refresh_expiring_tokens()
                polled = 0 if no_quota else poll_quotas()
                cleared = housekeeping()
                self.stdout.write(f"refreshed {refreshed} token(s), polled {polled} quota(s), cleared {cleared}")
            except Exception:
                # A worker that dies stops every refresh: log the round's failure and try again next round.
                log.exception("worker round failed")
                failed = True
            finally:
                close_old_connections()
            done += 1
            if rounds and done >= rounds:
                if failed:
                    raise CommandError("the last round failed (see the log above)")
                return
            time.sleep(interval)
