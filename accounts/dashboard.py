"""The operator dashboard in the admin: capacity per pool, quota bars, traffic charts (server-rendered SVG), cost at
API prices and prompt cache hit rates."""

from datetime import timedelta

from django.contrib import admin
from django.db.models import Count, F, Q, Sum
from django.db.models.functions import TruncDay, TruncHour
from django.template.response import TemplateResponse
from django.utils import timezone

from . import pricing, usage
from .models import Pool, RequestLog
from .operators import Scope

_CHART_WIDTH, _CHART_HEIGHT = 480, 120


def _bars(rows: dict, slots: list, field: str) -> list[dict]:
    """Bars for an SVG chart: one per time slot, scaled to the tallest."""
    values = [rows.get(slot, {}).get(field) or 0 for slot in slots]
    top = max(values) or 1
    width = _CHART_WIDTH / len(slots)
    return [
        {
            "x": round(i * width, 1),
            "width": round(width - 2, 1),
            "height": round(v / top * (_CHART_HEIGHT - 16), 1),
            "y": round(_CHART_HEIGHT - v / top * (_CHART_HEIGHT - 16), 1),
            "value": v,
            "label": slot,
        }
        for i, (slot, v) in enumerate(zip(slots, values, strict=True))
    ]


def _series(logs, since, trunc, step: timedelta, count: int, now) -> dict:
    rows = {
        row["slot"]: row
        for row in logs.filter(created_at__gte=since)
        .annotate(slot=trunc("created_at"))
        .values("slot")
        .annotate(requests=Count("id"), tokens=Sum("total_tokens"), cost=Sum("cost_usd"))
    }
    for row in rows.values():
        row["cost"] = round(float(row["cost"] or 0), 2)
    first = trunc_now = now.replace(minute=0, second=0, microsecond=0)
    if step >= timedelta(days=1):
        trunc_now = first.replace(hour=0)
    slots = [trunc_now - step * (count - 1 - i) for i in range(count)]
    return {
        "requests": _bars(rows, slots, "requests"),
        "tokens": _bars(rows, slots, "tokens"),
        "cost": _bars(rows, slots, "cost"),
        # The totals of the bars shown: the query reaches back into the slot before the first one.
        "total_requests": sum(rows[s]["requests"] for s in slots if s in rows),
        "total_tokens": sum(rows[s]["tokens"] or 0 for s in slots if s in rows),
        "total_cost": sum(rows[s]["cost"] for s in slots if s in rows),
    }


def _pool_capacity(pool: Pool, now) -> dict:
    accounts = []
    for member in pool.memberships.select_related("account"):
        account = member.account
        primary, secondary = account.window_used(now)
        accounts.append(
            {
                "account": account,
                "enabled": member.enabled,
                "why_not": account.ineligibility(None, now) if member.enabled else "not in rotation (membership off)",
                "primary": min(primary, 100),
                "secondary": min(secondary, 100),
                "cooling": account.cooldown_until if account.cooldown_until and account.cooldown_until > now else None,
            }
        )
    eligible = [a for a in accounts if a["enabled"] and not a["why_not"]]
    resets = [t for a in accounts if (t := a["account"].available_at(now))]
    return {"pool": pool, "accounts": accounts, "eligible": len(eligible), "soonest_reset": min(resets, default=None)}


def _session_moves(logs, since) -> list[dict]:
    """How often sessions compact and move, per pool, key and account (a move that dropped a compacted
    history is the costly kind: the model lost everything the compaction summarised)."""
    return list(
        logs.filter(created_at__gte=since)
        .filter(Q(compaction=True) | Q(migrated_from__isnull=False))
        .values("pool__name", "api_key__name", "account__label")
        .annotate(
            compactions=Count("id", filter=Q(compaction=True)),
            moves=Count("id", filter=Q(migrated_from__isnull=False)),
            lost=Count("id", filter=Q(context_lost=True)),
        )
        .order_by("-lost", "-moves", "-compactions")[:20]
    )


