from django.utils import timezone

from accounts.models import Pool, PoolApiKey

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


class Command(BaseCommand):
    help = "Show pools, their accounts (status, quota, cooldown) and keys."

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
                    ]
                )
            if members:
                self.stdout.write(_table(rows))
            keys = PoolApiKey.objects.filter(pool=pool).order_by("created_at")
            krows = [["  key", "name", "state", "rpm", "tokens/day", "concurrent", "last used"]]
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
                    ]
                )
            if len(krows) > 1:
                self.stdout.write(_table(krows))
            self.stdout.write("")
