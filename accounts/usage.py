"""What keys and turns use, cost and save, as the admin, the dashboard, `pooler_status` and MCP show it: a key's
usage against its limits, and aggregates over RequestLog rows and session pins (cost, prompt-cache hit rate)."""

from datetime import datetime, timedelta
from decimal import Decimal

from django.db.models import Count, Q, QuerySet, Sum
from django.utils import timezone

from .models import Admission, ConcurrencySlot, Pool, PoolApiKey, RequestLog, SessionAffinity

# A key's limits count requests over the last minute and tokens since the start of its day (UTC).
WINDOW = timedelta(minutes=1)


def key_usage(key: PoolApiKey, now: datetime | None = None) -> dict:
    """Current usage of a key against its limits (admin, MCP)."""
    now = now or timezone.now()
    return {
        "requests_last_minute": Admission.objects.filter(api_key=key, at__gt=now - WINDOW).count(),
        "tokens_today": RequestLog.objects.filter(api_key=key, created_at__gte=day_start(now)).aggregate(
            n=Sum("total_tokens")
        )["n"]
        or 0,
        "open_streams": ConcurrencySlot.objects.filter(api_key=key, expires_at__gt=now).count(),
        "rpm": key.limit("rpm"),
        "tokens_per_day": key.limit("tokens_per_day"),
        "max_concurrent": key.limit("max_concurrent"),
    }


# Summed over RequestLog rows. `cost` sums the priced rows' cost_usd only; `unpriced_requests` says how many used
# tokens of a model without a price, so a partial sum is never taken for the whole.
COST_AND_CACHE = {
    "requests": Count("id"),
    "input_tokens": Sum("input_tokens"),
    "cached_tokens": Sum("cached_tokens"),
    "cost": Sum("cost_usd"),
    "unpriced_requests": Count("id", filter=Q(cost_usd__isnull=True)),
}


def cache_hit_rate(input_tokens: int | None, cached_tokens: int | None) -> float | None:
    """The share of input tokens the prompt cache served (None without input tokens)."""
    return round((cached_tokens or 0) / input_tokens, 4) if input_tokens else None


def percent(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.1f}%"


def usd(amount: Decimal | None, unpriced: int = 0) -> str:
    """A cost for people: `unpriced` when nothing of it had a price (never $0.00), and a note when part had none."""
    if amount is None:
        return "unpriced" if unpriced else "-"
    shown = f"${amount:,.2f}" if amount >= Decimal("0.01") or amount == 0 else "<$0.01"
    return f"{shown} + {unpriced} unpriced" if unpriced else shown


def day_start(now: datetime) -> datetime:
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def month_start(now: datetime) -> datetime:
    return day_start(now).replace(day=1)


def period_starts(now: datetime) -> dict[str, datetime]:
    """Where today, the last 7 days (today and the 6 before, as the dashboard's week chart) and this month begin."""
    today = day_start(now)
    return {"today": today, "week": today - timedelta(days=6), "month": month_start(now)}


def _by_period(starts: dict[str, datetime]) -> dict:
    """COST_AND_CACHE over this month, and the cost and unpriced count of today and of the last 7 days."""
    month = Q(created_at__gte=starts["month"])
    sums = {
        "requests": Count("id", filter=month),
        "input_tokens": Sum("input_tokens", filter=month),
        "cached_tokens": Sum("cached_tokens", filter=month),
        "cost": Sum("cost_usd", filter=month),
        "unpriced_requests": Count("id", filter=month & Q(cost_usd__isnull=True)),
    }
    for period in ("today", "week"):
        since = Q(created_at__gte=starts[period])
        sums[f"cost_{period}"] = Sum("cost_usd", filter=since)
        sums[f"unpriced_{period}"] = Count("id", filter=since & Q(cost_usd__isnull=True))
    return sums


def cost_by(rows: QuerySet, now: datetime, *fields: str) -> list[dict]:
    """Cost at API prices today, over the last 7 days and this month, with this month's token counts for the
    prompt cache hit rate, per group of `fields` of the RequestLog `rows`: one query. The keys are those of
    COST_AND_CACHE (this month) plus cost_today, unpriced_today, cost_week and unpriced_week; a group seen in the
    last 7 days but not this month has `requests` 0."""
    starts = period_starts(now)
    found = rows.filter(created_at__gte=min(starts.values())).values(*fields).annotate(**_by_period(starts))
    return list(found.order_by(*fields))


def session_moves(
    since: datetime, until: datetime | None = None, pool: Pool | None = None, pool_ids: frozenset[int] | None = None
) -> dict:
    """Sessions seen in the period and how many of them touched more than one account.

    A session's pin lives while it is used (renewed up to the pool's sticky TTL ahead) and the worker deletes
    it once expired: "seen" means pinned at some time in the period, among the pins still kept.
    """
    pins = SessionAffinity.objects.filter(expires_at__gt=since)
    if until is not None:
        pins = pins.filter(created_at__lt=until)
    if pool is not None:
        pins = pins.filter(pool=pool)
    if pool_ids is not None:  # an operator's pools
        pins = pins.filter(pool_id__in=pool_ids)
    counts = pins.aggregate(seen=Count("id"), moved=Count("id", filter=Q(moves__gt=0)))
    return {**counts, "moved_share": round(counts["moved"] / counts["seen"], 4) if counts["seen"] else None}
