"""Which upstream account serves a turn: eligibility, session stickiness, then the pool's strategy."""

import hashlib
import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Count
from django.utils import timezone

from accounts.models import (
    ConcurrencySlot,
    Pool,
    PoolMembership,
    SessionAffinity,
    SessionMigration,
    Strategy,
    UpstreamAccount,
)

from .errors import NoEligibleAccount, RateLimited

# Headers the Codex CLI uses to name a session (new and old spellings), most specific first.
SESSION_HEADERS = ("session-id", "session_id", "conversation_id", "thread-id")


def sticky_key(headers, body: dict) -> str | None:
    """The session identity of a turn: a session header, else the body's prompt_cache_key."""
    for name in SESSION_HEADERS:
        value = headers.get(name)
        if value:
            return value
    cache_key = body.get("prompt_cache_key")
    return cache_key if isinstance(cache_key, str) and cache_key else None


def hash_session(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass
class Plan:
    """The accounts to try, best first, and what stickiness said about them."""

    accounts: list[UpstreamAccount]
    session_hash: str | None = None
    owner: UpstreamAccount | None = None  # the account that served the session so far
    owner_unavailable: str = ""  # why the owner is not among the candidates
    hold: bool = False  # the pool keeps sessions on their owner: no failover away from it


def _order(pool: Pool, members: list[PoolMembership], now: datetime) -> list[UpstreamAccount]:
    if pool.strategy == Strategy.ROUND_ROBIN:
        # The least recently used account first: a round robin that holds across processes.
        epoch = datetime.min.replace(tzinfo=now.tzinfo)
        members = sorted(members, key=lambda m: (m.account.last_used_at or epoch, m.account.id))
    elif pool.strategy == Strategy.FILL_FIRST:
        members = sorted(members, key=lambda m: (m.priority, m.account.id))
    elif pool.strategy == Strategy.WEIGHTED:
        members = _weighted_shuffle(members)
    else:  # least_used: most headroom in the primary window, then the secondary
        members = sorted(members, key=lambda m: (*m.account.window_used(now), m.account.id))
    return [m.account for m in members]


def _weighted_shuffle(members: list[PoolMembership]) -> list[PoolMembership]:
    """A random order in which each account comes first in proportion to its weight."""
    keyed = [(random.random() ** (1.0 / max(m.weight, 1)), m) for m in members]
    return [m for _, m in sorted(keyed, key=lambda pair: pair[0], reverse=True)]


def _members(pool: Pool, now: datetime) -> list[PoolMembership]:
    """Enabled memberships with their accounts and the number of turns each account has open."""
    members = list(PoolMembership.objects.filter(pool=pool, enabled=True).select_related("account"))
    limited = [m.account.id for m in members if m.account.max_concurrent]
    if limited:
        busy = dict(
            ConcurrencySlot.objects.filter(account_id__in=limited, expires_at__gt=now)
            .values_list("account_id")
            .annotate(n=Count("id"))
        )
        for m in members:
            m.account.open_turns = busy.get(m.account.id, 0)
    return members


def _has_capacity(account: UpstreamAccount) -> bool:
    return not account.max_concurrent or getattr(account, "open_turns", 0) < account.max_concurrent


def plan_turn(pool: Pool, model: str | None, session: str | None, now: datetime | None = None) -> Plan:
    """The ordered candidates for a turn; raises when none can serve (429 with the soonest reset, or 503)."""
    now = now or timezone.now()
    members = _members(pool, now)
    eligible = [m for m in members if m.account.is_eligible(model, now) and _has_capacity(m.account)]
    session_hash = hash_session(session) if session else None
    affinity = (
        SessionAffinity.objects.filter(pool=pool, session_key_hash=session_hash, expires_at__gt=now)
        .select_related("account")
        .first()
        if session_hash
        else None
    )
    ordered = _order(pool, eligible, now)
    plan = Plan(accounts=ordered, session_hash=session_hash)
    if affinity is not None:
        owner = plan.owner = affinity.account
        plan.hold = pool.session_migration == SessionMigration.HOLD and owner.status == "active"
        if any(a.id == owner.id for a in ordered):
            plan.accounts = [owner] + [a for a in ordered if a.id != owner.id]
        else:
            reason = owner.ineligibility(model, now) or "at_capacity"
            if plan.hold:
                raise held_error(owner, reason, now)
            plan.owner_unavailable = reason.split(":")[0]
    if not plan.accounts:
        raise _nothing_eligible([m.account for m in members], model, now)
    return plan


def held_error(owner: UpstreamAccount, reason: str, now: datetime | None = None) -> RateLimited:
    """429 for a session held on its unavailable owner, waiting for the owner's reset."""
    now = now or timezone.now()
    owner.refresh_from_db(fields=["cooldown_until", "primary_used_percent", "primary_resets_at",
                                  "secondary_used_percent", "secondary_resets_at"])
    reset = owner.available_at(now)
    wait = int((reset - now).total_seconds()) + 1 if reset else 60
    return RateLimited(
        f"The account serving this session is unavailable ({reason}) and the pool holds sessions on their "
        f"account; try again in {wait} seconds.",
        code="usage_limit_reached", retry_after=wait,
    )


def _nothing_eligible(accounts: list[UpstreamAccount], model: str | None, now: datetime):
    """429 with the soonest reset when accounts will come back by themselves, else 503."""
    if model and accounts and all(a.model_slugs and model not in a.model_slugs for a in accounts):
        return NoEligibleAccount(f"No account in this pool serves model {model!r}.", status=404,
                                 code="model_not_found", type="invalid_request_error")
    resets = [t for a in accounts if a.status == "active" and (t := a.available_at(now))]
    if resets:
        wait = int((min(resets) - now).total_seconds()) + 1
        return RateLimited(
            f"Every account in this pool is at its usage limit or cooling down; try again in {wait} seconds.",
            code="usage_limit_reached", type="usage_limit_reached", retry_after=wait,
        )
    return NoEligibleAccount("No upstream account of this pool can serve requests now.")


def remember_session(plan: Plan, pool: Pool, account: UpstreamAccount, reason: str = "",
                     now: datetime | None = None) -> None:
    """Pin the session to the account that served it, recording a move when it changed."""
    if not plan.session_hash:
        return
    now = now or timezone.now()
    expires = now + timedelta(seconds=pool.sticky_ttl_seconds)
    updated = SessionAffinity.objects.filter(pool=pool, session_key_hash=plan.session_hash, account=account).update(
        expires_at=expires
    )
    if updated:
        return
    affinity, created = SessionAffinity.objects.get_or_create(
        pool=pool, session_key_hash=plan.session_hash, defaults={"account": account, "expires_at": expires}
    )
    if not created:
        affinity.previous_account_id = affinity.account_id
        affinity.account = account
        affinity.move_reason = reason or "owner_failed"
        affinity.moved_at = now
        affinity.moves += 1
        affinity.expires_at = expires
        affinity.save()


def eligible_count(pool: Pool, now: datetime | None = None) -> int:
    now = now or timezone.now()
    return sum(1 for m in _members(pool, now) if m.account.is_eligible(None, now))


