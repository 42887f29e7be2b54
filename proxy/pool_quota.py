"""The pool's quota as its clients see it, in place of the figures of whichever account served a turn.

The backend tells a client how much of *its account's* windows is used (x-codex-* headers, `codex.rate_limits`
events, wham/usage). Through the pooler that account changes from turn to turn, so those figures jump and say
nothing of what the key can still do. A key's clients are shown the pool's windows instead (README.md, "The
pool's quota", has the formula): how much of the capacity of the accounts that can serve is used, and when
some of it comes back. The view is computed from the routing snapshot (routing.py), so a turn reads no row for
it: it is as fresh as the snapshot (POOLER_ROUTING_CACHE_SECONDS), whose figures each turn keeps up to date.
"""

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.utils import timezone

from accounts.models import AccountStatus, Pool, UpstreamAccount

from . import routing
from .dbthread import on_db_thread

# The backend's windows when an account has not told its own: five hours, and a week.
PRIMARY_MINUTES, SECONDARY_MINUTES = 300, 10080
# Credits belong to one ChatGPT account, which a key's clients cannot choose: the pool offers none.
NO_CREDITS = {"has_credits": False, "unlimited": False, "balance": "0"}
_NO_CREDITS_HEADERS = {
    "x-codex-credits-has-credits": "false",
    "x-codex-credits-unlimited": "false",
    "x-codex-credits-balance": "0",
}
_WINDOWS = ("primary", "secondary")


@dataclass(frozen=True)
class Window:
    used_percent: float
    window_minutes: int
    resets_at: datetime | None  # None: nothing of it is used, so it would start (and reset) afresh

    def reset_at(self, now: datetime) -> datetime:
        return self.resets_at or now + timedelta(minutes=self.window_minutes)

    def fields(self, now: datetime) -> dict:
        reset = self.reset_at(now)
        return {
            "used_percent": self.used_percent,
            "window_minutes": self.window_minutes,
            "reset_at": int(reset.timestamp()),
            "reset_after_seconds": max(0, math.ceil((reset - now).total_seconds())),
        }


@dataclass(frozen=True)
class PoolQuota:
    primary: Window
    secondary: Window
    plan_type: str  # the plan most of the pool's accounts have ("" when none is known)
    limit_reached: bool  # no account can serve until a reset

    def windows(self, now: datetime) -> dict[str, dict]:
        return {"primary": self.primary.fields(now), "secondary": self.secondary.fields(now)}

    def headers(self, now: datetime | None = None) -> dict[str, str]:
        """The backend's x-codex-* response headers, saying the pool's figures."""
        headers = {}
        for name, window in self.windows(now or timezone.now()).items():
            headers |= {
                f"x-codex-{name}-used-percent": f"{window['used_percent']:g}",
                f"x-codex-{name}-window-minutes": str(window["window_minutes"]),
                f"x-codex-{name}-reset-after-seconds": str(window["reset_after_seconds"]),
                f"x-codex-{name}-reset-at": str(window["reset_at"]),
            }
        return headers | _NO_CREDITS_HEADERS

    def rate_limits_event(self, event: dict, now: datetime | None = None) -> dict:
        """An upstream `codex.rate_limits` event saying the pool's windows; its other fields are kept."""
        limits = event.get("rate_limits") if isinstance(event.get("rate_limits"), dict) else {}
        return {
            **event,
            "plan_type": self.plan_type or event.get("plan_type"),
            "rate_limits": {**limits, **self.windows(now or timezone.now())},
            "credits": dict(NO_CREDITS),
        }

    def usage(self, now: datetime | None = None) -> dict:
        """The answer of the backend's wham/usage, for the pool."""
        windows = {}
        for name, window in self.windows(now or timezone.now()).items():
            windows[f"{name}_window"] = {
                "used_percent": window["used_percent"],
                "limit_window_seconds": window["window_minutes"] * 60,
                "reset_after_seconds": window["reset_after_seconds"],
                "reset_at": window["reset_at"],
            }
        return {
            "plan_type": self.plan_type or None,
            "rate_limit": {"allowed": not self.limit_reached, "limit_reached": self.limit_reached, **windows},
            "credits": dict(NO_CREDITS),
        }


@dataclass
class _Share:
    """One account's part of the pool's windows: its weight, each window's used percent as the pool counts it
    (100 while it cannot serve), and when that part goes down."""

    weight: int
    out: bool
    used: dict[str, float]
    back: dict[str, datetime | None]


