"""What the MCP tools read and change: plain functions over the models, metadata only (never secrets or text, but
for the new key a rotation issues, returned once to the operator who rotated it)."""

from datetime import datetime, timedelta

from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncDay, TruncHour, TruncMonth
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from accounts import audit, budgets, usage
from accounts import keys as key_life
from accounts.models import AccountStatus, Pool, PoolApiKey, PoolMembership, RequestLog, UpstreamAccount
from accounts.operators import Scope, current_scope
from accounts.usage import key_usage


class InvalidInput(ValueError):
    """A tool argument that cannot be used; the message says what to send instead."""


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def parse_time(value: str | None, name: str) -> datetime | None:
    if value in (None, ""):
        return None
    moment = parse_datetime(value)
    if moment is None:
        raise InvalidInput(f"{name} must be an ISO 8601 time such as 2026-11-24T08:00:00Z, not {value!r}")
    return moment if moment.tzinfo else timezone.make_aware(moment, timezone.utc)


def _scope() -> Scope:
    """The pools the caller's MCP token may see (every pool for an owner's); each read below goes through it."""
    return current_scope.get()


def get_pool(name: str) -> Pool:
    try:
        return _scope().pools().get(name=name)
    except Pool.DoesNotExist:
        known = ", ".join(_scope().pools().values_list("name", flat=True)[:20]) or "none"
        raise InvalidInput(f"no pool named {name!r} (pools: {known})") from None


def get_account_row(account: str) -> UpstreamAccount:
    row = _scope().accounts().filter(Q(label=account) | Q(chatgpt_account_id=account)).first()
    if row is None:
        raise InvalidInput(f"no account with label or ChatGPT account id {account!r} (see list_accounts)")
    return row


def account_summary(account: UpstreamAccount, now: datetime) -> dict:
    primary, secondary = account.window_used(now)
    return {
        "label": account.label,
        "chatgpt_account_id": account.chatgpt_account_id,
        "email": account.email,
        "plan_type": account.plan_type,
        "status": account.status,
        "eligible": account.is_eligible(None, now),
        "why_not_eligible": account.ineligibility(None, now),
        "health": {
            "consecutive_failures": account.consecutive_failures,
            "last_error": account.last_error or None,
            "last_error_at": _iso(account.last_error_at),
            "cooldown_until": _iso(
                account.cooldown_until if account.cooldown_until and account.cooldown_until > now else None
            ),
            "cooldown_reason": account.cooldown_reason or None,
        },
        "quota": {
            "primary_used_percent": primary,
            "primary_window_minutes": account.primary_window_minutes,
            "primary_resets_at": _iso(account.primary_resets_at),
            "secondary_used_percent": secondary,
            "secondary_window_minutes": account.secondary_window_minutes,
            "secondary_resets_at": _iso(account.secondary_resets_at),
            "observed_at": _iso(account.quota_observed_at),
        },
        "token_expires_at": _iso(account.token_expires_at),
        "last_used_at": _iso(account.last_used_at),
    }


def _logs():
    return _scope().filter(RequestLog.objects.all(), "pool")


def list_pools() -> list[dict]:
    now = timezone.now()
    pools = []
    for pool in _scope().pools().order_by("name").prefetch_related("memberships__account"):
        members = [m for m in pool.memberships.all() if m.enabled]
        pools.append(
            {
                "name": pool.name,
                "strategy": pool.strategy,
                "session_migration": pool.session_migration,
                "enabled": pool.enabled,
                "allowed_models": pool.allowed_models or "all",
                "accounts": len(members),
                "eligible_accounts": sum(m.account.is_eligible(None, now) for m in members),
                "api_keys": pool.api_keys.filter(revoked_at__isnull=True).count(),
            }
        )
    return pools