def _cost_and_cache(rows, today, *fields, limit: int | None = 20) -> list[dict]:
    """Cost at API prices (today and over `rows`) and prompt cache hit rate per group of `fields`, costliest
    first; shown as text, so that a model without a price reads "unpriced", never "$0.00"."""
    found = (
        rows.values(*fields)
        .annotate(
            **usage.COST_AND_CACHE,
            cost_today=Sum("cost_usd", filter=Q(created_at__gte=today)),
            unpriced_today=Count("id", filter=Q(created_at__gte=today, cost_usd__isnull=True)),
        )
        .order_by(F("cost").desc(nulls_last=True), "-requests")[:limit]
    )
    return [
        {
            **group,
            "today": usage.usd(group["cost_today"], group["unpriced_today"]),
            "month": usage.usd(group["cost"], group["unpriced_requests"]),
            "cache_hit_rate": usage.percent(usage.cache_hit_rate(group["input_tokens"], group["cached_tokens"])),
        }
        for group in found
    ]


def _value(logs, now) -> dict:
    """This month's turns at API prices: the value of the pools, by pool, key, account and model."""
    today, month = usage.day_start(now), usage.month_start(now)
    rows = logs.filter(created_at__gte=month)
    total = rows.aggregate(**usage.COST_AND_CACHE)
    return {
        "since": month,
        "month": usage.usd(total["cost"], total["unpriced_requests"]),
        "unpriced": total["unpriced_requests"],
        "cache_hit_rate": usage.percent(usage.cache_hit_rate(total["input_tokens"], total["cached_tokens"])),
        "pools": {group["pool_id"]: group for group in _cost_and_cache(rows, today, "pool_id", limit=None)},
        "keys": _cost_and_cache(rows, today, "pool__name", "api_key__prefix", "api_key__name"),
        "accounts": _cost_and_cache(rows, today, "account__label"),
        "models": _cost_and_cache(rows, today, "model"),
        "prices": pricing.load_table().in_force(now),
    }


def _sessions(pool: Pool, since) -> dict:
    moves = usage.session_moves(since, pool=pool)
    return {**moves, "moved_share": usage.percent(moves["moved_share"])}


def dashboard(request):
    """The dashboard of the pools the user may see (every pool for an owner), from their rows only."""
    now = timezone.now()
    week = now - timedelta(days=7)
    scope = Scope.of(request.user)
    logs = scope.filter(RequestLog.objects.all(), "pool")
    value = _value(logs, now)
    pools = [_pool_capacity(pool, now) for pool in scope.pools().order_by("name")]
    for cap in pools:
        cap["value"] = value["pools"].get(cap["pool"].id)
        cap["sessions"] = _sessions(cap["pool"], value["since"])
    context = {
        **admin.site.each_context(request),
        "title": "Pooler dashboard",
        "pools": pools,
        "value": value,
        "day": _series(logs, now - timedelta(hours=24), TruncHour, timedelta(hours=1), 24, now),
        "week": _series(
            logs, week.replace(hour=0, minute=0, second=0, microsecond=0), TruncDay, timedelta(days=1), 7, now
        ),
        "top_keys": logs.filter(created_at__gte=week, api_key__isnull=False)
        .values("api_key__prefix", "api_key__name")
        .annotate(tokens=Sum("total_tokens"), requests=Count("id"))
        .order_by("-tokens")[:10],
        "top_models": logs.filter(created_at__gte=week)
        .exclude(model="")
        .values("model")
        .annotate(tokens=Sum("total_tokens"), requests=Count("id"))
        .order_by("-tokens")[:10],
        "session_moves": _session_moves(logs, week),
        "chart_width": _CHART_WIDTH,
        "chart_height": _CHART_HEIGHT,
    }
    return TemplateResponse(request, "admin/pooler_dashboard.html", context)
