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


def _month_by(pool: Pool, month, field: str) -> dict:
    """This month's cost at API prices and prompt cache hit rate of the pool's turns, per `field`."""
    rows = RequestLog.objects.filter(pool=pool, created_at__gte=month).values(field).annotate(**usage.COST_AND_CACHE)
    return {
        row[field]: (
            usage.usd(row["cost"], row["unpriced_requests"]),
            usage.percent(usage.cache_hit_rate(row["input_tokens"], row["cached_tokens"])),
        )
        for row in rows
    }


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
        "Show pools, their accounts (status, quota, cooldown) and keys, with this month's cost at API prices "
        "and prompt cache hit rate."
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
            month = usage.month_start(now)
            by_account, by_key = _month_by(pool, month, "account_id"), _month_by(pool, month, "api_key_id")
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
                    "cost (month)",
                    "cache hit",
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
                        *by_account.get(a.id, ("-", "-")),
                    ]
                )
            if members:
                self.stdout.write(_table(rows))
            keys = PoolApiKey.objects.filter(pool=pool).order_by("created_at")
            krows = [
                ["  key", "name", "state", "rpm", "tokens/day", "concurrent", "last used", "cost (month)", "cache hit"]
            ]
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
                        *by_key.get(k.id, ("-", "-")),
                    ]
                )
            if len(krows) > 1:
                self.stdout.write(_table(krows))
            self.stdout.write("")