def _share(account: UpstreamAccount, now: datetime) -> _Share:
    # The pooler stops choosing an account at its reserve: that is all of it the pool can spend.
    limit = 100.0 if account.reserve_percent is None else account.reserve_percent
    primary, secondary = account.window_used(now)
    weekly_out = secondary >= limit
    # An account out of its week has none of its five hours to give either; the reverse does not hold.
    out = weekly_out or primary >= limit
    comeback = account.available_at(now) if out else None

    def part(used: float, spent: bool) -> float:
        return 100.0 if spent or limit <= 0 else min(100.0, used * 100.0 / limit)

    return _Share(
        weight=max(getattr(account, "weight", 1) or 1, 1),
        out=out,
        used={"primary": part(primary, out), "secondary": part(secondary, weekly_out)},
        back={
            "primary": comeback if out else (account.primary_resets_at if primary > 0 else None),
            "secondary": comeback if weekly_out else (account.secondary_resets_at if secondary > 0 else None),
        },
    )


def _most_common(values: Iterable, default):
    counted = Counter(v for v in values if v)
    return counted.most_common(1)[0][0] if counted else default


def aggregate(accounts: Iterable[UpstreamAccount], now: datetime) -> PoolQuota:
    """The pool's view of `accounts` (its enabled memberships, `weight` annotated as the snapshot has it)."""
    serving = [a for a in accounts if a.status == AccountStatus.ACTIVE]
    shares = [_share(a, now) for a in serving]
    total = sum(s.weight for s in shares)
    minutes = {
        "primary": _most_common((a.primary_window_minutes for a in serving), PRIMARY_MINUTES),
        "secondary": _most_common((a.secondary_window_minutes for a in serving), SECONDARY_MINUTES),
    }
    windows = {}
    for name in _WINDOWS:
        used = sum(s.weight * s.used[name] for s in shares) / total if total else 100.0
        # When capacity comes back: the soonest time an account's part of the figure goes down. When every
        # account is out, that is the pool's soonest comeback (the Retry-After of its 429).
        backs = [s.back[name] for s in shares if s.used[name] > 0 and s.back[name] is not None]
        windows[name] = Window(round(used, 1), minutes[name], min(backs) if backs else None)
    return PoolQuota(
        primary=windows["primary"],
        secondary=windows["secondary"],
        plan_type=_most_common((a.plan_type for a in serving), ""),
        limit_reached=all(s.out for s in shares),
    )


def _next_change(accounts: Iterable[UpstreamAccount], now: datetime) -> datetime | None:
    """The first time the view of unchanged rows changes by itself: a window resets, a cooldown ends."""
    times = [
        t
        for a in accounts
        if a.status == AccountStatus.ACTIVE
        for t in (a.primary_resets_at, a.secondary_resets_at, a.cooldown_until)
        if t is not None and t > now
    ]
    return min(times, default=None)


# Per pool (keyed like the routing snapshots): the snapshot a view was computed from, until when it holds, the view.
_views: dict[tuple, tuple[object, datetime | None, PoolQuota]] = {}


def _view(pool: Pool, snapshot, now: datetime) -> PoolQuota:
    key = (pool.id, pool.created_at)
    cached = _views.get(key)
    if cached is not None and cached[0] is snapshot and (cached[1] is None or now < cached[1]):
        return cached[2]
    view = aggregate(snapshot.accounts, now)
    _views[key] = (snapshot, _next_change(snapshot.accounts, now), view)
    return view


def latest(pool: Pool, now: datetime | None = None) -> PoolQuota | None:
    """The view from the snapshot this process holds, however old, without a query (a turn's: its plan has just
    read the snapshot when it was stale). None when this process has never read the pool."""
    snapshot = routing.cached_snapshot(pool)
    return None if snapshot is None else _view(pool, snapshot, now or timezone.now())


def read(pool: Pool) -> PoolQuota:
    """The view from a fresh enough snapshot, read first when it is stale (sync: reads the database then)."""
    now = timezone.now()
    return _view(pool, routing.pool_snapshot(pool, now), now)


async def current(pool: Pool) -> PoolQuota:
    """`read` for async callers: on a database thread only when the snapshot must be read again."""
    snapshot = routing.cached_snapshot(pool)
    if snapshot is not None and snapshot.fresh_enough():
        return _view(pool, snapshot, timezone.now())
    return await on_db_thread(read)(pool)
