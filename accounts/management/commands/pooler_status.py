from django.utils import timezone

from accounts import usage
from accounts.models import Pool, PoolApiKey, RequestLog

from ._base import BaseCommand


def _percent(value) -> str:
    return "-" if value is None else f"{value:.0f}%"


def _when(moment, now) -> str:
    if not moment or moment <= now:
        return "-"
    seconds = int((moment - now).total_seconds())
    if seconds >= 3600:
        return f"in {seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"in {seconds // 60}m{seconds % 60:02d}s"


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )


# The cost columns of the account, key and model tables, filled from usage.cost_by.
_COST_HEADERS = ["cost today", "7 days", "month", "cache hit"]
_NO_COST = ("-",) * len(_COST_HEADERS)


def _costs_by(pool: Pool, now, field: str) -> dict:
    """Cost at API prices today, over the last 7 days and this month, and this month's prompt cache hit rate of
    the pool's turns, per `field`."""
    return {
        group[field]: (
            usage.usd(group["cost_today"], group["unpriced_today"]),
            usage.usd(group["cost_week"], group["unpriced_week"]),
            usage.usd(group["cost"], group["unpriced_requests"]),
            usage.percent(usage.cache_hit_rate(group["input_tokens"], group["cached_tokens"])),
        )
        for group in usage.cost_by(RequestLog.objects.filter(pool=pool), now, field)
    }


def _models_table(pool: Pool, now) -> list[list[str]]:
    """The models the pool's turns used in the last 7 days or this month, with their cost (blank: refused before a
    model was known)."""
    rows = [["  model", *_COST_HEADERS]]
    for model, costs in _costs_by(pool, now, "model").items():
        if model:
            rows.append([f"  {model}", *costs])
    return rows


def _value_line(pool: Pool, now) -> str:
    month = usage.month_start(now)
    rows = RequestLog.objects.filter(pool=pool, created_at__gte=month)
    total = rows.aggregate(**usage.COST_AND_CACHE)
    today = rows.filter(created_at__gte=usage.day_start(now)).aggregate(**usage.COST_AND_CACHE)
    sessions = usage.session_moves(month, pool=pool)
    return (
        f"  value this month (since {month:%Y-%m-%d}): {usage.usd(total['cost'], total['unpriced_requests'])}"
        f" at API prices, today {usage.usd(today['cost'], today['unpriced_requests'])}"
        f"  cache hit rate {usage.percent(usage.cache_hit_rate(total['input_tokens'], total['cached_tokens']))}"
        f"  sessions on more than one account {sessions['moved']}/{sessions['seen']}"
    )


class Command(BaseCommand):
    help = (
        "Show pools, their accounts (status, quota, cooldown), keys and models, with the cost at API prices "
        "today, over the last 7 days and this month, and this month's prompt cache hit rate."
    )

    def handle(self, *args, **options):
        now = timezone.now()
        pools = Pool.objects.prefetch_related("memberships__account").order_by("name")
        if not pools:
            self.stdout.write("no pools yet: python manage.py create_pool NAME")
        for pool in pools:
            members = list(pool.memberships.all())
            eligible = sum(1 for m in members if m.enabled and m.account.is_eligible(None, now))
            self.stdout.write(
                f"pool {pool.name}  strategy={pool.strategy}  eligible {eligible}/{len(members)}"
                f"  models={','.join(pool.allowed_models) or 'all'}"
            )
            self.stdout.write(_value_line(pool, now))
            by_account, by_key = _costs_by(pool, now, "account_id"), _costs_by(pool, now, "api_key_id")
            rows = [
                [
                    "  account",
                    "status",
                    "eligible",
                    "primary",
                    "resets",
                    "secondary",
                    "resets",
                    "cooldown",
                    "last error",
                    *_COST_HEADERS,
                ]
            ]
            for m in members:
                a = m.account
                primary, secondary = a.window_used(now)
                rows.append(
                    [
                        f"  {a.label}",
                        a.status,
                        a.ineligibility(None, now) or "yes",
                        _percent(primary if a.primary_used_percent is not None else None),
                        _when(a.primary_resets_at, now),
                        _percent(secondary if a.secondary_used_percent is not None else None),
                        _when(a.secondary_resets_at, now),
                        _when(a.cooldown_until, now),
                        a.last_error[:40] or "-",
                        *by_account.get(a.id, _NO_COST),
                    ]
                )
            if members:
                self.stdout.write(_table(rows))
            keys = PoolApiKey.objects.filter(pool=pool).order_by("created_at")
            krows = [["  key", "name", "state", "rpm", "tokens/day", "concurrent", "last used", *_COST_HEADERS]]
            for k in keys:
                state = "revoked" if k.revoked_at else ("expired" if not k.is_usable(now) else "active")
                krows.append(
                    [
                        f"  {k.prefix}…",
                        k.name or "-",
                        state,
                        k.limit("rpm") or "-",
                        k.limit("tokens_per_day") or "-",
                        k.limit("max_concurrent") or "-",
                        k.last_used_at.strftime("%Y-%m-%d %H:%M") if k.last_used_at else "never",
                        *by_key.get(k.id, _NO_COST),
                    ]
                )
            if len(krows) > 1:
                self.stdout.write(_table(krows))
            if len(models := _models_table(pool, now)) > 1:
                self.stdout.write(_table(models))
            self.stdout.write("")
