"""Key and pool limits, enforced atomically in the database so N processes act as one."""

import math
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Exists, F, Func, Min, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from accounts import budgets
from accounts.models import Admission, ConcurrencySlot, Pool, PoolApiKey, RequestLog, SlotWaiter, UpstreamAccount
from accounts.usage import WINDOW, day_start

from .errors import RateLimited

# A slot whose process died stops counting after this long (streams are rarely longer).
SLOT_LIFETIME = timedelta(hours=2)


def _rpm_wait(filter_kwargs: dict, now: datetime) -> float:
    """Seconds until a full requests-per-minute window has room again (its oldest admission leaves it)."""
    oldest = Admission.objects.filter(at__gt=now - WINDOW, **filter_kwargs).aggregate(oldest=Min("at"))["oldest"]
    return (oldest + WINDOW - now).total_seconds() if oldest else 1.0


def _aggregate(queryset, function: str, field: str = "pk"):
    """One aggregate of `queryset` as a subquery of the row being locked (no GROUP BY, so it is one value)."""
    summary = queryset.order_by().annotate(value=Func(F(field), function=function)).values("value")
    return Coalesce(Subquery(summary[:1]), 0)


def _refuse(limit_name: str, detail: str, wait: float, what: str = "Rate limit") -> RateLimited:
    seconds = max(1, math.ceil(wait))
    return RateLimited(
        f"{what} reached: {detail}. Try again in {seconds} seconds.", code=limit_name, retry_after=seconds
    )


def check_budgets(key: PoolApiKey, now: datetime) -> None:
    """Refuse a turn of a key that has spent one of its budgets (one query; none for a key without budgets).

    Counted from finished turns only, so that no lock is needed: turns running side by side are not counted
    until they end (README, "Key policy", says by how much that can pass a budget). The wait is the longest of
    the spent budgets': when enough of its window has passed.
    """
    found = budgets.key_budgets(key)
    if not found:
        return
    spent = [b for b, used in zip(found, budgets.spent(key, found, now), strict=True) if used >= b.amount]
    if not spent:
        return
    waits = {b: (budgets.available_at(key, b, now) - now).total_seconds() for b in spent}
    budget = max(spent, key=waits.get)
    raise _refuse("key_budget_exceeded", budget.describe(), waits[budget], what="Budget")


def needs_admission(key: PoolApiKey) -> bool:
    """Whether turns of `key` are counted at all: a key without limits is admitted without a database step."""
    return any((key.limit("rpm"), key.limit("tokens_per_day"), key.limit("max_concurrent"), key.pool.rpm_limit))


def admits_freely(key: PoolApiKey) -> bool:
    """Whether admit() has nothing to read or write for `key`: no limits, no budgets."""
    return not needs_admission(key) and not budgets.key_budgets(key)


def admit(key: PoolApiKey, request_id: str, now: datetime | None = None, *, counted: bool = True) -> int | None:
    """Admit one turn of `key` or raise RateLimited naming the limit; returns its concurrency slot id, if any.

    The key's row (and the pool's, for a pool-wide cap) is locked while counting, so concurrent
    admissions in any process are serialized and never overshoot a limit. A key without limits costs
    no query (its turns hold no slot); its budgets cost one (check_budgets). A turn that is not `counted` (a
    websocket prewarm, which generates nothing) is refused when a limit is reached but does not use up
    requests per minute.
    """
    now = now or timezone.now()
    check_budgets(key, now)
    if not needs_admission(key):
        return None
    pool = key.pool
    rpm, tokens_per_day, max_concurrent = key.limit("rpm"), key.limit("tokens_per_day"), key.limit("max_concurrent")
    with transaction.atomic():
        if pool.rpm_limit:
            Pool.objects.select_for_update().filter(pk=pool.pk).values_list("pk").get()
        PoolApiKey.objects.select_for_update().filter(pk=key.pk).values_list("pk").get()
        # Counted in one statement, after the locks: a statement sees what was committed when it started, so
        # counting in the locking statement would miss a turn admitted while it waited for the lock.
        counts = {}
        if rpm:
            last_minute = Admission.objects.filter(api_key=OuterRef("pk"), at__gt=now - WINDOW)
            counts["recent"] = _aggregate(last_minute, "COUNT")
        if pool.rpm_limit:
            counts["pool_recent"] = _aggregate(Admission.objects.filter(pool=pool, at__gt=now - WINDOW), "COUNT")
        if tokens_per_day:
            today = RequestLog.objects.filter(api_key=OuterRef("pk"), created_at__gte=day_start(now))
            counts["spent"] = _aggregate(today, "SUM", "total_tokens")
        if max_concurrent:
            open_slots = ConcurrencySlot.objects.filter(api_key=OuterRef("pk"), expires_at__gt=now)
            counts["open"] = _aggregate(open_slots, "COUNT")
        row = PoolApiKey.objects.filter(pk=key.pk).values(**counts).get()
        if rpm and row["recent"] >= rpm:
            raise _refuse("key_rpm_limit", f"{rpm} requests per minute for this key", _rpm_wait({"api_key": key}, now))
        if pool.rpm_limit and row["pool_recent"] >= pool.rpm_limit:
            wait = _rpm_wait({"pool": pool}, now)
            raise _refuse("pool_rpm_limit", f"{pool.rpm_limit} requests per minute for this pool", wait)
        if tokens_per_day and row["spent"] >= tokens_per_day:
            wait = (day_start(now) + timedelta(days=1) - now).total_seconds()
            raise _refuse("key_tokens_per_day_limit", f"{tokens_per_day} tokens per day for this key", wait)
        if counted and (rpm or pool.rpm_limit):
            Admission.objects.create(pool=pool, api_key=key, at=now)
        if not max_concurrent:
            return None
        if row["open"] >= max_concurrent:
            raise _refuse("key_concurrency_limit", f"{max_concurrent} concurrent streams for this key", 1)
        return ConcurrencySlot.objects.create(api_key=key, request_id=request_id, expires_at=now + SLOT_LIFETIME).id