def pool_status(pool_name: str) -> dict:
    pool, now = get_pool(pool_name), timezone.now()
    members = PoolMembership.objects.filter(pool=pool, enabled=True).select_related("account")
    accounts = [account_summary(m.account, now) for m in members]
    eligible = [a for a in accounts if a["eligible"]]
    resets = [t for m in members if (t := m.account.available_at(now))]
    headroom = [100 - max(a["quota"]["primary_used_percent"], a["quota"]["secondary_used_percent"]) for a in eligible]
    return {
        "pool": pool.name,
        "strategy": pool.strategy,
        "accounts": len(accounts),
        "eligible_accounts": len(eligible),
        "soonest_reset": _iso(min(resets, default=None)),
        "headroom_percent": {
            "total": round(sum(headroom), 1),
            "best": max(headroom, default=0),
            "mean": round(sum(headroom) / len(headroom), 1) if headroom else 0,
        },
        "unavailable": [{"label": a["label"], "reason": a["why_not_eligible"]} for a in accounts if not a["eligible"]],
    }


def list_accounts(pool_name: str | None = None, status: str | None = None) -> list[dict]:
    now = timezone.now()
    accounts = _scope().accounts().order_by("label")
    if pool_name:
        accounts = accounts.filter(memberships__pool=get_pool(pool_name))
    if status:
        if status not in AccountStatus.values:
            raise InvalidInput(f"status must be one of {', '.join(AccountStatus.values)}")
        accounts = accounts.filter(status=status)
    return [account_summary(a, now) for a in accounts]


def get_account(account: str) -> dict:
    row = get_account_row(account)
    summary = account_summary(row, timezone.now())
    summary["pools"] = list(_scope().filter(row.memberships.all(), "pool").values_list("pool__name", flat=True))
    summary["requests_last_24h"] = (
        _logs().filter(account=row, created_at__gte=timezone.now() - timedelta(hours=24)).count()
    )
    return summary


def list_api_keys(pool_name: str | None = None) -> list[dict]:
    keys = _scope().keys().select_related("pool").order_by("pool__name", "created_at")
    if pool_name:
        keys = keys.filter(pool=get_pool(pool_name))
    now = timezone.now()
    return [
        {
            "prefix": key.prefix,
            "name": key.name,
            "pool": key.pool.name,
            "state": key_life.state(key, now),
            "expires_at": _iso(key.expires_at),
            "paused_at": _iso(key.paused_at),
            "rotated_at": _iso(key.rotated_at),
            "previous_secret_works_until": _iso(key.previous_secret_expires_at)
            if key.previous_secret_expires_at and key.previous_secret_expires_at > now
            else None,
            "last_used_at": _iso(key.last_used_at),
            "allowed_models": key.allowed_models or "pool's",
            "policy": {
                "forced_model": key.forced_model or None,
                "max_reasoning_effort": key.max_reasoning_effort or None,
                "reasoning_effort_over_cap": key.reasoning_effort_over_cap,
                "forced_service_tier": key.forced_service_tier or None,
                "allowed_service_tiers": key.allowed_service_tiers or None,
                "max_input_tokens": key.max_input_tokens,
                "max_output_tokens": key.max_output_tokens,
            },
            "budgets": budgets.report(key, now),
            "usage": key_usage(key, now),
        }
        for key in keys
    ]


def _requests_filtered(since, until, pool, key_prefix, account, model, status_code, outcome):
    rows = _logs().select_related("pool", "api_key", "account", "migrated_from")
    if (start := parse_time(since, "since")) is not None:
        rows = rows.filter(created_at__gte=start)
    if (end := parse_time(until, "until")) is not None:
        rows = rows.filter(created_at__lt=end)
    if pool:
        rows = rows.filter(pool=get_pool(pool))
    if key_prefix:
        rows = rows.filter(api_key__prefix=key_prefix.rstrip("…."))
    if account:
        rows = rows.filter(account=get_account_row(account))
    if model:
        rows = rows.filter(model=model)
    if status_code is not None:
        rows = rows.filter(status_code=status_code)
    if outcome:
        rows = rows.filter(outcome=outcome)
    return rows


def query_requests(
    since=None,
    until=None,
    pool=None,
    key_prefix=None,
    account=None,
    model=None,
    status_code=None,
    outcome=None,
    limit: int = 50,
    offset: int = 0,
) -> dict:
    if not 1 <= limit <= 500:
        raise InvalidInput("limit must be between 1 and 500")
    if offset < 0:
        raise InvalidInput("offset must be 0 or more")
    rows = _requests_filtered(since, until, pool, key_prefix, account, model, status_code, outcome)
    total = rows.count()
    page = [
        {
            "time": _iso(r.created_at),
            "request_id": r.request_id,
            "pool": r.pool.name if r.pool else None,
            "key_prefix": r.api_key.prefix if r.api_key else None,
            "account": r.account.label if r.account else None,
            "route": r.route,
            "transport": r.transport,
            "model": r.model,
            "status_code": r.status_code,
            "outcome": r.outcome,
            "error_code": r.error_code or None,
            "prewarm": r.is_prewarm,
            "attempts": [{k: a.get(k) for k in ("account", "outcome", "status", "ms")} for a in r.attempts or []],
            "migrated_from": r.migrated_from.label if r.migrated_from else None,
            "migration_reason": r.migration_reason or None,
            "compaction": r.compaction,
            "context_lost": r.context_lost,
            "ttft_ms": r.ttft_ms,
            "duration_ms": r.duration_ms,
            "tokens": {
                "input": r.input_tokens,
                "cached": r.cached_tokens,
                "output": r.output_tokens,
                "reasoning": r.reasoning_tokens,
                "total": r.total_tokens,
            },
        }
        for r in rows.order_by("-created_at")[offset : offset + limit]
    ]
    more = offset + len(page) < total
    return {"total": total, "offset": offset, "next_offset": offset + len(page) if more else None, "requests": page}


_GROUPS = {
    "key": "api_key__prefix",
    "account": "account__label",
    "pool": "pool__name",
    "model": "model",
    "hour": "hour",
    "day": "day",
    "month": "month",
}
_TRUNCATE = {"hour": TruncHour, "day": TruncDay, "month": TruncMonth}
_COUNTS = (
    "requests",
    "input_tokens",
    "cached_tokens",
    "output_tokens",
    "total_tokens",
    "errors",
    "compactions",
    "moves",
    "context_lost",
    "unpriced_requests",
)


def _dollars(amount) -> float | None:
    return None if amount is None else round(float(amount), 6)


def usage_summary(group_by: str = "key", since=None, until=None, pool=None) -> dict:
    if group_by not in _GROUPS:
        raise InvalidInput(f"group_by must be one of {', '.join(_GROUPS)}")
    start = parse_time(since, "since") or timezone.now() - timedelta(days=1)
    rows = _requests_filtered(start.isoformat(), until, pool, None, None, None, None, None)
    if group_by in _TRUNCATE:
        rows = rows.annotate(**{group_by: _TRUNCATE[group_by]("created_at")})
    field = _GROUPS[group_by]
    found = list(
        rows.values(field)
        .annotate(
            **usage.COST_AND_CACHE,
            output_tokens=Sum("output_tokens"),
            total_tokens=Sum("total_tokens"),
            errors=Count("id", filter=Q(status_code__gte=400)),
            compactions=Count("id", filter=Q(compaction=True)),
            moves=Count("id", filter=Q(migrated_from__isnull=False)),
            context_lost=Count("id", filter=Q(context_lost=True)),
        )
        .order_by(field)
    )
    priced = [g["cost"] for g in found if g["cost"] is not None]
    return {
        "group_by": group_by,
        "since": start.isoformat(),
        # What the period's turns would have cost at API prices, and how many had no price (not counted in it).
        "cost_usd": _dollars(sum(priced)) if priced else None,
        "unpriced_requests": sum(g["unpriced_requests"] for g in found),
        "sessions": usage.session_moves(
            start, parse_time(until, "until"), get_pool(pool) if pool else None, pool_ids=_scope().pool_ids
        ),
        "groups": [
            {
                "group": _iso(g[field]) if isinstance(g[field], datetime) else g[field],
                **{k: g[k] or 0 for k in _COUNTS},
                "cost_usd": _dollars(g["cost"]),
                "cache_hit_rate": usage.cache_hit_rate(g["input_tokens"], g["cached_tokens"]),
            }
            for g in found
        ],
    }