def claim_account(
    slot_id: int | None, key: PoolApiKey, request_id: str, account: UpstreamAccount, now: datetime | None = None
) -> int | None:
    """Take one of `account`'s concurrent turns for this turn; returns the slot id, or None when it is full.

    Only accounts with a `max_concurrent` cap need this (or a turn whose slot an earlier account capped).
    The account's row is locked while counting, so processes never overshoot the cap; a failover moves
    the turn's slot to the next account. Fair share: a slot is refused too while another key of the pool
    waits for one (a SlotWaiter) holding fewer than `key` does; that key's turn takes it when it tries again.
    """
    now = now or timezone.now()
    with transaction.atomic():
        if account.max_concurrent:
            UpstreamAccount.objects.select_for_update().filter(pk=account.pk).values_list("pk").get()
            # Counted in one statement after the lock, as in admit(), fair share included: no query more than
            # the count alone.
            busy = ConcurrencySlot.objects.filter(account=OuterRef("pk"), expires_at__gt=now).exclude(pk=slot_id)
            row = (
                UpstreamAccount.objects.filter(pk=account.pk)
                .values(busy=_aggregate(busy, "COUNT"), behind=Exists(_poorer_waiters(key, slot_id, now)))
                .get()
            )
            if row["busy"] >= account.max_concurrent or row["behind"]:
                return None
        if slot_id and ConcurrencySlot.objects.filter(pk=slot_id).update(account=account):
            return slot_id
        return ConcurrencySlot.objects.create(
            api_key=key, account=account, request_id=request_id, expires_at=now + SLOT_LIFETIME
        ).id


def _poorer_waiters(key: PoolApiKey, slot_id: int | None, now: datetime):
    """Turns of the pool's other keys waiting for a slot whose key holds fewer account slots than `key` (its
    turn's own slot, moving in a failover, aside)."""
    held = ConcurrencySlot.objects.filter(account__isnull=False, expires_at__gt=now)
    mine = _aggregate(held.filter(api_key=key).exclude(pk=slot_id), "COUNT")
    theirs = _aggregate(held.filter(api_key=OuterRef("api_key")), "COUNT")
    waiting = SlotWaiter.objects.filter(pool_id=key.pool_id, expires_at__gt=now).exclude(api_key=key)
    return waiting.annotate(held=theirs).filter(held__lt=mine)


def wait_for_slot(key: PoolApiKey, request_id: str, seconds: float, now: datetime | None = None) -> int:
    """Record a turn of `key` as waiting up to `seconds` for an account's slot; returns the row's id."""
    now = now or timezone.now()
    # Rows outlive their wait only when a process died: cleared here, on the waiting path alone.
    SlotWaiter.objects.filter(pool_id=key.pool_id, expires_at__lte=now).delete()
    expires_at = now + timedelta(seconds=seconds + 5)
    return SlotWaiter.objects.create(pool_id=key.pool_id, api_key=key, request_id=request_id, expires_at=expires_at).id


def stop_waiting(waiter_id: int) -> None:
    SlotWaiter.objects.filter(pk=waiter_id).delete()


def release(slot_id: int | None) -> None:
    if slot_id:
        ConcurrencySlot.objects.filter(pk=slot_id).delete()