def recent_audit_events(limit: int = 50, actor: str | None = None, action: str | None = None) -> list[dict]:
    if not 1 <= limit <= 500:
        raise InvalidInput("limit must be between 1 and 500")
    events = _scope().audit_events()
    if actor:
        events = events.filter(actor=actor)
    if action:
        events = events.filter(action=action)
    return [
        {
            "time": _iso(e.created_at),
            "actor": e.actor,
            "action": e.action,
            "object_type": e.object_type,
            "object": e.object_repr,
            "changes": e.changes,
        }
        for e in events[:limit]
    ]


# Pause and resume move an account between these two only: an account that needs a new login, or that an
# operator disabled, must not be made servable again by a resume (nor parked as "paused" to allow one).
_SWITCHABLE = (AccountStatus.ACTIVE, AccountStatus.PAUSED)


def set_account_status(account: str, status: str, actor: str) -> dict:
    row = get_account_row(account)
    if not _scope().may_change_account(row):
        raise InvalidInput(f"{row.label} also serves pools you do not operate: only an owner may pause or resume it")
    if row.status not in _SWITCHABLE:
        action = "paused" if status == AccountStatus.PAUSED else "resumed"
        fix = (
            "log it in again with `python manage.py login_account`"
            if row.status == AccountStatus.REAUTH_REQUIRED
            else "an operator can enable it in the admin"
        )
        raise InvalidInput(f"account {row.label} is {row.status} and cannot be {action}: {fix}")
    before = audit.snapshot(row)
    row.status = status
    row.save(update_fields=["status", "updated_at"])
    audit.record(
        actor, "pause_account" if status == AccountStatus.PAUSED else "resume_account", row, before, audit.snapshot(row)
    )
    return account_summary(row, timezone.now())


def revoke_api_key(prefix: str, actor: str) -> dict:
    key = _scope().keys().filter(prefix=prefix.rstrip("….")).first()
    if key is None:
        raise InvalidInput(f"no Pool API key with prefix {prefix!r} (see list_api_keys)")
    if key.revoked_at is None:
        before = audit.snapshot(key)
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
        audit.record(actor, "revoke_api_key", key, before, audit.snapshot(key))
    return {"prefix": key.prefix, "name": key.name, "pool": key.pool.name, "revoked_at": _iso(key.revoked_at)}


def _key(prefix: str) -> PoolApiKey:
    try:
        key = key_life.by_prefix(prefix)
    except key_life.KeyNotFound as error:
        raise InvalidInput(f"{error} (see list_api_keys)") from None
    if not _scope().keys().filter(pk=key.pk).exists():
        raise InvalidInput(f"no Pool API key with prefix {prefix!r} in your pools (see list_api_keys)")
    return key


def set_key_paused(prefix: str, paused: bool, actor: str) -> dict:
    key = _key(prefix)
    (key_life.pause if paused else key_life.resume)(key, actor)
    return {"prefix": key.prefix, "name": key.name, "pool": key.pool.name, "paused_at": _iso(key.paused_at)}


def rotate_api_key(prefix: str, grace_seconds: int, actor: str) -> dict:
    if grace_seconds < 0:
        raise InvalidInput("grace_seconds cannot be negative")
    key = _key(prefix)
    raw = key_life.rotate(key, actor, grace_seconds)
    return {
        "prefix": key.prefix,
        "pool": key.pool.name,
        "new_key": raw,
        "previous_secret_works_until": _iso(key.previous_secret_expires_at),
    }
